"""The ``judges`` section of a profile: its keys and their validation."""

from __future__ import annotations

from bibad_utils.config import ConfigError
from bibad_utils.judges.augment import PHOTOMETRIC_KEYS, check_photometric
from bibad_utils.judges.models import ARCHS
from bibad_utils.judges.training import check_hparams

JUDGE_KEYS = ("arch", "epochs", "batch_size", "lr", "pretrained", "input_size", "optimizer", "weight_decay",
              "augment", "crop_pad", "hflip") + PHOTOMETRIC_KEYS
_REQUIRED_KEYS = ("arch", "epochs", "batch_size", "lr")


def validate_judges(section: dict) -> dict:
    """Check the ``judges`` section of a profile; return a copy.

    Required: ``arch``, ``epochs``, ``batch_size``, ``lr``. Optional (defaults of
    :func:`train_classifier`): ``pretrained``, ``input_size``, ``optimizer``, ``weight_decay``,
    ``augment``, ``crop_pad``, ``hflip``, ``color_jitter``, ``blur``, ``noise``. The section is passed as keyword arguments to
    :func:`train_classifier` and :func:`train_trigger_detector`.
    """
    if not isinstance(section, dict):
        raise ConfigError("judges", section, "a mapping")
    unknown = sorted(set(section) - set(JUDGE_KEYS))
    if unknown:
        raise ConfigError(f"judges.{unknown[0]}", section[unknown[0]], f"a key among {JUDGE_KEYS}")
    missing = [k for k in _REQUIRED_KEYS if k not in section]
    if missing:
        raise ConfigError(f"judges.{missing[0]}", None, "a value (required)")
    s = dict(section)
    if s["arch"] not in ARCHS:
        raise ConfigError("judges.arch", s["arch"], f"one of {ARCHS}")
    check_hparams(s["epochs"], s["batch_size"], s["lr"], s.get("optimizer", "adamw"), s.get("weight_decay"),
                   s.get("crop_pad"))
    for key in ("pretrained", "augment", "hflip"):
        if key in s and not isinstance(s[key], bool):
            raise ConfigError(f"judges.{key}", s[key], "true or false")
    check_photometric(**{k: s[k] for k in PHOTOMETRIC_KEYS if k in s})
    if s.get("pretrained") and s["arch"] == "small_cnn":
        raise ConfigError("judges.pretrained", True, "false for arch small_cnn (no ImageNet weights)")
    size = s.get("input_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ConfigError("judges.input_size", size, "null or an integer >= 8")
    return s
