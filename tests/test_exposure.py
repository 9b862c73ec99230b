"""The exposure curve (stage 02): a longer fine-tuning keeps evenly spaced checkpoints, each the model a
shorter fine-tuning ends with, and each is read by both trigger instruments beside the clean control."""

import numpy as np
import pytest
import torch

from bibad_utils.base import ConfigError
from bibad_utils.cells import Cell
from bibad_utils.checkpoints import kept_checkpoints
from bibad_utils.experiments.training_report.exposure import (COLUMNS, exposure_curve, exposure_figure, exposure_variant,
                                                              first_learned, profile_exposure)
from bibad_utils.stages import Study

CELL = Cell("badnets1", 0.1)


@pytest.fixture
def study(tmp_path):
    return Study("smoke", {"run_dir": str(tmp_path / "run")}, progress=False)


def test_the_variant_runs_the_epochs_in_equal_stretches_and_checks_its_arguments(study):
    variant = exposure_variant(study, 1, 2)  # 200 images at batch 16: 12.5 steps an epoch
    ft = variant.cfg["finetune"]
    assert (ft["steps"], ft["checkpoint_every"], ft["keep_checkpoints"]) == (14, 7, 2)
    assert study.cfg["finetune"]["steps"] == 6  # the study itself is unchanged
    for epochs, points, param in ((0, 2, "epochs"), (True, 2, "epochs"), (1, 0, "points"), (1, 2.5, "points")):
        with pytest.raises(ConfigError) as err:
            exposure_variant(study, epochs, points)
        assert err.value.param == param
    for cells in ([], [Cell("clean")], ["badnets1"]):
        with pytest.raises(ConfigError) as err:
            exposure_curve(study, cells, parallel=False)
        assert err.value.param == "cells"
    with pytest.raises(ConfigError) as err:
        exposure_curve(study, [CELL], w=3, parallel=False)
    assert err.value.param == "w" and "[1.0, 5.0]" in str(err.value)


def test_a_kept_checkpoint_is_the_shorter_fine_tuning_and_every_one_is_read_twice(study):
    from safetensors.torch import load_file

    variant = exposure_variant(study, 1, 2)
    kept = kept_checkpoints(variant.store.path("finetune", variant.model_key(CELL)))
    assert [k["step"] for k in kept] == [7, 14]
    shorter = study.variant({"finetune": {"steps": 7}})  # the same fine-tuning stopped at the first checkpoint
    state = shorter.model(CELL).state_dict_to_save()
    first = load_file(kept[0]["path"])
    assert all(torch.equal(first[k], state[k].cpu()) for k in first)
    curve = exposure_curve(study, [CELL], epochs=1, points=2, parallel=False)
    assert list(curve.columns) == COLUMNS and len(curve) == 4  # 2 checkpoints x (detector, template)
    assert sorted(set(curve["instrument"])) == ["detector", "template"]
    assert np.allclose(curve["epochs"].unique(), [7 * 16 / 200, 14 * 16 / 200])
    assert ((curve["rate_lo"] <= curve["rate"]) & (curve["rate"] <= curve["rate_hi"])).all()
    assert (curve["learned"] == (curve["rate_lo"] > curve["clean_hi"])).all()
    summary = first_learned(curve)
    assert len(summary) == 2 and (summary["last_epochs"] == 14 * 16 / 200).all()
    again = exposure_curve(study, [CELL], epochs=1, points=2, parallel=False)  # read back from the store
    assert again.equals(curve)
    # chapter 02 draws the curve of the profile's exposure section: the same curve, and a sentence per cell
    measured = study.variant({"exposure": {"cells": ["badnets1:0.1"], "epochs": 1, "points": 2}})
    shown, facts = profile_exposure(measured, parallel=False)
    assert shown.equals(curve)
    assert "badnets1" in facts["nb02_exposure_sentence"] and "w = 1" in facts["nb02_exposure_sentence"]
    assert facts["nb02_exposure_sentence"].count(", read by the ") == 2  # one clause per instrument
    assert len(exposure_figure(measured, shown).axes) == 2


def test_without_cells_the_chapter_says_how_to_measure_it_and_bad_sections_are_refused(study):
    curve, facts = profile_exposure(study)
    assert curve is None and "scripts/exposure_curve.py --profile smoke" in facts["nb02_exposure_sentence"]
    assert facts["nb02_exposure_own"] == f"{6 * 16 / 200:.1f}"
    assert len(exposure_figure(study, curve).axes) == 1  # the notice
    for section, param in (({"cells": ["clean"]}, "exposure.cells"), ({"cells": "badnets1:0.1"}, "exposure.cells"),
                           ({"cells": ["badnets1:x"]}, "exposure.cells"), ({"points": 0}, "exposure.points"),
                           ({"epochs": 0}, "exposure.epochs"), ({"w": -1}, "exposure.w"), ({"cell": []}, "exposure.cell")):
        with pytest.raises(ConfigError) as err:
            Study("smoke", {"run_dir": str(study.run_dir), "exposure": section}, progress=False)
        assert err.value.param == param
