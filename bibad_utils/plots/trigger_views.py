"""The trigger kinds drawn as each draws itself (``Trigger.view()``): a patch pixel by pixel, a picture, or a
warp field as arrows; one panel per kind, wrapped into rows at the book's width."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from bibad_utils.base import ConfigError
from bibad_utils.plots.grids import check_uint8_images
from bibad_utils.plots.style import PALETTE, panel_figure, style


def _draw_mask(ax, mask) -> None:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ConfigError("view data", f"array of shape {mask.shape}", "a square bool [s, s] mask")
    s = mask.shape[0]
    ax.imshow(mask.astype(float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, s, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, s, 1), minor=True)
    ax.grid(which="minor", color=PALETTE[5], linewidth=0.6)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)


def _draw_field(fig, ax, disp) -> None:
    disp = np.asarray(disp, dtype=np.float64)
    if disp.ndim != 3 or disp.shape[-1] != 2:
        raise ConfigError("view data", f"array of shape {disp.shape}", "float [S, S, 2] (dx, dy) in pixels")
    size = disp.shape[0]
    length = np.hypot(disp[..., 0], disp[..., 1])
    stretch = 0.9 / length.max() if length.max() > 0 else 1.0
    yy, xx = np.mgrid[0:size, 0:size]
    q = ax.quiver(xx, yy, disp[..., 0] * stretch, disp[..., 1] * stretch, length, angles="xy",
                  scale_units="xy", scale=1.0, cmap="viridis", width=0.006)
    ax.set_xlim(-1, size)
    ax.set_ylim(size, -1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(q, ax=ax, fraction=0.046, pad=0.03, label="displacement (px)")


TRIGGER_VIEW_STYLES = ("mask", "image", "field")


def trigger_patterns(views) -> Figure:
    """The trigger kinds themselves, one panel each, as each kind draws itself (``Trigger.view()``): a list of
    ``{"style", "data", "title"}`` where style "mask" is a bool ``[s, s]`` patch drawn pixel by pixel on a grid,
    "image" a uint8 ``[S, S, 3]`` picture (a blend pattern, or what any trigger does to a grey image), and
    "field" a float ``[S, S, 2]`` per-pixel displacement (dx, dy) in pixels, drawn as arrows coloured by length
    (stretched so that the longest spans about one pixel). Panels wrap into rows at the book's width."""
    views = list(views)
    if not views:
        raise ConfigError("views", views, "at least one trigger view")
    for i, v in enumerate(views):
        if not isinstance(v, dict) or v.get("style") not in TRIGGER_VIEW_STYLES or "data" not in v:
            raise ConfigError(f"views[{i}]", type(v).__name__ if not isinstance(v, dict) else sorted(v),
                              f"a dict with style in {TRIGGER_VIEW_STYLES}, data and title")
    with style():
        fig, axes, _ = panel_figure(len(views), 3.2, 3.4)
        for ax, v in zip(axes, views):
            if v["style"] == "mask":
                _draw_mask(ax, v["data"])
            elif v["style"] == "image":
                ax.imshow(check_uint8_images(np.asarray(v["data"])[None], "view data")[0], interpolation="nearest")
                ax.grid(False)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                _draw_field(fig, ax, v["data"])
            ax.set_title(str(v.get("title", "")), fontsize=9)
        fig.tight_layout()
    return fig
