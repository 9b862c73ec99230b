import io

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bibad_utils import plots
from bibad_utils.config import ConfigError


def images(n, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def render(fig):
    """Draw the figure to PNG bytes: layout and text errors only show up at draw time."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.tell() > 0
    return fig


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.mark.parametrize("n, nrow", [(1, 8), (7, 3), (13, 5), (8, 8)])
def test_image_grid_one_axes_per_image(n, nrow):
    fig = render(plots.image_grid(images(n), nrow=nrow, titles=[f"#{k}" for k in range(n)], title="grid"))
    assert isinstance(fig, Figure)
    axes = image_axes(fig)
    assert len(axes) == len(fig.axes) == n
    assert [ax.get_title() for ax in axes] == [f"#{k}" for k in range(n)]
    # Nearest-neighbour upscaling: 16 px images become 96 px arrays (factor 6), pixel-exact.
    shown = axes[0].images[0].get_array()
    assert shown.shape[:2] == (96, 96)
    np.testing.assert_array_equal(np.asarray(shown)[::6, ::6], images(n)[0])


def test_image_grid_rows_and_borders():
    fig = render(plots.image_grid(images(5), nrow=2, border_colors=["red", None, None, None, "blue"]))
    axes = image_axes(fig)
    lefts = sorted({round(ax.get_position().x0, 4) for ax in axes})
    tops = sorted({round(ax.get_position().y0, 4) for ax in axes})
    assert len(lefts) == 2 and len(tops) == 3
    assert axes[0].spines["left"].get_visible()
    assert mcolors.same_color(axes[0].spines["top"].get_edgecolor(), "red")
    assert not axes[1].spines["left"].get_visible()


def test_image_grid_edge_cases():
    assert isinstance(render(plots.image_grid(images(0))), Figure)
    gray = np.zeros((3, 8, 8, 1), np.uint8)
    assert len(image_axes(render(plots.image_grid(gray, nrow=2)))) == 3
    big = render(plots.image_grid(images(2, size=128), scale=None))
    assert image_axes(big)[0].images[0].get_array().shape[:2] == (128, 128)
    with pytest.raises(ConfigError, match="images"):
        plots.image_grid(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match="titles"):
        plots.image_grid(images(2), titles=["a"])
    with pytest.raises(ConfigError, match="nrow"):
        plots.image_grid(images(2), nrow=0)


def test_side_by_side_grids_counts_images_per_panel():
    fig = render(plots.side_by_side_grids({"clean": images(3), "poisoned": images(5, seed=1), "none": images(0)},
                                          nrow=2, border_colors={"poisoned": ["red"] * 5}))
    assert len(fig.subfigs) == 3
    assert [len(image_axes(sub)) for sub in fig.subfigs] == [3, 5, 0]
    with pytest.raises(ConfigError):
        plots.side_by_side_grids({})


def test_pairs_figure():
    fig = render(plots.pairs_figure(images(3), images(3, seed=1), [0.99, 0.9, 0.5], title="pairs"))
    axes = image_axes(fig)
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[::2]] == ["cos 0.990", "cos 0.900", "cos 0.500"]
    assert len(image_axes(render(plots.pairs_figure(images(1), images(1, size=32), [1.0])))) == 2
    assert isinstance(plots.pairs_figure(images(0), images(0), []), Figure)
    with pytest.raises(ConfigError):
        plots.pairs_figure(images(2), images(3), [0.1, 0.2])


def test_bar_with_ci_bars_errorbars_and_reference():
    df = pd.DataFrame({"p": ["1%", "1%", "5%", "5%", "10%"], "attack": ["a", "b", "a", "b", "a"],
                       "rate": [0.2, 0.1, 0.5, 0.3, 0.7], "r_train": [0.09, 0.09, 0.33, 0.33, 0.5]})
    df["lo"], df["hi"] = df["rate"] - 0.05, df["rate"] + 0.05
    fig = render(plots.bar_with_ci(df, "p", "rate", "lo", "hi", hue="attack", ref="r_train", ylim=(0, 1)))
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.patches) == len(df)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted(df["rate"].round(6))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1%", "5%", "10%"]
    single = render(plots.bar_with_ci(df.iloc[:1], "p", "rate", ref=0.25))
    assert len(single.axes[0].patches) == 1
    with pytest.raises(ConfigError):
        plots.bar_with_ci(df, "p", "missing")
    with pytest.raises(ConfigError):
        plots.bar_with_ci(df, "p", "rate", lo="lo")


def test_interval_bars_engine_keeps_category_order_gaps_and_paper_markers():
    df = pd.DataFrame({"cell": ["b", "a", "a"], "set": ["train", "train", "gen"], "auroc": [0.9, 0.6, 0.7],
                       "lo": [0.8, 0.5, 0.6], "hi": [0.95, 0.7, 0.8], "paper": [0.99, np.nan, np.nan]})
    fig = Figure()
    ax = fig.add_subplot()
    cats = plots.draw_interval_bars(ax, df, "cell", "auroc", "lo", "hi", hue="set", paper="paper",
                                    categories=["a", "b", "c"])
    render(fig)
    assert cats == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    # two hues x three categories; the categories without a row are NaN bars (gaps)
    assert len(ax.patches) == 6
    heights = [p.get_height() for p in ax.patches]
    assert sorted(h for h in heights if np.isfinite(h)) == [0.6, 0.7, 0.9]
    # the paper's value: one open diamond at category "b" of the first hue, labelled once
    diamonds = [line for line in ax.lines if line.get_marker() == "D"]
    xs = np.concatenate([line.get_xdata()[np.isfinite(line.get_ydata())] for line in diamonds])
    assert xs.tolist() == [pytest.approx(1 - 0.4 + 0.2)]
    labels = ax.get_legend_handles_labels()[1]
    assert labels.count("paper") == 1 and "train" in labels and "gen" in labels
    with pytest.raises(ConfigError, match="paper"):
        plots.draw_interval_bars(ax, df, "cell", "auroc", paper="missing")


def test_loss_curves_raw_and_smoothed():
    curves = {"clean": [(s, 1.0 / (1 + s)) for s in range(0, 50, 5)], "poisoned": [(0, 1.0)], "empty": []}
    fig = render(plots.loss_curves(curves, smoothing=0.5))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    raw, smooth = lines[0].get_ydata(), lines[1].get_ydata()
    assert smooth[0] == raw[0] and smooth[1] == pytest.approx((0.5 * raw[0] + raw[1]) / 1.5)
    assert isinstance(render(plots.loss_curves({})), Figure)
    with pytest.raises(ConfigError, match="smoothing"):
        plots.loss_curves(curves, smoothing=1.0)


def test_g_stack_panels_and_stacking():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"label": ["w=1", "w=2", "w=5"] * 2, "attack": ["a"] * 3 + ["b"] * 3})
    df[["G1", "G2", "G3", "G4"]] = rng.dirichlet(np.ones(4), 6)
    fig = render(plots.g_stack(df, facet="attack"))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.patches) == 3 * 4
        tops = sorted({round(p.get_y() + p.get_height(), 6) for p in ax.patches})
        assert tops[-1] == pytest.approx(1.0)
    assert len(render(plots.g_stack(df.iloc[:1])).axes) == 1


def test_similarity_hist_and_threshold_sweep():
    rng = np.random.default_rng(0)
    fig = render(plots.similarity_hist({"clean": rng.uniform(0.5, 1, 50), "one": [0.9]}, threshold=0.95))
    assert len(fig.axes) == 1
    sweep = pd.DataFrame({"threshold": [0.5, 0.9, 0.99, 1.0], "precision": [0.1, 0.8, 1.0, np.nan],
                          "recall": [1.0, 1.0, 0.7, 0.0], "f1": [0.2, 0.9, 0.8, 0.0]})
    fig = render(plots.threshold_sweep(sweep, chosen=0.9))
    assert len(fig.axes[0].get_lines()) == 4


def test_style_uses_palette():
    import matplotlib as mpl

    with plots.style():
        cycle = [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]
    assert cycle[: len(plots.PALETTE)] == plots.PALETTE


def test_grid_layout_places_cells_in_reading_order_after_the_row_labels():
    grid = plots.GridLayout(n=5, ncol=2, cell_h_px=50, cell_w_px=100, has_titles=True, has_title=True, left=0.5)
    assert (grid.ncol, grid.nrows) == (2, 3)
    assert grid.width == pytest.approx(0.5 + 2 * (1.0 + grid.gap) + grid.gap)
    rects = [grid.rect(k, grid.width, grid.height) for k in range(5)]
    assert rects[3] == grid.rect_at(1, 1, grid.width, grid.height)
    assert rects[0][0] == pytest.approx((0.5 + grid.gap) / grid.width)  # after the row labels
    assert rects[0][1] > rects[2][1] > rects[4][1]                      # rows go down
    assert rects[0][1] == rects[1][1] and rects[1][0] > rects[0][0]      # columns go right
    fig = Figure()
    ax = fig.add_axes(rects[0])
    plots.show_image(ax, images(1)[0], scale=2, border_color="red", border_width=2.0)
    assert ax.images[0].get_array().shape[:2] == (32, 32)
    assert ax.spines["left"].get_visible() and ax.spines["left"].get_linewidth() == 2.0


def test_side_by_side_grids_title_has_its_own_band():
    """A figure title sits in a band above the panels' headings instead of over them."""
    from bibad_utils.plots import side_by_side_grids
    imgs = np.zeros((4, 8, 8, 3), np.uint8)
    plain = side_by_side_grids({"G1": imgs, "G2": imgs}, nrow=2)
    titled = side_by_side_grids({"G1": imgs, "G2": imgs}, nrow=2, suptitle="a title")
    assert titled.get_size_inches()[1] == pytest.approx(plain.get_size_inches()[1] + 0.4)
    head = titled.subfigs[0]
    assert [t.get_text() for t in head.texts] == ["a title"] and not head.axes


def test_faceted_charts_stay_within_the_page_width():
    """Seven or more cells a panel in three panels (chapter 04's G-stack on a real-data grid) wrap into rows
    instead of widening the figure past what the page shows with readable labels."""
    rng = np.random.default_rng(1)
    labels = ["clean", "relabel", "p=1%", "p=2%", "p=5%", "p=10%", "p=20%"]
    df = pd.DataFrame({"label": labels * 3, "detector": sum(([d] * 7 for d in ("badnets1", "badnets2", "wanet")), [])})
    df[["G1", "G2", "G3", "G4"]] = rng.dirichlet(np.ones(4), len(df))
    fig = render(plots.g_stack(df, facet="detector"))
    assert fig.get_figwidth() <= plots.MAX_FIGURE_WIDTH_IN
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3
    curve = pd.DataFrame([{"cell": "c", "instrument": i, "epochs": e, "rate": 0.1, "rate_lo": 0.0, "rate_hi": 0.2,
                           "clean_hi": 0.05} for i in ("detector", "template", "judge") for e in (1, 2)])
    assert render(plots.exposure_chart(curve)).get_figwidth() <= plots.MAX_FIGURE_WIDTH_IN


def test_an_attack_has_one_colour_and_its_ratios_are_shades_of_it():
    from matplotlib.colors import to_rgb
    assert plots.attack_color("badnets1") == plots.ATTACK_COLORS["badnets1"]
    assert plots.attack_color("clean") == plots.attack_color("relabel") == plots.CONTROL_COLOR
    assert plots.attack_color("new_kind", 1) not in plots.ATTACK_COLORS.values()
    assert not set(plots.ATTACK_COLORS.values()) & set(plots.G_COLORS.values())  # never a G group's colour
    ramp = plots.shades(plots.ATTACK_COLORS["badnets2"], 3)
    assert ramp[-1] == plots.ATTACK_COLORS["badnets2"].lower() and len(set(ramp)) == 3
    assert sum(to_rgb(ramp[0])) > sum(to_rgb(ramp[1])) > sum(to_rgb(ramp[2]))  # light to dark with p
    df = pd.DataFrame({"p": ["5%", "10%"] * 2, "attack": ["badnets2"] * 2 + ["badnets1"] * 2, "r": [0.1, 0.2, 0.3, 0.4]})
    fig = render(plots.bar_with_ci(df, x="p", y="r", hue="attack"))
    bars = [c for c in fig.axes[0].containers if hasattr(c, "patches")]
    assert [tuple(round(v, 3) for v in b.patches[0].get_facecolor()[:3]) for b in bars] == [
        tuple(round(v, 3) for v in to_rgb(plots.ATTACK_COLORS[k])) for k in ("badnets2", "badnets1")]


def test_side_by_side_grids_wrap_panels_that_do_not_fit_the_column():
    """Three panels of four 512-px images (the paper profile's trigger differences) no longer make a figure wider
    than the book's column: they wrap into rows, one panel each; panels that fit stay side by side."""
    from bibad_utils.plots.grids import side_by_side_grids
    from bibad_utils.plots.style import MAX_FIGURE_WIDTH_IN
    rng = np.random.default_rng(0)
    big = {f"k{i}": rng.integers(0, 255, (4, 512, 512, 3), dtype=np.uint8) for i in range(3)}
    fig = side_by_side_grids(big, nrow=4, suptitle="t")
    width, height = fig.get_size_inches()
    assert width <= MAX_FIGURE_WIDTH_IN and height > 3 * 1.5
    body = fig.subfigs[1]  # below the title band: one panel per row
    assert [sub.get_visible() for sub in body.subfigs] == [True, True, True]
    assert len({round(sub.bbox.y0) for sub in body.subfigs}) == 3  # three rows
    small = {f"k{i}": rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for i in range(3)}
    width, height = side_by_side_grids(small, nrow=4).get_size_inches()
    assert width > 2 * height  # one row


def test_shrunk_side_by_side_panels_do_not_overlap_and_long_headings_break_into_lines():
    # five panels of 16 small images do not fit the column at their natural scale: the tiles shrink, and
    # each panel's tiles must be drawn at that smaller scale (they overlapped their neighbours before)
    from bibad_utils.plots import side_by_side_grids

    rng = np.random.default_rng(0)
    names = ["clean: 0/200 flagged (badnets1)"] + [f"badnets1 p={p}%: 37/200 flagged (badnets1)" for p in (1, 2, 5, 10)]
    fig = side_by_side_grids({n: rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8) for n in names}, nrow=4)
    fig.canvas.draw()
    spans = []
    for sub in fig.subfigs:
        boxes = [ax.get_window_extent() for ax in sub.axes if ax.images]
        assert len(boxes) == 16
        spans.append((min(b.x0 for b in boxes), max(b.x1 for b in boxes)))
        heading, = [t for t in sub.texts if t.get_text()]
        assert heading.get_window_extent().width <= sub.bbox.width + 1  # the heading fits its panel
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # left to right, no overlap
    assert fig.get_figwidth() <= 10.0
