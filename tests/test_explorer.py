"""The generation explorer's pure parts: choices and cells from a profile, G1-G4 titles, frames, panel
figures, and the widget redrawing on every change (drawn from planted arrays)."""

import base64

import numpy as np
import pytest
from matplotlib.figure import Figure

from bibad_utils.config import ConfigError
from bibad_utils.experiments import explorer as ex
from bibad_utils.plots import MAX_FIGURE_WIDTH_IN
from bibad_utils.stages import Cell
from bibad_utils.typed_config import load_config


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke", {"attacks": ["badnets1", "badnets2"], "ratios": [0.2, 0.05],
                                  "sampling": {"guidance": [1, 2.5]}})


def test_choices_follow_the_profile(cfg):
    c = ex.explorer_choices(cfg)
    assert c == {"trigger": ["badnets1", "badnets2"], "p": [0.0, 0.05, 0.2], "w": [1.0, 2.5]}
    no_clean = load_config("smoke", {"controls": ["relabel"]})
    assert ex.explorer_choices(no_clean)["p"] == [0.1]
    assert ex.static_views(cfg) == [("badnets1", 0.0), ("badnets1", 0.05), ("badnets1", 0.2),
                                    ("badnets2", 0.0), ("badnets2", 0.05), ("badnets2", 0.2)]
    assert ex.p_label(0.0) == "clean (p = 0)" and ex.p_label(0.05) == "p = 5%"


def test_cell_for_maps_p_zero_to_the_clean_control(cfg):
    assert ex.cell_for(cfg, "badnets2", 0) == Cell("clean")
    assert ex.cell_for(cfg, "badnets2", 0.05) == Cell("badnets2", 0.05)
    assert ex.cell_for(cfg, "badnets1", 0.2 + 1e-15) == Cell("badnets1", 0.2)
    with pytest.raises(ConfigError, match="trigger = 'wanet'"):
        ex.cell_for(cfg, "wanet", 0.05)
    with pytest.raises(ConfigError, match=r"p = 0.1 is not allowed"):
        ex.cell_for(cfg, "badnets1", 0.1)


def test_counts_text_and_frames():
    t = np.array([1, 1, 0, 0, 1, 1], bool)
    m = np.array([0, 1, 0, 1, 1, 1], bool)  # G1: 1, G2: 3, G3: 1, G4: 1
    assert ex.counts_text(t, m) == "G1 1 (17%) · G2 3 (50%)\nG3 1 (17%) · G4 1 (17%) of 6"
    assert ex.counts_text(np.zeros(0, bool), np.zeros(0, bool)) == "no images"
    assert ex.frame_colors(t[:3]) == [ex.FRAME_TRIGGER, ex.FRAME_TRIGGER, ex.FRAME_NONE]


def _images(n, seed=0, size=8):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_panels_figure_frames_labels_and_titles():
    t = np.array([True, False, True, False, False])
    panel = {"images": _images(5), "frames": ex.frame_colors(t), "labels": list("abcde"), "title": "w = 1\nG1 ..."}
    fig = ex.panels_figure([panel, {"images": _images(3, 1), "title": "w = 2"}], title="a cell", ncol=4)
    assert isinstance(fig, Figure)
    axes = [ax for sub in fig.subfigs for s in sub.subfigs for ax in s.axes]
    shown = [ax for ax in axes if ax.images]
    assert len(shown) == 8  # 5 + 3 images; the empty slots of the 4-wide rows are switched off
    first = shown[:5]
    assert [ax.get_xlabel() for ax in first] == list("abcde")
    framed = [ax.spines["top"].get_visible() for ax in first]
    assert framed == [True] * 5
    colours = [ax.spines["top"].get_edgecolor() for ax in first]
    assert colours[0] != colours[1] and colours[0] == colours[2]
    assert not any(ax.spines["top"].get_visible() for ax in shown[5:])  # no frames given: none drawn
    np.testing.assert_array_equal(first[3].images[0].get_array(), panel["images"][3])


def test_four_guidance_panels_wrap_into_two_rows_that_fit_the_column():
    panels = [{"images": _images(16, seed=k), "title": f"w = {k}"} for k in range(4)]
    fig = ex.panels_figure(panels, title="a cell", ncol=4)
    assert fig.get_figwidth() <= MAX_FIGURE_WIDTH_IN  # side by side they would need 4 x 3.1 in
    subs = [s for s in fig.subfigs[1].subfigs]
    assert len(subs) == 4 and all(s.get_visible() for s in subs)
    assert len({round(s.bbox.x0) for s in subs}) == 2 and len({round(s.bbox.y0) for s in subs}) == 2  # 2 x 2
    assert sum(len([ax for ax in s.axes if ax.images]) for s in subs) == 64
    assert all(ax.get_window_extent().width == pytest.approx(ex.CELL_PX, abs=1) for s in subs for ax in s.axes)
    three = ex.panels_figure(panels[:3], ncol=4)  # 3 x 3.1 in fit: one row
    assert len({round(s.bbox.y0) for s in three.subfigs}) == 1
    assert three.get_figwidth() == pytest.approx(1.5 * fig.get_figwidth(), rel=0.05)


def test_panel_of_no_images_says_so_and_bad_input_is_refused():
    fig = ex.panels_figure([{"images": np.zeros((0, 8, 8, 3), np.uint8), "title": "w = 1"}])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no images" in texts
    with pytest.raises(ConfigError, match="uint8"):
        ex.panels_figure([{"images": np.zeros((2, 8, 8, 3), np.float32)}])
    with pytest.raises(ConfigError, match="one per image"):
        ex.panels_figure([{"images": _images(3), "frames": ["red"]}])
    with pytest.raises(ConfigError, match="panels"):
        ex.panels_figure([])
    with pytest.raises(ConfigError, match="titles that differ"):
        ex.panels_figure([{"images": _images(2)}, {"images": _images(3)}])


def test_explorer_figure_checks_arguments_before_reading_the_study():
    with pytest.raises(ConfigError, match="n = 0"):
        ex.explorer_figure(None, Cell("clean"), 1.0, n=0)
    with pytest.raises(ConfigError, match="trigger = None"):
        ex.explorer_figure(None, Cell("clean"), 1.0)


def test_widget_redraws_on_every_change():
    calls = []

    def render(trigger, p, w):
        calls.append((trigger, p, w))
        return ex.panels_figure([{"images": _images(2, seed=len(calls)), "title": f"{trigger} {p} {w}"}])

    box = ex.explorer_widget({"trigger": ["badnets1", "badnets2"], "p": [0.0, 0.1], "w": [1.0, 5.0]}, render)
    assert calls == [("badnets1", 0.1, 1.0)]  # drawn once at start: the largest p, the first w
    first = box.view.value
    prefix = '<img src="data:image/png;base64,'
    assert first.startswith(prefix) and 'alt="target-prompt generations, badnets1, p = 10%, w = 1"' in first
    assert base64.b64decode(first[len(prefix):].split('"')[0])[:8] == b"\x89PNG\r\n\x1a\n"
    box.controls["w"].value = 5.0
    box.controls["p"].value = 0.0
    box.controls["trigger"].value = "badnets2"
    assert calls[1:] == [("badnets1", 0.1, 5.0), ("badnets1", 0.0, 5.0), ("badnets2", 0.0, 5.0)]
    assert box.view.value != first
    with pytest.raises(ConfigError, match="choices"):
        ex.explorer_widget({"trigger": [], "p": [0.1], "w": [1.0]}, render)


def test_static_views_follow_attack_ratios():
    """An attack limited by attack_ratios is shown at its own ratios only: the explorer trains nothing."""
    from bibad_utils.experiments.explorer import static_views
    cfg = load_config("smoke", {"attacks": ["badnets1", "wanet"], "ratios": [0.01, 0.1], "controls": ["clean"],
                                "attack_ratios": {"wanet": [0.1]}, "sampling": {"guidance": [1]}})
    assert static_views(cfg) == [("badnets1", 0.0), ("badnets1", 0.01), ("badnets1", 0.1),
                                 ("wanet", 0.0), ("wanet", 0.1)]
