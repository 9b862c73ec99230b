"""Adding a trigger or a defense touches its own code and one registration: a toy trigger and a toy
detector registered here (and nowhere else) are accepted by the profile checks and run through the smoke
chain (poisoning, fine-tuning, generation, the judges, chapter 05's detection table)."""

import math

import numpy as np
import pytest
import torch

from bibad_utils import config, defenses, triggers
from bibad_utils.config import ConfigError
from bibad_utils.experiments import castle_walls as cw
from bibad_utils.stages import Cell, Study


class CornerDot(triggers.Trigger):
    """Toy trigger: the 2 x 2 top-left pixels set to white."""

    kind = "corner_dot"

    def __init__(self, image_size: int, seed: int, value: float = 1.0):
        super().__init__(image_size, seed, {"value": value})
        self.value = float(value)

    def apply(self, x):
        x = self._check(x).clone()
        x[..., :2, :2] = self.value
        return x


TOY_TRIGGER = triggers.TriggerKind(
    "corner_dot", CornerDot,
    (triggers.TriggerOption("value", 1.0, lambda v, s: isinstance(v, float) and -1 <= v <= 1,
                            lambda s: "a pixel value in [-1, 1]"),),
    "2 x 2 white pixels in the top-left corner")


def _corner_brightness(f, images, ctx, *, corner=2):
    x = torch.as_tensor(np.asarray(images)).float()  # uint8 [N, H, W, 3]
    return {"scores": x[:, :corner, :corner, :].mean(dim=(1, 2, 3)).double().numpy()}


TOY_DETECTOR = defenses.Detector(
    "Corner", _corner_brightness, {"corner": 2}, "mean brightness of the top-left corner",
    check=defenses.option_checker({"corner": 1}))


@pytest.fixture
def registered(monkeypatch):
    """The toy trigger and detector in the registries for one test (removed afterwards)."""
    monkeypatch.setitem(triggers.TRIGGERS, TOY_TRIGGER.name, TOY_TRIGGER)
    monkeypatch.setitem(defenses.DETECTORS, TOY_DETECTOR.name, TOY_DETECTOR)


def test_registries_drive_the_allowed_values(registered):
    assert "corner_dot" in config.attack_kinds() and "Corner" in cw.detectors()
    assert cw.detector_key("Corner") == "corner" and cw.defaults()["corner"] == {"corner": 2}
    cfg = config.load_profile("smoke", {"attacks": ["corner_dot"], "triggers": {"corner_dot": {"value": 0.5}},
                                        "defenses": {"corner": {"corner": 3}}})
    assert cfg["attacks"] == ["corner_dot"]
    assert cw.validate_config(cfg["defenses"])["corner"] == {"corner": 3}
    with pytest.raises(ConfigError, match="defenses.corner.corner"):
        cw.validate_config({"corner": {"corner": 0}})
    with pytest.raises(ConfigError, match="triggers.corner_dot.value"):
        config.load_profile("smoke", {"attacks": ["corner_dot"], "triggers": {"corner_dot": {"value": 3.0}}})
    with pytest.raises(ConfigError, match="train_seeds.nothing"):
        config.load_profile("smoke", {"train_seeds": {"corner_dot": 2, "nothing": 1}})


def test_registration_refuses_a_taken_name():
    with pytest.raises(ConfigError, match="trigger kind"):
        triggers.register_trigger(triggers.TRIGGERS["badnets1"])
    with pytest.raises(ConfigError, match="detector"):
        defenses.register(defenses.DETECTORS["CD"])


def test_toy_trigger_and_toy_detector_through_the_smoke_chain(registered, tmp_path):
    study = Study("smoke", {"attacks": ["corner_dot"], "ratios": [0.2], "run_dir": str(tmp_path),
                            "sampling": {"guidance": [1]}, "train_seeds": {"corner_dot": 1}}, progress=False)
    cell = Cell("corner_dot", 0.2)
    assert study.grid_cells() == [cell]
    ps = study.poisoned(cell)
    idx = np.asarray(ps.indices)
    assert np.all(ps.images_uint8(idx)[:, :2, :2] == 255) and np.all(ps.labels[idx] == study.target)
    assert study.generations(cell)[("all", 1.0)].images.shape[1:] == (16, 16, 3)
    det = cw.detection_table(study, [cell])
    assert set(det.detector) == set(cw.detectors()) and "Corner" in set(det.detector)
    toy = det[det.detector == "Corner"].set_index("set")
    # the toy detector knows its toy trigger: it separates the known-answer and training sets
    assert toy.loc["known answer", "auroc"] >= 0.95 and toy.loc["training", "auroc"] >= 0.95
    assert all(math.isfinite(v) for v in det[det.set != "generated"].auroc)
    # its scores are cached under its own key, apart from the other detectors
    assert len(list(study.store.path("castle_detector", "x").parent.iterdir())) == len(det)
