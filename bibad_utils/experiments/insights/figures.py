"""Figures of stage 04: example generations per group, the phase transition over p, r_gen and G1 against
the guidance, image quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bibad_utils.base import ConfigError
from bibad_utils.experiments.insights.claims import untrusted_detectors
from bibad_utils.experiments.insights.groups import p_label
from bibad_utils.experiments.insights.trigger_truth import (CHECK_CONTRAST, CHECK_MIN_DETECTION, disputed_examples,
                                                            most_disputed)
from bibad_utils.plots import (G_COLORS, MAX_FIGURE_WIDTH_IN, PALETTE, REF_COLOR, attack_color, message_figure, shades,
                               side_by_side_grids)


def group_examples(study, cell, guidance: float, n: int = 8, seed: int = 0) -> dict:
    """Up to ``n`` target-prompt generations of ``cell`` at ``guidance`` from each group G1-G4, drawn
    with ``numpy.random.default_rng(seed)``: ``{group: (uint8 [k, H, W, 3] images, k titles)}``, the
    title being the clean classifier's predicted class name."""
    if not cell.trigger_kind:
        raise ConfigError("cell", cell.name, "a poisoned cell of the grid (the controls have no trigger)")
    j = study.judges.judged(cell, cell.trigger_kind)[("target", float(guidance))]
    images = study.generations(cell)[("target", float(guidance))].images
    t, m = j["trigger"], j["match"]
    masks = {"G1": t & ~m, "G2": t & m, "G3": ~t & ~m, "G4": ~t & m}
    rng = np.random.default_rng(seed)
    names = study.class_names
    out = {}
    for g, mask in masks.items():
        idx = np.flatnonzero(mask)
        idx = np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx
        out[g] = (np.asarray(images[idx]), [names[int(k)] for k in j["pred"][idx]])
    return out


def examples_figure(study, cell, guidance: float, n: int = 8, seed: int = 0, nrow: int = 2) -> Figure:
    """Example target-prompt generations of ``cell`` from each group G1-G4 (see :func:`group_examples`),
    one panel per group (headed G1..G4, ``nrow`` images per row; an empty group says so), each image
    headed by the clean classifier's predicted class."""
    ex = group_examples(study, cell, guidance, n=n, seed=seed)
    return side_by_side_grids({g: images for g, (images, _) in ex.items()}, nrow=nrow,
                              titles={g: titles for g, (_, titles) in ex.items() if titles},
                              suptitle=f"{cell.name}: target-prompt generations at w = {guidance:g}, by group "
                                       f"(detector: {cell.trigger_kind or study.cfg.attacks[0]})")


def _new_axes(nrows: int, ncols: int, col_w: float, height: float, extra_w: float = 0.6):
    """``nrows`` x ``ncols`` axes, each column ``col_w`` inches wide unless that would take the figure past
    :data:`MAX_FIGURE_WIDTH_IN` (then the columns share that width, so the labels stay readable on the page)."""
    width = min(MAX_FIGURE_WIDTH_IN, col_w * ncols + extra_w)
    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _errorbar(ax, x, df, col, **kw):
    y = df[col].to_numpy(dtype=float)
    err = np.vstack([y - df[f"{col}_lo"].to_numpy(dtype=float), df[f"{col}_hi"].to_numpy(dtype=float) - y])
    ax.errorbar(x, y, yerr=np.clip(err, 0, None), capsize=2.5, elinewidth=1.0, **kw)


UNTRUSTED_NOTE = "detector fails its check\n(it flags the clean DM's\ngenerations): no evidence"


def _mark_untrusted(axes, attack: str) -> None:
    """Fade one attack's column of axes and say on it that its detector fails its check."""
    for ax in axes:
        for artist in list(ax.lines) + list(ax.collections) + list(ax.patches):
            artist.set_alpha(0.25)
    axes[0].set_title(f"{attack} (not evidence)", color="#777777")
    axes[0].text(0.5, 0.5, UNTRUSTED_NOTE, transform=axes[0].transAxes, ha="center", va="center", fontsize=9,
                 color="#333333", bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#999999"})


def phase_figure(pt: pd.DataFrame, untrusted=()) -> Figure:
    """Insight 2 from :func:`phase_transition`: top row, G1 and G2 ratios (Wilson 95 %) against p per
    attack with r_train dashed; bottom row, G1 - r_train and G2 - r_train as bars (the quantities of the
    paper's figure, as ratios). The columns of the attacks in ``untrusted`` (:func:`untrusted_detectors`)
    are faded and say that their detector fails its check."""
    attacks = list(pd.unique(pt["attack"]))
    fig, axes = _new_axes(2, len(attacks), 3.6, 5.6)
    for k, attack in enumerate(attacks):
        a = pt[pt["attack"] == attack]
        x = np.arange(len(a))
        top, bottom = axes[0, k], axes[1, k]
        _errorbar(top, x - 0.04, a, "G1", color=G_COLORS["G1"], marker="o", label="G1 (trigger, wrong class)")
        _errorbar(top, x + 0.04, a, "G2", color=G_COLORS["G2"], marker="s", label="G2 (trigger, right class)")
        top.plot(x, a["r_train"], color=REF_COLOR, linestyle="--", marker="_", label="r_train")
        top.set_title(attack)
        top.set_ylim(0, 1)
        top.set_xticks(x, a["p"])
        bottom.bar(x - 0.18, a["G1_minus_r_train"], width=0.36, color=G_COLORS["G1"], label="G1 - r_train")
        bottom.bar(x + 0.18, a["G2_minus_r_train"], width=0.36, color=G_COLORS["G2"], label="G2 - r_train")
        bottom.axhline(0, color=REF_COLOR, linewidth=0.8)
        bottom.set_xticks(x, a["p"])
        bottom.set_xlabel("poisoning ratio p")
        for ax in (top, bottom):
            ax.set_xlim(-0.6, len(a) - 0.4)
        if attack in untrusted:
            _mark_untrusted((top, bottom), attack)
    axes[0, 0].set_ylabel("fraction of generations")
    axes[1, 0].set_ylabel("ratio - r_train")
    axes[0, -1].legend(fontsize=8, frameon=False, loc="upper left")
    axes[1, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def guidance_figure(gdf: pd.DataFrame) -> Figure:
    """r_gen (top) and G1 (bottom) against the guidance scale w for every poisoned cell (Wilson 95 %),
    one column per attack, one line per p; r_train dotted in the top row. The columns of the attacks in
    :func:`untrusted_detectors` at the table's first w are faded and say so."""
    untrusted = untrusted_detectors(gdf, float(gdf["guidance"].iloc[0])) if len(gdf) else []
    grid = gdf[~gdf["control"].astype(bool)]
    attacks = list(pd.unique(grid["attack"]))
    fig, axes = _new_axes(2, len(attacks), 3.6, 5.6)
    for k, attack in enumerate(attacks):
        a = grid[grid["attack"] == attack]
        ratios = sorted(a["ratio"].unique())
        span = float(np.ptp(a["guidance"].to_numpy(dtype=float))) or 1.0
        ramp = shades(attack_color(attack, k), len(ratios))  # the attack's colour, darker with p
        for c, ratio in enumerate(ratios):
            r = a[a["ratio"] == ratio].sort_values("guidance")
            color = ramp[c]
            # a small horizontal offset per p keeps overlapping points and intervals apart
            w = r["guidance"].to_numpy(dtype=float) + 0.015 * span * (c - (len(ratios) - 1) / 2)
            _errorbar(axes[0, k], w, r, "r_gen", color=color, marker="o", label=f"p={p_label(ratio)}")
            axes[0, k].axhline(r["r_train"].iloc[0], color=color, linestyle=":", linewidth=1.2)
            _errorbar(axes[1, k], w, r, "G1", color=color, marker="o")
        axes[0, k].set_title(attack)
        for ax in axes[:, k]:
            ax.set_ylim(0, 1)
        axes[1, k].set_xlabel("guidance w")
        if attack in untrusted:
            _mark_untrusted(axes[:, k], attack)
    axes[0, 0].set_ylabel("r_gen (dotted: r_train)")
    axes[1, 0].set_ylabel("G1")
    axes[0, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def quality_figure(qdf: pd.DataFrame) -> Figure:
    """FD-clf (left) and the clean classifier's accuracy on the all-class generations (right, Wilson
    95 %) per row of :func:`quality_table`."""
    fig, axes = _new_axes(1, 2, 4.0, 3.2, extra_w=0.5)
    x = np.arange(len(qdf))
    colors = [REF_COLOR if a == "real" else attack_color(a) for a in qdf["attack"]]
    axes[0, 0].bar(x, qdf["fd_clf"], color=colors)
    axes[0, 0].set_ylabel("FD-clf to real test images")
    axes[0, 1].bar(x, qdf["clf_acc"], color=colors)
    _errorbar(axes[0, 1], x, qdf, "clf_acc", fmt="none", ecolor="#333333")
    axes[0, 1].set_ylim(0, 1)
    axes[0, 1].set_ylabel("classifier accuracy")
    for ax in axes[0]:
        ax.set_xticks(x, qdf["cell"], rotation=30, ha="right")
    fig.tight_layout()
    return fig


def disputed_figure(study, atab: pd.DataFrame, n: int = 6, seed: int = 0, nrow: int = 3) -> Figure:
    """The generations the two trigger instruments disagree on, in the set of :func:`agreement_table`
    ``atab`` where they disagree most (:func:`most_disputed`): up to ``n`` images only the detector calls
    triggered and ``n`` only the template does (:func:`disputed_examples`), one panel each headed by how
    many of the set's disputed images it shows (the set: :func:`most_disputed`), each image by the detector's
    P(trigger) (``P``) and the template's score (``s``); a message figure when they never disagree."""
    row = most_disputed(atab)
    if row is None:
        return message_figure("the detector and the template agree on every generated set")
    ex = disputed_examples(study, row, n=n, seed=seed)
    total = {"detector only": int(row["n_detector_only"]), "template only": int(row["n_template_only"])}
    names = {name: f"{name} ({len(ex[name][0])} of {total[name]})" if total[name] else name for name in ex}
    return side_by_side_grids({names[name]: images for name, (images, _) in ex.items()}, nrow=nrow,
                              titles={names[name]: t for name, (_, t) in ex.items() if t})


def planted_figure(check: pd.DataFrame) -> Figure:
    """The planted check (:func:`planted_check`): detection rate (Wilson 95 %) against the pasted
    trigger's contrast per instrument, one panel per attack; the false-alarm rate on the unplanted images
    as a cross at contrast 0; dotted, the rule of :func:`preferred_instrument` (:data:`CHECK_MIN_DETECTION` at
    its default ``contrast``)."""
    if check.empty:
        return message_figure("no clean DM: no planted check")
    attacks = list(pd.unique(check["attack"]))
    fig, axes = _new_axes(1, len(attacks), 3.4, 3.5)
    colors = {"detector": PALETTE[0], "template": PALETTE[1]}
    for k, attack in enumerate(attacks):
        ax = axes[0, k]
        for inst, r in check[check["attack"] == attack].groupby("instrument", sort=False):
            r = r.sort_values("contrast")
            det, fa = r[r["contrast"] > 0], r[r["contrast"] == 0]
            _errorbar(ax, det["contrast"].to_numpy(dtype=float), det, "rate", color=colors.get(inst), marker="o",
                      label=f"{inst}: detected")
            _errorbar(ax, fa["contrast"].to_numpy(dtype=float), fa, "rate", color=colors.get(inst), marker="x",
                      markersize=8, linestyle="none", label=f"{inst}: false alarms")
        ax.axhline(CHECK_MIN_DETECTION, color=REF_COLOR, linestyle=":", linewidth=0.9)
        ax.axvline(CHECK_CONTRAST, color=REF_COLOR, linestyle=":", linewidth=0.9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(-0.05, 1.05)
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("contrast of the pasted trigger")
    axes[0, 0].set_ylabel("share of images flagged")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig
