"""Settings of stage 05: the profile's ``defenses`` section (:func:`validate_config`, :func:`defense_config`),
the classifiers' settings (:func:`classifier_settings`) and the stage's constants."""

from __future__ import annotations

import copy
import math

import numpy as np

from bibad_utils.config import ATTACKS, ConfigError
from bibad_utils.defenses import DETECTORS as REGISTRY

STAGE = "05_castle_walls"
DETECTORS = tuple(REGISTRY)  # CD, STRIP, FCT (the reference recipe), FCT variant (the project's)
SOURCES = ("poisoned train (all)", "poisoned train (subset)", "generated")
# The scored sets: a known-answer set (clean non-target test images and the same images with the trigger
# pasted), a subset of the poisoned training set, and the poisoned DM's all-class generations.
SETS = ("known answer", "training", "generated")
# The two readings of the generation set: scored with the backdoored victim, or with a classifier
# trained on the generations themselves (chapter 05, section 2).
CLASSIFIERS = ("victim", "generations classifier")
# The profile key of each detector's options.
DETECTOR_KEYS = {name: name.lower().replace(" ", "_") for name in DETECTORS}

# "A few points" of TA lost by training on generations: the paper's largest drop (5.8 points, ImageNette
# BadNets-1 p = 2 %) rounded up; and the TA a diffusion classifier may lose to count as comparable.
TA_COST_MAX = 0.10
DC_TA_MARGIN = 0.05
# The generations' ground truth is the trigger detector. The clean DM never saw a trigger, so the share
# of its generations the detector flags estimates the detector's false-positive rate on generations;
# when even its lower 95 % bound exceeds this, the generated set has no usable truth.
GEN_FLAG_MAX = 0.10
# Below this many positives (or negatives) in a scored set, a bootstrap of the AUROC resamples the same
# few images and its interval is far too narrow: such a comparison is not a test.
MIN_CLASS_COUNT = 5
# ---------------------------------------------------------------------------------------------------
# Configuration

# Stage settings; a profile's ``defenses`` section overrides them key by key (the detector sub-dicts
# are merged too). Each detector section starts from the registry's defaults (the reference recipes)
# with the project's deviations, each stated in chapter 05 and on the limitations page:
# - CD: ``logit_reference`` rescales the victim's logits to a mean largest logit of 20 (the paper's
#   ResNets are confident classifiers; a weak small CNN otherwise pays more for the mask than for
#   the logit mismatch and distils clean content away);
# - STRIP: ``mode: blend`` instead of the reference's saturating sum (on light images clip(x + x_r)
#   saturates most pixels and erases a dark trigger);
# - FCT is the reference recipe; ``fct_variant`` the project's earlier variant, shown beside it.
DEFAULTS = {
    "classifier": {},                # overrides of the judges section (arch, epochs, batch_size, lr, ...)
    "gen_classifier": {},            # further overrides for the two n_all-image classifiers (e.g. epochs)
    "n_detect": None,                # images scored per set; None: the all-class generation set's size
    "n_detect_poisoned": None,       # poisoned images among the training set's n_detect (None: p's share)
    "n_known": 100,                  # known-answer set: this many clean test images and their triggered copies
    "n_boot": 1000,                  # bootstrap resamples of the AUROC intervals
    "cd": {**REGISTRY["CD"].defaults, "logit_reference": 20.0},
    "strip": {**REGISTRY["STRIP"].defaults, "mode": "blend"},
    "fct": dict(REGISTRY["FCT"].defaults),
    "fct_variant": {**REGISTRY["FCT variant"].defaults, "finetune_steps": 100, "finetune_lr": 1.0e-3},
    "dc_attacks": ["badnets1"],      # grid attacks whose cells get the diffusion classifier
    "dc_ratios": [],                 # further p for the diffusion classifier only (a DM is fine-tuned for each)
    "dc_n_images": 1000,             # clean test images (TA) and triggered non-target ones (ASR)
    "dc_levels": 100,                # noise levels per image (midpoints of equal strata of [0, T))
    "dc_adaptive": None,             # None: every class at every level; or [[n_levels, keep], ...]
    "p_filter": [0.0, 0.01, 0.05, 0.1],
    "dc_batch_size": 256,            # UNet samples per forward pass
    "dc_bench_images": 10,           # images of the exhaustive vs adaptive timing
}
_SUB = {key: DEFAULTS[key] for key in DETECTOR_KEYS.values()}


def _is_int(v, minimum=1) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= minimum


def _is_num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


def validate_config(section: dict, prefix: str = "defenses") -> dict:
    """Check the profile's ``defenses`` section (keys of :data:`DEFAULTS`); return it with defaults filled.

    Values are checked for type and range here, before any heavy work; the detectors check their
    own arguments again when called.
    """
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(prefix, section, "a mapping")
    for key in section:
        if key not in DEFAULTS:
            raise ConfigError(f"{prefix}.{key}", section[key], f"a key among {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in section.items():
        if key in _SUB:
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}.{key}", value, f"a mapping with keys among {sorted(_SUB[key])}")
            for sub in value:
                if sub not in _SUB[key]:
                    raise ConfigError(f"{prefix}.{key}.{sub}", value[sub], f"a key among {sorted(_SUB[key])}")
            cfg[key].update(copy.deepcopy(value))
        else:
            cfg[key] = copy.deepcopy(value)

    from bibad_utils.judges import JUDGE_KEYS, PHOTOMETRIC_KEYS, check_photometric

    for name in ("classifier", "gen_classifier"):
        clf = cfg[name] or {}
        if not isinstance(clf, dict):
            raise ConfigError(f"{prefix}.{name}", clf, f"a mapping of judges keys {JUDGE_KEYS}")
        for key in clf:
            if key not in JUDGE_KEYS:
                raise ConfigError(f"{prefix}.{name}.{key}", clf[key], f"a key among {JUDGE_KEYS}")
        if "epochs" in clf and not _is_int(clf["epochs"]):
            raise ConfigError(f"{prefix}.{name}.epochs", clf["epochs"], "an integer >= 1")
        check_photometric(f"{prefix}.{name}", **{k: clf[k] for k in PHOTOMETRIC_KEYS if k in clf})
        cfg[name] = dict(clf)
    if cfg["n_detect"] is not None and not _is_int(cfg["n_detect"], 2):
        raise ConfigError(f"{prefix}.n_detect", cfg["n_detect"], "null or an integer >= 2")
    for key, minimum in (("n_boot", 10), ("dc_n_images", 1), ("dc_levels", 1), ("dc_batch_size", 1),
                         ("dc_bench_images", 1)):
        if not _is_int(cfg[key], minimum):
            raise ConfigError(f"{prefix}.{key}", cfg[key], f"an integer >= {minimum}")
    for name, keys in (("cd", ("steps", "batch_size")), ("strip", ("n_overlay", "batch_size")),
                       ("fct", ("batch_size", "finetune_batch_size")),
                       ("fct_variant", ("batch_size", "finetune_batch_size"))):
        for key in keys:
            if not _is_int(cfg[name][key], 2 if key == "finetune_batch_size" else 1):
                raise ConfigError(f"{prefix}.{name}.{key}", cfg[name][key], "a positive integer")
    for name in ("fct", "fct_variant"):
        if not _is_int(cfg[name]["finetune_steps"], 0):
            raise ConfigError(f"{prefix}.{name}.finetune_steps", cfg[name]["finetune_steps"], "an integer >= 0")
    for name, key in (("cd", "lr"), ("cd", "gamma"), ("cd", "beta"), ("fct", "finetune_lr"),
                      ("fct", "max_rotation"), ("fct", "max_translate"), ("fct_variant", "finetune_lr"),
                      ("fct_variant", "temperature"), ("fct_variant", "max_rotation"),
                      ("fct_variant", "max_translate"), ("strip", "alpha")):
        if not _is_num(cfg[name][key]) or cfg[name][key] < 0:
            raise ConfigError(f"{prefix}.{name}.{key}", cfg[name][key], "a number >= 0")
    ref = cfg["cd"]["logit_reference"]
    if ref is not None and (not _is_num(ref) or ref <= 0):
        raise ConfigError(f"{prefix}.cd.logit_reference", ref, "null or a number > 0")
    if cfg["strip"]["mode"] not in ("sum", "blend"):
        raise ConfigError(f"{prefix}.strip.mode", cfg["strip"]["mode"], "sum | blend")
    for key in ("n_detect_poisoned",):
        if cfg[key] is not None and not _is_int(cfg[key], 1):
            raise ConfigError(f"{prefix}.{key}", cfg[key], "null or an integer >= 1")
    if cfg["n_detect_poisoned"] is not None and cfg["n_detect"] is not None \
            and cfg["n_detect_poisoned"] >= cfg["n_detect"]:
        raise ConfigError(f"{prefix}.n_detect_poisoned", cfg["n_detect_poisoned"],
                          f"fewer than n_detect ({cfg['n_detect']})")
    if not _is_int(cfg["n_known"], 2):
        raise ConfigError(f"{prefix}.n_known", cfg["n_known"], "an integer >= 2")
    rs = cfg["dc_ratios"]
    if not isinstance(rs, (list, tuple)) or any(not _is_num(r) or not 0 < r < 1 for r in rs):
        raise ConfigError(f"{prefix}.dc_ratios", rs, "a list of fractions in (0, 1)")
    cfg["dc_ratios"] = [float(r) for r in rs]
    betas = cfg["cd"]["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_num(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{prefix}.cd.betas", betas, "two numbers in [0, 1)")
    attacks = cfg["dc_attacks"]
    if not isinstance(attacks, (list, tuple)) or any(a not in ATTACKS for a in attacks):
        raise ConfigError(f"{prefix}.dc_attacks", attacks, f"a list of attacks among {list(ATTACKS)}")
    pf = cfg["p_filter"]
    if (not isinstance(pf, (list, tuple)) or not pf or any(not _is_num(v) or not 0 <= v < 1 for v in pf)
            or len(set(pf)) != len(pf)):
        raise ConfigError(f"{prefix}.p_filter", pf, "a non-empty list of distinct fractions in [0, 1)")
    cfg["p_filter"] = [float(v) for v in pf]
    ad = cfg["dc_adaptive"]
    if ad is not None:
        ok = isinstance(ad, (list, tuple)) and len(ad) > 0 and all(
            isinstance(s, (list, tuple)) and len(s) == 2 and _is_int(s[0]) and _is_int(s[1]) for s in ad)
        if not ok or sum(s[0] for s in ad) > cfg["dc_levels"]:
            raise ConfigError(f"{prefix}.dc_adaptive", ad,
                              f"null or [[n_levels, keep], ...] with n_levels summing to at most dc_levels "
                              f"({cfg['dc_levels']})")
    return cfg


def defense_config(study) -> dict:
    """The profile's ``defenses`` section, validated, with every default filled in."""
    return validate_config(study.cfg.get("defenses") or {}, "defenses")


def classifier_settings(study, small: bool = False) -> dict:
    """Keyword arguments of :func:`bibad_utils.judges.train_classifier` for this stage's classifiers:
    the profile's ``judges`` section overridden by ``defenses.classifier``, and for the two
    ``n_all``-image classifiers (``small``) further by ``defenses.gen_classifier``."""
    from bibad_utils.judges import JUDGE_KEYS, PHOTOMETRIC_KEYS

    d = defense_config(study)
    # the judges' photometric augmentation is not inherited (module docstring)
    kw = {k: v for k, v in study.cfg["judges"].items() if k in JUDGE_KEYS and k not in PHOTOMETRIC_KEYS}
    kw.update(d["classifier"])
    if small:
        kw.update(d["gen_classifier"])
    return kw


