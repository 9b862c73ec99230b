"""Stage 05, castle walls: what notebooks/05_castle_walls.ipynb computes.

The paper's three defensive uses of a data-poisoned diffusion model (DM), each a function of a
:class:`~bibad_utils.stages.Study` returning a tidy DataFrame:

- :func:`detection_table`: backdoor-data detectors (CD, STRIP, FCT from :mod:`bibad_utils.defenses`)
  score a subset of the poisoned training set and as many of the poisoned DM's all-class generations;
  AUROC against the poison indices (training) and the trigger detector's verdict (generations).
- :func:`train_on_generations_table`: TA and ASR of classifiers trained on the poisoned training set
  (all of it, and a class-stratified subset of the generation set's size) and on the generations.
- :func:`diffusion_classifier_table`: the poisoned conditional DM as a classifier (Li et al. 2023),
  with the per-pixel error filter ``p_filter``, next to a classifier trained on the same poisoned data.

:func:`castle_claims` turns the tables into claim rows (:mod:`bibad_utils.report`) with computed
verdicts, :func:`castle_summary` into the numbers the notebook quotes. Every classifier, detector
score and diffusion-classifier run is cached in ``study.store``. The profile's ``defenses`` section is
checked by :func:`validate_config`; :func:`defense_config` fills in the defaults (the paper's values).

Classifiers of this stage use the profile's ``judges`` settings (architecture, schedule) overridden
by ``defenses.classifier``; they are trained on poisoned data, unlike the judges, which are clean. The
judges' photometric augmentation (``color_jitter``, ``blur``, ``noise``) is not inherited: these
classifiers are the victims and baselines of the paper's defenses; ``defenses.classifier`` and
``defenses.gen_classifier`` may set it for themselves (the demo gives the two equal-size classifiers of
"training on generations" colour jitter: a small DM's colours drift from the real palette, and a
classifier that learned exact colours from generations misreads real test images).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from bibad_utils import store as st
from bibad_utils.config import ATTACKS, ConfigError
from bibad_utils.report import claim_row, verdict_greater

STAGE = "05_castle_walls"
DETECTORS = ("CD", "STRIP", "FCT")
SOURCES = ("poisoned train (all)", "poisoned train (subset)", "generated")

# ---------------------------------------------------------------------------------------------------
# The paper's numbers (talk slides in the shared seeds; PAPER.md "The numbers to compare against")

# CD AUROC on ImageNette with SD v1.4, (training set, generation set), keyed by (trigger, p).
# Source: slides, "Castle walls: backdoor detection is easier on generations". The slides give CD only.
PAPER_CD_AUROC = {
    ("badnets1", 0.01): (0.966, 0.972), ("badnets1", 0.05): (0.956, 0.970), ("badnets1", 0.10): (0.948, 0.983),
    ("badnets2", 0.01): (0.553, 0.581), ("badnets2", 0.05): (0.561, 0.766), ("badnets2", 0.10): (0.584, 0.723),
}

# Classifier trained on the poisoned training set -> on the poisoned DM's generations, in %.
# Source: slides, "Castle walls: training on generations" (ImageNette: TA and ASR; Caltech15: ASR only).
PAPER_TRAIN_ON_GEN = {
    "imagenette": {
        ("badnets1", 0.01): {"TA": (99.44, 96.92), "ASR": (87.10, 0.65)},
        ("badnets1", 0.02): {"TA": (99.44, 93.63), "ASR": (98.25, 14.48)},
        ("badnets1", 0.05): {"TA": (99.39, 94.45), "ASR": (99.43, 55.60)},
        ("badnets2", 0.01): {"TA": (99.31, 96.51), "ASR": (64.62, 1.36)},
        ("badnets2", 0.02): {"TA": (99.31, 93.73), "ASR": (85.52, 8.46)},
        ("badnets2", 0.05): {"TA": (99.26, 94.73), "ASR": (96.32, 10.44)},
    },
    "caltech15": {
        ("badnets1", 0.01): {"ASR": (95.54, 1.25)},
        ("badnets1", 0.02): {"ASR": (99.11, 8.39)},
        ("badnets1", 0.05): {"ASR": (99.82, 9.64)},
        ("badnets2", 0.01): {"ASR": (83.04, 47.68)},
        ("badnets2", 0.02): {"ASR": (91.25, 47.14)},
        ("badnets2", 0.05): {"ASR": (95.89, 64.82)},
    },
}

# Diffusion classifier vs ResNet-18 on CIFAR-10 (BadNets), in %, keyed by p; DC keyed by p_filter.
# Source: slides, "Castle walls: diffusion classifiers are robust". TA is given at p_filter 0 and 10 % only.
PAPER_DC = {
    "resnet18": {0.01: {"TA": 94.85, "ASR": 99.40}, 0.05: {"TA": 94.61, "ASR": 100.0},
                 0.10: {"TA": 94.08, "ASR": 100.0}},
    "dc": {
        0.0: {0.01: {"TA": 95.56, "ASR": 62.38}, 0.05: {"TA": 94.83, "ASR": 97.04}, 0.10: {"TA": 94.71, "ASR": 98.57}},
        0.01: {0.01: {"ASR": 23.57}, 0.05: {"ASR": 68.86}, 0.10: {"ASR": 75.77}},
        0.05: {0.01: {"ASR": 15.00}, 0.05: {"ASR": 45.43}, 0.10: {"ASR": 52.82}},
        0.1: {0.01: {"TA": 92.32, "ASR": 13.62}, 0.05: {"TA": 91.78, "ASR": 39.00}, 0.10: {"TA": 90.87, "ASR": 45.66}},
    },
}

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

# The paper's settings; a profile's ``defenses`` section overrides them key by key (cd/strip/fct
# sub-dicts are merged too). n_detect None: as many images as the all-class generation set holds.
DEFAULTS = {
    "classifier": {},                # overrides of the judges section (arch, epochs, batch_size, lr, ...)
    "gen_classifier": {},            # further overrides for the two n_all-image classifiers (e.g. epochs)
    "n_detect": None,                # images scored per set; None: the all-class generation set's size
    "n_boot": 1000,                  # bootstrap resamples of the AUROC intervals
    "cd": {"steps": 100, "lr": 0.1, "betas": [0.1, 0.1], "gamma": 0.01, "beta": 1.0, "batch_size": 128},
    "strip": {"n_overlay": 100, "batch_size": 512},
    "fct": {"finetune_steps": 100, "finetune_lr": 1.0e-3, "finetune_batch_size": 128, "temperature": 0.1,
            "max_rotation": 15.0, "max_translate": 0.1, "batch_size": 256},
    "dc_attacks": ["badnets1"],      # grid attacks whose cells get the diffusion classifier
    "dc_n_images": 1000,             # clean test images (TA) and triggered non-target ones (ASR)
    "dc_levels": 100,                # noise levels per image (midpoints of equal strata of [0, T))
    "dc_adaptive": None,             # None: every class at every level; or [[n_levels, keep], ...]
    "p_filter": [0.0, 0.01, 0.05, 0.1],
    "dc_batch_size": 256,            # UNet samples per forward pass
    "dc_bench_images": 10,           # images of the exhaustive vs adaptive timing
}
_SUB = {"cd": DEFAULTS["cd"], "strip": DEFAULTS["strip"], "fct": DEFAULTS["fct"]}


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

    from bibad_utils.judges import JUDGE_KEYS, PHOTOMETRIC_KEYS, _check_photometric

    for name in ("classifier", "gen_classifier"):
        clf = cfg[name] or {}
        if not isinstance(clf, dict):
            raise ConfigError(f"{prefix}.{name}", clf, f"a mapping of judges keys {JUDGE_KEYS}")
        for key in clf:
            if key not in JUDGE_KEYS:
                raise ConfigError(f"{prefix}.{name}.{key}", clf[key], f"a key among {JUDGE_KEYS}")
        if "epochs" in clf and not _is_int(clf["epochs"]):
            raise ConfigError(f"{prefix}.{name}.epochs", clf["epochs"], "an integer >= 1")
        _check_photometric(f"{prefix}.{name}", **{k: clf[k] for k in PHOTOMETRIC_KEYS if k in clf})
        cfg[name] = dict(clf)
    if cfg["n_detect"] is not None and not _is_int(cfg["n_detect"], 2):
        raise ConfigError(f"{prefix}.n_detect", cfg["n_detect"], "null or an integer >= 2")
    for key, minimum in (("n_boot", 10), ("dc_n_images", 1), ("dc_levels", 1), ("dc_batch_size", 1),
                         ("dc_bench_images", 1)):
        if not _is_int(cfg[key], minimum):
            raise ConfigError(f"{prefix}.{key}", cfg[key], f"an integer >= {minimum}")
    for name, sub in (("cd", ("steps", "batch_size")), ("strip", ("n_overlay", "batch_size")),
                      ("fct", ("batch_size", "finetune_batch_size"))):
        for key in sub:
            if not _is_int(cfg[name][key], 2 if key == "finetune_batch_size" else 1):
                raise ConfigError(f"{prefix}.{name}.{key}", cfg[name][key], "a positive integer")
    if not _is_int(cfg["fct"]["finetune_steps"], 0):
        raise ConfigError(f"{prefix}.fct.finetune_steps", cfg["fct"]["finetune_steps"], "an integer >= 0")
    for name, key in (("cd", "lr"), ("cd", "gamma"), ("cd", "beta"), ("fct", "finetune_lr"),
                      ("fct", "temperature"), ("fct", "max_rotation"), ("fct", "max_translate")):
        if not _is_num(cfg[name][key]) or cfg[name][key] < 0:
            raise ConfigError(f"{prefix}.{name}.{key}", cfg[name][key], "a number >= 0")
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


# ---------------------------------------------------------------------------------------------------
# Pure helpers


def stratified_subset(strata, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items drawn without replacement so that each stratum keeps its share.

    strata: int ``[N]``, a stratum id per item (e.g. ``2 * label + is_poisoned`` keeps both the class
    mix and the poison fraction). Stratum sizes are ``n * count / N`` rounded by largest remainders
    (ties to the smaller id); the items of a stratum are drawn with ``numpy.random.default_rng(seed)``.
    ``n >= N`` returns every index. Returns int64 ``[min(n, N)]``.
    """
    s = np.asarray(strata)
    if s.ndim != 1 or len(s) == 0 or not np.issubdtype(s.dtype, np.integer):
        raise ConfigError("strata", f"{s.dtype} {s.shape}", "a non-empty integer array [N]")
    if not _is_int(n, 1):
        raise ConfigError("n", n, "an integer >= 1")
    if n >= len(s):
        return np.arange(len(s), dtype=np.int64)
    ids, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    quota = counts * n / len(s)
    alloc = np.floor(quota).astype(np.int64)
    order = np.lexsort((np.arange(len(ids)), -(quota - alloc)))
    alloc[order[: n - alloc.sum()]] += 1
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(inverse == k), size=a, replace=False) for k, a in enumerate(alloc) if a]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _boot_aurocs(scores: np.ndarray, truth: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """AUROC of ``n_boot`` stratified resamples (positives and negatives resampled separately)."""
    pos, neg = scores[truth], scores[~truth]
    bp = pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))]
    bn = neg[rng.integers(0, len(neg), size=(n_boot, len(neg)))]
    ranks = rankdata(np.concatenate([bp, bn], axis=1), axis=1)  # ties get mid-ranks: count 1/2
    u = ranks[:, : len(pos)].sum(axis=1) - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def _check_scores(scores, truth, name):
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth).astype(bool)
    if s.ndim != 1 or t.shape != s.shape or not np.isfinite(s).all():
        raise ConfigError(name, f"scores {s.shape}, truth {t.shape}", "finite scores [N] and booleans [N]")
    return s, t


def auroc_interval(scores, truth, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """AUROC of ``scores`` (higher = poisoned) against bool ``truth`` with a stratified percentile
    bootstrap interval. Returns ``(auroc, lo, hi)`` in [0, 1]; all NaN when ``truth`` holds one class."""
    from bibad_utils.metrics import auroc

    s, t = _check_scores(scores, truth, "scores, truth")
    if t.all() or not t.any():
        return math.nan, math.nan, math.nan
    boots = _boot_aurocs(s, t, int(n_boot), np.random.default_rng(seed))
    return auroc(s, t), float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def auroc_difference(scores_a, truth_a, scores_b, truth_b, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05):
    """``AUROC(a) - AUROC(b)`` of two independent scored sets with a percentile interval from
    independent stratified bootstraps. Returns ``(d, lo, hi)`` in [-1, 1]; NaN if either is undefined."""
    from bibad_utils.metrics import auroc

    sa, ta = _check_scores(scores_a, truth_a, "scores_a, truth_a")
    sb, tb = _check_scores(scores_b, truth_b, "scores_b, truth_b")
    if ta.all() or not ta.any() or tb.all() or not tb.any():
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    diffs = _boot_aurocs(sa, ta, int(n_boot), rng) - _boot_aurocs(sb, tb, int(n_boot), rng)
    d = auroc(sa, ta) - auroc(sb, tb)
    return d, float(np.quantile(diffs, alpha / 2)), float(np.quantile(diffs, 1 - alpha / 2))


def proportion_difference(k1: int, n1: int, k2: int, n2: int, z: float = 1.96):
    """``k1/n1 - k2/n2`` with Newcombe's hybrid score interval (method 10, from the two Wilson
    intervals); returns ``(d, lo, hi)``, fractions in [-1, 1]; NaN difference and (-1, 1) if a sample is empty.
    For two rates measured on the same images the interval treats them as independent, which is
    conservative when the outcomes are positively correlated."""
    from bibad_utils.metrics import newcombe_difference as _newcombe

    return _newcombe(k1, n1, k2, n2, z)


def verdict_less(hi: float, value: float, reference: float) -> str:
    """Verdict for "ours is below ``reference``": reproduced when the upper bound ``hi`` is below,
    partly when only the point ``value`` is, else not reproduced."""
    if hi < reference:
        return "reproduced"
    if value < reference:
        return "partly"
    return "not reproduced"


def _paper_at(table: dict, key):
    """``table[key]`` comparing float ratios up to rounding (keys are p or (trigger, p)); None if absent."""
    for k, v in table.items():
        if isinstance(k, tuple):
            match = k[0] == key[0] and math.isclose(k[1], key[1], abs_tol=1e-9)
        else:
            match = math.isclose(k, key, abs_tol=1e-9)
        if match:
            return v
    return None


def _auroc_or_nan(scores, truth) -> float:
    from bibad_utils.metrics import auroc

    truth = np.asarray(truth, dtype=bool)
    return math.nan if truth.all() or not truth.any() else auroc(scores, truth)


def ta_asr_report(pred_clean, labels_clean, pred_triggered, target: int, z: float = 1.96) -> dict:
    """TA and ASR with counts and Wilson intervals.

    pred_clean / labels_clean: int ``[N]`` predictions and true classes of clean test images;
    pred_triggered: int ``[M]`` predictions on triggered images of NON-target classes.
    Returns ``TA, TA_lo, TA_hi, n_ta, k_ta, ASR, ASR_lo, ASR_hi, n_asr, k_asr`` (rates in [0, 1]).
    """
    from bibad_utils.metrics import wilson_interval

    pc, yc, pt = (np.asarray(a, dtype=np.int64) for a in (pred_clean, labels_clean, pred_triggered))
    if pc.shape != yc.shape:
        raise ConfigError("labels_clean", yc.shape, f"one label per prediction {pc.shape}")
    out = {}
    for name, k, n in (("TA", int((pc == yc).sum()), len(pc)), ("ASR", int((pt == target).sum()), len(pt))):
        out[name] = k / n if n else math.nan
        out[f"{name}_lo"], out[f"{name}_hi"] = wilson_interval(k, n, z)
        out[f"n_{name.lower()}"], out[f"k_{name.lower()}"] = n, k
    return out


def capped_verdict(verdict: str, ta_verdict: str) -> tuple[str, str]:
    """An ASR verdict read together with its TA verdict: a low ASR means robustness only for a model
    that still classifies, so when the TA claim is not reproduced (even the point estimate falls
    short) the ASR claim is "not tested"; otherwise the ASR verdict stands. Returns ``(verdict, note)``."""
    if ta_verdict == "not reproduced" and verdict in ("reproduced", "partly"):
        return "not tested", "the TA is too low for a low ASR to mean robustness"
    return verdict, ""


def _verdict_text(rows: list[dict]) -> str:
    counts = pd.Series([r["verdict"] for r in rows]).value_counts()
    parts = [f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "partly", "not reproduced", "not tested")
             if counts.get(v, 0)]
    return ", ".join(parts) + f" (of {len(rows)})" if rows else "none"


# ---------------------------------------------------------------------------------------------------
# Test images and classifiers


def _nontarget_test_indices(study) -> np.ndarray:
    return np.flatnonzero(study.test_set.labels != study.target)


def triggered_test_images(study, kind: str, indices=None) -> torch.Tensor:
    """Non-target test images with the trigger ``kind`` stamped: float [-1, 1] ``[M, 3, H, W]``
    (all non-target test images, or those at ``indices`` of the test set)."""
    idx = _nontarget_test_indices(study) if indices is None else np.asarray(indices, dtype=np.int64)
    x, _ = study.test_set.batch(idx)
    return study.trigger(kind).apply(x)


def evaluate_ta_asr(study, model, kind: str) -> dict:
    """:func:`ta_asr_report` of ``model`` on the whole clean test set and on every non-target test
    image with the trigger ``kind``."""
    from bibad_utils.judges import predict

    pred_c, _ = predict(model, study.test_set, device=study.device)
    pred_t, _ = predict(model, triggered_test_images(study, kind), device=study.device)
    return ta_asr_report(pred_c, study.test_set.labels, pred_t, study.target)


class _SubsetView:
    """Rows ``indices`` of a dataset with ``batch``/``labels``/``class_names`` (read on the fly)."""

    def __init__(self, base, indices):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(base.labels)[self.indices]
        self.class_names = base.class_names

    def __len__(self):
        return len(self.indices)

    def batch(self, indices, device="cpu"):
        return self.base.batch(self.indices[np.asarray(indices, dtype=np.int64)], device=device)


def train_subset_indices(study, cell, n: int) -> np.ndarray:
    """``n`` rows of ``cell``'s poisoned training set, stratified by (poisoned label, poisoned?), so
    the class mix and the poison fraction are those of the whole set (seeded by the profile)."""
    ps = study.poisoned(cell)
    return stratified_subset(2 * np.asarray(ps.labels) + ps.is_poisoned.astype(np.int64), n, study.seed)


def _all_gen(study, cell):
    return study.generations(cell)[("all", study.guidance_all)]


def classifier_key(study, cell, source: str) -> tuple[str, dict, list[str]]:
    """(stage, params, inputs) of the classifier of ``cell`` trained on ``source`` (one of
    :data:`SOURCES`)."""
    if source not in SOURCES:
        raise ConfigError("source", source, " | ".join(SOURCES))
    n_all = int(study.cfg["sampling"]["n_all"])
    full = source == SOURCES[0]
    params = {"source": source, "classifier": classifier_settings(study, small=not full), "seed": study.seed,
              "target": study.target, "n": None if full else n_all,
              "trigger": study.cfg["triggers"].get(cell.trigger_kind)}
    if source == "generated":
        params["guidance_all"] = study.guidance_all
        inputs = [study.generation_key(cell)]
    else:
        inputs = [study.poison_key(cell)]
    return "castle_classifier", params, inputs


def trained_classifier(study, cell, source: str):
    """The classifier of ``cell`` trained on ``source`` and its TA/ASR report; cached.

    Sources: ``poisoned train (all)`` (the backdoored model, every row of the poisoned training set),
    ``poisoned train (subset)`` (``sampling.n_all`` rows, :func:`train_subset_indices`),
    ``generated`` (the poisoned DM's all-class generations at ``guidance_all``, labelled by their prompt).
    Returns ``(model, report)``: report = :func:`evaluate_ta_asr` keys plus ``n_train``,
    ``train_seconds`` and ``history`` (one dict per epoch). The metrics are the final epoch's.
    """
    from bibad_utils.judges import load_classifier, save_classifier, train_classifier

    if cell.trigger_kind is None:
        raise ConfigError("cell", cell.name, "a grid cell with a trigger (badnets1 | badnets2 | wanet)")
    stage, params, inputs = classifier_key(study, cell, source)
    kw = dict(params["classifier"])
    arch = kw.pop("arch")

    def build(art):
        ps = study.poisoned(cell)
        if source == SOURCES[0]:
            data, labels = ps, None
        elif source == SOURCES[1]:
            data, labels = _SubsetView(ps, train_subset_indices(study, cell, params["n"])), None
        else:
            gen = _all_gen(study, cell)
            data, labels = gen.images, gen.labels
        started = time.perf_counter()
        model, history = train_classifier(data, labels, arch=arch, seed=study.seed, device=study.device,
                                          num_classes=len(study.class_names), progress=study.progress, **kw)
        seconds = time.perf_counter() - started
        report = {**evaluate_ta_asr(study, model, cell.trigger_kind), "n_train": len(data) if labels is None
                  else len(labels), "train_seconds": seconds, "history": history}
        save_classifier(model, art.dir / "model", meta={"report": report})
        st.save_json(art.dir / "report.json", report)

    path = study.store.cached(stage, params, inputs, build, device=str(study.device))
    return load_classifier(path / "model", device=study.device), st.load_json(path / "report.json")


def poisoned_classifier(study, cell):
    """The backdoored classifier of ``cell``: trained on its whole poisoned training set (cached);
    returns ``(model, report)`` as :func:`trained_classifier`."""
    return trained_classifier(study, cell, SOURCES[0])


# ---------------------------------------------------------------------------------------------------
# Detection


def clean_dm_flag_rate(study, kind: str) -> dict:
    """Share of the clean DM's all-class generations that the trigger detector of ``kind`` flags (an
    estimate of its false-positive rate on generations), with a Wilson interval: ``rate, lo, hi, n``.
    NaN when the profile has no ``clean`` control (no clean DM is trained for this check alone)."""
    from bibad_utils.metrics import wilson_interval
    from bibad_utils.stages import Cell

    if "clean" not in study.cfg["controls"]:
        return {"rate": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    flags = np.asarray(study.judge(_all_gen(study, Cell("clean")), kind)["trigger"], dtype=bool)
    lo, hi = wilson_interval(int(flags.sum()), len(flags))
    return {"rate": float(flags.mean()), "lo": lo, "hi": hi, "n": len(flags)}


def detection_sets(study, cell) -> dict:
    """The two image sets scored for ``cell``, of equal size ``n = min(n_detect, |all-class set|)``.

    Returns ``{"training": {...}, "generated": {...}}``, each with uint8 ``images [n, H, W, 3]``, int64
    ``labels [n]`` (poisoned labels / prompt classes), bool ``truth [n]`` (poison indices / the trigger
    detector's verdict) and int64 ``indices [n]`` into the poisoned training set / the generation set.
    """
    d = defense_config(study)
    gen = _all_gen(study, cell)
    n = len(gen.labels) if d["n_detect"] is None else min(int(d["n_detect"]), len(gen.labels))
    ps = study.poisoned(cell)
    tr_idx = train_subset_indices(study, cell, n)
    gen_idx = stratified_subset(np.asarray(gen.labels), n, study.seed)
    verdict = study.judge(gen, cell.trigger_kind)["trigger"]
    return {
        "training": {"images": ps.images_uint8(tr_idx), "labels": np.asarray(ps.labels)[tr_idx],
                     "truth": ps.is_poisoned[tr_idx].copy(), "indices": tr_idx},
        "generated": {"images": np.asarray(gen.images[gen_idx]), "labels": np.asarray(gen.labels)[gen_idx],
                      "truth": np.asarray(verdict, dtype=bool)[gen_idx], "indices": gen_idx},
    }


def detection_scores(study, cell, set_name: str) -> dict:
    """CD, STRIP and FCT scores (higher = more likely poisoned) of one of :func:`detection_sets`;
    cached. f = the backdoored classifier (:func:`poisoned_classifier`). STRIP overlays clean test
    images; FCT first fine-tunes a copy of f on the scored set with its labels.

    Returns ``{"CD", "STRIP", "FCT"}`` float64 ``[n]`` scores, ``masks`` float32 ``[n, H, W]`` (CD),
    ``seconds`` (per detector), and the set's ``images``, ``labels``, ``truth``, ``indices``.
    """
    from bibad_utils import defenses as D

    if set_name not in ("training", "generated"):
        raise ConfigError("set_name", set_name, "training | generated")
    d = defense_config(study)
    sets = detection_sets(study, cell)
    data = sets[set_name]
    c_stage, c_params, c_inputs = classifier_key(study, cell, SOURCES[0])
    data_input = study.poison_key(cell) if set_name == "training" else study.generation_key(cell)
    params = {"set": set_name, "n": len(data["labels"]), "cd": d["cd"],
              "strip": d["strip"], "fct": d["fct"], "seed": study.seed}
    inputs = [st.artifact_key(c_stage, c_params, c_inputs), data_input, study.data_key]

    def build(art):
        f, _ = poisoned_classifier(study, cell)
        images, dev, seconds = data["images"], study.device, {}
        t0 = time.perf_counter()
        cd = dict(d["cd"], betas=tuple(d["cd"]["betas"]))
        cd_s, masks = D.cd_scores(f, images, seed=study.seed, device=dev, return_masks=True, **cd)
        t1 = time.perf_counter()
        strip_s = D.strip_scores(f, images, study.test_set.images, seed=study.seed, device=dev, **d["strip"])
        t2 = time.perf_counter()
        fct_s = D.fct_scores(f, images, train_images=images, train_labels=data["labels"], seed=study.seed,
                             device=dev, **d["fct"])
        t3 = time.perf_counter()
        seconds = {"CD": t1 - t0, "STRIP": t2 - t1, "FCT": t3 - t2}
        for name, arr in (("CD", cd_s), ("STRIP", strip_s), ("FCT", fct_s), ("masks", masks)):
            st.save_array(art.dir / f"{name}.npy", arr)
        st.save_json(art.dir / "seconds.json", seconds)

    path = study.store.cached("castle_detect", params, inputs, build, device=str(study.device))
    out = {name: st.load_array(path / f"{name}.npy") for name in (*DETECTORS, "masks")}
    out["seconds"] = st.load_json(path / "seconds.json")
    return {**out, **data}


def detection_table(study, cells=None) -> pd.DataFrame:
    """AUROC of each detector on the training subset and on the generations, per grid cell.

    Columns: ``cell, attack, p, detector, set`` (training | generated), ``n, n_poisoned`` (positives
    of the truth), ``auroc, auroc_lo, auroc_hi`` (95 % stratified bootstrap), ``seconds``, ``paper``
    (the paper's CD AUROC on ImageNette for this set, NaN where it gives none), ``note``.
    """
    d = defense_config(study)
    rows = []
    for cell in cells or study.grid_cells():
        for set_name in ("training", "generated"):
            res = detection_scores(study, cell, set_name)
            truth = res["truth"]
            for det in DETECTORS:
                auc, lo, hi = auroc_interval(res[det], truth, d["n_boot"], study.seed)
                paper = _paper_at(PAPER_CD_AUROC, (cell.kind, cell.ratio)) if det == "CD" else None
                note = ""
                if math.isnan(auc):
                    note = ("no triggered image among the scored generations: AUROC undefined" if not truth.any()
                            else "every scored image is triggered: AUROC undefined")
                rows.append({"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "detector": det,
                             "set": set_name, "n": len(truth), "n_poisoned": int(truth.sum()), "auroc": auc,
                             "auroc_lo": lo, "auroc_hi": hi, "seconds": float(res["seconds"][det]),
                             "paper": math.nan if paper is None else paper[set_name == "generated"],
                             "note": note})
    return pd.DataFrame(rows)


def detection_differences(study, cells=None) -> pd.DataFrame:
    """``AUROC(generated) - AUROC(training)`` per cell and detector with a bootstrap interval.

    Columns: ``cell, attack, p, detector, auroc_train, auroc_gen, diff, diff_lo, diff_hi``,
    ``n_poisoned_train, n_triggered_gen, n``, ``clean_dm_flagged`` (and its lower Wilson bound
    ``clean_dm_flagged_lo``, :func:`clean_dm_flag_rate`), ``paper_train, paper_gen`` (CD, ImageNette;
    NaN elsewhere).
    """
    d = defense_config(study)
    rows = []
    for cell in cells or study.grid_cells():
        tr, ge = detection_scores(study, cell, "training"), detection_scores(study, cell, "generated")
        flag = clean_dm_flag_rate(study, cell.trigger_kind)
        for det in DETECTORS:
            diff, lo, hi = auroc_difference(ge[det], ge["truth"], tr[det], tr["truth"], d["n_boot"], study.seed)
            a_tr, a_ge = _auroc_or_nan(tr[det], tr["truth"]), _auroc_or_nan(ge[det], ge["truth"])
            paper = _paper_at(PAPER_CD_AUROC, (cell.kind, cell.ratio)) if det == "CD" else None
            rows.append({"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "detector": det,
                         "auroc_train": a_tr, "auroc_gen": a_ge, "diff": diff, "diff_lo": lo, "diff_hi": hi,
                         "n_poisoned_train": int(tr["truth"].sum()), "n_triggered_gen": int(ge["truth"].sum()),
                         "n": len(ge["truth"]), "clean_dm_flagged": flag["rate"], "clean_dm_flagged_lo": flag["lo"],
                         "paper_train": math.nan if paper is None else paper[0],
                         "paper_gen": math.nan if paper is None else paper[1]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Training on generations


def train_on_generations_table(study, cells=None) -> pd.DataFrame:
    """TA and ASR of classifiers trained on each source of :data:`SOURCES`, per grid cell.

    The two ``n_all``-image classifiers (a stratified subset of the poisoned training set with its poison
    fraction, and the generations) share size and schedule (``defenses.gen_classifier``); the full one
    uses ``defenses.classifier``. Columns: ``cell, attack, p, source, n_train, TA, TA_lo, TA_hi, ASR, ASR_lo,
    ASR_hi, n_ta, k_ta, n_asr, k_asr, train_seconds``, ``acc_generated`` (accuracy on the all-class
    generations against their prompt's class: for the real sources how well a real-trained classifier
    transfers to generations, for ``generated`` its training accuracy), ``paper_TA, paper_ASR`` (ImageNette, training set for
    the real sources, generation set for ``generated``), ``paper_ASR_caltech15``. Rates in [0, 1].
    """
    from bibad_utils.judges import predict

    rows = []
    for cell in cells or study.grid_cells():
        gen_set = _all_gen(study, cell)
        for source in SOURCES:
            model, rep = trained_classifier(study, cell, source)
            pred_gen, _ = predict(model, gen_set.images, device=study.device)
            gen = source == "generated"
            pin = _paper_at(PAPER_TRAIN_ON_GEN["imagenette"], (cell.kind, cell.ratio)) or {}
            pcal = _paper_at(PAPER_TRAIN_ON_GEN["caltech15"], (cell.kind, cell.ratio)) or {}
            row = {"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "source": source,
                   "n_train": rep["n_train"], "train_seconds": rep["train_seconds"]}
            row.update({k: rep[k] for k in ("TA", "TA_lo", "TA_hi", "ASR", "ASR_lo", "ASR_hi",
                                            "n_ta", "k_ta", "n_asr", "k_asr")})
            row["acc_generated"] = float((pred_gen == gen_set.labels).mean())
            row["paper_TA"] = pin["TA"][gen] / 100 if "TA" in pin else math.nan
            row["paper_ASR"] = pin["ASR"][gen] / 100 if "ASR" in pin else math.nan
            row["paper_ASR_caltech15"] = pcal["ASR"][gen] / 100 if "ASR" in pcal else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Diffusion classifier


def dc_cells(study) -> list:
    """Grid cells whose attack is in ``defenses.dc_attacks``."""
    attacks = defense_config(study)["dc_attacks"]
    return [c for c in study.grid_cells() if c.kind in attacks]


def dc_images(study, kind: str, n: int | None = None) -> dict:
    """The diffusion classifier's test images: ``clean`` (float [-1, 1] ``[n, 3, H, W]``, a class-stratified
    subset of the test set) with ``labels``, and ``triggered`` (``n`` non-target test images, stratified
    by class, with the trigger ``kind``). ``n`` defaults to ``defenses.dc_n_images``."""
    n = defense_config(study)["dc_n_images"] if n is None else n
    labels = np.asarray(study.test_set.labels)
    clean_idx = stratified_subset(labels, n, study.seed)
    nt = _nontarget_test_indices(study)
    trig_idx = nt[stratified_subset(labels[nt], n, study.seed)]
    x, _ = study.test_set.batch(clean_idx)
    return {"clean": x, "labels": labels[clean_idx], "triggered": triggered_test_images(study, kind, trig_idx),
            "clean_indices": clean_idx, "triggered_indices": trig_idx}


def dc_predictions(study, cell, p_filter: float) -> dict:
    """Diffusion-classifier predictions of ``cell``'s poisoned DM on :func:`dc_images`; cached per
    (cell, p_filter). Returns ``pred_clean``, ``labels``, ``pred_triggered`` (int64), ``unet_evals``,
    ``seconds`` (wall time of both sets) and ``n_images`` (both sets together)."""
    from bibad_utils import defenses as D

    d = defense_config(study)
    params = {"p_filter": float(p_filter), "n_levels": d["dc_levels"], "adaptive": d["dc_adaptive"],
              "n_images": d["dc_n_images"], "seed": study.seed, "target": study.target,
              "trigger": study.cfg["triggers"].get(cell.trigger_kind), "kind": cell.trigger_kind}

    def build(art):
        imgs = dc_images(study, cell.trigger_kind)
        model = study.model(cell)
        kw = dict(n_levels=d["dc_levels"], p_filter=float(p_filter), batch_size=d["dc_batch_size"],
                  seed=study.seed, device=study.device, adaptive=d["dc_adaptive"], return_errors=True)
        pc, dc = D.diffusion_classify(model, imgs["clean"], **kw)
        pt, dt = D.diffusion_classify(model, imgs["triggered"], **kw)
        st.save_array(art.dir / "pred_clean.npy", pc)
        st.save_array(art.dir / "pred_triggered.npy", pt)
        st.save_array(art.dir / "labels.npy", imgs["labels"])
        st.save_json(art.dir / "cost.json", {"unet_evals": dc["unet_evals"] + dt["unet_evals"],
                                             "seconds": dc["seconds"] + dt["seconds"],
                                             "n_images": len(pc) + len(pt), "threads": torch.get_num_threads(),
                                             "device": str(study.device)})

    path = study.store.cached("castle_dc", params, [study.model_key(cell), study.data_key], build,
                              device=str(study.device))
    out = {k: st.load_array(path / f"{k}.npy") for k in ("pred_clean", "pred_triggered", "labels")}
    return {**out, **st.load_json(path / "cost.json")}


def diffusion_classifier_table(study, cells=None) -> pd.DataFrame:
    """TA and ASR of the diffusion classifier (per ``p_filter``) and of the backdoored classifier of
    the same cell, all on the same :func:`dc_images`.

    Columns: ``cell, attack, p, method`` (``diffusion classifier`` | ``classifier (<arch>)``),
    ``p_filter`` (NaN for the classifier), the :func:`ta_asr_report` keys, ``unet_evals_per_image``,
    ``seconds_per_image`` (NaN for the classifier), ``paper_TA, paper_ASR`` (CIFAR-10, NaN where the
    paper gives none). Rates in [0, 1].
    """
    from bibad_utils.judges import predict

    d = defense_config(study)
    rows = []
    for cell in dc_cells(study) if cells is None else cells:
        imgs = dc_images(study, cell.trigger_kind)
        f, _ = poisoned_classifier(study, cell)
        pc, _ = predict(f, imgs["clean"], device=study.device)
        pt, _ = predict(f, imgs["triggered"], device=study.device)
        paper = _paper_at(PAPER_DC["resnet18"], cell.ratio) or {}
        base = {"cell": cell.name, "attack": cell.kind, "p": cell.ratio}
        rows.append({**base, "method": f"classifier ({f.config['arch']})", "p_filter": math.nan,
                     **ta_asr_report(pc, imgs["labels"], pt, study.target), "unet_evals_per_image": math.nan,
                     "seconds_per_image": math.nan, "paper_TA": paper.get("TA", math.nan) / 100,
                     "paper_ASR": paper.get("ASR", math.nan) / 100})
        for pf in d["p_filter"]:
            res = dc_predictions(study, cell, pf)
            paper = _paper_at(_paper_at(PAPER_DC["dc"], pf) or {}, cell.ratio) or {}
            rows.append({**base, "method": "diffusion classifier", "p_filter": pf,
                         **ta_asr_report(res["pred_clean"], res["labels"], res["pred_triggered"], study.target),
                         "unet_evals_per_image": res["unet_evals"] / res["n_images"],
                         "seconds_per_image": res["seconds"] / res["n_images"],
                         "paper_TA": paper.get("TA", math.nan) / 100, "paper_ASR": paper.get("ASR", math.nan) / 100})
    return pd.DataFrame(rows)


def dc_benchmark(study) -> pd.DataFrame:
    """Cost of the diffusion classifier, exhaustive vs adaptive pruning (``defenses.dc_adaptive``),
    on ``defenses.dc_bench_images`` clean test images of the first DC cell's DM at p_filter 0; cached
    (the timings are those of the first run).

    Columns: ``mode, n_images, n_classes, n_levels, stages, unet_evals, unet_evals_per_image,
    predicted_evals`` (:func:`bibad_utils.defenses.dc_cost`), ``seconds_per_image, ms_per_unet_eval,
    accuracy, agreement`` (fraction of predictions equal to the exhaustive ones), ``device, threads``.
    """
    from bibad_utils import defenses as D

    d = defense_config(study)
    cells = dc_cells(study)
    if not cells:
        raise ConfigError("defenses.dc_attacks", d["dc_attacks"], f"attacks of the grid {study.cfg['attacks']}")
    cell = cells[0]
    modes = [("exhaustive", None)] + ([("adaptive", d["dc_adaptive"])] if d["dc_adaptive"] else [])
    params = {"n_images": d["dc_bench_images"], "n_levels": d["dc_levels"], "modes": modes, "seed": study.seed,
              "batch_size": d["dc_batch_size"]}

    def build(art):
        imgs = dc_images(study, cell.trigger_kind, d["dc_bench_images"])
        model = study.model(cell)
        rows, reference = [], None
        for mode, stages in modes:
            pred, det = D.diffusion_classify(model, imgs["clean"], n_levels=d["dc_levels"], adaptive=stages,
                                             batch_size=d["dc_batch_size"], seed=study.seed,
                                             device=study.device, return_errors=True)
            reference = pred if reference is None else reference
            n = len(pred)
            rows.append({"mode": mode, "cell": cell.name, "n_images": n, "n_classes": len(det["classes"]),
                         "n_levels": d["dc_levels"], "stages": "all classes, all levels" if stages is None
                         else str([list(s) for s in stages]), "unet_evals": det["unet_evals"],
                         "unet_evals_per_image": det["unet_evals"] / n,
                         "predicted_evals": D.dc_cost(n, len(det["classes"]), d["dc_levels"], stages),
                         "seconds_per_image": det["seconds"] / n,
                         "ms_per_unet_eval": 1000 * det["seconds"] / det["unet_evals"],
                         "accuracy": float((pred == imgs["labels"]).mean()),
                         "agreement": float((pred == reference).mean()),
                         "device": str(study.device), "threads": torch.get_num_threads()})
        st.save_json(art.dir / "benchmark.json", rows)

    path = study.store.cached("castle_dc_bench", params, [study.model_key(cell), study.data_key], build,
                              device=str(study.device))
    return pd.DataFrame(st.load_json(path / "benchmark.json"))


# ---------------------------------------------------------------------------------------------------
# Claims and quoted numbers


def _p_text(p: float) -> str:
    return f"p={p * 100:g}%"


def detection_claims(diffs: pd.DataFrame) -> list[dict]:
    """One claim row per (cell, detector) of :func:`detection_differences`: AUROC higher on generations."""
    rows = []
    for r in diffs.itertuples():
        paper = ""
        if not math.isnan(r.paper_train):
            paper = f"{r.paper_train:.3f} -> {r.paper_gen:.3f} (ImageNette, SD v1.4)"
        if r.clean_dm_flagged_lo > GEN_FLAG_MAX:
            verdict = "not tested"
            note = (f"no truth on generations: the trigger detector flags {r.clean_dm_flagged:.0%} of the clean "
                    f"DM's generations")
        elif min(r.n_poisoned_train, r.n - r.n_poisoned_train, r.n_triggered_gen,
                 r.n - r.n_triggered_gen) < MIN_CLASS_COUNT:
            verdict = "not tested"
            note = (f"too few of one kind: {r.n_poisoned_train} poisoned (training) and {r.n_triggered_gen} "
                    f"triggered (generated) of {r.n} each; at least {MIN_CLASS_COUNT} of each kind needed")
        elif math.isnan(r.diff):
            verdict = "not tested"
            note = (f"AUROC undefined on the generations ({r.n_triggered_gen} of {r.n} triggered)"
                    if r.n_triggered_gen in (0, r.n) else "AUROC undefined on the training subset")
        else:
            verdict = verdict_greater(r.diff_lo, r.diff, 0.0)
            note = f"AUROC {r.auroc_train:.3f} (training) -> {r.auroc_gen:.3f} (generations)"
            if r.detector != "CD":
                note += "; the slides give CD only"
        rows.append(claim_row(STAGE, "Detection is easier on generations", setting=f"{r.detector}, {r.cell}",
                              metric="AUROC(generated) - AUROC(training)", paper=paper, ours=r.diff,
                              lo=r.diff_lo, hi=r.diff_hi, verdict=verdict, note=note))
    return rows


def train_on_generations_claims(tog: pd.DataFrame) -> list[dict]:
    """Per cell: ASR lower when trained on generations (vs the same-size real subset), at a TA cost
    below :data:`TA_COST_MAX`."""
    rows = []
    for cell, g in tog.groupby("cell", sort=False):
        real = g[g.source == SOURCES[1]].iloc[0]
        gen = g[g.source == "generated"].iloc[0]
        setting = f"{cell}, {int(real.n_train)} images each"
        paper_asr = paper_ta = ""
        if not math.isnan(gen.paper_ASR):
            paper_asr = f"ASR {real.paper_ASR:.2%} -> {gen.paper_ASR:.2%} (ImageNette)"
            paper_ta = f"TA {real.paper_TA:.2%} -> {gen.paper_TA:.2%} (ImageNette)"
        if not math.isnan(gen.paper_ASR_caltech15):
            paper_asr += f"; {real.paper_ASR_caltech15:.2%} -> {gen.paper_ASR_caltech15:.2%} (Caltech15)"
        d_ta, lo_ta, hi_ta = proportion_difference(real.k_ta, real.n_ta, gen.k_ta, gen.n_ta)
        ta_verdict = verdict_less(hi_ta, d_ta, TA_COST_MAX)
        d, lo, hi = proportion_difference(real.k_asr, real.n_asr, gen.k_asr, gen.n_asr)
        verdict, why = capped_verdict(verdict_greater(lo, d, 0.0), ta_verdict)
        rows.append(claim_row(STAGE, "Training on generations lowers ASR", setting=setting,
                              metric="ASR(real subset) - ASR(generated)", paper=paper_asr, ours=d, lo=lo, hi=hi,
                              verdict=verdict, note="; ".join(filter(None, [f"ASR {real.ASR:.1%} -> {gen.ASR:.1%}", why]))))
        rows.append(claim_row(STAGE, f"... at a TA cost of a few points (< {TA_COST_MAX:.0%})", setting=setting,
                              metric="TA(real subset) - TA(generated)", paper=paper_ta, ours=d_ta, lo=lo_ta,
                              hi=hi_ta, verdict=ta_verdict, note=f"TA {real.TA:.1%} -> {gen.TA:.1%}"))
    return rows


def diffusion_classifier_claims(dc: pd.DataFrame) -> list[dict]:
    """Per cell: the diffusion classifier (p_filter 0) has a lower ASR than the backdoored classifier
    at a TA within :data:`DC_TA_MARGIN` of it; the largest p_filter lowers the ASR further."""
    rows = []
    for cell, g in dc.groupby("cell", sort=False):
        clf = g[g.method != "diffusion classifier"].iloc[0]
        dcs = g[g.method == "diffusion classifier"].sort_values("p_filter")
        d0 = dcs.iloc[0]
        p = float(clf.p)
        pr = _paper_at(PAPER_DC["resnet18"], p)
        pd0 = _paper_at(_paper_at(PAPER_DC["dc"], float(d0.p_filter)) or {}, p)
        paper = f"ASR {pr['ASR']:.2f}% -> {pd0['ASR']:.2f}% (CIFAR-10)" if pr and pd0 else ""
        paper_ta = f"TA {pr['TA']:.2f}% -> {pd0['TA']:.2f}% (CIFAR-10)" if pr and "TA" in (pd0 or {}) else ""
        d_ta, lo_ta, hi_ta = proportion_difference(d0.k_ta, d0.n_ta, clf.k_ta, clf.n_ta)
        ta_verdict = verdict_greater(lo_ta, d_ta, -DC_TA_MARGIN)
        d, lo, hi = proportion_difference(clf.k_asr, clf.n_asr, d0.k_asr, d0.n_asr)
        verdict, why = capped_verdict(verdict_greater(lo, d, 0.0), ta_verdict)
        setting = f"{cell}, p_filter {d0.p_filter:g}"
        rows.append(claim_row(STAGE, "The diffusion classifier resists the backdoor", setting=setting,
                              metric=f"ASR({clf.method}) - ASR(DC)", paper=paper, ours=d, lo=lo, hi=hi,
                              verdict=verdict, note="; ".join(filter(None, [f"ASR {clf.ASR:.1%} -> {d0.ASR:.1%}", why]))))
        rows.append(claim_row(STAGE, f"... with a comparable TA (at most {DC_TA_MARGIN:.0%} lower)", setting=setting,
                              metric=f"TA(DC) - TA({clf.method})", paper=paper_ta, ours=d_ta, lo=lo_ta, hi=hi_ta,
                              verdict=ta_verdict, note=f"TA {clf.TA:.1%} ({clf.method}) vs {d0.TA:.1%} (DC)"))
        if len(dcs) > 1:
            dm = dcs.iloc[-1]
            pm = _paper_at(_paper_at(PAPER_DC["dc"], float(dm.p_filter)) or {}, p)
            paper = f"ASR {pd0['ASR']:.2f}% -> {pm['ASR']:.2f}% (CIFAR-10)" if pd0 and pm else ""
            d, lo, hi = proportion_difference(d0.k_asr, d0.n_asr, dm.k_asr, dm.n_asr)
            _, lo_ta, _ = proportion_difference(dm.k_ta, dm.n_ta, clf.k_ta, clf.n_ta)
            verdict, why = capped_verdict(verdict_greater(lo, d, 0.0),
                                          verdict_greater(lo_ta, dm.TA - clf.TA, -DC_TA_MARGIN))
            rows.append(claim_row(STAGE, "Filtering the largest errors lowers the DC's ASR further",
                                  setting=f"{cell}, p_filter {d0.p_filter:g} -> {dm.p_filter:g}",
                                  metric="ASR(DC, p_filter min) - ASR(DC, p_filter max)", paper=paper, ours=d,
                                  lo=lo, hi=hi, verdict=verdict,
                                  note="; ".join(filter(None, [f"ASR {d0.ASR:.1%} -> {dm.ASR:.1%}; TA {d0.TA:.1%} "
                                                               f"-> {dm.TA:.1%}", why]))))
    return rows


def castle_claims(study, diffs: pd.DataFrame | None = None, tog: pd.DataFrame | None = None,
                  dc: pd.DataFrame | None = None) -> list[dict]:
    """All claim rows of the stage (tables computed, or loaded from the cache, when not given)."""
    diffs = detection_differences(study) if diffs is None else diffs
    tog = train_on_generations_table(study) if tog is None else tog
    dc = diffusion_classifier_table(study) if dc is None else dc
    return detection_claims(diffs) + train_on_generations_claims(tog) + diffusion_classifier_claims(dc)


def castle_summary(study, diffs: pd.DataFrame, tog: pd.DataFrame, dc: pd.DataFrame, claims: list[dict],
                   bench: pd.DataFrame | None = None) -> dict:
    """The numbers and verdict counts the notebook quotes, keyed by glue name (``nb05_...``):
    means over cells (NaN-aware) of AUROCs, TA/ASR per source, DC rates, settings, verdict counts."""
    d = defense_config(study)
    out = {"nb05_n_cells": len(study.grid_cells()), "nb05_n_detect": int(diffs["n"].iloc[0]) if len(diffs) else 0,
           "nb05_clf_arch": classifier_settings(study)["arch"], "nb05_guidance_all": study.guidance_all,
           "nb05_dc_levels": d["dc_levels"], "nb05_dc_n_images": d["dc_n_images"],
           "nb05_dc_adaptive": "none (every class at every level)" if d["dc_adaptive"] is None
           else str(d["dc_adaptive"]), "nb05_n_all": int(study.cfg["sampling"]["n_all"])}
    for det in DETECTORS:
        rows = diffs[diffs.detector == det]
        out[f"nb05_{det.lower()}_train"] = float(np.nanmean(rows.auroc_train)) if rows.auroc_train.notna().any() else math.nan
        out[f"nb05_{det.lower()}_gen"] = float(np.nanmean(rows.auroc_gen)) if rows.auroc_gen.notna().any() else math.nan
    for key, source in zip(("full", "subset", "gen"), SOURCES):
        rows = tog[tog.source == source]
        out[f"nb05_tog_ta_{key}"] = float(rows.TA.mean())
        out[f"nb05_tog_asr_{key}"] = float(rows.ASR.mean())
        out[f"nb05_tog_accgen_{key}"] = float(rows.acc_generated.mean())
    flags = diffs.drop_duplicates("attack").set_index("attack")["clean_dm_flagged"]
    out["nb05_flag_text"] = ", ".join(f"{k} {v:.1%}" for k, v in flags.items()) if len(flags) else "none"
    out["nb05_flag_max"] = GEN_FLAG_MAX
    out["nb05_min_count"] = MIN_CLASS_COUNT
    clf = dc[dc.method != "diffusion classifier"]
    dcs = dc[dc.method == "diffusion classifier"]
    pfs = sorted(dcs.p_filter.unique())
    out.update({"nb05_dc_ta_clf": float(clf.TA.mean()), "nb05_dc_asr_clf": float(clf.ASR.mean()),
                "nb05_dc_ta_p0": float(dcs[dcs.p_filter == pfs[0]].TA.mean()),
                "nb05_dc_asr_p0": float(dcs[dcs.p_filter == pfs[0]].ASR.mean()),
                "nb05_dc_ta_pmax": float(dcs[dcs.p_filter == pfs[-1]].TA.mean()),
                "nb05_dc_asr_pmax": float(dcs[dcs.p_filter == pfs[-1]].ASR.mean()),
                "nb05_dc_pmin": float(pfs[0]), "nb05_dc_pmax": float(pfs[-1]),
                "nb05_dc_chance": 1.0 / len(study.class_names)})
    groups = {"det": "Detection", "tog_asr": "Training on generations lowers", "tog_ta": "... at a TA cost",
              "dc_asr": "The diffusion classifier resists", "dc_ta": "... with a comparable TA",
              "dc_filter": "Filtering the largest"}
    for key, prefix in groups.items():
        out[f"nb05_verdicts_{key}"] = _verdict_text([r for r in claims if r["claim"].startswith(prefix)])
    out["nb05_verdicts_all"] = _verdict_text(claims)
    if bench is not None and len(bench):
        for r in bench.itertuples():
            out[f"nb05_bench_{r.mode}_evals"] = float(r.unet_evals_per_image)
            out[f"nb05_bench_{r.mode}_seconds"] = float(r.seconds_per_image)
            out[f"nb05_bench_{r.mode}_agreement"] = float(r.agreement)
    return out


# ---------------------------------------------------------------------------------------------------
# Display tables


def _with_interval(v: float, lo: float, hi: float, percent: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if percent:
        return f"{v:.1%} [{lo:.1%}, {hi:.1%}]"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _paper_text(v: float, percent: bool) -> str:
    return "" if v is None or math.isnan(v) else (f"{v:.2%}" if percent else f"{v:.3f}")


def detection_wide(det: pd.DataFrame, flags: dict | None = None) -> pd.DataFrame:
    """:func:`detection_table` for reading: one row per (cell, detector), AUROC [95 % interval] on the
    training subset and on the generations, the positives of each truth, the paper's CD values, and
    (``flags``: cell name -> rate, e.g. from :func:`clean_dm_flags`) the share of the clean DM's
    generations the cell's trigger detector flags."""
    rows = []
    for (cell, detector), g in det.groupby(["cell", "detector"], sort=False):
        tr, ge = g[g.set == "training"].iloc[0], g[g.set == "generated"].iloc[0]
        rows.append({"cell": cell, "detector": detector,
                     "AUROC training": _with_interval(tr.auroc, tr.auroc_lo, tr.auroc_hi, False),
                     "AUROC generated": _with_interval(ge.auroc, ge.auroc_lo, ge.auroc_hi, False),
                     "poisoned / n (training)": f"{tr.n_poisoned} / {tr.n}",
                     "triggered / n (generated)": f"{ge.n_poisoned} / {ge.n}",
                     "paper training": _paper_text(tr.paper, False), "paper generated": _paper_text(ge.paper, False)})
    out = pd.DataFrame(rows).set_index(["cell", "detector"])
    if flags is not None:
        out["clean DM flagged"] = [f"{flags.get(c, math.nan):.1%}" for c, _ in out.index]
    return out


def clean_dm_flags(study) -> dict:
    """Cell name -> :func:`clean_dm_flag_rate` of its trigger, for every grid cell."""
    return {c.name: clean_dm_flag_rate(study, c.trigger_kind)["rate"] for c in study.grid_cells()}


def rates_wide(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """TA and ASR [95 % Wilson intervals] per (cell, ``by``) of :func:`train_on_generations_table`
    (``by="source"``) or :func:`diffusion_classifier_table` (``by="method"``), with the paper's values."""
    rows = []
    for r in df.itertuples():
        label = getattr(r, by)
        if by == "method" and label == "diffusion classifier":
            label = f"DC, p_filter {r.p_filter:g}"
        row = {"cell": r.cell, by: label}
        if "n_train" in df:
            row["n_train"] = int(r.n_train)
        row.update({"TA": _with_interval(r.TA, r.TA_lo, r.TA_hi, True),
                    "ASR": _with_interval(r.ASR, r.ASR_lo, r.ASR_hi, True)})
        if "acc_generated" in df:
            row["acc. on generations"] = f"{r.acc_generated:.1%}"
        row.update({"paper TA": _paper_text(r.paper_TA, True), "paper ASR": _paper_text(r.paper_ASR, True)})
        if "paper_ASR_caltech15" in df:
            row["paper ASR (Caltech15)"] = _paper_text(r.paper_ASR_caltech15, True)
        if "seconds_per_image" in df and not math.isnan(r.seconds_per_image):
            row["s / image"] = f"{r.seconds_per_image:.3f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["cell", by]).fillna("")


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """Claim rows for reading: claim, setting, the paper's value, ours [95 % interval], verdict, note."""
    return pd.DataFrame([{"claim": r["claim"], "setting": r["setting"], "metric": r["metric"], "paper": r["paper"],
                          "ours": _with_interval(r["ours"], r["ours_lo"], r["ours_hi"], False),
                          "verdict": r["verdict"], "note": r["note"]} for r in rows])


def backdoored_table(study) -> pd.DataFrame:
    """TA and ASR of each grid cell's backdoored classifier (the detectors' f), final epoch."""
    rows = []
    for cell in study.grid_cells():
        model, rep = poisoned_classifier(study, cell)
        rows.append({"cell": cell.name, "classifier": model.config["arch"], "n_train": rep["n_train"],
                     "epochs": len(rep["history"]), "TA": _with_interval(rep["TA"], rep["TA_lo"], rep["TA_hi"], True),
                     "ASR": _with_interval(rep["ASR"], rep["ASR_lo"], rep["ASR_hi"], True),
                     "train seconds": round(rep["train_seconds"], 1)})
    return pd.DataFrame(rows).set_index("cell")


def example_cell(study):
    """The cell whose CD masks are shown: the first attack's largest p."""
    cells = study.grid_cells()
    return max((c for c in cells if c.kind == cells[0].kind), key=lambda c: c.ratio)


# ---------------------------------------------------------------------------------------------------
# Figures


def detection_figure(det: pd.DataFrame):
    """AUROC per cell, training subset vs generations, one panel per detector, with 95 % intervals;
    the paper's CD values (ImageNette) as open diamonds."""
    from matplotlib.figure import Figure

    from bibad_utils.plots import PALETTE, _style

    cells = list(pd.unique(det["cell"]))
    with _style():
        fig = Figure(figsize=(3.2 * len(DETECTORS) + 0.6, 3.4 + 0.15 * max(len(c) for c in cells)))
        axes = fig.subplots(1, len(DETECTORS), sharey=True, squeeze=False)[0]
        for ax, name in zip(axes, DETECTORS):
            for j, set_name in enumerate(("training", "generated")):
                rows = det[(det.detector == name) & (det.set == set_name)].set_index("cell").reindex(cells)
                pos = np.arange(len(cells)) - 0.2 + 0.4 * j
                vals = rows.auroc.to_numpy(float)
                ax.bar(pos, np.nan_to_num(vals), width=0.38, color=PALETTE[j], label=set_name)
                err = np.vstack([vals - rows.auroc_lo.to_numpy(float), rows.auroc_hi.to_numpy(float) - vals])
                ax.errorbar(pos, vals, yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="#333333",
                            elinewidth=1.0, capsize=2.5)
                for x, v in zip(pos, vals):
                    if math.isnan(v):
                        ax.text(x, 0.03, "n/a", ha="center", fontsize=7, rotation=90)
                paper = rows.paper.to_numpy(float)
                ax.plot(pos, paper, "D", mfc="none", mec="#000000", ms=6, linestyle="none",
                        label="paper (ImageNette)" if j == 0 and np.isfinite(paper).any() else None)
            ax.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
            ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
            ax.set_title(name)
            ax.set_ylim(0, 1.05)
        axes[0].set_ylabel("AUROC (0.5 = chance)")
        handles, labels = [], []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def _rate_panels(df: pd.DataFrame, x: str, hue: str, metrics=("TA", "ASR"), title: str | None = None,
                 paper_cols: dict | None = None, hline: dict | None = None):
    from matplotlib.figure import Figure

    from bibad_utils.plots import PALETTE, _style

    cats = list(pd.unique(df[x]))
    hues = list(pd.unique(df[hue]))
    width = 0.8 / len(hues)
    with _style():
        fig = Figure(figsize=(len(metrics) * max(3.5, 0.45 * len(cats) * len(hues) + 1.5), 3.8))
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, m in zip(axes, metrics):
            for i, h in enumerate(hues):
                rows = df[df[hue] == h].set_index(x).reindex(cats)
                pos = np.arange(len(cats)) - 0.4 + width * (i + 0.5)
                vals = rows[m].to_numpy(float)
                ax.bar(pos, vals, width=width * 0.92, color=PALETTE[i % len(PALETTE)], label=str(h))
                err = np.vstack([vals - rows[f"{m}_lo"].to_numpy(float), rows[f"{m}_hi"].to_numpy(float) - vals])
                ax.errorbar(pos, vals, yerr=np.clip(err, 0, None), fmt="none", ecolor="#333333", elinewidth=1.0,
                            capsize=2)
                col = (paper_cols or {}).get((h, m))
                if col is not None and col in rows:
                    pv = rows[col].to_numpy(float)
                    ax.plot(pos, pv, "D", mfc="none", mec="#000000", ms=5, linestyle="none",
                            label="paper" if np.isfinite(pv).any() else None)
            if hline and m in hline:
                ax.axhline(hline[m][0], color="#777777", linestyle=":", linewidth=1, label=hline[m][1])
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(m)
        handles, labels = [], []
        for ax in axes:
            for hd, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(hd)
                    labels.append(lab)
        fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize=8)
        if title:
            fig.suptitle(title, y=0.01, va="bottom", fontsize=9)
        fig.tight_layout(rect=(0, 0.03 if title else 0, 1, 0.86))
    return fig


def train_on_generations_figure(tog: pd.DataFrame):
    """TA and ASR per cell for the three training sources, 95 % Wilson intervals; the paper's
    ImageNette values (poisoned training set, generations) as open diamonds."""
    cols = {(SOURCES[0], m): f"paper_{m}" for m in ("TA", "ASR")}
    cols.update({("generated", m): f"paper_{m}" for m in ("TA", "ASR")})
    return _rate_panels(tog, "cell", "source", paper_cols=cols)


def dc_figure(dc: pd.DataFrame, n_classes: int):
    """TA and ASR per cell: the backdoored classifier, then the diffusion classifier at each p_filter
    (95 % Wilson intervals); the paper's CIFAR-10 values as open diamonds; chance level 1/K dotted."""
    df = dc.copy()
    df["model"] = [m if m != "diffusion classifier" else f"DC p_filter={pf:g}" for m, pf in zip(df.method, df.p_filter)]
    cols = {(h, m): f"paper_{m}" for h in df.model.unique() for m in ("TA", "ASR")}
    return _rate_panels(df, "cell", "model", paper_cols=cols,
                        hline={"ASR": (1.0 / n_classes, "chance 1/K"), "TA": (1.0 / n_classes, "chance 1/K")})


def cd_mask_figure(study, cell, n_show: int = 4):
    """CD at work on ``cell``: one panel for the training subset, one for the generations; rows: up to
    ``n_show`` poisoned (triggered) images, their distilled masks, as many clean (trigger-free) images,
    their masks (white = kept; a small mask = flagged), each mask titled by its L1 norm |m| in pixels.
    Empty slots stay blank."""
    from bibad_utils.plots import side_by_side_grids

    grids, titles = {}, {}
    for set_name, names in (("training subset", ("poisoned", "clean")), ("generations", ("triggered", "no trigger"))):
        res = detection_scores(study, cell, "training" if set_name.startswith("training") else "generated")
        size = res["images"].shape[1:3]
        rows, tits = [], []
        for name, sel in zip(names, (np.flatnonzero(res["truth"]), np.flatnonzero(~res["truth"]))):
            sel = sel[:n_show]
            blank = np.full((n_show - len(sel), *size, 3), 255, np.uint8)
            masks = (np.clip(res["masks"][sel], 0, 1) * 255).round().astype(np.uint8)
            rows += [np.concatenate([res["images"][sel], blank]),
                     np.concatenate([np.repeat(masks[..., None], 3, axis=-1), blank])]
            tits += [name] * len(sel) + [""] * len(blank)
            tits += [f"|m|={-res['CD'][i]:.0f}" for i in sel] + [""] * len(blank)
        grids[set_name], titles[set_name] = np.concatenate(rows), tits
    return side_by_side_grids(grids, nrow=n_show, titles=titles)
