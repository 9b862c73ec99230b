"""The ``judges`` section of a profile: its keys (the keyword arguments of :func:`train_classifier`, whose
signature holds the optional keys' defaults), the ``wanet_*`` keys of the warp detector's own recipe
(:mod:`bibad_utils.judges.warp_detector`, whose signatures hold their defaults), and their validation."""

from __future__ import annotations

import inspect

from bibad_utils.base import ConfigError, repo_path
from bibad_utils.judges.augment import PHOTOMETRIC_KEYS
from bibad_utils.judges.models import ARCHS
from bibad_utils.judges.training import OPTIMIZERS, train_classifier
from bibad_utils.judges.warp_detector import METHODS, holdout_split, train_warp_detector
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
    fields.update(_warp_fields())
    # not a training setting: whether chapter 04 also trains these judges WITHOUT photometric augmentation
    # (its ablation table; three more judges, about 100 s of a 2-core first run)
    fields["ablation"] = Field("bool", default=True)
    # not a training setting either: a content judge nobody in this project trained (check_external)
    fields["external"] = Field("value", default=None, nullable=True, allowed=EXTERNAL_ALLOWED,
                               doc="null, or {kind: cifar_resnet, path: <safetensors file>} (chapter 02's base DM check)")
    return fields


# External content judges: kind -> what its file is. Only read by chapter 02's check of the clean base DM.
EXTERNAL_KINDS = {"cifar_resnet": "a CIFAR ResNet's safetensors weights (bibad_utils.judges.cifar_resnet)"}
EXTERNAL_ALLOWED = "null or a mapping {kind: cifar_resnet, path: <file, relative to the repository root>}"


def check_external(value, param: str = "judges.external") -> dict | None:
    """The ``judges.external`` entry checked: None, or ``{"kind", "path"}`` with ``kind`` in
    :data:`EXTERNAL_KINDS` and ``path`` an existing file (relative paths from the repository root; returned
    resolved, absolute). ConfigError naming the key, the value and what is allowed otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(param, value, EXTERNAL_ALLOWED)
    for key in value:
        if key not in ("kind", "path"):
            raise ConfigError(f"{param}.{key}", value[key], "a key among ['kind', 'path']")
    kind, path = value.get("kind"), value.get("path")
    if kind not in EXTERNAL_KINDS:
        raise ConfigError(f"{param}.kind", kind, f"one of {list(EXTERNAL_KINDS)}")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{param}.path", path, f"the path of {EXTERNAL_KINDS[kind]}")
    resolved = repo_path(path)
    if not resolved.is_file():
        raise ConfigError(f"{param}.path", path, f"an existing file (there is none at {resolved})")
    return {"kind": kind, "path": str(resolved)}


# The warp (WaNet) detector's recipe: profile key -> (function whose signature holds the default, its argument).
# The other judges never read these keys, and their artifact keys never hold them (:func:`judge_settings`).
WARP_KEYS = {
    "wanet_detector": (train_warp_detector, "method"),
    "wanet_epochs": (train_warp_detector, "epochs"),
    "wanet_random_warps": (train_warp_detector, "random_warps"),
    "wanet_generated": (train_warp_detector, "generated_fraction"),
    "wanet_holdout": (holdout_split, "holdout"),
}


def _warp_fields() -> dict[str, Field]:
    def default(key):
        fn, arg = WARP_KEYS[key]
        return inspect.signature(fn).parameters[arg].default

    return {
        "wanet_detector": Field("choice", choices=METHODS, default=default("wanet_detector"),
                                doc="the warp detector's recipe: field (a matched filter of the trigger's field) or "
                                    "cnn (the judges' network); bibad_utils.judges.warp_detector"),
        "wanet_epochs": Field("int", low=1, default=default("wanet_epochs"),
                              doc="cnn: epochs of the warp detector (no blur or noise augmentation; colour jitter as set)"),
        "wanet_random_warps": Field("number", low=0, high=1, default=default("wanet_random_warps"),
                                    allowed="a share in [0, 1]",
                                    doc="share of the clean real images warped by a random field (labelled clean)"),
        "wanet_generated": Field("number", low=0, high=1, high_open=True, default=default("wanet_generated"),
                                 allowed="a share in [0, 1) (0: real images only)",
                                 doc="share of each batch drawn from the clean pre-trained DM's generations"),
        "wanet_holdout": Field("number", low=0, high=1, low_open=True, high_open=True,
                               default=default("wanet_holdout"), allowed="a share in (0, 1)",
                               doc="share of those generations held out for the detector's check"),
    }


def _check(values: dict, prefix: str, profile: dict) -> None:
    check_external(values.get("external"), f"{prefix}.external")
    if values.get("pretrained") and values["arch"] == "small_cnn":
        raise ConfigError(f"{prefix}.pretrained", True, "false for arch small_cnn (no ImageNet weights)")


# Left as written in the profile: the section is part of the judges' artifact keys.
JUDGES = Section("judges", _fields(), check=_check, fill=False)
STUDY_KEYS = ("ablation", "external")  # keys that steer the study, not a judge's training (nor its artifact key)
# train_classifier's keyword arguments
JUDGE_KEYS = tuple(k for k in JUDGES.field_map() if k not in STUDY_KEYS and k not in WARP_KEYS)


def judge_settings(section: dict) -> dict:
    """The ``judges`` section without :data:`STUDY_KEYS` and :data:`WARP_KEYS`: what a judge's training and
    artifact key read (the warp detector adds :func:`warp_settings`)."""
    return {k: v for k, v in section.items() if k not in STUDY_KEYS and k not in WARP_KEYS}


def warp_settings(section: dict) -> dict:
    """The warp detector's recipe from a ``judges`` section, every key with its default filled in, named
    as the arguments they go to: ``method``, ``epochs``, ``random_warps``, ``generated_fraction`` (of
    :func:`train_warp_detector`) and ``holdout`` (of :func:`holdout_split`)."""
    return {arg: JUDGES.value(section, key) for key, (_, arg) in WARP_KEYS.items()}


def wants_ablation(section: dict) -> bool:
    """Whether the study also trains the judges without photometric augmentation (chapter 04's ablation):
    ``judges.ablation`` and photometric augmentation to ablate."""
    return bool(JUDGES.value(section, "ablation")) and any(section.get(k, 0) for k in PHOTOMETRIC_KEYS)
