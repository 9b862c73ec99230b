"""The WaNet (warp) trigger detector's own recipe, on a planted set: 16 px procedural shapes, the study's
WaNet trigger, and a grainy procedural set standing in for a clean DM's generations. A few seconds each."""

import numpy as np
import pytest
import torch

from bibad_utils import metrics
from bibad_utils import store as st
from bibad_utils.config import ConfigError
from bibad_utils.data import make_procedural, to_float
from bibad_utils.judges import JUDGE_KEYS, holdout_split, is_warp_kind, predict, train_warp_detector, warp_check
from bibad_utils.judges.profile import JUDGES, WARP_KEYS, judge_settings, warp_settings
from bibad_utils.triggers import make_trigger
from bibad_utils.triggers.warp import WarpTrigger, apply_warp, random_warp_grids

SIZE = 16
TRAIN = make_procedural(30, SIZE, seed=0, split="train", background="gradient")
TEST = make_procedural(20, SIZE, seed=0, split="test", background="gradient")
# stand-in for a clean DM's generations: other shapes, with grain
GENERATED = make_procedural(8, SIZE, seed=3, split="train", background="gradient", noise_std=6.0).images
WANET = make_trigger("wanet", SIZE, seed=0)
FAST = dict(arch="small_cnn", batch_size=64, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def detector():
    return train_warp_detector(TRAIN, WANET, generated=GENERATED, exclude_class=0, seed=0, epochs=5, method="cnn", **FAST)


@pytest.fixture(scope="module")
def field():
    return train_warp_detector(TRAIN, WANET, generated=GENERATED, exclude_class=0, seed=0)


def test_random_warp_fields_are_seeded_of_the_trigger_scale_and_not_the_trigger():
    a = random_warp_grids(6, SIZE, 4, 0.5, torch.Generator().manual_seed(1))
    b = random_warp_grids(6, SIZE, 4, 0.5, torch.Generator().manual_seed(1))
    assert a.shape == (6, SIZE, SIZE, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    identity = WarpTrigger(SIZE, seed=0, strength=1e-9).grid
    own = (WANET.grid - identity).abs().mean()
    other = (a - identity).abs().mean((1, 2, 3))
    assert torch.all((other > own / 2) & (other < own * 2))  # the same scale of displacement ...
    assert not any(torch.allclose(g, WANET.grid[0], atol=1e-4) for g in a)  # ... but other fields
    x = to_float(TEST.images[:3])
    assert torch.equal(apply_warp(x, WANET.grid), WANET.apply(x))  # the trigger is one such warp


def _separation(det):
    x = to_float(TEST.images[TEST.labels != 0])
    p = lambda z: predict(det, z)[1][:, 1]
    clean, warped = p(x), p(WANET.apply(x))
    other = p(apply_warp(x, random_warp_grids(len(x), SIZE, 4, 0.5, torch.Generator().manual_seed(5))))
    y = np.r_[np.zeros(len(x)), np.ones(len(x))]
    return metrics.auroc(np.r_[clean, warped], y), metrics.auroc(np.r_[other, warped], y)


def test_the_field_recipe_is_a_matched_filter_of_the_trigger_saved_like_any_judge(field, tmp_path):
    from bibad_utils.judges import load_classifier, save_classifier
    from bibad_utils.judges.models import WarpFieldFeatures

    vs_clean, vs_other = _separation(field)
    assert vs_clean > 0.9 and vs_other > 0.8, (vs_clean, vs_other)
    assert isinstance(field.backbone, WarpFieldFeatures) and field.head.in_features == 2 * (SIZE - 2) ** 2
    meta = field.meta
    assert meta["method"] == "field" and meta["generated_images"] == len(GENERATED)
    assert meta["random_warp_images"] == round(0.5 * meta["trained_on"])
    # the head's logit difference is the regression's: P(trigger) = sigmoid(w . z + b)
    w = field.head.weight[1] - field.head.weight[0]
    x = to_float(TEST.images[:5])
    z = field.features(x)
    expected = torch.sigmoid(z @ w + field.head.bias[1] - field.head.bias[0])
    assert torch.allclose(torch.from_numpy(predict(field, x)[1][:, 1]), expected.detach(), atol=1e-5)
    again = load_classifier(save_classifier(field, tmp_path / "field"))  # mu, sd and the head in safetensors
    assert np.array_equal(predict(again, x)[1], predict(field, x)[1])
    twin = train_warp_detector(TRAIN, WANET, generated=GENERATED, exclude_class=0, seed=0)
    assert all(torch.equal(u, v) for u, v in zip(field.state_dict().values(), twin.state_dict().values()))
    with pytest.raises(ConfigError, match="judges.wanet_detector"):
        train_warp_detector(TRAIN, WANET, method="svm", seed=0)


def test_the_recipe_separates_the_trigger_from_clean_and_from_other_warps(detector):
    x = to_float(TEST.images[TEST.labels != 0])
    p = lambda z: predict(detector, z)[1][:, 1]
    clean, warped = p(x), p(WANET.apply(x))
    other = p(apply_warp(x, random_warp_grids(len(x), SIZE, 4, 0.5, torch.Generator().manual_seed(5))))
    vs_clean = metrics.auroc(np.r_[clean, warped], np.r_[np.zeros(len(x)), np.ones(len(x))])
    vs_other = metrics.auroc(np.r_[other, warped], np.r_[np.zeros(len(x)), np.ones(len(x))])
    assert vs_clean > 0.75 and vs_other > 0.7, (vs_clean, vs_other)
    meta = detector.meta
    assert meta["blur"] == meta["noise"] == 0.0 and meta["epochs"] == 5 and meta["random_warps"] == 0.5
    assert meta["generated_images"] == len(GENERATED) and meta["generated_per_batch"] == round(0.2 * 64)


def test_warp_check_counts_clean_trigger_and_other_warps(detector):
    rep = warp_check(detector, TEST, WANET, exclude_class=0, seed=1)
    n = int((TEST.labels != 0).sum())
    assert rep["n_clean"] == rep["n_triggered"] == rep["n_other_warp"] == n
    assert rep["fpr"] == rep["false_positives"] / n and rep["other_warp_fpr"] == rep["other_warp_false_positives"] / n
    assert rep["fpr_lo"] <= rep["fpr"] <= rep["fpr_hi"] and rep["accuracy"] > 0.6
    assert rep == warp_check(detector, TEST, WANET, exclude_class=0, seed=1, batch_size=7)  # seeded, any batching
    gen = warp_check(detector, GENERATED, WANET, quantize=True)
    assert gen["n_clean"] == len(GENERATED)


def test_training_is_seeded_and_checks_its_inputs():
    kw = dict(FAST, epochs=1, batch_size=32)
    a = train_warp_detector(TRAIN.images[:64], WANET, generated=GENERATED[:20], seed=4, **kw)
    b = train_warp_detector(TRAIN.images[:64], WANET, generated=GENERATED[:20], seed=4, **kw)
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ConfigError, match="trigger"):
        train_warp_detector(TRAIN.images[:64], make_trigger("badnets1", SIZE), seed=0, **kw)
    with pytest.raises(ConfigError, match="judges.wanet_generated"):
        train_warp_detector(TRAIN.images[:64], WANET, generated=GENERATED, generated_fraction=1.0, seed=0, **kw)
    with pytest.raises(ConfigError, match="judges.wanet_random_warps"):
        train_warp_detector(TRAIN.images[:64], WANET, random_warps=1.5, seed=0, **kw)


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_split(400, seed=0)
    assert len(held) == 100 and len(train) == 300 and not set(train) & set(held)
    assert sorted(np.r_[train, held]) == list(range(400))
    assert np.array_equal(held, holdout_split(400, seed=0)[1]) and not np.array_equal(held, holdout_split(400, 1)[1])
    assert len(holdout_split(2, seed=0, holdout=0.1)[1]) == 1
    with pytest.raises(ConfigError, match="judges.wanet_holdout"):
        holdout_split(10, 0, holdout=1.0)


def test_profile_keys_default_to_the_measured_recipe_and_are_checked():
    assert warp_settings({}) == {"method": "field", "epochs": 15, "random_warps": 0.5, "generated_fraction": 0.2,
                                 "holdout": 0.25}
    base = {"arch": "small_cnn", "epochs": 3, "batch_size": 128, "lr": 1e-3}
    assert JUDGES.validate({**base, "wanet_epochs": 20}) == {**base, "wanet_epochs": 20}  # as written
    for key, bad in (("wanet_epochs", 0), ("wanet_random_warps", 1.5), ("wanet_generated", 1.0),
                     ("wanet_holdout", 0.0), ("wanet_detector", "svm")):
        with pytest.raises(ConfigError, match=f"judges.{key}"):
            JUDGES.validate({**base, key: bad})
    assert not set(WARP_KEYS) & set(JUDGE_KEYS)  # train_classifier never receives them
    assert is_warp_kind("wanet") and not is_warp_kind("badnets1") and not is_warp_kind("badnets2")


def test_badnets_judges_keep_their_parameters_and_keys(tmp_path):
    """The warp recipe changes the WaNet detector's key only: the classifier's and the BadNets detectors'
    parameters are the judges section (less the study and warp keys) and the seed, as before."""
    from bibad_utils.stages import Study

    plain = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    tuned = plain.variant({"judges": {"wanet_epochs": 4, "wanet_generated": 0.0, "wanet_random_warps": 0.25}})
    section = {k: v for k, v in plain.cfg["judges"].items() if k != "ablation"}
    assert plain.judges.params() == tuned.judges.params() == {"judges": section, "seed": plain.seed}
    assert judge_settings(tuned.cfg["judges"]) == section
    assert plain.judges.key("classifier") == tuned.judges.key("classifier") == (
        "judge_classifier", st.artifact_key("judge_classifier", {"judges": section, "seed": plain.seed},
                                            [plain.data_key]))
    for kind in ("badnets1", "badnets2"):
        params = {"judges": section, "seed": plain.seed, "trigger_kind": kind, "trigger": plain.cfg["triggers"][kind]}
        expected = ("judge_detector", st.artifact_key("judge_detector", params, [plain.data_key]))
        assert plain.judges.key(kind) == tuned.judges.key(kind) == expected
    # the WaNet detector's key holds its recipe, and the clean pre-trained DM's generations when it uses them
    no_gen = plain.variant({"judges": {"wanet_generated": 0.0}})  # no base DM needed for its key
    params = {"judges": section, "seed": plain.seed, "trigger_kind": "wanet", "trigger": plain.cfg["triggers"]["wanet"]}
    assert tuned.judges.key("wanet") != no_gen.judges.key("wanet")
    assert no_gen.judges.key("wanet")[1] != st.artifact_key("judge_detector", params, [plain.data_key])
    with_gen = plain.variant({})
    with_gen.__dict__["pretrain_key"] = "0" * 16  # a stand-in key: no base DM is installed or sampled here
    with_gen.generation_key = lambda cell: "g" * 16 if cell is None else pytest.fail("only the base DM's set")
    _, params_gen, inputs = with_gen.judges.spec("wanet")
    assert inputs == [plain.data_key, "g" * 16] and params_gen["warp_recipe"] == warp_settings({})
    assert with_gen.judges.spec("badnets1") == ("judge_detector", {**params, "trigger_kind": "badnets1",
                                                "trigger": plain.cfg["triggers"]["badnets1"]}, [plain.data_key])


def test_study_trains_the_wanet_detector_with_its_recipe(tmp_path):
    """Without a pre-trained DM (smoke) the detector is trained on real images only; its report has the
    other-warp false alarms and no generated check."""
    from bibad_utils.stages import Study

    field = Study("smoke", {"run_dir": str(tmp_path), "attacks": ["wanet"]}, progress=False)
    assert field.judges.detector("wanet").meta["method"] == "field"
    study = field.variant({"judges": {"wanet_epochs": 2, "wanet_detector": "cnn"}})
    assert study.judges.key("wanet") != field.judges.key("wanet")
    det = study.judges.detector("wanet")
    assert det.meta["epochs"] == 2 and det.meta["blur"] == det.meta["noise"] == 0.0
    assert det.meta["generated_images"] == 0 and det.meta["color_jitter"] == study.cfg["judges"]["color_jitter"]
    rep = study.judges.detector_report("wanet")
    assert rep["generated"] is None and 0 <= rep["other_warp_fpr"] <= 1 and rep["n_clean"] > 0
    assert study.judges.cached("wanet")
