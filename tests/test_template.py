"""The training-free trigger template (bibad_utils.judges.template): the pattern read off each trigger, its
check on real images with a known answer, the calibrated threshold, and clear errors."""

import numpy as np
import pytest
import torch

from bibad_utils.base import ConfigError
from bibad_utils.data import make_procedural, to_float, to_uint8
from bibad_utils.judges.template import (TEMPLATE_FALSE_ALARM, TriggerTemplate, pattern_of,
                                         template_check)
from bibad_utils.triggers import make_trigger


@pytest.fixture(scope="module")
def images():
    train = make_procedural(40, image_size=32, seed=0, split="train", background="gradient")
    test = make_procedural(60, image_size=32, seed=0, split="test", background="gradient")
    return train, test


def test_pattern_is_read_off_the_trigger():
    patch = make_trigger("badnets1", 32, seed=0)
    pattern, support = pattern_of(patch)
    assert support.sum() == patch.side ** 2 and support[-patch.side:, -patch.side:].all()
    assert torch.equal(pattern[0, -patch.side:, -patch.side:], patch.patch)
    blend = make_trigger("badnets2", 32, seed=0, alpha=0.2)
    _, support = pattern_of(blend)
    assert support.float().mean() > 0.5  # a full-image pattern
    assert pattern_of(make_trigger("wanet", 32, seed=0)) is None  # a warp paints nothing
    assert TriggerTemplate.of(make_trigger("wanet", 32, seed=0)) is None


@pytest.mark.parametrize("kind, options", [("badnets1", {}), ("badnets2", {"alpha": 0.2})])
def test_template_passes_its_check_on_real_images(images, kind, options):
    train, test = images
    trigger = make_trigger(kind, 32, seed=0, **options)
    tpl = TriggerTemplate.of(trigger).calibrate(train.images)
    # the threshold lets about TEMPLATE_FALSE_ALARM of the calibration images through
    assert np.mean(tpl.fires(train.images)) <= TEMPLATE_FALSE_ALARM + 1 / len(train.images)
    keep = test.labels != 0
    triggered = to_uint8(trigger.apply(to_float(test.images[keep])))
    check = template_check(tpl, test.images, triggered)
    assert check["passes"], check["reason"]
    assert check["tpr"] == 1.0 and check["fpr"] <= 0.05 and check["auroc"] > 0.99
    assert check["n_clean"] == len(test.images) and check["n_triggered"] == int(keep.sum())
    # the other kind's template does not read this trigger
    other = make_trigger("badnets2" if kind == "badnets1" else "badnets1", 32, seed=0)
    wrong = TriggerTemplate.of(other).calibrate(train.images)
    assert not template_check(wrong, test.images, triggered)["passes"]


def test_template_errors_name_the_parameter(images):
    train, _ = images
    tpl = TriggerTemplate.of(make_trigger("badnets1", 32, seed=0))
    with pytest.raises(ConfigError, match="threshold"):
        tpl.fires(train.images[:3])
    with pytest.raises(ConfigError, match="false_alarm"):
        tpl.calibrate(train.images, false_alarm=1.5)
    with pytest.raises(ConfigError, match="clean_images"):
        tpl.calibrate(train.images[:0])
    assert tpl.scores(train.images[:0]).shape == (0,)


def test_study_keeps_one_template_per_kind_and_a_variant_its_own(tmp_path):
    from bibad_utils.stages import Study

    study = Study("smoke", {"run_dir": str(tmp_path)}, progress=False)
    tpl = study.judges.template("badnets1")
    assert study.judges.template("badnets1") is tpl and np.isfinite(tpl.threshold)
    assert study.judges.template("wanet") is None
    bigger = study.variant({"triggers": {"badnets1": {"size": 7}}})
    assert int(bigger.judges.template("badnets1").support.sum()) == 49 and int(tpl.support.sum()) == 25
    report = study.judges.template_report("badnets1")
    assert report["n_clean"] == len(study.test_set) and 0 <= report["fpr"] <= 1
    assert study.judges.template_report("wanet") is None


def test_grain_does_not_read_as_the_pattern_once_the_threshold_has_seen_it():
    # black images, as MNIST's background: a clean corner is constant, so a threshold set on plain images
    # is about 0 and any grain in a generated corner would fire half the time
    from bibad_utils.judges.template import corrupted

    black = np.zeros((400, 32, 32, 3), np.uint8)
    grainy = corrupted(black, {"noise": 0.25}, seed=5)
    trigger = make_trigger("badnets1", 32, seed=0)
    naive = TriggerTemplate.of(trigger).calibrate(black)
    assert naive.fires(grainy).mean() > 0.3
    robust = TriggerTemplate.of(trigger).calibrate(corrupted(black, {"noise": 0.25}, seed=6))
    assert robust.fires(grainy).mean() < 0.05
    pasted = corrupted(to_uint8(trigger.apply(to_float(black))), {"noise": 0.25}, seed=7)
    assert robust.fires(pasted).mean() == 1.0
    assert np.array_equal(corrupted(black, {"noise": 0.25}, seed=5), grainy)  # seeded
