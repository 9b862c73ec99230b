"""Figures of the study, drawn from data computed elsewhere.

Every function takes arrays or DataFrames and returns a :class:`matplotlib.figure.Figure`; none computes
a metric or contains a number of the study. Figures are built without ``pyplot``, so a notebook shows a
returned figure exactly once and nothing accumulates in pyplot's figure registry; ``fig.savefig`` works
as usual. Colours come from the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies), each with one meaning across the book (:mod:`bibad_utils.plots.style`: the G groups, an
attack and shades of it for its ratios, the controls, references).

``style``: palette, rc settings, :func:`style` context, message figures. ``grids``: the image-grid
engine (:class:`GridLayout`, :func:`show_image`, :func:`draw_grid`) and every figure of images.
``charts``: the bar-with-interval engine (:func:`draw_interval_bars`) and every other chart.
"""

from bibad_utils.plots.charts import (bar_with_ci, draw_interval_bars, exposure_chart, g_stack, heatmap, loss_curves,
                                      ratio_curves, similarity_hist, threshold_sweep)
from bibad_utils.plots.grids import (GridLayout, class_grid, image_grid, pairs_figure, show_image, side_by_side_grids,
                                     zoomed_rows)
from bibad_utils.plots.trigger_views import trigger_patterns
from bibad_utils.plots.style import (ATTACK_COLORS, CONTROL_COLOR, DPI, G_COLORS, MAX_FIGURE_WIDTH_IN, PALETTE,
                                     REF_COLOR, attack_color, message_figure, panel_figure, shades, style)


__all__ = [
    "ATTACK_COLORS", "CONTROL_COLOR", "DPI", "G_COLORS", "MAX_FIGURE_WIDTH_IN", "PALETTE", "REF_COLOR", "attack_color",
    "bar_with_ci", "class_grid", "draw_interval_bars", "exposure_chart", "g_stack", "GridLayout", "heatmap",
    "image_grid", "loss_curves", "message_figure", "pairs_figure", "panel_figure", "ratio_curves",
    "shades", "show_image", "side_by_side_grids", "similarity_hist", "style", "threshold_sweep", "trigger_patterns",
    "zoomed_rows",
]
