"""Charts of the study: the one bar-with-interval chart, loss and ratio curves, G1-G4 stacks, histograms,
heatmaps. Each takes arrays or DataFrames and returns a Figure; none computes a metric.

:func:`draw_interval_bars` is the axes-level engine of every bar chart with intervals (bars per category,
grouped by hue, error bars from absolute bounds, an optional reference tick or line and the paper's value
as open diamonds); :func:`bar_with_ci` is its one-panel figure.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter
from scipy.signal import lfilter

from bibad_utils.base import ConfigError
from bibad_utils.plots.style import (DPI, G_COLORS, MAX_FIGURE_WIDTH_IN, PALETTE, REF_COLOR, attack_color,
                                     panel_figure, require_columns, style)


@contextmanager
def _one_axes(figsize, xlabel: str, ylabel: str, title: str | None):
    """A one-axes chart of ``figsize`` inches built in :func:`style`: yields (figure, axes) for the block to draw
    into, then labels the axes (``title`` None: no title) and lays the figure out."""
    with style():
        fig = Figure(figsize=figsize, dpi=DPI)
        ax = fig.add_subplot()
        yield fig, ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        fig.tight_layout()


def draw_interval_bars(ax, df: pd.DataFrame, x: str, y: str, lo: str | None = None, hi: str | None = None,
                       hue: str | None = None, ref=None, ref_label: str | None = None, *, paper: str | None = None,
                       paper_label: str = "paper", categories=None, bar_style=None) -> list:
    """Draw bars of ``df[y]`` per category ``df[x]`` into ``ax``, grouped by ``df[hue]`` (one colour and
    legend entry each), with error bars from the absolute bounds ``df[lo]`` /
    ``df[hi]``; x ticks name the categories. Returns the categories in drawing order.

    ref: a column (a reference value per bar, drawn as a black tick across it, e.g. r_train) or a number
    (a dashed horizontal line); ref_label names it (default: the column name or "reference").
    paper: a column of the paper's values, drawn as open diamonds over the bars (``paper_label``).
    categories: the categories and their order (None: ``df[x]`` in order of appearance); a category
    without a row leaves a gap.
    bar_style: a function hue value -> keyword arguments of ``ax.bar`` (e.g. colour, hatch, label) that
    replace the defaults for that hue's bars.
    """
    require_columns(df, [x, y, lo, hi, hue, paper] + ([ref] if isinstance(ref, str) else []))
    if (lo is None) != (hi is None):
        raise ConfigError("lo, hi", (lo, hi), "both interval columns or neither")
    cats = list(pd.unique(df[x])) if categories is None else list(categories)
    hues = list(pd.unique(df[hue])) if hue else [None]
    width = 0.8 / len(hues)
    paper_drawn = False
    for h_i, h in enumerate(hues):
        rows = df if h is None else df[df[hue] == h]
        if categories is not None:
            rows = rows.set_index(x).reindex(cats).reset_index()
        pos = np.array([cats.index(v) for v in rows[x]]) - 0.4 + width * (h_i + 0.5)
        vals = rows[y].to_numpy(dtype=float)
        # an attack keeps its colour in every figure; another grouping cycles the palette
        color = attack_color(str(h), h_i) if hue in ("attack", "kind") else PALETTE[h_i % len(PALETTE)]
        style_kw = {"color": color, "label": None if h is None else str(h), **(bar_style(h) if bar_style else {})}
        ax.bar(pos, vals, width=width * 0.92, **style_kw)
        if lo is not None:
            err = np.vstack([vals - rows[lo].to_numpy(dtype=float), rows[hi].to_numpy(dtype=float) - vals])
            ax.errorbar(pos, vals, yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="#333333",
                        elinewidth=1.0, capsize=2.5)
        if isinstance(ref, str):
            ax.hlines(rows[ref].to_numpy(dtype=float), pos - width * 0.46, pos + width * 0.46,
                      colors=REF_COLOR, linewidth=2.0, label=(ref_label or ref) if h_i == 0 else None)
        if paper is not None:
            pv = rows[paper].to_numpy(dtype=float)
            show = np.isfinite(pv).any()
            ax.plot(pos, pv, "D", mfc="none", mec=REF_COLOR, ms=6, linestyle="none",
                    label=paper_label if show and not paper_drawn else None)
            paper_drawn = paper_drawn or show
    if ref is not None and not isinstance(ref, str):
        ax.axhline(float(ref), color=REF_COLOR, linestyle="--", linewidth=1.2, label=ref_label or "reference")
    ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    return cats


def bar_with_ci(df: pd.DataFrame, x: str, y: str, lo: str | None = None, hi: str | None = None,
                hue: str | None = None, ref=None, ref_label: str | None = None, ylabel: str | None = None,
                title: str | None = None, ylim=None, paper: str | None = None) -> Figure:
    """Bars of ``df[y]`` per category ``df[x]`` (grouped by ``df[hue]`` if given), with error bars from
    the interval columns ``lo`` / ``hi`` (absolute bounds, e.g. Wilson 95 % intervals from
    ``metrics.wilson_interval``), one row of ``df`` per bar, categories in order of appearance.

    ref: a column name (a reference value per bar, drawn as a black tick across it, e.g. r_train) or a
    number (a horizontal line); ref_label names it in the legend (default: the column name or "reference").
    paper: a column of the paper's values, drawn as open diamonds (see :func:`draw_interval_bars`).
    """
    require_columns(df, [x, y, lo, hi, hue] + ([ref] if isinstance(ref, str) else []))
    natural = max(4.0, 0.9 * df[x].nunique() * max(1, df[hue].nunique() if hue else 1) ** 0.5 + 1.5)
    size = (min(MAX_FIGURE_WIDTH_IN, natural), 3.4 if natural <= MAX_FIGURE_WIDTH_IN else 3.9)
    with _one_axes(size, x, ylabel or y, title) as (fig, ax):
        draw_interval_bars(ax, df, x, y, lo, hi, hue, ref, ref_label, paper=paper)
        if natural > MAX_FIGURE_WIDTH_IN:  # narrower than the bars would like: slanted category names
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if hue or ref is not None or paper is not None:
            ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="best")
    return fig


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction (the average of a run of ones divides it), so the first
    points are not pulled to 0."""
    b, a = [1 - smoothing], [1, -smoothing]
    return lfilter(b, a, values) / lfilter(b, a, np.ones_like(values))


def loss_curves(curves: dict, smoothing: float = 0.9, title: str | None = None) -> Figure:
    """Training-loss curves, one line per entry of ``curves`` (name -> sequence of (step, loss)).

    The raw losses are drawn faintly; over them a bias-corrected exponential moving average with weight
    ``smoothing`` in [0, 1) (0: no smoothing), on a logarithmic loss axis. Empty curves are skipped.
    """
    if not isinstance(curves, dict):
        raise ConfigError("curves", type(curves).__name__, "a dict name -> list of (step, loss)")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ConfigError("smoothing", smoothing, "a number in [0, 1)")
    with _one_axes((6.0, 3.4), "step", "training loss (MSE on noise)", title) as (fig, ax):
        drawn = 0
        for k, (name, points) in enumerate(curves.items()):
            arr = np.asarray(list(points), dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
            if len(arr) == 0:
                continue
            order = np.argsort(arr[:, 0], kind="stable")
            steps, loss = arr[order, 0], arr[order, 1]
            color = PALETTE[k % len(PALETTE)]
            ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, _ema(loss, float(smoothing)), color=color, linewidth=1.6, label=str(name))
            drawn += 1
        if drawn:
            ax.set_yscale("log")
            ax.legend(fontsize=8, ncol=max(1, math.ceil(drawn / 6)))
        else:
            ax.text(0.5, 0.5, "no loss values", ha="center", va="center", transform=ax.transAxes, color="#555555")
    return fig


def g_stack(df: pd.DataFrame, x: str = "label", facet: str | None = None, title: str | None = None) -> Figure:
    """Stacked bars of the G1-G4 fractions per row of ``df`` (columns G1-G4, fractions summing to 1;
    bars labelled by ``df[x]`` in order of appearance), one panel per value of ``df[facet]`` if given.
    G1 (trigger, wrong content) and G2 (trigger, right content) sit at the bottom in warm colours, so
    their sum, the fraction of generations with a trigger, reads off directly.
    """
    groups = ["G1", "G2", "G3", "G4"]
    require_columns(df, [x, facet] + groups)
    panels = list(pd.unique(df[facet])) if facet else [None]
    with style():
        n_bars = max(len(df[df[facet] == p]) if facet else len(df) for p in panels)
        # roomy bars where they fit the page in one row, narrower ones (down to about 0.4 in a bar) before
        # the panels wrap into rows
        panel_w = max(3.2, 0.55 * n_bars + 1.2)
        if len(panels) * panel_w + 1.2 > MAX_FIGURE_WIDTH_IN:
            panel_w = max((MAX_FIGURE_WIDTH_IN - 1.2) / len(panels), 0.38 * n_bars + 0.6)
        fig, axes, ncols = panel_figure(len(panels), panel_w, 3.3, extra_w=1.2, extra_h=0.4, sharey=True)
        for ax, p in zip(axes, panels):
            rows = df if p is None else df[df[facet] == p]
            bottom = np.zeros(len(rows))
            for g in groups:
                vals = rows[g].to_numpy(dtype=float)
                ax.bar(np.arange(len(rows)), vals, bottom=bottom, width=0.75, color=G_COLORS[g], label=g)
                bottom += vals
            ax.set_xticks(np.arange(len(rows)), [str(v) for v in rows[x]], rotation=45 if len(rows) > 6 else 0,
                          ha="right" if len(rows) > 6 else "center")
            ax.set_ylim(0, 1)
            ax.set_xlabel(x)
            if p is not None:
                ax.set_title(f"{facet} = {p}")
        for ax in axes[::ncols]:
            ax.set_ylabel("fraction of target-prompt generations")
        handles = [Patch(color=G_COLORS[g], label=g) for g in groups]
        fig.legend(handles=handles[::-1], loc="center right", fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10, weight="bold")
        fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    return fig


def similarity_hist(sims: dict, threshold: float | None = None, title: str | None = None) -> Figure:
    """Overlaid histograms (as densities) of similarities, one per entry of ``sims`` (name -> float
    ``[n]``), e.g. nearest-training similarities of a clean and a poisoned model's generations; an
    optional vertical line marks the replication ``threshold``."""
    if not isinstance(sims, dict) or not sims:
        raise ConfigError("sims", type(sims).__name__, "a non-empty dict name -> similarities")
    with _one_axes((5.5, 3.2), "cosine similarity to the nearest training image", "density", title) as (fig, ax):
        values = [np.asarray(v, dtype=float).reshape(-1) for v in sims.values()]
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if threshold is not None:
            lo, hi = min(lo, threshold), max(hi, threshold)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, 40 + 1)
        for k, (name, v) in enumerate(zip(sims, values)):
            if v.size:
                ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.6,
                        color=PALETTE[k % len(PALETTE)], label=f"{name} (n={v.size})")
        if threshold is not None:
            ax.axvline(threshold, color=REF_COLOR, linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g}")
        ax.legend(fontsize=8)
    return fig


def threshold_sweep(sweep: pd.DataFrame, chosen: float | None = None, title: str | None = None) -> Figure:
    """Precision, recall and F1 of duplicate detection against the threshold (a DataFrame with columns
    threshold, precision, recall, f1, as from ``memorization.choose_threshold``). The x axis is
    1 - threshold on a log scale, so thresholds close to 1 spread out; ``chosen`` is marked."""
    require_columns(sweep, ["threshold", "precision", "recall", "f1"], "sweep")
    with _one_axes((5.5, 3.2), "1 - cosine threshold (right: stricter)", "pairwise score", title) as (fig, ax):
        dist = np.clip(1.0 - sweep["threshold"].to_numpy(dtype=float), 1e-7, None)
        for k, col in enumerate(("precision", "recall", "f1")):
            ax.plot(dist, sweep[col].to_numpy(dtype=float), marker=".", color=PALETTE[k], label=col)
        if chosen is not None:
            ax.axvline(max(1.0 - chosen, 1e-7), color=REF_COLOR, linestyle="--", linewidth=1.2,
                       label=f"chosen {chosen:.5g}")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    return fig


def heatmap(df: pd.DataFrame, title: str | None = None, cbar_label: str | None = None) -> Figure:
    """An annotated heatmap of a DataFrame of fractions (rows x columns as in the table; NaN cells blank),
    annotated in percent, coloured over [0, 1] with viridis (perceptually uniform: it reads in grey and with
    colour-vision deficiencies)."""
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise ConfigError("df", type(df).__name__, "a non-empty numeric pandas DataFrame")
    values = df.astype(float)
    row_w = 0.075 * max(len(str(i)) for i in values.index)
    size = (0.62 * values.shape[1] + 2.0 + row_w, 0.36 * values.shape[0] + 1.6)
    with _one_axes(size, values.columns.name or "", values.index.name or "", title) as (fig, ax):
        sns.heatmap(values, ax=ax, annot=True, fmt=".0%", vmin=0.0, vmax=1.0, cmap="viridis", linewidths=0.5,
                    annot_kws={"fontsize": 7}, cbar_kws={"label": cbar_label} if cbar_label else None)
        ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(c) for c in values.columns], rotation=45, ha="right")
        ax.set_yticks(np.arange(values.shape[0]) + 0.5, [str(i) for i in values.index], rotation=0)
    return fig


def ratio_curves(curves: dict, points: dict | None = None, ylabel: str = "ratio", title: str | None = None) -> Figure:
    """Lines and markers of ratios against a ratio, e.g. r_train against p.

    curves: name -> (x [n], y [n]) drawn as lines; points: name -> (x [k], y [k]) or (x, y, curve name)
    drawn as markers in the colour of the named curve (by default the curve of the same name, which then
    has no legend entry of its own); a points name containing "paper" is drawn as open diamonds, others
    as filled dots. Both axes are labelled in percent (values stay fractions).
    """
    if not isinstance(curves, dict):
        raise ConfigError("curves", type(curves).__name__, "a dict name -> (x, y)")
    points = points or {}
    with _one_axes((5.6, 3.6), "poisoning ratio p", ylabel, title) as (fig, ax):
        colours = {}
        for k, (name, (x, y)) in enumerate(curves.items()):
            colours[name] = PALETTE[k % len(PALETTE)]
            ax.plot(np.asarray(x, float), np.asarray(y, float), color=colours[name], linewidth=1.6, label=str(name))
        for k, (name, spec) in enumerate(points.items()):
            x, y = spec[0], spec[1]
            owner = spec[2] if len(spec) > 2 else name
            colour = colours.get(owner, PALETTE[(len(curves) + k) % len(PALETTE)])
            paper = "paper" in str(name).lower()
            ax.plot(np.asarray(x, float), np.asarray(y, float), linestyle="none", marker="D" if paper else "o",
                    ms=7 if paper else 6, mfc="none" if paper else colour, mec=colour, mew=1.5,
                    label=None if name in colours else str(name))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlim(left=0)
        ax.set_ylim(0, None)
        ax.legend(fontsize=8, loc="lower right")
    return fig


def exposure_chart(curve: pd.DataFrame, marks: dict | None = None) -> Figure:
    """The trigger rate of target-prompt generations against fine-tuning epochs: one panel per instrument
    (``curve["instrument"]``), a line with its interval band per ``cell``, the clean control's upper bound
    as a dashed line in the cell's colour. marks: label -> epochs drawn as dotted verticals (e.g. the
    paper's exposure and the profile's own). One legend below the panels; the shared y axis reaches the
    highest interval bound. Columns: cell, instrument, epochs, rate, rate_lo, rate_hi, clean_hi."""
    require_columns(curve, ["cell", "instrument", "epochs", "rate", "rate_lo", "rate_hi", "clean_hi"])
    panels = list(pd.unique(curve["instrument"]))
    top = float(np.nanmax(curve[["rate_hi", "clean_hi"]].to_numpy())) if len(curve) else 1.0
    with style():
        fig, axes, _ = panel_figure(max(1, len(panels)), 3.4, 3.4, extra_w=0.0, extra_h=0.5, sharey=True)
        for ax, instrument in zip(axes, panels):
            for k, (cell, g) in enumerate(curve[curve["instrument"] == instrument].groupby("cell", sort=False)):
                g, colour = g.sort_values("epochs"), PALETTE[k % len(PALETTE)]
                ax.plot(g["epochs"], g["rate"], marker="o", ms=4, color=colour, label=str(cell))
                ax.fill_between(g["epochs"], g["rate_lo"], g["rate_hi"], color=colour, alpha=0.18, linewidth=0)
                ax.plot(g["epochs"], g["clean_hi"], linestyle="--", color=colour, linewidth=1.0,
                        label=f"clean control, upper bound ({cell})")
            for j, (label, epochs) in enumerate((marks or {}).items()):
                ax.axvline(float(epochs), color=REF_COLOR, linestyle=":" if j == 0 else "-.", linewidth=1.0, label=label)
            ax.set_title(f"trigger read by the {instrument}", fontsize=10)
            ax.set_xlabel("fine-tuning epochs")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes[0].set_ylim(0, min(1.0, 1.1 * top) if top > 0 else 0.05)
        axes[0].set_ylabel("target-prompt images with trigger")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.02 + 0.04 * math.ceil(len(labels) / 3), 1, 1))
    return fig
