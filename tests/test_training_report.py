"""Tables and figures of the poisoning, training and generation chapters: pure functions on planted
inputs, figure structure, and one tiny real study (pixel DM of 16 px, a few steps) end to end."""

import numpy as np
import pandas as pd
import pytest
import torch

from bibad_utils import plots
from bibad_utils.config import ConfigError
from bibad_utils.experiments import training_report as tr
from bibad_utils.plots.style import FRAME_COLOR
from bibad_utils.poison import n_poison_for, r_train
from bibad_utils.triggers import TRIGGERS


# ---------------------------------------------------------------------------------- pure functions
def test_paper_r_train_follows_from_the_formula_on_imagenette_counts():
    assert tr.paper_formula_check()
    for p, v in tr.PAPER_R_TRAIN_IMAGENETTE.items():
        got = r_train(n_poison_for(tr.IMAGENETTE_TRAIN_N, p), tr.IMAGENETTE_TARGET_N)
        assert abs(got - v) < 0.0015
    assert not tr.paper_formula_check(tolerance=1e-6)  # printed to 0.1 %, so not exact


def test_example_indices_cover_distinct_non_target_classes_and_are_seeded():
    labels = np.repeat(np.arange(5), 6)
    idx = tr.example_indices(labels, target=2, n=4, seed=3)
    assert idx.dtype == np.int64 and len(idx) == 4
    assert 2 not in labels[idx] and len(set(labels[idx])) == 4
    np.testing.assert_array_equal(idx, tr.example_indices(labels, 2, 4, seed=3))
    assert not np.array_equal(idx, tr.example_indices(labels, 2, 4, seed=4))
    many = tr.example_indices(labels, 2, 10, seed=0)  # more than the classes: classes repeat, images do not
    assert len(set(many.tolist())) == 10 and 2 not in labels[many]
    with pytest.raises(ConfigError):
        tr.example_indices(np.zeros(4, int), target=0, n=2, seed=0)


def test_trigger_differences_amplify_the_change_only():
    clean = np.full((2, 4, 4, 3), 100, np.uint8)
    hit = clean.copy()
    hit[:, 0, 0] = 110
    out = tr.trigger_differences({"clean": clean, "k": hit}, gain=4)
    (name, diff), = out.items()
    assert name.startswith("k") and diff.dtype == np.uint8
    assert (diff[:, 0, 0] == 40).all() and diff.sum() == 40 * 3 * 2
    big = tr.trigger_differences({"clean": clean, "k": hit}, gain=100)
    assert big[next(iter(big))].max() == 255
    with pytest.raises(ConfigError):
        tr.trigger_differences({"k": hit})


def test_manifest_table_flattens_and_cuts():
    m = {"indices": list(range(30)), "trigger": {"kind": "badnets1", "options": {"size": None}}, "r_train": 0.5}
    df = tr.manifest_table(m, n_first=3)
    assert df.loc["indices", "value"] == "[0, 1, 2; 30 items]"
    assert df.loc["trigger.options.size", "value"] == "None"
    assert df.loc["r_train", "value"] == "0.5"
    assert tr.manifest_table({"x": "y" * 200}).loc["x", "value"] == "y" * 200  # nothing cut with "..."
    assert tr.manifest_table({"v": [1, 2]}).loc["v", "value"] == "[1, 2]"


def test_class_counts_long_merges_identical_columns():
    table = pd.DataFrame({"clean": [2, 2], "relabel p=50%": [3, 1], "badnets1 p=50%": [3, 1]},
                         index=pd.Index(["a (target)", "b"], name="class"))
    table.loc["total"] = table.sum()
    long = tr.class_counts_long(table)
    assert set(long["training set"]) == {"clean", "relabel p=50% = badnets1 p=50%"}
    assert "total" not in set(long["class"]) and len(long) == 4
    assert long.groupby("training set")["images"].sum().tolist() == [4, 4]


def test_loss_at_and_class_samples():
    log = [(10, 1.0), (20, 0.5), (30, 0.25)]
    assert tr.loss_at(log, 1) == 1.0 and tr.loss_at(log, 20) == 0.5 and tr.loss_at(log, 21) == 0.25
    assert tr.loss_at(log, 99) == 0.25
    with pytest.raises(ConfigError):
        tr.loss_at([], 3)
    labels = np.array([2, 0, 2, 2, 0, 1])
    idx = tr.class_samples(np.zeros((6, 2, 2, 3), np.uint8), labels, per_class=2)
    assert idx.tolist() == [1, 4, 5, 0, 2]
    assert tr.trigger_borders([True, False]) == [FRAME_COLOR, None]


# ------------------------------------------------------------------------------------------ figures
def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_class_grid_has_one_row_per_class_and_checks_input():
    labels = np.array([0, 0, 0, 2, 2])
    fig = plots.class_grid(_images(5), labels, ["a", "b", "c"], per_class=2, border_colors=[None] * 5, title="t")
    assert len(fig.axes) == 4  # two of class a, none of b, two of c
    texts = [t.get_text() for t in fig.texts]
    assert {"a", "b", "c", "none", "t"} <= set(texts)
    with pytest.raises(ConfigError):
        plots.class_grid(_images(5), labels, ["a", "b"])  # label 2 out of range
    with pytest.raises(ConfigError):
        plots.class_grid(_images(5), labels[:4], ["a", "b", "c"])


def test_zoomed_rows_pairs_every_image_with_a_close_up():
    rows = {"clean": _images(3), "triggered": _images(3, seed=1)}
    fig = plots.zoomed_rows(rows, box=(4, 4, 4))
    assert len(fig.axes) == 2 * 2 * 3
    close_up = fig.axes[1].get_images()[0].get_array()
    assert close_up.shape[0] == close_up.shape[1] and close_up.shape[0] >= 4
    with pytest.raises(ConfigError):
        plots.zoomed_rows(rows, box=(6, 6, 4))  # outside the 8 px images
    with pytest.raises(ConfigError):
        plots.zoomed_rows({"a": _images(3), "b": _images(2)}, box=(0, 0, 2))


def test_heatmap_ratio_curves_and_trigger_patterns():
    df = pd.DataFrame([[1.0, np.nan], [0.25, 0.5]], index=["x", "y"], columns=["c1", "c2"])
    fig = plots.heatmap(df, cbar_label="acc")
    annotations = [t.get_text() for t in fig.axes[0].texts]
    assert "100%" in annotations and "25%" in annotations and len(annotations) == 3
    with pytest.raises(ConfigError):
        plots.heatmap(pd.DataFrame())
    p = np.linspace(0, 0.2, 5)
    fig = plots.ratio_curves({"ours": (p, p)}, {"ours": ([0.1], [0.1]), "paper": ([0.1], [0.2], "ours")})
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.lines[2].get_marker() == "D"
    assert ax.lines[2].get_markeredgecolor() == ax.lines[0].get_color()
    views = [{"style": "mask", "data": np.eye(5, dtype=bool), "title": "patch"},
             {"style": "image", "data": _images(1, 16)[0], "title": "pattern"},
             {"style": "field", "data": np.zeros((16, 16, 2)), "title": "warp"}]
    fig = plots.trigger_patterns(views)
    assert sum(ax.get_visible() for ax in fig.axes) == 4  # three panels and the colour bar
    assert [ax.get_title() for ax in fig.axes[:3]] == ["patch", "pattern", "warp"]
    four = plots.trigger_patterns(views + [{"style": "image", "data": _images(1, 16)[0], "title": "toy"}])
    assert four.get_size_inches()[0] <= plots.MAX_FIGURE_WIDTH_IN  # a fourth kind wraps into a second row
    with pytest.raises(ConfigError):
        plots.trigger_patterns([{"style": "field", "data": np.zeros((16, 16)), "title": "bad"}])
    with pytest.raises(ConfigError):
        plots.trigger_patterns([{"style": "hologram", "data": 1}])


# ------------------------------------------------------------------------------ a tiny real study
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from bibad_utils.stages import Study

    torch.set_num_threads(1)
    overrides = {
        "run_dir": str(tmp_path_factory.mktemp("run")), "ratios": [0.2], "attacks": ["badnets1"],
        "dataset": {"n_per_class": 4, "n_test_per_class": 2, "options": {"duplicate_fraction": 0.0}},
        "pretrain": {"steps": 2, "batch_size": 8, "lr": 1e-3},
        "finetune": {"steps": 2, "batch_size": 8, "checkpoint_every": 2},
        "sampling": {"steps": 2, "guidance": [1, 2], "n_target": 4, "n_all": 10, "batch_size": 4},
        "judges": {"epochs": 1, "batch_size": 16},
    }
    return Study("smoke", overrides, progress=False)


def test_poisoning_tables_of_a_real_study(study):
    cells = study.cells()
    listing = tr.poison_manifests(study)
    assert list(listing.index) == [c.name for c in cells]
    for name in listing.index:
        assert (study.store.root / listing.loc[name, "manifest (under artifacts/)"]).is_file()
    counts = tr.class_counts_table(study)
    assert (counts.loc["total"] == len(study.train_set)).all()
    assert counts.iloc[study.target]["badnets1 p=20%"] == 4 + n_poison_for(40, 0.2)
    table = tr.r_train_table(study)
    assert len(table) == 1 and table["r_train"].iloc[0] == pytest.approx(table["r_train (formula)"].iloc[0])
    assert table["r_train"].iloc[0] == pytest.approx(8 / 12)
    assert np.isnan(table["paper ImageNette"].iloc[0])  # the paper has no p = 20 %
    assert tr.same_indices_across_kinds(study)
    facts = tr.poisoning_facts(study)
    assert facts["n_images"] == 40 and facts["showcase_r_train"] == pytest.approx(8 / 12)
    examples = tr.trigger_examples(study, n=3)
    assert set(examples) == {"clean", *TRIGGERS}
    top, left, size = tr.corner_box(study)
    b1 = examples["badnets1"][:, top:, left:]
    assert not np.array_equal(b1, examples["clean"][:, top:, left:])
    np.testing.assert_array_equal(examples["badnets1"][:, :top], examples["clean"][:, :top])


def test_training_and_generation_tables_of_a_real_study(study):
    compute = tr.finetune_all(study)
    assert list(compute.index) == [c.name for c in study.cells()]
    assert (compute["steps"] == 2).all() and (compute["images seen"] == 16).all()
    pretrain = tr.pretrain_table(study)
    facts = tr.training_facts(study, compute, pretrain)
    assert facts["images_seen"] == 16 * len(study.cells()) + 16
    assert "2 steps" in facts["scratch_comparison"]
    n = len(study.cells())
    assert facts["training_sentence"].startswith(f"The {n} fine-tunings took ")
    assert f"over {16 * n:,} training images" in facts["training_sentence"]
    assert "pre-trained in this run" in facts["training_sentence"]  # this fixture trains its base DM
    summary = tr.model_summary(tr.base_model(study))
    n_params = sum(p.numel() for p in study.model(None).trainable_parameters())
    assert int(summary.loc["trainable parameters", "value"]) == n_params

    check = tr.regeneration_check(study, tr.showcase_cell(study), n=2)
    assert check["equal"] and check["max_abs_diff"] == 0 and len(check["indices"]) == 2

    acc = tr.class_accuracy_table(study)
    assert list(acc.index) == ["real test images", "pre-trained"] + [c.name for c in study.cells()]
    assert acc.loc["real test images", "all"] == pytest.approx(study.judges.classifier_report()["accuracy"])
    assert ((acc.fillna(0) >= 0) & (acc.fillna(0) <= 1)).all().all()
    assert set(tr.target_figures(study, n=2)) == {"controls", "badnets1"}
