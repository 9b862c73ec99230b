"""CD's logit calibration: one scale per classifier, fixed on clean held-out images before any set is
scored, the same for every scored set; its options; and the sensitivity table of chapter 05.

The detector-level tests use a small CNN with seeded random weights on seeded random images; the
study-level test runs the smoke profile shrunk to seconds (as ``tests/test_insights.py`` does).
"""

import numpy as np
import pytest
import torch
from torch import nn

from bibad_utils import defenses
from bibad_utils.config import ConfigError
from bibad_utils.defenses import cd as cd_module

SIZE = 8


def small_cnn(seed=0, num_classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)).eval()


def random_images(n, seed, low=0, high=256):
    return np.random.default_rng(seed).integers(low, high, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


CALIBRATED = {"steps": 4, "gamma": 0.04, "logit_calibration": "clean_heldout", "logit_reference": 20.0}


@pytest.fixture(scope="module")
def setup():
    f = small_cnn()
    heldout = random_images(24, seed=1)
    a = random_images(10, seed=2)                  # one scored set
    b = random_images(10, seed=3, low=200)         # another, far brighter: other logits
    return f, heldout, a, b


def test_one_scale_for_every_scored_set(setup):
    """The old rule recomputed the scale on each scored set (3.3 on the training subset, 7.6 on the
    generations); now both sets get the scale measured on the held-out images."""
    f, heldout, a, b = setup
    assert defenses.mean_max_logit(f, a) != pytest.approx(defenses.mean_max_logit(f, b), rel=1e-2)
    ctx = defenses.DetectorContext(heldout=heldout)
    sa = float(defenses.run_detector("CD", f, a, ctx, **CALIBRATED)["logit_scale"])
    sb = float(defenses.run_detector("CD", f, b, ctx, **CALIBRATED)["logit_scale"])
    assert sa == sb == pytest.approx(20.0 / defenses.mean_max_logit(f, heldout))
    # measured once by the caller (the stage's cached calibration): the same number, bit for bit
    once = defenses.DetectorContext(heldout_max_logit=defenses.mean_max_logit(f, heldout))
    assert float(defenses.run_detector("CD", f, b, once, **CALIBRATED)["logit_scale"]) == sb
    none = defenses.run_detector("CD", f, a, ctx, steps=2)     # the registry's default: the reference recipe
    assert float(none["logit_scale"]) == 1.0


def test_calibration_never_sees_the_scored_images(setup, monkeypatch):
    f, heldout, a, b = setup
    seen = []
    real = cd_module.mean_max_logit

    def spy(model, images, **kwargs):
        seen.append(images)
        return real(model, images, **kwargs)

    monkeypatch.setattr(cd_module, "mean_max_logit", spy)
    ctx = defenses.DetectorContext(heldout=heldout)
    for images in (a, b):
        defenses.run_detector("CD", f, images, ctx, **CALIBRATED)
    assert len(seen) == 2 and all(images is heldout for images in seen)


def test_cd_scores_of_a_set_do_not_depend_on_what_else_is_scored(setup):
    """A's scores alone and A's scores scored together with B agree: under a per-set scale they do not."""
    f, heldout, a, b = setup
    ctx = defenses.DetectorContext(heldout=heldout)
    alone = defenses.run_detector("CD", f, a, ctx, **CALIBRATED)["scores"]
    joint = defenses.run_detector("CD", f, np.concatenate([a, b]), ctx, **CALIBRATED)["scores"][:len(a)]
    np.testing.assert_allclose(joint, alone, rtol=1e-4, atol=1e-4)
    # the old rule's scales, for contrast: the scale of A alone and of A with B differ, and so do the scores
    s_alone = defenses.logit_calibration(f, a, 20.0)
    s_joint = defenses.logit_calibration(f, np.concatenate([a, b]), 20.0)
    assert abs(s_alone / s_joint - 1) > 0.05
    old_alone = defenses.cd_scores(f, a, steps=4, gamma=0.04, logit_scale=s_alone)
    old_joint = defenses.cd_scores(f, np.concatenate([a, b]), steps=4, gamma=0.04, logit_scale=s_joint)[:len(a)]
    assert not np.allclose(old_joint, old_alone, rtol=1e-4, atol=1e-4)


def test_calibrated_cd_refuses_to_calibrate_on_the_scored_set(setup):
    f, heldout, a, _ = setup
    with pytest.raises(ConfigError, match="context.heldout"):
        defenses.run_detector("CD", f, a, defenses.DetectorContext(), **CALIBRATED)
    with pytest.raises(ConfigError, match="context.heldout"):
        defenses.run_detector("CD", f, a, defenses.DetectorContext(heldout=a), **CALIBRATED)


@pytest.mark.parametrize("options, param, allowed", [
    ({"logit_calibration": "per_set"}, "CD.logit_calibration", "clean_heldout | none"),
    ({"logit_calibration": "clean_heldout", "logit_reference": None}, "CD.logit_reference", "a number > 0"),
    ({"logit_calibration": "clean_heldout", "logit_reference": -1.0}, "CD.logit_reference", "a number > 0"),
    ({"logit_calibration": "none", "logit_reference": 20.0}, "CD.logit_reference", "null with logit_calibration none"),
])
def test_run_detector_validates_the_calibration(setup, options, param, allowed):
    f, heldout, a, _ = setup
    with pytest.raises(ConfigError) as err:
        defenses.run_detector("CD", f, a, defenses.DetectorContext(heldout=heldout), steps=1, **options)
    assert err.value.param == param and allowed in str(err.value)


@pytest.mark.parametrize("section, param, allowed", [
    ({"cd": {"logit_calibration": "per_set"}}, "defenses.cd.logit_calibration", "clean_heldout | none"),
    ({"cd": {"logit_calibration": "clean_heldout", "logit_reference": None}}, "defenses.cd.logit_reference",
     "a number > 0 with logit_calibration clean_heldout"),
    ({"cd": {"logit_calibration": "none"}}, "defenses.cd.logit_reference", "null with logit_calibration none"),
    ({"cd": {"logit_reference": "20"}}, "defenses.cd.logit_reference", "a number > 0"),
    ({"cd_sensitivity": [None, 0]}, "defenses.cd_sensitivity", "each null (no calibration) or a number > 0"),
    ({"cd_sensitivity": [10, 10.0]}, "defenses.cd_sensitivity", "distinct"),
    ({"cd_sensitivity": 10}, "defenses.cd_sensitivity", "a list"),
    ({"n_calibration": 0}, "defenses.n_calibration", "an integer >= 1"),
])
def test_profile_validates_the_calibration(section, param, allowed):
    from bibad_utils.defenses.profile import DEFENSES

    with pytest.raises(ConfigError) as err:
        DEFENSES.validate(section)
    assert err.value.param == param and allowed in str(err.value)


def test_profile_defaults_and_shipped_profiles():
    from bibad_utils.config import load_profile
    from bibad_utils.defenses.profile import DEFENSES

    cfg = DEFENSES.validate(None)
    assert cfg["cd"]["logit_calibration"] == "clean_heldout" and cfg["cd"]["logit_reference"] == 20.0
    assert cfg["cd_sensitivity"] == [None, 5.0, 10.0, 20.0, 40.0]
    off = DEFENSES.validate({"cd": {"logit_calibration": "none", "logit_reference": None}, "cd_sensitivity": []})
    assert off["cd"]["logit_reference"] is None and off["cd_sensitivity"] == []
    # the registry keeps the reference recipe (no rescaling); the project's calibration is a stated deviation
    assert defenses.DETECTORS["CD"].defaults["logit_calibration"] == "none"
    assert load_profile("paper")["defenses"]["cd"]["logit_calibration"] == "none"
    for name in ("smoke", "demo"):
        assert load_profile(name)["defenses"]["cd"]["logit_calibration"] == "clean_heldout"


# --------------------------------------------------------------------------------- the stage

TINY = {
    "dataset": {"n_per_class": 8, "n_test_per_class": 4},
    "finetune": {"steps": 1, "checkpoint_every": 1},
    "sampling": {"steps": 2, "guidance": [1, 3], "n_target": 6, "n_all": 10, "batch_size": 8},
    "judges": {"epochs": 1},
    "ratios": [0.2],
    "controls": [],
}


def test_stage_scores_every_set_with_one_scale_and_the_sensitivity_table(tmp_path):
    from bibad_utils.experiments.castle_walls import calibration, detection, figures, tables
    from bibad_utils.stages import Cell, Study

    defs = {"cd": {"steps": 2}, "n_detect": 10, "n_known": 6, "n_boot": 20, "cd_sensitivity": [None, 10]}
    study = Study("smoke", {**TINY, "run_dir": str(tmp_path), "defenses": defs}, progress=False)
    cell = Cell("badnets1", 0.2)
    held = calibration.heldout_indices(study)
    known = calibration.known_answer_indices(study)
    assert len(held) == 40 - 6 and not set(held) & set(known)

    cal = calibration.cd_calibration(study, cell)
    scale = 20.0 / cal["mean_max_logit"]
    runs = {s: detection.detector_scores(study, cell, s, "CD") for s in ("known answer", "training", "generated")}
    assert {float(r["logit_scale"]) for r in runs.values()} == {scale}
    key = study.store.list("castle_detector")[0]
    manifest = study.store.load_manifest("castle_detector", key)
    assert manifest["logit_scale"] == scale and manifest["n_heldout"] == len(held)

    sens = detection.cd_sensitivity(study, cell)
    assert list(sens["label"]) == ["none", "10", "20"] and list(sens["in_use"]) == [False, False, True]
    assert sens.shape[0] == 3 and {"auroc_train", "auroc_gen", "diff", "diff_lo", "diff_hi", "logit_scale"} <= set(sens)
    assert sens["logit_scale"].tolist() == pytest.approx([1.0, 10.0 / cal["mean_max_logit"], scale])
    in_use = sens[sens.in_use].iloc[0]
    expected = detection.auroc_interval(runs["training"]["scores"], runs["training"]["truth"], 20, study.seed)[0]
    assert in_use["auroc_train"] == pytest.approx(expected, nan_ok=True)
    # the profile's own setting reused the detection artifacts: 2 more CD runs per extra reference only
    assert len(study.store.list("castle_detector")) == 3 + 2 * 2
    wide = tables.cd_sensitivity_wide(sens)
    assert list(wide.index) == ["none", "10", "20"] and wide.loc["20", "in use"] == "yes"
    summary = tables.cd_sensitivity_summary(sens)
    assert summary["nb05_cdsens_reference"] == "20" and summary["nb05_cdsens_scale"] == pytest.approx(scale)
    assert summary["nb05_cdsens_n_heldout"] == len(held)
    figures.cd_sensitivity_figure(sens)
    # the generations classifier is calibrated on its own, on the same images
    other = calibration.cd_calibration(study, cell, "generations classifier")
    assert other["n_heldout"] == cal["n_heldout"]

    # only CD's artifacts depend on the calibration settings: STRIP keeps its key, a calibrated CD does not
    detection.detector_scores(study, cell, "training", "STRIP")
    changed = Study("smoke", {**TINY, "run_dir": str(tmp_path),
                              "defenses": {**defs, "n_calibration": 5, "cd_sensitivity": []}}, progress=False)
    n_before = len(study.store.list("castle_detector"))
    detection.detector_scores(changed, cell, "training", "STRIP")
    assert len(study.store.list("castle_detector")) == n_before
    none = {"logit_calibration": "none", "logit_reference": None}
    detection.detector_scores(changed, cell, "training", "CD", options=none)          # n_calibration unused
    assert len(study.store.list("castle_detector")) == n_before
    detection.detector_scores(changed, cell, "training", "CD")
    assert len(study.store.list("castle_detector")) == n_before + 1
    with pytest.raises(ConfigError, match="defenses.cd.logit_reference"):
        detection.detector_scores(changed, cell, "training", "CD", options={"logit_calibration": "none"})
