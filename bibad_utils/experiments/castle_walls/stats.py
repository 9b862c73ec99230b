"""Statistics of stage 05: stratified subsets, AUROC and rate intervals, and the small verdict helpers."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, rankdata

from bibad_utils.base import ConfigError
from bibad_utils.metrics import Z95, auroc, rate_columns
from bibad_utils.schema import is_int


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
    if not is_int(n, 1):
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


def hanley_mcneil_variance(a: float, n_pos: int, n_neg: int) -> float:
    """Variance of an AUROC ``a`` from ``n_pos`` positives and ``n_neg`` negatives (Hanley and McNeil 1982,
    their exponential approximation: Q1 = a / (2 - a), Q2 = 2 a^2 / (1 + a))."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)


def hanley_mcneil_interval(a: float, n_pos: int, n_neg: int, z: float = Z95) -> tuple[float, float]:
    """Interval of an AUROC on the logit scale with the Hanley-McNeil variance (``a`` clipped half a pair
    away from 0 and 1, so a perfect AUROC still gets an interval)."""
    eps = 0.5 / (n_pos * n_neg)
    a = min(max(float(a), eps), 1 - eps)
    se = math.sqrt(hanley_mcneil_variance(a, n_pos, n_neg)) / (a * (1 - a))
    centre = math.log(a / (1 - a))
    return 1 / (1 + math.exp(-(centre - z * se))), 1 / (1 + math.exp(-(centre + z * se)))


# Why two intervals: a percentile bootstrap of the AUROC undercovers with few positives (simulated, binormal
# scores, 300 per set, 300-400 runs each: 6 positives cover 83 % at AUROC 0.80 and 73 % at 0.95; 30
# positives 94 % and 90 %), while the Hanley-McNeil interval (logit scale for one AUROC, the two variances
# summed for a difference) covered 95-100 % at 6-100 positives and AUROC 0.6-0.95. The rates below are the
# union of both, so an interval is never narrower than the one that covers (tested in tests/test_castle_walls.py).


def auroc_interval(scores, truth, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """AUROC of ``scores`` (higher = poisoned) against bool ``truth`` with a 1 - ``alpha`` interval: the
    union of a stratified percentile bootstrap and the Hanley-McNeil logit interval (the bootstrap alone
    undercovers with few positives). Returns ``(auroc, lo, hi)`` in [0, 1]; all NaN when ``truth`` holds
    one class."""
    s, t = _check_scores(scores, truth, "scores, truth")
    if t.all() or not t.any():
        return math.nan, math.nan, math.nan
    boots = _boot_aurocs(s, t, int(n_boot), np.random.default_rng(seed))
    a = auroc(s, t)
    z = float(norm.ppf(1 - alpha / 2))
    hm_lo, hm_hi = hanley_mcneil_interval(a, int(t.sum()), int((~t).sum()), z)
    return a, min(float(np.quantile(boots, alpha / 2)), hm_lo), max(float(np.quantile(boots, 1 - alpha / 2)), hm_hi)


def auroc_difference(scores_a, truth_a, scores_b, truth_b, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """``AUROC(a) - AUROC(b)`` of two independent scored sets with a 1 - ``alpha`` interval: the union of
    the percentile interval of independent stratified bootstraps and the normal interval with the two
    Hanley-McNeil variances summed. Returns ``(d, lo, hi)`` in [-1, 1]; NaN if either is undefined."""
    sa, ta = _check_scores(scores_a, truth_a, "scores_a, truth_a")
    sb, tb = _check_scores(scores_b, truth_b, "scores_b, truth_b")
    if ta.all() or not ta.any() or tb.all() or not tb.any():
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    diffs = _boot_aurocs(sa, ta, int(n_boot), rng) - _boot_aurocs(sb, tb, int(n_boot), rng)
    a_a, a_b = auroc(sa, ta), auroc(sb, tb)
    d = a_a - a_b
    z = float(norm.ppf(1 - alpha / 2))
    se = math.sqrt(hanley_mcneil_variance(a_a, int(ta.sum()), int((~ta).sum()))
                   + hanley_mcneil_variance(a_b, int(tb.sum()), int((~tb).sum())))
    lo = min(float(np.quantile(diffs, alpha / 2)), max(-1.0, d - z * se))
    hi = max(float(np.quantile(diffs, 1 - alpha / 2)), min(1.0, d + z * se))
    return d, lo, hi


def paper_at(table: dict, key):
    """``table[key]`` comparing float ratios up to rounding (keys are p or (trigger, p)); None if absent."""
    for k, v in table.items():
        if isinstance(k, tuple):
            match = k[0] == key[0] and math.isclose(k[1], key[1], abs_tol=1e-9)
        else:
            match = math.isclose(k, key, abs_tol=1e-9)
        if match:
            return v
    return None


def auroc_or_nan(scores, truth) -> float:
    truth = np.asarray(truth, dtype=bool)
    return math.nan if truth.all() or not truth.any() else auroc(scores, truth)


def ta_asr_report(pred_clean, labels_clean, pred_triggered, target: int, z: float = Z95) -> dict:
    """TA and ASR with counts and Wilson intervals.

    pred_clean / labels_clean: int ``[N]`` predictions and true classes of clean test images;
    pred_triggered: int ``[M]`` predictions on triggered images of NON-target classes.
    Returns ``TA, TA_lo, TA_hi, n_ta, k_ta, ASR, ASR_lo, ASR_hi, n_asr, k_asr`` (rates in [0, 1]).
    """
    pc, yc, pt = (np.asarray(a, dtype=np.int64) for a in (pred_clean, labels_clean, pred_triggered))
    if pc.shape != yc.shape:
        raise ConfigError("labels_clean", yc.shape, f"one label per prediction {pc.shape}")
    out = {}
    for name, k, n in (("TA", int((pc == yc).sum()), len(pc)), ("ASR", int((pt == target).sum()), len(pt))):
        out.update(rate_columns(name, k, n, z))
        out[f"n_{name.lower()}"], out[f"k_{name.lower()}"] = n, k
    return out


def capped_verdict(verdict: str, ta_verdict: str) -> tuple[str, str]:
    """An ASR verdict read together with its TA verdict: a low ASR means robustness only for a model
    that still classifies, so when the TA claim is not reproduced (even the point estimate falls
    short) the ASR claim is "not tested"; otherwise the ASR verdict stands. Returns ``(verdict, note)``."""
    if ta_verdict == "not reproduced" and verdict in ("reproduced", "partly"):
        return "not tested", "the TA is too low for a low ASR to mean robustness"
    return verdict, ""


def with_interval(v: float, lo: float, hi: float, percent: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.1%} [{lo:.1%}, {hi:.1%}]" if percent else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def paper_value_text(v: float, percent: bool) -> str:
    return "" if v is None or math.isnan(v) else (f"{v:.2%}" if percent else f"{v:.3f}")
