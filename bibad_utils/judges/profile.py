"""The ``judges`` section of a profile: its keys (the keyword arguments of :func:`train_classifier`, whose
signature holds the optional keys' defaults) and their validation."""

from __future__ import annotations

from bibad_utils.base import ConfigError
from bibad_utils.judges.augment import PHOTOMETRIC_KEYS
from bibad_utils.judges.models import ARCHS
from bibad_utils.judges.training import OPTIMIZERS, train_classifier
from bibad_utils.schema import Field, Section, signature_defaults

_STRENGTH = "a maximum strength in [0, 1] (0: off)"


def _fields() -> dict[str, Field]:
    fields = {
        "arch": Field("choice", choices=ARCHS),
        "epochs": Field("int", low=1),
        "batch_size": Field("int", low=2),
        "lr": Field("number", low=0, high=10, low_open=True, high_open=True, allowed="a learning rate in (0, 10)"),
        "pretrained": Field("bool", doc="ImageNet weights (resnet18 / resnet50 only)"),
        "input_size": Field("int", low=8, nullable=True, allowed="null or an integer >= 8",
                            doc="side the images are resized to (null: as they come)"),
        "optimizer": Field("choice", choices=OPTIMIZERS),
        "weight_decay": Field("number", low=0, nullable=True, allowed="null or a number >= 0"),
        "augment": Field("bool", doc="random translation (and flips with hflip)"),
        "crop_pad": Field("int", low=0, nullable=True, allowed="null or an integer >= 0"),
        "hflip": Field("bool"),
    }
    fields.update({k: Field("number", low=0, high=1, allowed=_STRENGTH) for k in PHOTOMETRIC_KEYS})
    fields = signature_defaults(train_classifier, fields)
    # not a training setting: whether chapter 04 also trains these judges WITHOUT photometric augmentation
    # (its ablation table; three more judges, about 100 s of a 2-core first run)
    fields["ablation"] = Field("bool", default=True)
    return fields


def _check(values: dict, prefix: str, profile: dict) -> None:
    if values.get("pretrained") and values["arch"] == "small_cnn":
        raise ConfigError(f"{prefix}.pretrained", True, "false for arch small_cnn (no ImageNet weights)")


# Left as written in the profile: the section is part of the judges' artifact keys.
JUDGES = Section("judges", _fields(), check=_check, fill=False)
STUDY_KEYS = ("ablation",)  # keys that steer the study, not a judge's training (nor its artifact key)
JUDGE_KEYS = tuple(k for k in JUDGES.field_map() if k not in STUDY_KEYS)  # train_classifier's keyword arguments


def judge_settings(section: dict) -> dict:
    """The ``judges`` section without :data:`STUDY_KEYS`: what a judge's training and artifact key read."""
    return {k: v for k, v in section.items() if k not in STUDY_KEYS}


def wants_ablation(section: dict) -> bool:
    """Whether the study also trains the judges without photometric augmentation (chapter 04's ablation):
    ``judges.ablation`` and photometric augmentation to ablate."""
    return bool(JUDGES.value(section, "ablation")) and any(section.get(k, 0) for k in PHOTOMETRIC_KEYS)

def validate_judges(section: dict, prefix: str = "judges") -> dict:
    """Check a ``judges`` section (required: ``arch``, ``epochs``, ``batch_size``, ``lr``; the others
    default as :func:`train_classifier` does); returns a copy. The section is passed as keyword arguments
    to :func:`train_classifier` and :func:`train_trigger_detector`."""
    return JUDGES.validate(section, prefix)
