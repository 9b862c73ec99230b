"""Figures of stage 05."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils.experiments.castle_walls.config import SOURCES, detectors
from bibad_utils.experiments.castle_walls.detection import detection_scores
from bibad_utils.plots import draw_interval_bars, panel_figure, side_by_side_grids, style


def detection_figure(det: pd.DataFrame):
    """AUROC per cell, training subset vs generations, one panel per detector, with 95 % intervals;
    the paper's CD values (ImageNette) as open diamonds."""
    cells = list(pd.unique(det["cell"]))
    names = [d for d in detectors() if d in set(det["detector"])]
    with style():
        fig, axes, ncols = panel_figure(len(names), 3.4, 3.4 + 0.15 * max(len(c) for c in cells), extra_h=0.6,
                                        sharey=True)
        # one bar series per (set, classifier): the set alone for the victim, else e.g. "generated (clean)"
        det = det.assign(series=[s if c == "victim" else f"{s} ({c})"
                                 for s, c in zip(det["set"], det["classifier"])])
        for ax, name in zip(axes, names):
            draw_interval_bars(ax, det[det.detector == name], "cell", "auroc", "auroc_lo", "auroc_hi", hue="series",
                               paper="paper", paper_label="paper (ImageNette)", categories=cells)
            for bar in ax.patches:
                if math.isnan(bar.get_height()):
                    ax.text(bar.get_x() + bar.get_width() / 2, 0.03, "n/a", ha="center", fontsize=7, rotation=90)
            ax.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
            ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
            ax.set_title(name)
            ax.set_ylim(0, 1.05)
        for ax in axes[::ncols]:
            ax.set_ylabel("AUROC (0.5 = chance)")
        shared_legend(fig, axes, max_columns=3)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
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


def _rate_panels(df: pd.DataFrame, x: str, hue: str, paper_hues=None, hline: dict | None = None):
    """TA and ASR panels of ``df``: bars per ``x`` grouped by ``hue`` with 95 % intervals, the paper's values
    (``paper_TA``, ``paper_ASR``) as open diamonds on the bars of ``paper_hues`` (None: every hue)."""
    metrics = ("TA", "ASR")
    cats = list(pd.unique(df[x]))
    with style():
        fig, axes, _ = panel_figure(len(metrics), max(3.5, 0.45 * len(cats) * df[hue].nunique() + 1.5), 3.4,
                                    extra_h=0.8)
        for ax, m in zip(axes, metrics):
            paper = df[f"paper_{m}"] if paper_hues is None else df[f"paper_{m}"].where(df[hue].isin(paper_hues))
            draw_interval_bars(ax, df.assign(paper=paper), x, m, f"{m}_lo", f"{m}_hi", hue=hue, paper="paper",
                               categories=cats)
            if hline and m in hline:
                ax.axhline(hline[m][0], color="#777777", linestyle=":", linewidth=1, label=hline[m][1])
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(m)
        shared_legend(fig, axes, max_columns=3)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / fig.get_figheight()))
    return fig


def train_on_generations_figure(tog: pd.DataFrame):
    """TA and ASR per cell for the three training sources, 95 % Wilson intervals; the paper's
    ImageNette values (poisoned training set, generations) as open diamonds."""
    return _rate_panels(tog, "cell", "source", paper_hues=(SOURCES[0], "generated"))


def dc_figure(dc: pd.DataFrame, n_classes: int):
    """TA and ASR per cell: the backdoored classifier, then the diffusion classifier at each p_filter
    (95 % Wilson intervals); the paper's CIFAR-10 values as open diamonds; chance level 1/K dotted."""
    df = dc.copy()
    df["model"] = [m if m != "diffusion classifier" else f"DC p_filter={pf:g}" for m, pf in zip(df.method, df.p_filter)]
    chance = (1.0 / n_classes, "chance 1/K")
    return _rate_panels(df, "cell", "model", hline={"ASR": chance, "TA": chance})


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
    labels = [f"{lab}*" if use else str(lab) for lab, use in zip(sens["label"], sens["in_use"])]
    long = pd.concat([pd.DataFrame({"reference": labels, "set": name, "auroc": sens[f"auroc_{col}"],
                                    "lo": sens[f"auroc_{col}_lo"], "hi": sens[f"auroc_{col}_hi"]})
                      for name, col in (("training", "train"), ("generated", "gen"))], ignore_index=True)
    diff = pd.DataFrame({"reference": labels, "diff": sens["diff"], "lo": sens["diff_lo"], "hi": sens["diff_hi"]})
    with style():
        fig, (left, right), _ = panel_figure(2, 1.5 + 0.65 * len(labels), 3.6, extra_w=0.4)
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
