"""Figures of the study, drawn from data computed elsewhere.

Every function takes arrays or DataFrames and returns a :class:`matplotlib.figure.Figure`; none computes
a metric or contains a number of the study. Figures are built without ``pyplot``, so a notebook shows a
returned figure exactly once and nothing accumulates in pyplot's figure registry; ``fig.savefig`` works
as usual. Colours come from the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); :func:`set_style` applies the same look to a notebook's own plots.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bibad_utils.config import ConfigError

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, green, purple, orange, sky, yellow, black.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
# Trigger-carrying groups in warm colours, trigger-free in cool/neutral ones.
G_COLORS = {"G1": "#D55E00", "G2": "#E69F00", "G3": "#999999", "G4": "#0072B2"}
REF_COLOR = "#000000"
DPI = 100


def _rc() -> dict:
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.9))
    rc.update({
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "savefig.bbox": "tight",
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "legend.frameon": False,
        "image.interpolation": "nearest",
    })
    return rc


def set_style() -> None:
    """Apply the study's look (seaborn whitegrid, notebook context, Okabe-Ito colours) to matplotlib's
    global settings, for plots that a notebook draws itself."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9, palette=PALETTE)
    mpl.rcParams.update(_rc())


@contextmanager
def _style():
    with mpl.rc_context(_rc()):
        yield


def _message_figure(text: str, title: str | None = None) -> Figure:
    fig = Figure(figsize=(3.0, 1.2), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.text(0.5, 0.5 if title is None else 0.4, text, ha="center", va="center", fontsize=9, color="#555555")
    if title is not None:
        ax.text(0.5, 0.8, title, ha="center", va="center", fontsize=10, weight="bold")
    return fig


# ---------------------------------------------------------------------------------------------------
# Image grids


def _check_uint8_images(images, name="images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(name, f"{images.dtype} array of shape {images.shape}",
                          "uint8 [N, H, W, 3] (or [N, H, W, 1]) images")
    return images


def _cell_pixels(h: int, w: int, scale: int | None) -> tuple[int, int, int]:
    """(integer upscaling factor, displayed height, displayed width) in screen pixels."""
    if scale is None:
        # Small images are blown up by an integer factor to about 96 px; large ones are shown at 128 px.
        scale = max(1, math.ceil(96 / max(h, w)))
        if max(h, w) >= 96:
            ratio = 128 / max(h, w)
            return 1, round(h * ratio), round(w * ratio)
    if not (isinstance(scale, (int, np.integer)) and scale >= 1):
        raise ConfigError("scale", scale, "an integer >= 1, or None for automatic")
    return int(scale), h * int(scale), w * int(scale)


class _Grid:
    """Geometry (inches) of one image grid: cells of ``cell_h`` x ``cell_w`` with optional titles."""

    gap = 0.06
    title_h = 0.22
    suptitle_h = 0.32

    def __init__(self, n, nrow, cell_h_px, cell_w_px, has_titles, has_title, row_labels=False):
        self.ncol = max(1, min(nrow, n))
        self.nrows = max(1, math.ceil(n / self.ncol))
        self.cw, self.ch = cell_w_px / DPI, cell_h_px / DPI
        self.th = self.title_h if has_titles else 0.0
        self.top = self.suptitle_h if has_title else 0.0
        self.left = 0.3 if row_labels else 0.0
        self.width = self.left + self.ncol * (self.cw + self.gap) + self.gap
        self.height = self.top + self.nrows * (self.ch + self.th + self.gap) + self.gap

    def rect(self, k, total_w, total_h):
        """Axes rectangle of cell k, in fractions of a container of total_w x total_h inches."""
        r, c = divmod(k, self.ncol)
        x = self.left + self.gap + c * (self.cw + self.gap)
        y_top = self.top + self.gap + r * (self.ch + self.th + self.gap) + self.th
        return (x / total_w, 1 - (y_top + self.ch) / total_h, self.cw / total_w, self.ch / total_h)


def _show(ax, image, scale, border_color=None, border_width=3.0):
    img = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1) if scale > 1 else image
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(border_color is not None)
        if border_color is not None:
            spine.set_color(border_color)
            spine.set_linewidth(border_width)


def _draw_grid(container, total_w, total_h, images, nrow, titles, title, scale, border_colors):
    n, h, w = images.shape[:3]
    up, cell_h, cell_w = _cell_pixels(h, w, scale)
    grid = _Grid(n, nrow, cell_h, cell_w, titles is not None, title is not None)
    axes = []
    for k in range(n):
        ax = container.add_axes(grid.rect(k, total_w, total_h))
        _show(ax, images[k], up, None if border_colors is None else border_colors[k])
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8, fontweight="normal", pad=2)
        axes.append(ax)
    if title is not None:
        container.text(0.5, 1 - grid.suptitle_h * 0.5 / total_h, title, ha="center", va="center",
                       fontsize=10, weight="bold")
    return axes


def _grid_args(images, nrow, titles, border_colors, name="images"):
    images = _check_uint8_images(images, name)
    if not (isinstance(nrow, (int, np.integer)) and nrow >= 1):
        raise ConfigError("nrow", nrow, "an integer >= 1 (images per row)")
    n = len(images)
    if titles is not None and len(titles) != n:
        raise ConfigError("titles", f"{len(titles)} titles", f"one per image ({n})")
    if border_colors is not None and len(border_colors) != n:
        raise ConfigError("border_colors", f"{len(border_colors)} colours", f"one per image ({n}), None for none")
    return images


def image_grid(images, nrow: int = 8, titles=None, title: str | None = None, scale: int | None = None,
               border_colors=None) -> Figure:
    """A grid of images, ``nrow`` images per row, one axes per image, in reading order.

    images: uint8 ``[N, H, W, 3]`` (or ``[N, H, W, 1]``). titles: N strings shown above the images.
    title: one heading for the grid. scale: integer nearest-neighbour upscaling (None: small images are
    blown up to about 96 px so 16-32 px images stay legible and pixel-exact; images of 96 px or more are
    shown at 128 px). border_colors: N matplotlib colours or None (no frame), e.g. to mark images where the
    trigger detector fired. With N = 0 the figure says so instead of failing.
    """
    images = _grid_args(images, nrow, titles, border_colors)
    if len(images) == 0:
        return _message_figure("no images", title)
    with _style():
        up, ch, cw = _cell_pixels(*images.shape[1:3], scale)
        grid = _Grid(len(images), int(nrow), ch, cw, titles is not None, title is not None)
        fig = Figure(figsize=(grid.width, grid.height), dpi=DPI)
        _draw_grid(fig, grid.width, grid.height, images, int(nrow), titles, title, scale, border_colors)
    return fig


def side_by_side_grids(grids: dict, nrow: int = 4, scale: int | None = None, titles: dict | None = None,
                       border_colors: dict | None = None) -> Figure:
    """Several image grids next to each other, one panel per entry of ``grids`` (name -> uint8
    ``[N_i, H, W, 3]`` images, headed by its name), ``nrow`` images per row in each panel; e.g. clean vs
    poisoned training images, or generations of two models. titles / border_colors: optional dicts
    name -> per-image titles / colours (see :func:`image_grid`). An empty panel says "no images".
    """
    if not isinstance(grids, dict) or not grids:
        raise ConfigError("grids", type(grids).__name__, "a non-empty dict name -> uint8 [N, H, W, 3] images")
    titles, border_colors = titles or {}, border_colors or {}
    checked = {name: _grid_args(imgs, nrow, titles.get(name), border_colors.get(name), f"grids[{name!r}]")
               for name, imgs in grids.items()}
    with _style():
        geoms = {}
        for name, imgs in checked.items():
            if len(imgs):
                _, ch, cw = _cell_pixels(*imgs.shape[1:3], scale)
                geoms[name] = _Grid(len(imgs), int(nrow), ch, cw, name in titles, True)
            else:
                geoms[name] = None
        widths = [g.width if g else 1.5 for g in geoms.values()]
        height = max(g.height if g else 1.0 for g in geoms.values())
        fig = Figure(figsize=(sum(widths) + 0.15 * (len(widths) - 1), height), dpi=DPI)
        subfigs = np.atleast_1d(fig.subfigures(1, len(checked), width_ratios=widths, wspace=0.15 / max(widths)))
        for sub, (name, imgs), wid in zip(subfigs, checked.items(), widths):
            if len(imgs) == 0:
                ax = sub.add_axes((0, 0, 1, 1))
                ax.set_axis_off()
                ax.text(0.5, 1 - _Grid.suptitle_h * 0.5 / height, str(name), ha="center", va="center",
                        fontsize=10, weight="bold")
                ax.text(0.5, 0.5, "no images", ha="center", va="center", fontsize=9, color="#555555")
                continue
            _draw_grid(sub, wid, height, imgs, int(nrow), titles.get(name), str(name), scale,
                       border_colors.get(name))
    return fig


def pairs_figure(gen, train, sims, scale: int | None = None, gen_label: str = "generated",
                 train_label: str = "nearest training", title: str | None = None) -> Figure:
    """Replication pairs: generated images (top row) above their nearest training images (bottom row),
    each column headed by its cosine similarity.

    gen, train: uint8 ``[K, H, W, 3]`` (same K; the sizes may differ); sims: float ``[K]`` similarities (e.g. from
    ``memorization.top_replicated_pairs``). With K = 0 the figure says so.
    """
    gen = _check_uint8_images(gen, "gen")
    train = _check_uint8_images(train, "train")
    sims = np.asarray(sims, dtype=np.float64).reshape(-1)
    if len(train) != len(gen) or len(sims) != len(gen):
        raise ConfigError("train, sims", f"{len(train)} images, {len(sims)} similarities",
                          f"one per generated image ({len(gen)})")
    if len(gen) == 0:
        return _message_figure("no pairs", title)
    with _style():
        up, ch, cw = _cell_pixels(*gen.shape[1:3], scale)
        up_train = _cell_pixels(*train.shape[1:3], scale)[0]  # the axes fit either size into one cell
        k = len(gen)
        grid = _Grid(2 * k, k, ch, cw, True, title is not None, row_labels=True)
        fig = Figure(figsize=(grid.width, grid.height), dpi=DPI)
        for j in range(k):
            top = fig.add_axes(grid.rect(j, grid.width, grid.height))
            _show(top, gen[j], up)
            top.set_title(f"cos {sims[j]:.3f}", fontsize=8, fontweight="normal", pad=2)
            bottom = fig.add_axes(grid.rect(k + j, grid.width, grid.height))
            _show(bottom, train[j], up_train)
            if j == 0:
                top.set_ylabel(gen_label, fontsize=8)
                bottom.set_ylabel(train_label, fontsize=8)
        if title is not None:
            fig.suptitle(title, y=1 - grid.suptitle_h * 0.5 / grid.height, va="center", fontsize=10,
                         weight="bold")
    return fig


# ---------------------------------------------------------------------------------------------------
# Bars and curves


def _require_columns(df, columns, name="df"):
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise ConfigError(name, f"columns {list(df.columns)}", f"a DataFrame with columns {missing}")


def bar_with_ci(df: pd.DataFrame, x: str, y: str, lo: str | None = None, hi: str | None = None,
                hue: str | None = None, ref=None, ref_label: str | None = None, ylabel: str | None = None,
                title: str | None = None, ylim=None) -> Figure:
    """Bars of ``df[y]`` per category ``df[x]`` (grouped by ``df[hue]`` if given), with error bars from
    the interval columns ``lo`` / ``hi`` (absolute bounds, e.g. Wilson 95 % intervals from
    ``metrics.wilson_interval``), one row of ``df`` per bar, categories in order of appearance.

    ref: a column name (a reference value per bar, drawn as a black tick across it, e.g. r_train) or a
    number (a horizontal line); ref_label names it in the legend (default: the column name or "reference").
    """
    _require_columns(df, [x, y, lo, hi, hue] + ([ref] if isinstance(ref, str) else []))
    if (lo is None) != (hi is None):
        raise ConfigError("lo, hi", (lo, hi), "both interval columns or neither")
    with _style():
        fig = Figure(figsize=(max(4.0, 0.9 * df[x].nunique() * max(1, df[hue].nunique() if hue else 1) ** 0.5
                                  + 1.5), 3.4), dpi=DPI)
        ax = fig.add_subplot()
        cats = list(pd.unique(df[x]))
        hues = list(pd.unique(df[hue])) if hue else [None]
        width = 0.8 / len(hues)
        for h_i, h in enumerate(hues):
            rows = df if h is None else df[df[hue] == h]
            pos = np.array([cats.index(v) for v in rows[x]]) - 0.4 + width * (h_i + 0.5)
            vals = rows[y].to_numpy(dtype=float)
            color = PALETTE[h_i % len(PALETTE)]
            ax.bar(pos, vals, width=width * 0.92, color=color, label=None if h is None else str(h))
            if lo is not None:
                err = np.vstack([vals - rows[lo].to_numpy(dtype=float), rows[hi].to_numpy(dtype=float) - vals])
                ax.errorbar(pos, vals, yerr=np.clip(err, 0, None), fmt="none", ecolor="#333333",
                            elinewidth=1.0, capsize=2.5)
            if isinstance(ref, str):
                ax.hlines(rows[ref].to_numpy(dtype=float), pos - width * 0.46, pos + width * 0.46,
                          colors=REF_COLOR, linewidth=2.0, label=(ref_label or ref) if h_i == 0 else None)
        if ref is not None and not isinstance(ref, str):
            ax.axhline(float(ref), color=REF_COLOR, linestyle="--", linewidth=1.2, label=ref_label or "reference")
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel or y)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if title:
            ax.set_title(title)
        if hue or ref is not None:
            ax.legend(title=hue, fontsize=8, title_fontsize=8, loc="best")
        fig.tight_layout()
    return fig


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction, so the first points are not pulled to 0."""
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for k, v in enumerate(values):
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[k] = acc / weight
    return out


def loss_curves(curves: dict, smoothing: float = 0.9, logy: bool = True, title: str | None = None,
                ylabel: str = "training loss (MSE on noise)") -> Figure:
    """Training-loss curves, one line per entry of ``curves`` (name -> sequence of (step, loss)).

    The raw losses are drawn faintly; over them a bias-corrected exponential moving average with weight
    ``smoothing`` in [0, 1) (0: no smoothing). logy: logarithmic loss axis. Empty curves are skipped.
    """
    if not isinstance(curves, dict):
        raise ConfigError("curves", type(curves).__name__, "a dict name -> list of (step, loss)")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ConfigError("smoothing", smoothing, "a number in [0, 1)")
    with _style():
        fig = Figure(figsize=(6.0, 3.4), dpi=DPI)
        ax = fig.add_subplot()
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
        if logy and drawn:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "no loss values", ha="center", va="center", transform=ax.transAxes, color="#555555")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        if drawn:
            ax.legend(fontsize=8, ncol=max(1, math.ceil(drawn / 6)))
        fig.tight_layout()
    return fig


def g_stack(df: pd.DataFrame, x: str = "label", groups=("G1", "G2", "G3", "G4"), facet: str | None = None,
            ylabel: str = "fraction of target-prompt generations", title: str | None = None) -> Figure:
    """Stacked bars of the G1-G4 fractions per row of ``df`` (columns ``groups``, fractions summing to 1;
    bars labelled by ``df[x]`` in order of appearance), one panel per value of ``df[facet]`` if given.
    G1 (trigger, wrong content) and G2 (trigger, right content) sit at the bottom in warm colours, so
    their sum, the fraction of generations with a trigger, reads off directly.
    """
    groups = list(groups)
    _require_columns(df, [x, facet] + groups)
    panels = list(pd.unique(df[facet])) if facet else [None]
    with _style():
        n_bars = max(len(df[df[facet] == p]) if facet else len(df) for p in panels)
        fig = Figure(figsize=(max(3.2, 0.55 * n_bars + 1.2) * len(panels) + 1.2, 3.6), dpi=DPI)
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
        for ax, p in zip(axes, panels):
            rows = df if p is None else df[df[facet] == p]
            bottom = np.zeros(len(rows))
            for k, g in enumerate(groups):
                vals = rows[g].to_numpy(dtype=float)
                ax.bar(np.arange(len(rows)), vals, bottom=bottom, width=0.75,
                       color=G_COLORS.get(g, PALETTE[k % len(PALETTE)]), label=g)
                bottom += vals
            ax.set_xticks(np.arange(len(rows)), [str(v) for v in rows[x]], rotation=45 if len(rows) > 6 else 0,
                          ha="right" if len(rows) > 6 else "center")
            ax.set_ylim(0, 1)
            ax.set_xlabel(x)
            if p is not None:
                ax.set_title(f"{facet} = {p}")
        axes[0].set_ylabel(ylabel)
        handles = [Patch(color=G_COLORS.get(g, PALETTE[k % len(PALETTE)]), label=g) for k, g in enumerate(groups)]
        fig.legend(handles=handles[::-1], loc="center right", fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10, weight="bold")
        fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    return fig


def paper_vs_ours(df: pd.DataFrame, label: str = "setting", paper: str = "paper", ours: str = "ours",
                  lo: str | None = None, hi: str | None = None, facet: str | None = "metric",
                  title: str | None = None) -> Figure:
    """The paper's number next to ours for each row of ``df``: a dot plot with one line per ``df[label]``,
    the paper's value as an open diamond and ours as a filled dot with its interval (``lo``/``hi``
    columns, optional). One panel per value of ``df[facet]`` (e.g. metric), each with its own scale, since
    ASR in % and AUROC do not share an axis. Missing values (NaN) are simply not drawn.
    """
    _require_columns(df, [label, paper, ours, lo, hi] + ([facet] if facet and facet in df.columns else []))
    if (lo is None) != (hi is None):
        raise ConfigError("lo, hi", (lo, hi), "both interval columns or neither")
    use_facet = facet is not None and facet in df.columns
    panels = list(pd.unique(df[facet])) if use_facet else [None]
    with _style():
        n_rows = max(len(df[df[facet] == p]) if use_facet else len(df) for p in panels)
        fig = Figure(figsize=(3.6 * len(panels) + 1.8, 0.32 * n_rows + 1.3), dpi=DPI)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, p in zip(axes, panels):
            rows = df if p is None else df[df[facet] == p]
            ypos = np.arange(len(rows))[::-1]
            ours_v = rows[ours].to_numpy(dtype=float)
            if lo is not None:
                ax.hlines(ypos, rows[lo].to_numpy(dtype=float), rows[hi].to_numpy(dtype=float),
                          color=PALETTE[0], linewidth=1.5)
            ax.plot(rows[paper].to_numpy(dtype=float), ypos, "D", mfc="none", mec=PALETTE[1], mew=1.5, ms=6,
                    linestyle="none")
            ax.plot(ours_v, ypos, "o", color=PALETTE[0], ms=5, linestyle="none")
            ax.set_yticks(ypos, [str(v) for v in rows[label]])
            ax.set_ylim(-0.7, len(rows) - 0.3)
            if p is not None:
                ax.set_title(str(p))
        handles = [Line2D([], [], marker="D", mfc="none", mec=PALETTE[1], mew=1.5, linestyle="none", label=paper),
                   Line2D([], [], marker="o", color=PALETTE[0], linestyle="-" if lo else "none", label=ours)]
        fig.legend(handles=handles, loc="upper right", fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10, weight="bold")
        fig.tight_layout(rect=(0, 0, 1 - 1.0 / fig.get_figwidth(), 1))
    return fig


def similarity_hist(sims: dict, threshold: float | None = None, bins: int = 40,
                    xlabel: str = "cosine similarity to the nearest training image",
                    title: str | None = None) -> Figure:
    """Overlaid histograms (as densities) of similarities, one per entry of ``sims`` (name -> float
    ``[n]``), e.g. nearest-training similarities of a clean and a poisoned model's generations; an
    optional vertical line marks the replication ``threshold``."""
    if not isinstance(sims, dict) or not sims:
        raise ConfigError("sims", type(sims).__name__, "a non-empty dict name -> similarities")
    with _style():
        fig = Figure(figsize=(5.5, 3.2), dpi=DPI)
        ax = fig.add_subplot()
        values = [np.asarray(v, dtype=float).reshape(-1) for v in sims.values()]
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if threshold is not None:
            lo, hi = min(lo, threshold), max(hi, threshold)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
        for k, (name, v) in enumerate(zip(sims, values)):
            if v.size:
                ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.6,
                        color=PALETTE[k % len(PALETTE)], label=f"{name} (n={v.size})")
        if threshold is not None:
            ax.axvline(threshold, color=REF_COLOR, linestyle="--", linewidth=1.2, label=f"threshold {threshold:.3g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return fig


def threshold_sweep(sweep: pd.DataFrame, chosen: float | None = None, title: str | None = None) -> Figure:
    """Precision, recall and F1 of duplicate detection against the threshold (a DataFrame with columns
    threshold, precision, recall, f1, as from ``memorization.choose_threshold``). The x axis is
    1 - threshold on a log scale, so thresholds close to 1 spread out; ``chosen`` is marked."""
    _require_columns(sweep, ["threshold", "precision", "recall", "f1"], "sweep")
    with _style():
        fig = Figure(figsize=(5.5, 3.2), dpi=DPI)
        ax = fig.add_subplot()
        dist = np.clip(1.0 - sweep["threshold"].to_numpy(dtype=float), 1e-7, None)
        for k, col in enumerate(("precision", "recall", "f1")):
            ax.plot(dist, sweep[col].to_numpy(dtype=float), marker=".", color=PALETTE[k], label=col)
        if chosen is not None:
            ax.axvline(max(1.0 - chosen, 1e-7), color=REF_COLOR, linestyle="--", linewidth=1.2,
                       label=f"chosen {chosen:.5g}")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("1 - cosine threshold (right: stricter)")
        ax.set_ylabel("pairwise score")
        ax.set_ylim(-0.02, 1.02)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return fig


__all__ = [
    "G_COLORS", "PALETTE", "bar_with_ci", "g_stack", "image_grid", "loss_curves", "pairs_figure",
    "paper_vs_ours", "set_style", "side_by_side_grids", "similarity_hist", "threshold_sweep",
]


# ---------------------------------------------------------------------------------------------------
# Training-side figures: trigger close-ups, trigger patterns, per-class grids, heatmaps, ratio curves


def zoomed_rows(rows: dict, box, scale: int | None = None, title: str | None = None,
                frame_color: str = PALETTE[1]) -> Figure:
    """Rows of images, each image followed by a close-up of one square region.

    rows: name -> uint8 ``[n, H, W, 3]`` (the same n and size in every row; one row per name, labelled on
    the left), e.g. the same clean images and their triggered versions. box: ``(top, left, size)`` in
    pixels, the region shown enlarged (framed on the image in ``frame_color``); the close-up has the
    image's display size, so a 5-pixel patch fills it. scale: as in :func:`image_grid`.
    """
    if not isinstance(rows, dict) or not rows:
        raise ConfigError("rows", type(rows).__name__, "a non-empty dict name -> uint8 [n, H, W, 3] images")
    checked = {name: _check_uint8_images(imgs, f"rows[{name!r}]") for name, imgs in rows.items()}
    shapes = {imgs.shape for imgs in checked.values()}
    if len(shapes) != 1:
        raise ConfigError("rows", sorted(shapes), "rows of the same number and size of images")
    n, h, w = next(iter(shapes))[:3]
    top, left, size = (int(v) for v in box)
    if not (size >= 1 and 0 <= top and top + size <= h and 0 <= left and left + size <= w):
        raise ConfigError("box", box, f"(top, left, size) of a square inside the {h}x{w} images")
    if n == 0:
        return _message_figure("no images", title)
    from matplotlib.patches import Rectangle

    with _style():
        up, ch, cw = _cell_pixels(h, w, scale)
        zoom_up = max(1, round(ch / size))
        gap, pair_gap = _Grid.gap, 0.14
        cell_w, cell_h = cw / DPI, ch / DPI
        label_w = 0.15 + 0.075 * max(len(str(k)) for k in checked)
        head = _Grid.title_h + (_Grid.suptitle_h if title else 0.0)
        width = label_w + n * (2 * cell_w + gap + pair_gap)
        height = head + len(checked) * (cell_h + gap) + gap
        fig = Figure(figsize=(width, height), dpi=DPI)
        for r, (name, imgs) in enumerate(checked.items()):
            y0 = head + r * (cell_h + gap)
            fig.text((label_w - 0.08) / width, 1 - (y0 + cell_h / 2) / height, str(name), ha="right",
                     va="center", fontsize=8)
            for j in range(n):
                x0 = label_w + j * (2 * cell_w + gap + pair_gap)
                ax = fig.add_axes((x0 / width, 1 - (y0 + cell_h) / height, cell_w / width, cell_h / height))
                _show(ax, imgs[j], up)
                ax.add_patch(Rectangle((left * up - 0.5, top * up - 0.5), size * up, size * up, fill=False,
                                       edgecolor=frame_color, linewidth=1.2))
                zx = (x0 + cell_w + gap) / width
                zax = fig.add_axes((zx, 1 - (y0 + cell_h) / height, cell_w / width, cell_h / height))
                _show(zax, imgs[j, top:top + size, left:left + size], zoom_up, frame_color, 1.2)
                if r == 0:
                    ax.set_title(f"image {j + 1}", fontsize=8, fontweight="normal", pad=2)
                    zax.set_title("close-up", fontsize=8, fontweight="normal", pad=2)
        if title:
            fig.text(0.5, 1 - _Grid.suptitle_h * 0.5 / height, title, ha="center", va="center", fontsize=10,
                     weight="bold")
    return fig


def trigger_patterns(patch, pattern, displacement, titles=None) -> Figure:
    """The three trigger kinds themselves, one panel each.

    patch: bool ``[s, s]``, True where the BadNets-1 patch is white (drawn pixel by pixel on a grid);
    pattern: uint8 ``[S, S, 3]``, the BadNets-2 blend pattern; displacement: float ``[S, S, 2]``, the
    WaNet warp's per-pixel displacement ``(dx, dy)`` in pixels, drawn as arrows coloured by length (the
    arrows are stretched so the longest spans about one pixel). titles: three panel titles.
    """
    patch = np.asarray(patch)
    if patch.ndim != 2 or patch.shape[0] != patch.shape[1]:
        raise ConfigError("patch", f"array of shape {patch.shape}", "a square bool [s, s] mask")
    pattern = _check_uint8_images(np.asarray(pattern)[None], "pattern")[0]
    disp = np.asarray(displacement, dtype=np.float64)
    if disp.ndim != 3 or disp.shape[-1] != 2:
        raise ConfigError("displacement", f"array of shape {disp.shape}", "float [S, S, 2] (dx, dy) in pixels")
    titles = list(titles) if titles is not None else ["BadNets-1 patch", "BadNets-2 pattern", "WaNet warp"]
    if len(titles) != 3:
        raise ConfigError("titles", titles, "three panel titles")
    with _style():
        fig = Figure(figsize=(9.6, 3.4), dpi=DPI)
        axes = fig.subplots(1, 3)
        s = patch.shape[0]
        axes[0].imshow(patch.astype(float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0].set_xticks(np.arange(-0.5, s, 1), minor=True)
        axes[0].set_yticks(np.arange(-0.5, s, 1), minor=True)
        axes[0].grid(which="minor", color=PALETTE[5], linewidth=0.6)
        axes[0].grid(which="major", visible=False)
        axes[0].tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        axes[1].imshow(pattern, interpolation="nearest")
        axes[1].grid(False)
        axes[1].set_xticks([])
        axes[1].set_yticks([])
        size = disp.shape[0]
        length = np.hypot(disp[..., 0], disp[..., 1])
        stretch = 0.9 / length.max() if length.max() > 0 else 1.0
        yy, xx = np.mgrid[0:size, 0:size]
        q = axes[2].quiver(xx, yy, disp[..., 0] * stretch, disp[..., 1] * stretch, length, angles="xy",
                           scale_units="xy", scale=1.0, cmap="viridis", width=0.006)
        axes[2].set_xlim(-1, size)
        axes[2].set_ylim(size, -1)
        axes[2].set_aspect("equal")
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        fig.colorbar(q, ax=axes[2], fraction=0.046, pad=0.03, label="displacement (px)")
        for ax, t in zip(axes, titles):
            ax.set_title(str(t), fontsize=9)
        fig.tight_layout()
    return fig


def class_grid(images, labels, class_names, per_class: int = 8, border_colors=None, title: str | None = None,
               scale: int | None = None) -> Figure:
    """One row per class: the first ``per_class`` images of each class (in array order), the class name
    on the left; a class without images says "none".

    images: uint8 ``[N, H, W, 3]``; labels: int ``[N]`` in ``[0, len(class_names))``; border_colors: N
    colours or None entries (no frame), e.g. where the trigger detector fired; scale: as in
    :func:`image_grid`.
    """
    images = _check_uint8_images(images)
    labels = np.asarray(labels).reshape(-1)
    names = [str(c) for c in class_names]
    if len(labels) != len(images):
        raise ConfigError("labels", f"{len(labels)} labels", f"one per image ({len(images)})")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ConfigError("labels", f"range [{labels.min()}, {labels.max()}]", f"class indices in [0, {len(names)})")
    if border_colors is not None and len(border_colors) != len(images):
        raise ConfigError("border_colors", f"{len(border_colors)} colours", f"one per image ({len(images)}), None for none")
    if not (isinstance(per_class, (int, np.integer)) and per_class >= 1):
        raise ConfigError("per_class", per_class, "an integer >= 1 (images per class row)")
    if len(images) == 0 or not names:
        return _message_figure("no images", title)
    with _style():
        up, ch, cw = _cell_pixels(*images.shape[1:3], scale)
        gap, cell_w, cell_h = _Grid.gap, cw / DPI, ch / DPI
        label_w = 0.15 + 0.075 * max(len(n) for n in names)
        head = _Grid.suptitle_h if title else 0.0
        width = label_w + per_class * (cell_w + gap) + gap
        height = head + len(names) * (cell_h + gap) + gap
        fig = Figure(figsize=(width, height), dpi=DPI)
        for r, name in enumerate(names):
            y0 = head + gap + r * (cell_h + gap)
            yc = 1 - (y0 + cell_h / 2) / height
            fig.text((label_w - 0.08) / width, yc, name, ha="right", va="center", fontsize=8)
            members = np.flatnonzero(labels == r)[:per_class]
            if len(members) == 0:
                fig.text((label_w + gap) / width, yc, "none", ha="left", va="center", fontsize=8, color="#555555")
            for j, i in enumerate(members):
                rect = ((label_w + gap + j * (cell_w + gap)) / width, 1 - (y0 + cell_h) / height,
                        cell_w / width, cell_h / height)
                _show(fig.add_axes(rect), images[i], up, None if border_colors is None else border_colors[i])
        if title:
            fig.text(0.5, 1 - head * 0.5 / height, title, ha="center", va="center", fontsize=10, weight="bold")
    return fig


def heatmap(df: pd.DataFrame, fmt: str = ".0%", vmin: float | None = 0.0, vmax: float | None = 1.0,
            cmap: str = "viridis", title: str | None = None, cbar_label: str | None = None) -> Figure:
    """An annotated heatmap of a numeric DataFrame (rows x columns as in the table; NaN cells blank).

    fmt: format of the annotations (``".0%"`` for fractions); vmin / vmax: colour range (None: the
    data's); cmap: a perceptually uniform map by default (viridis reads in grey and with colour-vision
    deficiencies).
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise ConfigError("df", type(df).__name__, "a non-empty numeric pandas DataFrame")
    values = df.astype(float)
    with _style():
        row_w = 0.075 * max(len(str(i)) for i in values.index)
        fig = Figure(figsize=(0.62 * values.shape[1] + 2.0 + row_w, 0.36 * values.shape[0] + 1.6), dpi=DPI)
        ax = fig.add_subplot()
        sns.heatmap(values, ax=ax, annot=True, fmt=fmt, vmin=vmin, vmax=vmax, cmap=cmap, linewidths=0.5,
                    annot_kws={"fontsize": 7}, cbar_kws={"label": cbar_label} if cbar_label else None)
        ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(c) for c in values.columns], rotation=45,
                      ha="right")
        ax.set_yticks(np.arange(values.shape[0]) + 0.5, [str(i) for i in values.index], rotation=0)
        ax.set_xlabel(values.columns.name or "")
        ax.set_ylabel(values.index.name or "")
        if title:
            ax.set_title(title)
        fig.tight_layout()
    return fig


def ratio_curves(curves: dict, points: dict | None = None, xlabel: str = "poisoning ratio p",
                 ylabel: str = "ratio", title: str | None = None, percent: bool = True) -> Figure:
    """Lines and markers of ratios against a ratio, e.g. r_train against p.

    curves: name -> (x [n], y [n]) drawn as lines; points: name -> (x [k], y [k]) or (x, y, curve name)
    drawn as markers in the colour of the named curve (by default the curve of the same name, which then
    has no legend entry of its own); a points name containing "paper" is drawn as open diamonds, others
    as filled dots. percent: label both axes in percent (values stay fractions).
    """
    if not isinstance(curves, dict):
        raise ConfigError("curves", type(curves).__name__, "a dict name -> (x, y)")
    points = points or {}
    from matplotlib.ticker import PercentFormatter

    with _style():
        fig = Figure(figsize=(5.6, 3.6), dpi=DPI)
        ax = fig.add_subplot()
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
        if percent:
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xlim(left=0)
        ax.set_ylim(0, None)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
    return fig


__all__ += ["class_grid", "heatmap", "ratio_curves", "trigger_patterns", "zoomed_rows"]
