"""The image-grid engine: every figure of the package that shows images is built from its parts.

:class:`GridLayout` places equal cells (with optional per-cell titles, a heading and a column of row
labels) in inches; :func:`show_image` draws one uint8 image into one axes, upscaled by an integer factor
and optionally framed; :func:`draw_grid` fills a Figure or SubFigure with a grid of images. The figures
below (a plain grid, grids side by side, replication pairs, trigger close-ups, one row per class, the
trigger patterns) are thin layers over these.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bibad_utils.base import ConfigError
from bibad_utils.plots.style import DPI, FRAME_COLOR, MAX_FIGURE_WIDTH_IN, message_figure, style


def check_uint8_images(images, name="images") -> np.ndarray:
    """``images`` as a uint8 ``[N, H, W, 3]`` (or ``[N, H, W, 1]``) array, or a ConfigError naming ``name``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(name, f"{images.dtype} array of shape {images.shape}",
                          "uint8 [N, H, W, 3] (or [N, H, W, 1]) images")
    return images


def cell_pixels(h: int, w: int, scale: int | float | None) -> tuple[int, int, int]:
    """(integer upscaling factor, displayed height, displayed width) in screen pixels; a float ``scale`` is any
    magnification (factor 1: matplotlib resamples the image to the displayed size)."""
    if scale is None:
        # Small images are blown up by an integer factor to about 96 px; large ones are shown at 128 px.
        scale = max(1, math.ceil(96 / max(h, w)))
        if max(h, w) >= 96:
            ratio = 128 / max(h, w)
            return 1, round(h * ratio), round(w * ratio)
    if isinstance(scale, float) and scale > 0:
        return 1, round(h * scale), round(w * scale)
    if not (isinstance(scale, (int, np.integer)) and scale >= 1):
        raise ConfigError("scale", scale, "an integer >= 1 (pixel upscaling), a float > 0 (any magnification), "
                                          "or None for automatic")
    return int(scale), h * int(scale), w * int(scale)


class GridLayout:
    """Geometry (inches) of one image grid: ``n`` cells of ``cell_h_px`` x ``cell_w_px`` screen pixels,
    ``ncol`` per row, with room for per-cell titles above (``has_titles``) and labels below (``has_labels``),
    a heading (``has_title``) and a column of row labels ``left`` inches wide."""

    gap = 0.06
    title_h = 0.22
    suptitle_h = 0.32
    line_h = 0.17  # each further line of a heading

    def __init__(self, n, ncol, cell_h_px, cell_w_px, has_titles, has_title, left: float = 0.0,
                 has_labels: bool = False):
        """``has_title``: False, True, or the number of lines of the heading."""
        self.ncol = max(1, min(ncol, n))
        self.nrows = max(1, math.ceil(n / self.ncol))
        self.cw, self.ch = cell_w_px / DPI, cell_h_px / DPI
        self.th = self.title_h if has_titles else 0.0
        self.lh = self.title_h if has_labels else 0.0
        self.top = self.suptitle_h + self.line_h * (int(has_title) - 1) if has_title else 0.0
        self.left = float(left)
        self.width = self.left + self.ncol * (self.cw + self.gap) + self.gap
        self.height = self.top + self.nrows * (self.ch + self.th + self.lh + self.gap) + self.gap

    def rect(self, k, total_w, total_h):
        """Axes rectangle of cell k (reading order), in fractions of a container of total_w x total_h inches."""
        return self.rect_at(*divmod(k, self.ncol), total_w, total_h)

    def rect_at(self, r, c, total_w, total_h):
        """Axes rectangle of the cell in row r, column c, in fractions of a total_w x total_h container."""
        x = self.left + self.gap + c * (self.cw + self.gap)
        y_top = self.top + self.gap + r * (self.ch + self.th + self.lh + self.gap) + self.th
        return (x / total_w, 1 - (y_top + self.ch) / total_h, self.cw / total_w, self.ch / total_h)


def show_image(ax, image, scale: int = 1, border_color=None, border_width: float = 3.0) -> None:
    """Draw one uint8 ``[H, W, 3]`` (or ``[H, W, 1]``, grey) image into ``ax``, upscaled ``scale`` times by
    pixel repetition, without ticks or grid; framed in ``border_color`` (None: no frame)."""
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


def draw_grid(container, total_w, total_h, images, nrow, titles, title, scale, border_colors, labels=None,
              border_widths=None) -> list:
    """Fill ``container`` (a Figure or SubFigure of total_w x total_h inches) with ``images``, ``nrow``
    per row (see :func:`image_grid`; ``labels``: one text under each image, ``border_widths``: one frame
    width each); returns the axes, one per image."""
    n, h, w = images.shape[:3]
    up, cell_h, cell_w = cell_pixels(h, w, scale)
    grid = GridLayout(n, nrow, cell_h, cell_w, titles is not None, 0 if title is None else str(title).count("\n") + 1,
                      has_labels=labels is not None)
    axes = []
    for k in range(n):
        ax = container.add_axes(grid.rect(k, total_w, total_h))
        show_image(ax, images[k], up, None if border_colors is None else border_colors[k],
                   3.0 if border_widths is None else border_widths[k])
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=8, fontweight="normal", pad=2)
        if labels is not None:
            ax.set_xlabel(str(labels[k]), fontsize=7, labelpad=1.5)
        axes.append(ax)
    if title is not None:
        container.text(0.5, 1 - grid.top * 0.5 / total_h, title, ha="center", va="center",
                       fontsize=10, weight="bold")
    return axes


def _grid_args(images, nrow, name="images", **per_image):
    """``images`` checked, after ``nrow`` and the per-image sequences (None: not given)."""
    images = check_uint8_images(images, name)
    if not (isinstance(nrow, (int, np.integer)) and nrow >= 1):
        raise ConfigError("nrow", nrow, "an integer >= 1 (images per row)")
    for key, seq in per_image.items():
        if seq is not None and len(seq) != len(images):
            raise ConfigError(key, f"{len(seq)} entries", f"one per image ({len(images)})")
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
    images = _grid_args(images, nrow, titles=titles, border_colors=border_colors)
    if len(images) == 0:
        return message_figure("no images", title)
    with style():
        up, ch, cw = cell_pixels(*images.shape[1:3], scale)
        grid = GridLayout(len(images), int(nrow), ch, cw, titles is not None, title is not None)
        fig = Figure(figsize=(grid.width, grid.height), dpi=DPI)
        draw_grid(fig, grid.width, grid.height, images, int(nrow), titles, title, scale, border_colors)
    return fig


def side_by_side_grids(grids: dict, nrow: int = 4, scale: int | float | None = None, titles: dict | None = None,
                       border_colors: dict | None = None, suptitle: str | None = None, labels: dict | None = None,
                       border_widths: dict | None = None) -> Figure:
    """Several image grids next to each other, one panel per entry of ``grids`` (name -> uint8
    ``[N_i, H, W, 3]`` images, headed by its name; a newline in a name starts a line of the heading),
    ``nrow`` images per row in each panel; e.g. clean vs poisoned training images, or generations of two
    models. titles / labels / border_colors / border_widths: optional dicts name -> per-image titles (above)
    / labels (below) / frame colours / frame widths (see :func:`image_grid`). An empty panel says "no images".
    ``suptitle``: a title above the panels, in a band of its own (it never overlaps the panels' headings).
    """
    with style():
        width, height, draw = grid_panels(grids, nrow, scale, titles, border_colors, labels, border_widths)
        band = 0.4 if suptitle else 0.0
        fig = Figure(figsize=(width, height + band), dpi=DPI)
        body = fig
        if suptitle:
            head, body = fig.subfigures(2, 1, height_ratios=[band, height], hspace=0.0)
            head.text(0.5, 0.5, suptitle, ha="center", va="center", fontsize=10, weight="bold")
        draw(body)
    return fig


def grid_panels(grids: dict, nrow: int = 4, scale: int | float | None = None, titles: dict | None = None,
                border_colors: dict | None = None, labels: dict | None = None, border_widths: dict | None = None):
    """The panels of :func:`side_by_side_grids` (the same arguments) laid out: ``(width, height, draw)``, where
    ``draw(container)`` fills a Figure or SubFigure of width x height inches with them."""
    if not isinstance(grids, dict) or not grids:
        raise ConfigError("grids", type(grids).__name__, "a non-empty dict name -> uint8 [N, H, W, 3] images")
    titles, labels = titles or {}, labels or {}
    border_colors, border_widths = border_colors or {}, border_widths or {}
    checked = {name: _grid_args(imgs, nrow, f"grids[{name!r}]", titles=titles.get(name), labels=labels.get(name),
                                border_colors=border_colors.get(name), border_widths=border_widths.get(name))
               for name, imgs in grids.items()}

    def layout(tile_scale):
        out = {}
        for name, imgs in checked.items():
            if len(imgs):
                _, ch, cw = cell_pixels(*imgs.shape[1:3], tile_scale)
                out[name] = GridLayout(len(imgs), int(nrow), ch, cw, name in titles, True, has_labels=name in labels)
            else:
                out[name] = None
        return out, [g.width if g else 1.5 for g in out.values()]

    geoms, widths = layout(scale)
    drawn_scale = scale  # the tiles are drawn at the scale their geometry was computed with
    if scale is None and sum(widths) > MAX_FIGURE_WIDTH_IN:  # smaller tiles until the figure fits the column
        side = max((max(imgs.shape[1:3]) for imgs in checked.values() if len(imgs)), default=0)
        for tile_scale in range(max(1, math.ceil(96 / side)) - 1 if side else 0, 0, -1):
            geoms, widths = layout(tile_scale)
            drawn_scale = tile_scale
            if sum(widths) <= MAX_FIGURE_WIDTH_IN:
                break
    # a heading wider than its panel breaks into lines that fit it (10-pt bold: about 0.09 in a character)
    heads = {name: "\n".join(textwrap.fill(line, max(12, int(w / 0.09)), break_long_words=False)
                             for line in str(name).split("\n"))
             for name, w in zip(checked, widths)}
    height = max((g.height + GridLayout.line_h * heads[name].count("\n")) if g else 1.0
                 for name, g in geoms.items())
    # Panels that still do not fit the column side by side (large images, many panels) wrap into balanced rows
    # of at most as many panels as fit (four that fit three a row: two rows of two), so that the book never
    # shrinks their labels below legibility.
    per_row = len(widths)
    while per_row > 1 and sum(sorted(widths)[-per_row:]) + 0.15 * (per_row - 1) > MAX_FIGURE_WIDTH_IN:
        per_row -= 1
    rows = math.ceil(len(widths) / per_row)
    per_row = math.ceil(len(widths) / rows)
    columns = [max(widths[i::per_row]) for i in range(per_row)]

    def draw(body):
        wrap = {"hspace": 0.0} if rows > 1 else {}
        subfigs = np.atleast_1d(body.subfigures(rows, per_row, width_ratios=columns, wspace=0.15 / max(columns),
                                                **wrap)).reshape(-1)
        for sub in subfigs[len(checked):]:  # the unused places of a last, shorter row
            sub.set_visible(False)
        for sub, (name, imgs), wid in zip(subfigs, checked.items(), [columns[i % per_row] for i in range(len(widths))]):
            if len(imgs) == 0:
                ax = sub.add_axes((0, 0, 1, 1))
                ax.set_axis_off()
                ax.text(0.5, 1 - 0.09 / height, heads[name], ha="center", va="top", fontsize=10, weight="bold")
                ax.text(0.5, 0.5, "no images", ha="center", va="center", fontsize=9, color="#555555")
                continue
            draw_grid(sub, wid, height, imgs, int(nrow), titles.get(name), heads[name], drawn_scale,
                      border_colors.get(name), labels.get(name), border_widths.get(name))

    return sum(columns) + 0.15 * (per_row - 1), rows * height, draw


def pairs_figure(gen, train, sims, title: str | None = None) -> Figure:
    """Replication pairs: generated images (top row) above their nearest training images (bottom row),
    each column headed by its cosine similarity.

    gen, train: uint8 ``[K, H, W, 3]`` (same K; the sizes may differ); sims: float ``[K]`` similarities (e.g. from
    ``memorization.top_replicated_pairs``). With K = 0 the figure says so.
    """
    gen = check_uint8_images(gen, "gen")
    train = check_uint8_images(train, "train")
    sims = np.asarray(sims, dtype=np.float64).reshape(-1)
    if len(train) != len(gen) or len(sims) != len(gen):
        raise ConfigError("train, sims", f"{len(train)} images, {len(sims)} similarities",
                          f"one per generated image ({len(gen)})")
    if len(gen) == 0:
        return message_figure("no pairs", title)
    with style():
        up, ch, cw = cell_pixels(*gen.shape[1:3], None)
        up_train = cell_pixels(*train.shape[1:3], None)[0]  # the axes fit either size into one cell
        k = len(gen)
        grid = GridLayout(2 * k, k, ch, cw, True, title is not None, left=0.3)
        fig = Figure(figsize=(grid.width, grid.height), dpi=DPI)
        for j in range(k):
            top = fig.add_axes(grid.rect(j, grid.width, grid.height))
            show_image(top, gen[j], up)
            top.set_title(f"cos {sims[j]:.3f}", fontsize=8, fontweight="normal", pad=2)
            bottom = fig.add_axes(grid.rect(k + j, grid.width, grid.height))
            show_image(bottom, train[j], up_train)
            if j == 0:
                top.set_ylabel("generated", fontsize=8)
                bottom.set_ylabel("nearest training", fontsize=8)
        if title is not None:
            fig.suptitle(title, y=1 - grid.suptitle_h * 0.5 / grid.height, va="center", fontsize=10, weight="bold")
    return fig


def zoomed_rows(rows: dict, box, title: str | None = None) -> Figure:
    """Rows of images, each image followed by a close-up of one square region.

    rows: name -> uint8 ``[n, H, W, 3]`` (the same n and size in every row; one row per name, labelled on
    the left), e.g. the same clean images and their triggered versions. box: ``(top, left, size)`` in
    pixels, the region shown enlarged (framed on the image in :data:`~bibad_utils.plots.style.FRAME_COLOR`);
    the close-up has the image's display size (as in :func:`image_grid`), so a 5-pixel patch fills it.
    """
    if not isinstance(rows, dict) or not rows:
        raise ConfigError("rows", type(rows).__name__, "a non-empty dict name -> uint8 [n, H, W, 3] images")
    checked = {name: check_uint8_images(imgs, f"rows[{name!r}]") for name, imgs in rows.items()}
    shapes = {imgs.shape for imgs in checked.values()}
    if len(shapes) != 1:
        raise ConfigError("rows", sorted(shapes), "rows of the same number and size of images")
    n, h, w = next(iter(shapes))[:3]
    top, left, size = (int(v) for v in box)
    if not (size >= 1 and 0 <= top and top + size <= h and 0 <= left and left + size <= w):
        raise ConfigError("box", box, f"(top, left, size) of a square inside the {h}x{w} images")
    if n == 0:
        return message_figure("no images", title)
    with style():
        up, ch, cw = cell_pixels(h, w, None)
        zoom_up = max(1, round(ch / size))
        gap, pair_gap = GridLayout.gap, 0.14
        cell_w, cell_h = cw / DPI, ch / DPI
        label_w = 0.15 + 0.075 * max(len(str(k)) for k in checked)
        head = GridLayout.title_h + (GridLayout.suptitle_h if title else 0.0)
        width = label_w + n * (2 * cell_w + gap + pair_gap)
        if width > MAX_FIGURE_WIDTH_IN:  # smaller tiles, the same labels: the figure fits the book's column
            shrink = (MAX_FIGURE_WIDTH_IN - label_w - n * (gap + pair_gap)) / (n * 2 * cell_w)
            cell_w, cell_h = cell_w * shrink, cell_h * shrink
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
                show_image(ax, imgs[j], up)
                ax.add_patch(Rectangle((left * up - 0.5, top * up - 0.5), size * up, size * up, fill=False,
                                       edgecolor=FRAME_COLOR, linewidth=1.2))
                zx = (x0 + cell_w + gap) / width
                zax = fig.add_axes((zx, 1 - (y0 + cell_h) / height, cell_w / width, cell_h / height))
                show_image(zax, imgs[j, top:top + size, left:left + size], zoom_up, FRAME_COLOR, 1.2)
                if r == 0:
                    ax.set_title(f"image {j + 1}", fontsize=8, fontweight="normal", pad=2)
                    zax.set_title("close-up", fontsize=8, fontweight="normal", pad=2)
        if title:
            fig.text(0.5, 1 - GridLayout.suptitle_h * 0.5 / height, title, ha="center", va="center", fontsize=10,
                     weight="bold")
    return fig


def class_grid(images, labels, class_names, per_class: int = 8, border_colors=None, title: str | None = None,
               scale: int | None = None) -> Figure:
    """One row per class: the first ``per_class`` images of each class (in array order), the class name
    on the left; a class without images says "none".

    images: uint8 ``[N, H, W, 3]``; labels: int ``[N]`` in ``[0, len(class_names))``; border_colors: N
    colours or None entries (no frame), e.g. where the trigger detector fired; scale: as in
    :func:`image_grid`.
    """
    images = check_uint8_images(images)
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
        return message_figure("no images", title)
    with style():
        up, ch, cw = cell_pixels(*images.shape[1:3], scale)
        label_w = 0.15 + 0.075 * max(len(n) for n in names)
        grid = GridLayout(len(names) * per_class, per_class, ch, cw, False, bool(title), left=label_w)
        width, height = grid.width, grid.height
        fig = Figure(figsize=(width, height), dpi=DPI)
        for r, name in enumerate(names):
            x0, y0, _, h0 = grid.rect_at(r, 0, width, height)
            yc = y0 + h0 / 2
            fig.text((label_w - 0.08) / width, yc, name, ha="right", va="center", fontsize=8)
            members = np.flatnonzero(labels == r)[:per_class]
            if len(members) == 0:
                fig.text(x0, yc, "none", ha="left", va="center", fontsize=8, color="#555555")
            for j, i in enumerate(members):
                show_image(fig.add_axes(grid.rect_at(r, j, width, height)), images[i], up,
                           None if border_colors is None else border_colors[i])
        if title:
            fig.text(0.5, 1 - grid.top * 0.5 / height, title, ha="center", va="center", fontsize=10, weight="bold")
    return fig
