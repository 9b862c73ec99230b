"""The profile's ``defenses`` section (stage 05): its keys, each with its one default, and their validation.

The stage's own keys are fields of :data:`DEFENSES`; each registered detector adds a section (its profile
key) that starts from the registry's defaults (the reference recipes) with the project's deviations of
:data:`DEVIATIONS`, each stated in chapter 05 and on the limitations page:

- CD: ``logit_calibration: clean_heldout`` rescales each classifier's logits by one factor, measured once
  on clean test images it did not train on (outside the known-answer set) before any set is scored, so
  that its mean largest logit there is ``logit_reference`` = 20; the training subset, the generations and
  the known-answer set are all scored with that one factor (the paper's ResNets are confident classifiers;
  a weak small CNN otherwise pays more for the mask than for the logit mismatch and distils clean content
  away). How 20 was chosen: it was the best of 5 / 10 / 20 / 40 by the demo profile's training-set AUROC,
  that is with the poison labels, so it is not independent of the data it is judged on; chapter 05 shows
  the AUROCs and their difference at each of ``cd_sensitivity`` (:func:`cd_sensitivity` of
  :mod:`bibad_utils.experiments.castle_walls.detection`);
- STRIP: ``mode: blend`` instead of the reference's saturating sum (on light images clip(x + x_r)
  saturates most pixels and erases a dark trigger);
- FCT is the reference recipe; ``fct_variant`` the project's earlier variant, shown beside it.

The section is validated once, when the profile is loaded, and kept with every default written in.
"""

from __future__ import annotations

from bibad_utils.base import ConfigError
from bibad_utils.defenses.registry import DETECTORS
from bibad_utils.judges.profile import JUDGES
from bibad_utils.schema import Field, Section, is_int, is_number, number_list
from bibad_utils.triggers import TRIGGERS

DEVIATIONS = {"CD": {"logit_calibration": "clean_heldout", "logit_reference": 20.0}, "STRIP": {"mode": "blend"},
              "FCT variant": {"finetune_steps": 100, "finetune_lr": 1.0e-3}}


def _mapping(what: str) -> Field:
    return Field("value", default={}, nullable=True, test=lambda v: isinstance(v, dict), allowed=f"a mapping of {what}")


CD_SENSITIVITY_ALLOWED = "a list of distinct values, each null (no calibration) or a number > 0"


def _check_cd_sensitivity(value, param: str) -> list:
    """The ``cd_sensitivity`` list with its numbers as floats; ConfigError naming ``param`` otherwise."""
    ok = isinstance(value, (list, tuple)) and all(v is None or (is_number(v) and v > 0) for v in value)
    if not ok or len({None if v is None else float(v) for v in value}) != len(value):
        raise ConfigError(param, value, CD_SENSITIVITY_ALLOWED)
    return [None if v is None else float(v) for v in value]


def _ratio_list(nullable: bool, allowed: str) -> Field:
    return Field("value", default=None if nullable else [], nullable=nullable,
                 test=lambda v: isinstance(v, (list, tuple)), allowed=allowed)


STAGE_FIELDS = {
    "classifier": _mapping("judges keys (overrides of the judges section: arch, epochs, batch_size, lr, ...)"),
    "gen_classifier": _mapping("judges keys (further overrides for the two n_all-image classifiers)"),
    "n_detect": Field("int", default=None, low=2, nullable=True, allowed="null or an integer >= 2",
                      doc="images scored per set; null: the all-class generation set's size"),
    "n_detect_poisoned": Field("int", default=None, low=1, nullable=True, allowed="null or an integer >= 1",
                               doc="poisoned images among the training set's n_detect (null: p's share)"),
    "n_known": Field("int", default=100, low=2, allowed="an integer >= 2",
                     doc="known-answer set: this many clean test images and their triggered copies"),
    "n_boot": Field("int", default=1000, low=10, allowed="an integer >= 10",
                    doc="bootstrap resamples of the AUROC intervals"),
    "detect_ratios": _ratio_list(True, "null or a non-empty list of fractions in (0, 1)"),
    "dc_attacks": Field("value", default=["badnets1"], allowed="a list of attacks",
                        doc="grid attacks whose cells get the diffusion classifier"),
    "dc_ratios": _ratio_list(False, "a list of fractions in (0, 1)"),
    "dc_n_images": Field("int", default=1000, low=1, allowed="an integer >= 1",
                         doc="clean test images (TA) and triggered non-target ones (ASR)"),
    "dc_levels": Field("int", default=100, low=1, allowed="an integer >= 1",
                       doc="noise levels per image (midpoints of equal strata of [0, T))"),
    "dc_adaptive": Field("value", default=None, nullable=True,
                         allowed="null or [[n_levels, keep], ...]",
                         doc="null: every class at every level; or [[n_levels, keep], ...]"),
    "p_filter": Field("value", default=[0.0, 0.01, 0.05, 0.1],
                      allowed="a non-empty list of distinct fractions in [0, 1)"),
    "dc_batch_size": Field("int", default=256, low=1, allowed="an integer >= 1", doc="UNet samples per forward"),
    "dc_bench_images": Field("int", default=10, low=1, allowed="an integer >= 1",
                             doc="images of the exhaustive vs adaptive timing"),
    "n_calibration": Field("int", default=1000, low=1, allowed="an integer >= 1",
                           doc="clean test images outside the known-answer set (stratified by class) on which "
                               "CD's logit scale is measured (logit_calibration: clean_heldout)"),
    "cd_sensitivity": Field("value", default=[None, 5.0, 10.0, 20.0, 40.0],
                            test=lambda v: isinstance(v, (list, tuple)),
                            allowed=CD_SENSITIVITY_ALLOWED,
                            doc="CD's logit_reference values of the calibration sensitivity on the example "
                                "cell (null: no calibration); [] skips it"),
}


def detector_defaults() -> dict[str, dict]:
    """Each registered detector's section: its profile key -> the registry's defaults with :data:`DEVIATIONS`."""
    return {det.key: {**det.defaults, **DEVIATIONS.get(det.name, {})} for det in DETECTORS.values()}


def _fields() -> dict[str, Field]:
    subs = {key: Field("value", default=opts, test=lambda v: isinstance(v, dict),
                       allowed=f"a mapping with keys among {sorted(opts)}")
            for key, opts in detector_defaults().items()}
    return {**STAGE_FIELDS, **subs}


def _check_detectors(cfg: dict, prefix: str) -> None:
    subs = detector_defaults()
    for det in DETECTORS.values():
        given = cfg[det.key]
        for sub in given:
            if sub not in subs[det.key]:
                raise ConfigError(f"{prefix}.{det.key}.{sub}", given[sub], f"a key among {sorted(subs[det.key])}")
        cfg[det.key] = {**subs[det.key], **given}
        if det.check is not None:
            det.check(cfg[det.key], f"{prefix}.{det.key}")


def _check(cfg: dict, prefix: str, profile: dict) -> dict:
    for name in ("classifier", "gen_classifier"):
        cfg[name] = JUDGES.validate_partial(cfg[name], f"{prefix}.{name}")
    _check_detectors(cfg, prefix)
    if cfg["n_detect_poisoned"] is not None and cfg["n_detect"] is not None \
            and cfg["n_detect_poisoned"] >= cfg["n_detect"]:
        raise ConfigError(f"{prefix}.n_detect_poisoned", cfg["n_detect_poisoned"],
                          f"fewer than n_detect ({cfg['n_detect']})")
    cfg["detect_ratios"] = number_list(f"{prefix}.detect_ratios", cfg["detect_ratios"], 0, 1, True, True,
                                       distinct=False, what="fractions", nullable=True)
    cfg["dc_ratios"] = number_list(f"{prefix}.dc_ratios", cfg["dc_ratios"], 0, 1, True, True, allow_empty=True,
                                   distinct=False, what="fractions")
    attacks = cfg["dc_attacks"]
    if not isinstance(attacks, (list, tuple)) or any(a not in TRIGGERS for a in attacks):
        raise ConfigError(f"{prefix}.dc_attacks", attacks, f"a list of attacks among {list(TRIGGERS)}")
    cfg["dc_attacks"] = list(attacks)
    cfg["cd_sensitivity"] = _check_cd_sensitivity(cfg["cd_sensitivity"], f"{prefix}.cd_sensitivity")
    cfg["p_filter"] = number_list(f"{prefix}.p_filter", cfg["p_filter"], 0, 1, False, True, what="fractions")
    ad = cfg["dc_adaptive"]
    if ad is not None:
        ok = isinstance(ad, (list, tuple)) and len(ad) > 0 and all(
            isinstance(s, (list, tuple)) and len(s) == 2 and is_int(s[0], 1) and is_int(s[1], 1) for s in ad)
        if not ok or sum(s[0] for s in ad) > cfg["dc_levels"]:
            raise ConfigError(f"{prefix}.dc_adaptive", ad,
                              f"null or [[n_levels, keep], ...] with n_levels summing to at most dc_levels "
                              f"({cfg['dc_levels']})")
    return cfg


# DEFENSES.validate(section) checks a ``defenses`` section and returns it with every default filled in (a
# detector's options by the registry's ``check``; the detectors check their own arguments again when called).
DEFENSES = Section("defenses", _fields, check=_check)
