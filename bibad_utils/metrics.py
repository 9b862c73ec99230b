"""The statistics of the study: G1-G4, trigger amplification, accuracy, AUROC and its intervals, Wilson and
Newcombe intervals, TA/ASR, stratified subsets, the trend test of the G2 share, Frechet distance.

Pure functions: numpy (or array-like) in, Python floats, dicts or numpy arrays out; no model, no I/O.
Ratios are fractions in [0, 1] (not percent). Definitions follow ``PAPER.md``:

- of the ``N_g`` images generated from the target prompt, ``T`` = the trigger detector says "trigger"
  and ``M`` = the clean classifier predicts the prompt's class;
- ``G1 = T & ~M`` (trigger, wrong content), ``G2 = T & M`` (trigger, right content),
  ``G3 = ~T & ~M``, ``G4 = ~T & M``; ``r_gen = G1 + G2`` is the trigger ratio among generations;
- trigger amplification compares ``r_gen`` with ``r_train``, the trigger ratio among the training
  images that carry the target prompt.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
from scipy.stats import norm, rankdata

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int

# The two-sided 95 % standard-normal quantile: every interval of the study is drawn at it.
Z95 = 1.959963984540054

G_GROUPS = ("G1", "G2", "G3", "G4")


def _bool_vector(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ConfigError(f"{name}.shape", a.shape, "a one-dimensional array [N]")
    if a.dtype != bool:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ConfigError(f"{name}", "non-boolean values", "booleans (or 0/1) per image")
        a = a.astype(bool)
    return a


def _int_vector(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ConfigError(f"{name}.shape", a.shape, "a one-dimensional array [N]")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(f"{name}.dtype", str(a.dtype), "integer class indices")
    return a.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ConfigError(f"len({name_b})", len(b), f"the same length as {name_a} ({len(a)})")


def _scores_and_truth(scores, truth, scores_name: str = "scores", truth_name: str = "is_poisoned"):
    """(float ``[N]`` finite detection scores, bool ``[N]`` truth), checked: what every AUROC reads."""
    s = np.asarray(scores, dtype=float)
    y = _bool_vector(truth, truth_name)
    if s.ndim != 1:
        raise ConfigError(f"{scores_name}.shape", s.shape, "a one-dimensional array [N]")
    _same_length(y, s, truth_name, scores_name)
    if not np.isfinite(s).all():
        raise ConfigError(scores_name, "non-finite values", "finite detection scores")
    return s, y


def wilson_interval(k, n, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Args:
        k: number of successes, an integer in [0, n].
        n: number of trials, an integer >= 0.
        z: standard-normal quantile; 1.96 gives a 95 % interval.

    Returns:
        ``(lo, hi)``, fractions in [0, 1]. With ``n = 0`` there is no observation and every proportion
        is consistent with the data, so the interval is the whole range ``(0.0, 1.0)`` (never nan, so
        that tables and error bars need no special case; the point estimate ``k / n`` is nan there).
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(n) != n or int(k) != k:
        raise ConfigError("wilson_interval(k, n)", (k, n), "integer counts")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ConfigError("wilson_interval(k, n)", (k, n), "0 <= k <= n")
    if not z > 0:
        raise ConfigError("z", z, "a positive standard-normal quantile (1.96 for 95 %)")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The exact bounds at k = 0 and k = n are 0 and 1; rounding would leave a tiny offset.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def rate_columns(name: str, k: int, n: int, z: float = Z95) -> dict:
    """A rate with its Wilson interval (:func:`wilson_interval`): ``{name: k / n (nan for n = 0), name_lo, name_hi}``
    (the columns of a table row)."""
    lo, hi = wilson_interval(k, n, z)
    return {name: k / n if n else math.nan, f"{name}_lo": lo, f"{name}_hi": hi}


def g_counts(trigger_pred, content_match) -> dict:
    """Counts and ratios of the groups G1-G4 among generations of the target prompt.

    Args:
        trigger_pred: bool ``[N]``, the trigger detector's decision ``T`` per generated image.
        content_match: bool ``[N]``, ``M``: the clean classifier predicts the prompt's class.

    Returns:
        ``{"n": N, "n_G1".."n_G4": counts, "G1".."G4": ratios in [0, 1], "n_triggered": G1 + G2 count,
        "r_gen": (G1 + G2) / N}``. Ratios are nan when ``N = 0``.
    """
    t = _bool_vector(trigger_pred, "trigger_pred")
    m = _bool_vector(content_match, "content_match")
    _same_length(t, m, "trigger_pred", "content_match")
    n = len(t)
    counts = {
        "G1": int(np.sum(t & ~m)),
        "G2": int(np.sum(t & m)),
        "G3": int(np.sum(~t & ~m)),
        "G4": int(np.sum(~t & m)),
    }
    out: dict = {"n": n}
    for g in G_GROUPS:
        out[f"n_{g}"] = counts[g]
    for g in G_GROUPS:
        out[g] = counts[g] / n if n else math.nan
    out["n_triggered"] = counts["G1"] + counts["G2"]
    out["r_gen"] = out["n_triggered"] / n if n else math.nan
    return out


def amplification(r_gen, r_train):
    """Trigger amplification ``r_gen / r_train`` (> 1: the DM generates triggers more often than they
    occur among its target-prompt training images; Insight 1).

    Args:
        r_gen: trigger ratio among generations, in [0, 1] (scalar or array).
        r_train: trigger ratio among the training images with the target prompt, in [0, 1].

    Returns:
        float (or float array for array input). ``r_train = 0`` (the clean control) gives ``inf`` when
        ``r_gen > 0`` and ``nan`` when ``r_gen = 0``: amplification is undefined without poison.
    """
    g = np.asarray(r_gen, dtype=float)
    t = np.asarray(r_train, dtype=float)
    for name, a in (("r_gen", g), ("r_train", t)):
        if np.any((a < 0) | (a > 1)):
            raise ConfigError(name, a.tolist(), "ratios in [0, 1] (fractions, not percent)")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = g / t
    return float(out) if out.ndim == 0 else out


def g_table(trigger_pred, content_match, *, r_train: float | None = None, z: float = Z95, **keys) -> dict:
    """One tidy row for a results table: G1-G4 and r_gen with counts, ratios and Wilson intervals.

    Args:
        trigger_pred, content_match: bool ``[N]`` as in :func:`g_counts`.
        r_train: optional trigger ratio among target-prompt training images; adds ``r_train`` and
            ``amplification`` to the row.
        z: quantile of the Wilson intervals (1.96: 95 %).
        **keys: identifying columns put first in the row (e.g. ``attack="badnets1", ratio=0.05,
            guidance=5``).

    Returns:
        dict with ``keys``, ``n``, and for each of G1, G2, G3, G4, r_gen: ``n_<g>``, ``<g>`` (ratio),
        ``<g>_lo``, ``<g>_hi`` (Wilson bounds); plus ``r_train``/``amplification`` when given.
    """
    c = g_counts(trigger_pred, content_match)
    row: dict = dict(keys)
    row["n"] = c["n"]
    c["n_r_gen"] = c["n_triggered"]
    for g in (*G_GROUPS, "r_gen"):
        row[f"n_{g}"] = c[f"n_{g}"]
        row.update(rate_columns(g, c[f"n_{g}"], c["n"], z))
    if r_train is not None:
        row["r_train"] = float(r_train)
        row["amplification"] = amplification(c["r_gen"], r_train) if c["n"] else math.nan
    return row


def per_class_accuracy(pred, labels, num_classes: int) -> np.ndarray:
    """Accuracy per true class: float ``[num_classes]`` in [0, 1], nan for a class with no image."""
    p = _int_vector(pred, "pred")
    y = _int_vector(labels, "labels")
    _same_length(y, p, "labels", "pred")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError("labels", [int(y.min()), int(y.max())], f"class indices in [0, {num_classes})")
    total = np.bincount(y, minlength=num_classes).astype(float)
    correct = np.bincount(y[p == y], minlength=num_classes).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def auroc(scores, is_poisoned) -> float:
    """Area under the ROC curve of a detection score (higher score = more likely poisoned).

    Args:
        scores: float ``[N]``; flip the sign of scores where low means poisoned (e.g. CD mask norms,
            STRIP entropies) before calling.
        is_poisoned: bool ``[N]`` ground truth.

    Returns:
        AUROC in [0, 1] (0.5: chance); nan, with a ``RuntimeWarning``, when only one class is present.
    """
    s, y = _scores_and_truth(scores, is_poisoned)
    if y.all() or not y.any():
        warnings.warn("auroc: only one class in is_poisoned; AUROC is undefined (nan)", RuntimeWarning, stacklevel=2)
        return math.nan
    # Imported here: sklearn.metrics adds 0.5 s (after seaborn) to 2 s (after numpy and scipy only) to
    # the import of metrics (python -X importtime), which judges and every analysis import; only AUROC uses it.
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. In this study the features are the
    penultimate features of the clean classifier (``judges.features``), so the number is called
    **FD-clf**: an image-quality proxy in the spirit of FID, not comparable with FID values.

    Args:
        feats_a, feats_b: float ``[N_a, D]`` and ``[N_b, D]``, at least 2 rows each.

    Returns:
        distance >= 0 (squared feature units).
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    for name, f in (("feats_a", a), ("feats_b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ConfigError(f"{name}.shape", f.shape, "[N, D] with N >= 2")
        if not np.isfinite(f).all():
            raise ConfigError(name, "non-finite values", "finite features")
    if a.shape[1] != b.shape[1]:
        raise ConfigError("feats_b.shape", b.shape, f"[N, {a.shape[1]}] like feats_a")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # A singular product (fewer samples than dimensions) has no stable root; a small ridge fixes it.
        eps = 1e-6 * max(np.trace(cov_a), np.trace(cov_b), 1.0) / cov_a.shape[0]
        ridge = eps * np.eye(cov_a.shape[0])
        covmean = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    # Round-off can give a tiny negative value for identical sets.
    return max(fd, 0.0)


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """``k1/n1 - k2/n2`` with Newcombe's hybrid score interval (method 10, built from the two Wilson
    intervals). Returns ``(d, lo, hi)`` in [-1, 1]; ``d`` is nan and the interval ``(-1, 1)`` when a sample
    is empty. Two rates measured on the same images are treated as independent (conservative when the
    outcomes are positively correlated)."""
    if n1 == 0 or n2 == 0:
        return math.nan, -1.0, 1.0
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two raters' binary decisions ``a``, ``b`` (bool ``[N]``): (p_o - p_e) / (1 - p_e),
    p_o the observed agreement, p_e the agreement expected from the two rates alone. 1: perfect
    agreement, 0: no more than chance; nan when it is undefined (no image, or both raters constant and
    equal), as in ``sklearn.metrics.cohen_kappa_score``."""
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    if a.shape != b.shape:
        raise ConfigError("b", f"{len(b)} decisions", f"{len(a)} decisions, one per image of a")
    if len(a) == 0:
        return math.nan
    po, pa, pb = float(np.mean(a == b)), float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


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
# union of both, so an interval is never narrower than the one that covers (tested in tests/test_metrics.py).


def auroc_interval(scores, truth, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """AUROC of ``scores`` (higher = poisoned) against bool ``truth`` with a 1 - ``alpha`` interval: the
    union of a stratified percentile bootstrap and the Hanley-McNeil logit interval (the bootstrap alone
    undercovers with few positives). Returns ``(auroc, lo, hi)`` in [0, 1]; all NaN when ``truth`` holds
    one class."""
    s, t = _scores_and_truth(scores, truth, "scores", "truth")
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
    sa, ta = _scores_and_truth(scores_a, truth_a, "scores_a", "truth_a")
    sb, tb = _scores_and_truth(scores_b, truth_b, "scores_b", "truth_b")
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


def share_rows(points) -> list[dict]:
    """Insight 2's per-p rows, sorted by p: the counts, the G2 share G2 / (G1 + G2) and the slides'
    quantities G1 - r_train and G2 - r_train (fractions of the generations; NaN without ``r_train``)."""
    rows = []
    for i, pt in enumerate(points):
        missing = [k for k in ("p", "n", "n_G1", "n_G2") if k not in pt]
        if missing:
            raise ConfigError(f"phase point {i}", pt, f"a dict with p, n, n_G1, n_G2 (missing {missing})")
        n, g1, g2 = int(pt["n"]), int(pt["n_G1"]), int(pt["n_G2"])
        if n <= 0 or g1 < 0 or g2 < 0 or g1 + g2 > n:
            raise ConfigError(f"phase point {i}", pt, "counts with n > 0 and 0 <= n_G1 + n_G2 <= n")
        rt = pt.get("r_train")
        rt = float(rt) if rt is not None and math.isfinite(float(rt)) else math.nan
        rows.append({"p": float(pt["p"]), "n": n, "n_G1": g1, "n_G2": g2, "n_triggered": g1 + g2,
                     "G2_share": g2 / (g1 + g2) if g1 + g2 else math.nan,
                     "G1_minus_r_train": g1 / n - rt, "G2_minus_r_train": g2 / n - rt})
    return sorted(rows, key=lambda r: r["p"])


def share_trend(points) -> dict:
    """Cochran-Armitage test for a trend of the G2 share over p (scores: the ranks of p), on the points
    with triggered generations: ``z`` (negative = the share falls as p grows), one-sided ``p_fall``
    (probability of a fall this strong by chance; the two-sided p is ``2 min(p_fall, 1 - p_fall)``) and
    the number of points used ``k``."""
    rows = [r for r in share_rows(points) if r["n_triggered"] > 0]
    if len(rows) < 2:
        return {"z": math.nan, "p_fall": math.nan, "k": len(rows)}
    n = np.array([r["n_triggered"] for r in rows], float)
    x = np.array([r["n_G2"] for r in rows], float)
    s = np.arange(len(rows), dtype=float)
    pbar = x.sum() / n.sum()
    t = float(np.sum(s * (x - n * pbar)))
    var = pbar * (1 - pbar) * (np.sum(n * s ** 2) - np.sum(n * s) ** 2 / n.sum())
    if var <= 0:
        return {"z": math.nan, "p_fall": math.nan, "k": len(rows)}
    zt = t / math.sqrt(var)
    return {"z": zt, "p_fall": 0.5 * math.erfc(-zt / math.sqrt(2)), "k": len(rows)}
