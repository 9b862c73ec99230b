"""Settings of stage 05: the profile's ``defenses`` section (:func:`validate_config`, :func:`defense_config`),
the classifiers' settings (:func:`classifier_settings`) and the stage's constants."""

from __future__ import annotations

import copy
import math

import numpy as np

from bibad_utils.config import ConfigError, attack_kinds
from bibad_utils.defenses import DETECTORS as REGISTRY

STAGE = "05_castle_walls"
SOURCES = ("poisoned train (all)", "poisoned train (subset)", "generated")
# The scored sets: a known-answer set (clean non-target test images and the same images with the trigger
# pasted), a subset of the poisoned training set, and the poisoned DM's all-class generations.
SETS = ("known answer", "training", "generated")
# The two readings of the generation set: scored with the backdoored victim, or with a classifier
# trained on the generations themselves (chapter 05, section 2).
CLASSIFIERS = ("victim", "generations classifier")


def detectors() -> tuple[str, ...]:
    """The detectors of the stage: those of the registry :data:`bibad_utils.defenses.DETECTORS`, read at
    each call (a detector registered later joins every table): CD, STRIP, FCT (the reference recipe),
    FCT variant (the project's), then any other."""
    return tuple(REGISTRY)


def detector_key(name: str) -> str:
    """The profile section (under ``defenses``) of detector ``name``'s options."""
    return REGISTRY[name].key

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

# Stage settings; a profile's ``defenses`` section overrides them key by key. Each registered detector
# adds a section (its profile key) that starts from the registry's defaults (the reference recipes)
# with the project's deviations below, each stated in chapter 05 and on the limitations page:
# - CD: ``logit_reference`` rescales the victim's logits to a mean largest logit of 20 (the paper's
#   ResNets are confident classifiers; a weak small CNN otherwise pays more for the mask than for
#   the logit mismatch and distils clean content away);
# - STRIP: ``mode: blend`` instead of the reference's saturating sum (on light images clip(x + x_r)
#   saturates most pixels and erases a dark trigger);
# - FCT is the reference recipe; ``fct_variant`` the project's earlier variant, shown beside it.
STAGE_DEFAULTS = {
    "classifier": {},                # overrides of the judges section (arch, epochs, batch_size, lr, ...)
    "gen_classifier": {},            # further overrides for the two n_all-image classifiers (e.g. epochs)
    "n_detect": None,                # images scored per set; None: the all-class generation set's size
    "n_detect_poisoned": None,       # poisoned images among the training set's n_detect (None: p's share)
    "n_known": 100,                  # known-answer set: this many clean test images and their triggered copies
    "n_boot": 1000,                  # bootstrap resamples of the AUROC intervals
    "detect_ratios": None,           # p of the grid that get the detectors and the diffusion classifier (None: all)
    "dc_attacks": ["badnets1"],      # grid attacks whose cells get the diffusion classifier
    "dc_ratios": [],                 # further p for the diffusion classifier only (a DM is fine-tuned for each)
    "dc_n_images": 1000,             # clean test images (TA) and triggered non-target ones (ASR)
    "dc_levels": 100,                # noise levels per image (midpoints of equal strata of [0, T))
    "dc_adaptive": None,             # None: every class at every level; or [[n_levels, keep], ...]
    "p_filter": [0.0, 0.01, 0.05, 0.1],
    "dc_batch_size": 256,            # UNet samples per forward pass
    "dc_bench_images": 10,           # images of the exhaustive vs adaptive timing
}
DEVIATIONS = {"CD": {"logit_reference": 20.0}, "STRIP": {"mode": "blend"},
              "FCT variant": {"finetune_steps": 100, "finetune_lr": 1.0e-3}}


def detector_defaults() -> dict[str, dict]:
    """Each registered detector's section: its profile key -> the registry's defaults with :data:`DEVIATIONS`."""
    return {det.key: {**det.defaults, **DEVIATIONS.get(det.name, {})} for det in REGISTRY.values()}


def defaults() -> dict:
    """Every key of the ``defenses`` section with its default: :data:`STAGE_DEFAULTS` and
    :func:`detector_defaults`."""
    return {**copy.deepcopy(STAGE_DEFAULTS), **detector_defaults()}


def _is_int(v, minimum=1) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= minimum


def _is_num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


def validate_config(section: dict, prefix: str = "defenses") -> dict:
    """Check the profile's ``defenses`` section (keys of :func:`defaults`); return it with defaults filled.

    Values are checked for type and range here, before any heavy work (a detector's options by the
    registry's ``check``); the detectors check their own arguments again when called.
    """
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(prefix, section, "a mapping")
    cfg = defaults()
    subs = detector_defaults()
    for key in section:
        if key not in cfg:
            raise ConfigError(f"{prefix}.{key}", section[key], f"a key among {sorted(cfg)}")
    for key, value in section.items():
        if key in subs:
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}.{key}", value, f"a mapping with keys among {sorted(subs[key])}")
            for sub in value:
                if sub not in subs[key]:
                    raise ConfigError(f"{prefix}.{key}.{sub}", value[sub], f"a key among {sorted(subs[key])}")
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
    for det in REGISTRY.values():
        if det.check is not None:
            det.check(cfg[det.key], f"{prefix}.{det.key}")
    for key in ("n_detect_poisoned",):
        if cfg[key] is not None and not _is_int(cfg[key], 1):
            raise ConfigError(f"{prefix}.{key}", cfg[key], "null or an integer >= 1")
    if cfg["n_detect_poisoned"] is not None and cfg["n_detect"] is not None \
            and cfg["n_detect_poisoned"] >= cfg["n_detect"]:
        raise ConfigError(f"{prefix}.n_detect_poisoned", cfg["n_detect_poisoned"],
                          f"fewer than n_detect ({cfg['n_detect']})")
    if not _is_int(cfg["n_known"], 2):
        raise ConfigError(f"{prefix}.n_known", cfg["n_known"], "an integer >= 2")
    dr = cfg["detect_ratios"]
    if dr is not None:
        if not isinstance(dr, (list, tuple)) or not dr or any(not _is_num(r) or not 0 < r < 1 for r in dr):
            raise ConfigError(f"{prefix}.detect_ratios", dr, "null or a non-empty list of fractions in (0, 1)")
        cfg["detect_ratios"] = [float(r) for r in dr]
    rs = cfg["dc_ratios"]
    if not isinstance(rs, (list, tuple)) or any(not _is_num(r) or not 0 < r < 1 for r in rs):
        raise ConfigError(f"{prefix}.dc_ratios", rs, "a list of fractions in (0, 1)")
    cfg["dc_ratios"] = [float(r) for r in rs]
    attacks = cfg["dc_attacks"]
    if not isinstance(attacks, (list, tuple)) or any(a not in attack_kinds() for a in attacks):
        raise ConfigError(f"{prefix}.dc_attacks", attacks, f"a list of attacks among {list(attack_kinds())}")
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


def detection_cells(study) -> list:
    """The grid cells of the detectors and the diffusion classifier: those at ``defenses.detect_ratios``
    (every grid cell when it is null). A ratio the grid lacks is an error naming the grid's ratios."""
    d = defense_config(study)
    cells = study.grid_cells()
    if d["detect_ratios"] is None:
        return cells
    grid = sorted({round(c.ratio, 9) for c in cells})
    wanted = {round(r, 9) for r in d["detect_ratios"]}
    if not wanted <= set(grid):
        raise ConfigError("defenses.detect_ratios", d["detect_ratios"], f"ratios of the grid, among {grid}")
    return [c for c in cells if round(c.ratio, 9) in wanted]


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


