"""The study's look: Okabe-Ito colours, seaborn whitegrid, and the helpers every figure shares.

Figures are built without ``pyplot``, so a notebook shows a returned figure exactly once and nothing
accumulates in pyplot's figure registry. :func:`style` is the context every figure of the package is
drawn in.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bibad_utils.base import ConfigError

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, green, purple, orange, sky, yellow, black.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
# Trigger-carrying groups in warm colours, trigger-free in cool/neutral ones.
G_COLORS = {"G1": "#D55E00", "G2": "#E69F00", "G3": "#999999", "G4": "#0072B2"}
REF_COLOR = "#000000"
DPI = 100
# One meaning per colour in the book's figures: warm G1 / G2 and a vermillion frame mean "the trigger is
# there"; black marks a reference (r_train, the paper, chance); an attack has one colour everywhere (green,
# reddish purple, sky blue: none of the G colours), its poisoning ratios are shades of it, light to dark;
# the controls are grey.
ATTACK_COLORS = {"badnets1": "#009E73", "badnets2": "#CC79A7", "wanet": "#56B4E9"}
OTHER_ATTACK_COLORS = ("#8C6D31", "#5E3C99", "#1B7837", "#B2182B")  # attacks registered later, in order
CONTROL_COLOR = "#777777"
FRAME_COLOR = "#D55E00"


def attack_color(kind: str, index: int = 0) -> str:
    """The colour of attack ``kind`` in every figure (a control's grey for ``clean`` / ``relabel``; an attack
    without a colour of its own takes the ``index``-th of :data:`OTHER_ATTACK_COLORS`)."""
    if kind in ("clean", "relabel", "control"):
        return CONTROL_COLOR
    return ATTACK_COLORS.get(kind, OTHER_ATTACK_COLORS[index % len(OTHER_ATTACK_COLORS)])


def shades(color: str, n: int) -> list[str]:
    """``n`` shades of ``color`` from light (mixed with white) to the colour itself, e.g. one per poisoning
    ratio of an attack, smallest p lightest."""
    rgb = mpl.colors.to_rgb(color)
    mix = [0.6 + 0.4 * k / max(n - 1, 1) for k in range(n)] if n > 1 else [1.0]
    return [mpl.colors.to_hex(tuple(1 - m * (1 - c) for c in rgb)) for m in mix]


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


@contextmanager
def style():
    """Context in which a figure of the study is built (seaborn whitegrid, notebook context, Okabe-Ito
    colours as matplotlib rc settings, restored on exit)."""
    with mpl.rc_context(_rc()):
        yield


def message_figure(text: str, title: str | None = None) -> Figure:
    """A small figure that says ``text`` (under ``title``), shown where there is nothing to draw."""
    import textwrap

    lines = textwrap.wrap(str(text), 80) or [""]
    fig = Figure(figsize=(3.0 if len(lines) == 1 and len(lines[0]) <= 40 else 7.0, 1.0 + 0.18 * len(lines)), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.text(0.5, 0.5 if title is None else 0.4, "\n".join(lines), ha="center", va="center", fontsize=9, color="#555555")
    if title is not None:
        ax.text(0.5, 0.8, title, ha="center", va="center", fontsize=10, weight="bold")
    return fig


def require_columns(df, columns, name="df"):
    """Raise a ConfigError unless ``df`` is a DataFrame with every column of ``columns`` (None entries
    are skipped)."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise ConfigError(name, f"columns {list(df.columns)}", f"a DataFrame with columns {missing}")


# The widest figure the book shows at its text column without shrinking labels below a readable size: at
# DPI, a 10-inch figure shown in a 740 px column keeps a 7-pt label at about 7 px.
MAX_FIGURE_WIDTH_IN = 10.0


def panel_figure(n: int, panel_w: float, panel_h: float, extra_w: float = 0.6, extra_h: float = 0.0,
                 **kwargs) -> tuple[Figure, list, int]:
    """A figure of ``n`` panels of ``panel_w`` x ``panel_h`` inches (plus ``extra_w`` x ``extra_h`` for labels
    and legends) that stays within :data:`MAX_FIGURE_WIDTH_IN`: as many panels a row as fit, at least one (a
    single panel wider than that is narrowed). Returns ``(fig, axes, ncols)``: the ``n`` axes row by row
    (``kwargs`` go to ``fig.subplots``, e.g. ``sharey``; the unused places of the last row are hidden)."""
    if n < 1:
        raise ConfigError("panel_figure(n)", n, "at least one panel")
    ncols = max(1, min(n, int((MAX_FIGURE_WIDTH_IN - extra_w) // panel_w)))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(min(MAX_FIGURE_WIDTH_IN, ncols * panel_w + extra_w), nrows * panel_h + extra_h), dpi=DPI)
    grid = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()
    for ax in grid[n:]:
        ax.set_visible(False)
    return fig, list(grid[:n]), ncols
