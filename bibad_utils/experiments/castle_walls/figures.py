"""Figures of stage 05."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils.experiments.castle_walls.config import SOURCES, detectors
from bibad_utils.experiments.castle_walls.detection import detection_scores
from bibad_utils.plots import DPI, PALETTE, draw_interval_bars, panel_axes, panel_grid, side_by_side_grids, style


def detection_figure(det: pd.DataFrame):
    """AUROC per cell, training subset vs generations, one panel per detector, with 95 % intervals;
    the paper's CD values (ImageNette) as open diamonds."""
    from matplotlib.figure import Figure


    cells = list(pd.unique(det["cell"]))
    names = [d for d in detectors() if d in set(det["detector"])]
    with style():
        nrows, ncols, size = panel_grid(len(names), 3.4, 3.4 + 0.15 * max(len(c) for c in cells), extra_h=0.6)
        fig = Figure(figsize=size)
        axes = panel_axes(fig, nrows, ncols, len(names), sharey=True)
        for ax, name in zip(axes, names):
            combos = [(s, c) for s, c in det[["set", "classifier"]].drop_duplicates().itertuples(index=False)] \
                if "classifier" in det else [("training", None), ("generated", None)]
            width = 0.8 / len(combos)
            for j, (set_name, clf) in enumerate(combos):
                sel = (det.detector == name) & (det.set == set_name)
                if clf is not None:
                    sel &= det.classifier == clf
                rows = det[sel].set_index("cell").reindex(cells)
                pos = np.arange(len(cells)) - 0.4 + width * (j + 0.5)
                vals = rows.auroc.to_numpy(float)
                label = set_name if clf in (None, "victim") else f"{set_name} ({clf})"
                ax.bar(pos, np.nan_to_num(vals), width=width * 0.95, color=PALETTE[j % len(PALETTE)], label=label)
                err = np.vstack([vals - rows.auroc_lo.to_numpy(float), rows.auroc_hi.to_numpy(float) - vals])
                ax.errorbar(pos, vals, yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="#333333",
                            elinewidth=1.0, capsize=2.5)
                for x, v in zip(pos, vals):
                    if math.isnan(v):
                        ax.text(x, 0.03, "n/a", ha="center", fontsize=7, rotation=90)
                paper = rows.paper.to_numpy(float)
                ax.plot(pos, paper, "D", mfc="none", mec="#000000", ms=6, linestyle="none",
                        label="paper (ImageNette)" if np.isfinite(paper).any() else None)
            ax.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
            ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
            ax.set_title(name)
            ax.set_ylim(0, 1.05)
        for ax in axes[::ncols]:
            ax.set_ylabel("AUROC (0.5 = chance)")
        shared_legend(fig, axes, max_columns=3)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / size[1]))
    return fig


def shared_legend(fig, axes, max_columns: int):
    """One legend at the top of ``fig`` with each label of ``axes`` once, in order of appearance."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="upper center", ncol=min(max_columns, len(labels)), fontsize=8)


def _rate_panels(df: pd.DataFrame, x: str, hue: str, metrics=("TA", "ASR"), paper_cols: dict | None = None,
                 hline: dict | None = None):
    from matplotlib.figure import Figure


    cats = list(pd.unique(df[x]))
    hues = list(pd.unique(df[hue]))
    width = 0.8 / len(hues)
    with style():
        nrows, ncols, size = panel_grid(len(metrics), max(3.5, 0.45 * len(cats) * len(hues) + 1.5), 3.4, extra_h=0.8)
        fig = Figure(figsize=size)
        axes = panel_axes(fig, nrows, ncols, len(metrics))
        for ax, m in zip(axes, metrics):
            for i, h in enumerate(hues):
                rows = df[df[hue] == h].set_index(x).reindex(cats)
                pos = np.arange(len(cats)) - 0.4 + width * (i + 0.5)
                vals = rows[m].to_numpy(float)
                ax.bar(pos, vals, width=width * 0.92, color=PALETTE[i % len(PALETTE)], label=str(h))
                err = np.vstack([vals - rows[f"{m}_lo"].to_numpy(float), rows[f"{m}_hi"].to_numpy(float) - vals])
                ax.errorbar(pos, vals, yerr=np.clip(err, 0, None), fmt="none", ecolor="#333333", elinewidth=1.0,
                            capsize=2)
                col = (paper_cols or {}).get((h, m))
                if col is not None and col in rows:
                    pv = rows[col].to_numpy(float)
                    ax.plot(pos, pv, "D", mfc="none", mec="#000000", ms=5, linestyle="none",
                            label="paper" if np.isfinite(pv).any() else None)
            if hline and m in hline:
                ax.axhline(hline[m][0], color="#777777", linestyle=":", linewidth=1, label=hline[m][1])
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(m)
        shared_legend(fig, axes, max_columns=3)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / size[1]))
    return fig


def train_on_generations_figure(tog: pd.DataFrame):
    """TA and ASR per cell for the three training sources, 95 % Wilson intervals; the paper's
    ImageNette values (poisoned training set, generations) as open diamonds."""
    cols = {(SOURCES[0], m): f"paper_{m}" for m in ("TA", "ASR")}
    cols.update({("generated", m): f"paper_{m}" for m in ("TA", "ASR")})
    return _rate_panels(tog, "cell", "source", paper_cols=cols)


def dc_figure(dc: pd.DataFrame, n_classes: int):
    """TA and ASR per cell: the backdoored classifier, then the diffusion classifier at each p_filter
    (95 % Wilson intervals); the paper's CIFAR-10 values as open diamonds; chance level 1/K dotted."""
    df = dc.copy()
    df["model"] = [m if m != "diffusion classifier" else f"DC p_filter={pf:g}" for m, pf in zip(df.method, df.p_filter)]
    cols = {(h, m): f"paper_{m}" for h in df.model.unique() for m in ("TA", "ASR")}
    return _rate_panels(df, "cell", "model", paper_cols=cols,
                        hline={"ASR": (1.0 / n_classes, "chance 1/K"), "TA": (1.0 / n_classes, "chance 1/K")})


def cd_mask_figure(study, cell, n_show: int = 4):
    """CD at work on ``cell``: one panel for the training subset, one for the generations; rows: up to
    ``n_show`` poisoned (triggered) images, their distilled masks, as many clean (trigger-free) images,
    their masks (white = kept; a small mask = flagged), each mask titled by its L1 norm |m| in pixels.
    Empty slots stay blank."""
    grids, titles = {}, {}
    for set_name, names in (("training subset", ("poisoned", "clean")), ("generations", ("triggered", "no trigger"))):
        res = detection_scores(study, cell, "training" if set_name.startswith("training") else "generated")
        size = res["images"].shape[1:3]
        rows, tits = [], []
        for name, sel in zip(names, (np.flatnonzero(res["truth"]), np.flatnonzero(~res["truth"]))):
            sel = sel[:n_show]
            blank = np.full((n_show - len(sel), *size, 3), 255, np.uint8)
            masks = (np.clip(res["masks"][sel], 0, 1) * 255).round().astype(np.uint8)
            rows += [np.concatenate([res["images"][sel], blank]),
                     np.concatenate([np.repeat(masks[..., None], 3, axis=-1), blank])]
            tits += [name] * len(sel) + [""] * len(blank)
            tits += [f"|m|={-res['CD'][i]:.0f}" for i in sel] + [""] * len(blank)
        grids[set_name], titles[set_name] = np.concatenate(rows), tits
    return side_by_side_grids(grids, nrow=n_show, titles=titles)


def cd_sensitivity_figure(sens: pd.DataFrame):
    """CD's calibration sensitivity (:func:`~bibad_utils.experiments.castle_walls.detection.cd_sensitivity`):
    left, AUROC on the training subset and on the generations per logit reference ("none": logits as they
    are), 95 % intervals, chance dotted; right, AUROC(generated) - AUROC(training) with its interval, 0
    dashed. The profile's setting is marked with an asterisk on the x axis."""
    from matplotlib.figure import Figure

    labels = [f"{lab}*" if use else str(lab) for lab, use in zip(sens["label"], sens["in_use"])]
    long = pd.concat([pd.DataFrame({"reference": labels, "set": name, "auroc": sens[f"auroc_{col}"],
                                    "lo": sens[f"auroc_{col}_lo"], "hi": sens[f"auroc_{col}_hi"]})
                      for name, col in (("training", "train"), ("generated", "gen"))], ignore_index=True)
    diff = pd.DataFrame({"reference": labels, "diff": sens["diff"], "lo": sens["diff_lo"], "hi": sens["diff_hi"]})
    with style():
        nrows, ncols, size = panel_grid(2, 1.5 + 0.65 * len(labels), 3.6, extra_w=0.4)
        fig = Figure(figsize=size, dpi=DPI)
        left, right = panel_axes(fig, nrows, ncols, 2)
        draw_interval_bars(left, long, "reference", "auroc", "lo", "hi", hue="set", categories=labels)
        left.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
        left.set_ylim(0, 1.05)
        left.set_ylabel("CD AUROC (0.5 = chance)")
        left.legend(fontsize=8, loc="lower right")
        draw_interval_bars(right, diff, "reference", "diff", "lo", "hi", ref=0.0, ref_label="no difference",
                           categories=labels)
        right.set_ylabel("AUROC(generated) - AUROC(training)")
        right.legend(fontsize=8, loc="best")
        for ax in (left, right):
            ax.set_xlabel("logit reference (* = profile's)")
        fig.tight_layout()
    return fig
