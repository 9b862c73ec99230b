"""Metrics against hand-computed values."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bibad_utils.config import ConfigError
from bibad_utils import metrics


def test_wilson_zero_successes():
    lo, hi = metrics.wilson_interval(0, 10)
    # z^2 / (n + z^2) with z = Z95, n = 10.
    assert lo == 0.0
    assert hi == pytest.approx(metrics.Z95 ** 2 / (10 + metrics.Z95 ** 2), abs=1e-12)
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_half():
    lo, hi = metrics.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)


def test_wilson_all_successes_mirrors_zero():
    lo, hi = metrics.wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.2775, abs=1e-4)


def test_wilson_no_observation_is_whole_range():
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(11, 10), (-1, 10), (1.5, 10), (0, -1)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ConfigError):
        metrics.wilson_interval(k, n)


# Six generations: T = trigger detected, M = content matches the prompt.
T6 = np.array([True, True, True, False, False, False])
M6 = np.array([False, False, True, False, True, True])


def test_g_counts_six_images():
    c = metrics.g_counts(T6, M6)
    assert c["n"] == 6
    assert (c["n_G1"], c["n_G2"], c["n_G3"], c["n_G4"]) == (2, 1, 1, 2)
    assert c["G1"] == pytest.approx(2 / 6)
    assert c["G2"] == pytest.approx(1 / 6)
    assert c["G3"] == pytest.approx(1 / 6)
    assert c["G4"] == pytest.approx(2 / 6)
    assert c["r_gen"] == pytest.approx(0.5)
    assert c["G1"] + c["G2"] == pytest.approx(c["r_gen"])


def test_g_counts_accepts_zero_one_and_rejects_mismatch():
    c = metrics.g_counts(T6.astype(int), M6.astype(int))
    assert c["n_G1"] == 2
    with pytest.raises(ConfigError):
        metrics.g_counts(T6, M6[:5])
    with pytest.raises(ConfigError):
        metrics.g_counts(np.array([0, 2, 1]), np.array([0, 1, 1]))


def test_g_counts_empty():
    c = metrics.g_counts(np.zeros(0, bool), np.zeros(0, bool))
    assert c["n"] == 0 and math.isnan(c["G1"])


def test_g_table_row():
    row = metrics.g_table(T6, M6, r_train=0.25, attack="badnets1", ratio=0.05)
    assert list(row)[:2] == ["attack", "ratio"]
    assert row["n_G1"] == 2 and row["G1"] == pytest.approx(1 / 3)
    lo, hi = metrics.wilson_interval(2, 6)
    assert (row["G1_lo"], row["G1_hi"]) == (lo, hi)
    assert row["G1_lo"] < row["G1"] < row["G1_hi"]
    assert row["n_r_gen"] == 3 and row["r_gen"] == pytest.approx(0.5)
    assert row["amplification"] == pytest.approx(2.0)


def test_amplification():
    assert metrics.amplification(0.5, 0.25) == pytest.approx(2.0)
    assert metrics.amplification(0.1, 0.2) == pytest.approx(0.5)
    np.testing.assert_allclose(metrics.amplification([0.2, 0.4], [0.1, 0.4]), [2.0, 1.0])
    assert metrics.amplification(0.3, 0.0) == math.inf
    assert math.isnan(metrics.amplification(0.0, 0.0))
    with pytest.raises(ConfigError):
        metrics.amplification(30.0, 10.0)


def test_per_class_accuracy():
    pred = np.array([0, 0, 1, 2, 2])
    labels = np.array([0, 1, 1, 2, 2])
    acc = metrics.per_class_accuracy(pred, labels, num_classes=4)
    np.testing.assert_allclose(acc[:3], [1.0, 0.5, 1.0])
    assert math.isnan(acc[3])
    with pytest.raises(ConfigError):
        metrics.per_class_accuracy(pred, labels, num_classes=2)


def test_auroc_perfect_inverted_random():
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert metrics.auroc(s, y) == 1.0
    assert metrics.auroc(-s, y) == 0.0
    # Ties everywhere: every (positive, negative) pair counts one half.
    assert metrics.auroc(np.ones(6), y) == 0.5
    # Hand count: positives {0.2, 0.6} vs negatives {0.1, 0.4, 0.8}: pairs won = 1 + 2 = 3 of 6.
    assert metrics.auroc([0.2, 0.6, 0.1, 0.4, 0.8], [1, 1, 0, 0, 0]) == pytest.approx(0.5)


def test_auroc_one_class_warns_nan():
    with pytest.warns(RuntimeWarning):
        assert math.isnan(metrics.auroc([0.1, 0.2], [True, True]))


def test_frechet_identical_sets_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 8))
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shift_is_squared_mean_shift():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(500, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    # Same covariance, so only the mean term remains: |shift|^2 = 5.25.
    assert metrics.frechet_distance(f, f + shift) == pytest.approx(5.25, rel=1e-6)
    # Independent samples of shifted Gaussians: close to 5.25 up to sampling noise.
    g = rng.normal(size=(4000, 4)) + shift
    h = rng.normal(size=(4000, 4))
    assert metrics.frechet_distance(g, h) == pytest.approx(5.25, abs=0.3)


def test_frechet_scale_difference():
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2 for exactly those sample moments.
    a = np.array([[-1.0], [1.0]])          # mean 0, sample variance 2
    b = np.array([[1.0], [5.0]])           # mean 3, sample variance 8
    assert metrics.frechet_distance(a, b) == pytest.approx(9 + (math.sqrt(2) - math.sqrt(8)) ** 2)


def test_frechet_singular_covariance_is_finite():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 16))
    b = rng.normal(size=(6, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = metrics.frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    with pytest.raises(ConfigError):
        metrics.frechet_distance(a, b[:, :8])


# ----------------------------------------------------------------------------------------------
# the hand-written statistics against a library and against published worked examples


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (3, 40), (57, 400), (400, 400)])
def test_wilson_matches_scipy(k, n):
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = metrics.wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_z95_is_the_normal_quantile():
    from scipy.stats import norm
    assert metrics.Z95 == pytest.approx(norm.ppf(0.975), abs=1e-12)


def test_newcombe_matches_the_papers_worked_examples():
    """Newcombe (1998), Table II, method 10 (the hybrid score interval): (a) 56/70 - 48/80 -> 0.0524 to
    0.3339; (b) 9/10 - 3/10 -> 0.1705 to 0.8090; the difference is antisymmetric and stays in [-1, 1]."""
    d, lo, hi = metrics.newcombe_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    d, lo, hi = metrics.newcombe_difference(9, 10, 3, 10)
    assert lo == pytest.approx(0.1705, abs=1e-4) and hi == pytest.approx(0.8090, abs=1e-4)
    d2, lo2, hi2 = metrics.newcombe_difference(3, 10, 9, 10)
    assert d == pytest.approx(-d2) and lo == pytest.approx(-hi2) and hi == pytest.approx(-lo2)
    assert -1.0 <= metrics.newcombe_difference(0, 5, 5, 5)[1] and metrics.newcombe_difference(5, 5, 0, 5)[2] <= 1.0
    d, lo, hi = metrics.newcombe_difference(0, 0, 3, 10)
    assert math.isnan(d) and (lo, hi) == (-1.0, 1.0)
    with pytest.raises(ConfigError):
        metrics.newcombe_difference(5, 4, 1, 4)


def test_trend_test_matches_a_regression_score_test():
    """The Cochran-Armitage statistic of the phase-transition rule equals the score test of a linear trend
    computed another way: n * r^2 of the 0/1 outcomes regressed on the scores (scipy's Pearson r)."""
    from scipy.stats import pearsonr

    from bibad_utils.metrics import share_trend
    points = [{"p": p, "n": 400, "n_G1": g1, "n_G2": g2}
              for p, g1, g2 in ((0.01, 2, 9), (0.02, 6, 14), (0.05, 30, 25), (0.1, 90, 30))]
    res = share_trend(points)
    scores, outcomes = [], []
    for rank, pt in enumerate(points):
        scores += [rank] * (pt["n_G1"] + pt["n_G2"])
        outcomes += [1] * pt["n_G2"] + [0] * pt["n_G1"]
    r = pearsonr(scores, outcomes).statistic
    assert res["z"] ** 2 == pytest.approx(len(scores) * r ** 2, rel=1e-9)
    assert res["z"] < 0 and res["k"] == 4  # the G2 share falls


# ------------------------------------------- stratified subsets, AUROC intervals, TA/ASR (chapter 05)

def test_stratified_subset_keeps_class_mix_and_poison_fraction():
    labels = np.repeat(np.arange(4), 50)                       # 200 items, 50 per class
    poisoned = np.zeros(200, dtype=bool)
    poisoned[np.arange(0, 200, 10)] = True                     # 10 % poisoned
    labels[poisoned] = 0
    idx = metrics.stratified_subset(2 * labels + poisoned, 40, seed=3)
    assert len(idx) == 40 and len(np.unique(idx)) == 40 and np.all(np.diff(idx) > 0)
    assert poisoned[idx].sum() == 4                            # 10 % of 40
    full = np.bincount(labels, minlength=4) / 200
    assert np.allclose(np.bincount(labels[idx], minlength=4) / 40, full, atol=1 / 40)


def test_stratified_subset_seeded_and_whole_set():
    strata = np.arange(30) % 3
    a = metrics.stratified_subset(strata, 9, seed=1)
    assert np.array_equal(a, metrics.stratified_subset(strata, 9, seed=1))
    assert not np.array_equal(a, metrics.stratified_subset(strata, 9, seed=2))
    assert np.bincount(strata[a]).tolist() == [3, 3, 3]
    assert np.array_equal(metrics.stratified_subset(strata, 50, seed=0), np.arange(30))


def test_stratified_subset_largest_remainder():
    strata = np.array([0] * 5 + [1] * 3 + [2] * 2)             # quotas at n=5: 2.5, 1.5, 1.0
    idx = metrics.stratified_subset(strata, 5, seed=0)
    assert np.bincount(strata[idx]).tolist() == [3, 1, 1]      # tie on .5 goes to the smaller id


@pytest.mark.parametrize("strata, n", [(np.array([]), 1), (np.array([0.5, 1.0]), 1), (np.arange(5), 0)])
def test_stratified_subset_rejects_bad_input(strata, n):
    with pytest.raises(ConfigError):
        metrics.stratified_subset(strata, n, seed=0)


# ---------------------------------------------------------------------------------- intervals

def test_auroc_interval_matches_sklearn_and_brackets_it():
    rng = np.random.default_rng(0)
    truth = np.r_[np.ones(20, bool), np.zeros(80, bool)]
    scores = rng.normal(size=100) + truth * 1.0
    auc, lo, hi = metrics.auroc_interval(scores, truth, n_boot=500, seed=0)
    assert auc == pytest.approx(roc_auc_score(truth, scores))
    assert lo < auc < hi and 0 <= lo and hi <= 1


def test_auroc_interval_edge_cases():
    truth = np.array([1, 1, 0, 0, 0], bool)
    auc, lo, hi = metrics.auroc_interval([5, 4, 1, 2, 3], truth, n_boot=50)
    assert auc == hi == 1.0 and lo < 0.9      # 2 positives: a perfect AUROC is no proof of a perfect detector
    auc, lo, hi = metrics.auroc_interval(np.zeros(5), truth, n_boot=50)   # all tied: exactly chance
    assert auc == 0.5 and lo < 0.5 < hi
    assert all(math.isnan(v) for v in metrics.auroc_interval([1, 2, 3], [0, 0, 0]))
    with pytest.raises(ConfigError):
        metrics.auroc_interval([1, np.nan], [0, 1])


def test_auroc_difference_sign_and_undefined():
    truth = np.array([1, 1, 0, 0, 0, 0], bool)
    good, bad = [9, 8, 1, 2, 3, 4], [1, 2, 8, 9, 3, 4]
    d, lo, hi = metrics.auroc_difference(good, truth, bad, truth, n_boot=200, seed=0)
    assert d == pytest.approx(1.0 - roc_auc_score(truth, bad)) and lo <= d <= hi and d > 0
    assert all(math.isnan(v) for v in metrics.auroc_difference(good, truth, bad, np.zeros(6, bool)))


def test_ta_asr_report_counts():
    rep = metrics.ta_asr_report([0, 1, 2, 2], [0, 1, 2, 0], [0, 0, 3], target=0)
    assert (rep["k_ta"], rep["n_ta"], rep["TA"]) == (3, 4, 0.75)
    assert (rep["k_asr"], rep["n_asr"]) == (2, 3) and rep["ASR"] == pytest.approx(2 / 3)
    assert rep["TA_lo"] < 0.75 < rep["TA_hi"]
    with pytest.raises(ConfigError):
        metrics.ta_asr_report([0, 1], [0], [0], target=0)


def test_auroc_intervals_cover_with_few_positives():
    # the percentile bootstrap alone covered 73-83 % with 6 positives (binormal scores); the union with the
    # Hanley-McNeil interval must cover at least 90 % in this small simulation (95 % nominal)
    from scipy.stats import norm
    rng = np.random.default_rng(3)
    shift = norm.ppf(0.9) * math.sqrt(2)          # true AUROC 0.9
    truth = np.r_[np.ones(6, bool), np.zeros(144, bool)]
    hits = boot_hits = 0
    for r in range(150):
        s = np.r_[rng.normal(shift, 1, 6), rng.normal(0, 1, 144)]
        _, lo, hi = metrics.auroc_interval(s, truth, n_boot=200, seed=r)
        hits += lo <= 0.9 <= hi
        boots = metrics._boot_aurocs(s, truth, 200, np.random.default_rng(r))
        boot_hits += np.quantile(boots, 0.025) <= 0.9 <= np.quantile(boots, 0.975)
    assert hits / 150 >= 0.9 and boot_hits < hits
