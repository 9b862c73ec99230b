"""Stage 06 (memorization): interval maths, paper lookup, table reshaping, claims, and the duplicate finder
on the smoke dataset's planted groups (no model is trained here; the smoke run covers the rest)."""

import math

import numpy as np
import pandas as pd
import pytest

from bibad_utils import paper
from bibad_utils.config import ConfigError
from bibad_utils.experiments import memorization_study as ms
from bibad_utils.stages import Study


def test_mean_difference_by_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])
    d, lo, hi = ms.mean_difference(a, b)
    half = 1.959963984540054 * math.sqrt(1.0 / 3 + 2.0 / 2)  # var(a) = 1, var(b) = 2 (ddof = 1)
    assert d == pytest.approx(1.0)
    assert (lo, hi) == (pytest.approx(1.0 - half), pytest.approx(1.0 + half))
    assert all(math.isnan(v) for v in ms.mean_difference([1.0], [1.0, 2.0]))
    assert ms.mean_difference([1.0, np.nan, 3.0], [2.0, 2.0])[0] == pytest.approx(0.0)


def test_paper_duplicate_values():
    g1 = ms.paper_duplicate_values(0.05, "G1")
    assert set(g1) == {"imagenette", "caltech15"}
    assert g1["imagenette"] == pytest.approx((0.338, 0.378)) and g1["caltech15"] == pytest.approx((0.528, 0.551))
    assert ms.paper_duplicate_values(0.1, "G2")["caltech15"] == pytest.approx((0.244, 0.255))
    assert ms.paper_duplicate_values(0.2, "G1") == {}
    with pytest.raises(ConfigError):
        ms.paper_duplicate_values(0.05, "G3")


def test_group_matches():
    assert ms.group_matches([[1, 2], [3, 4, 5], [7, 8]], [[5, 4, 3], [1, 2, 9]]) == [False, True, False]


def _dup_table():
    rows = []
    for pool, (k1, k2) in (("random", (20, 10)), ("duplicate", (60, 12))):
        for metric, k in (("G1", k1), ("G2", k2)):
            rows.append({"attack": "badnets1", "p": 0.05, "pool": pool, "cell": f"badnets1 p=5% {pool}",
                         "guidance": 1.0, "metric": metric, "k": k, "n": 100, "ours": k / 100,
                         "lo": k / 100 - 0.05, "hi": k / 100 + 0.05,
                         **{f"paper_{d}": ms.paper_duplicate_values(0.05, metric)[d][pool == "duplicate"]
                            for d in paper.DUPLICATES}})
    return pd.DataFrame(rows)


def test_random_vs_duplicate_wide():
    wide = ms.random_vs_duplicate_wide(_dup_table())
    assert list(wide["metric"]) == ["G1", "G2"]
    g1 = wide.iloc[0]
    assert g1["ours random"] == "20.0 [15.0, 25.0]" and g1["ours duplicate"] == "60.0 [55.0, 65.0]"
    assert g1["paper ImageNette"] == "33.8 -> 37.8" and g1["paper Caltech15"] == "52.8 -> 55.1"


def test_claims_from_tables_verdicts():
    rep = pd.DataFrame([
        {"cell": "clean", "kind": "clean", "p": 0.0, "pool": "random", "n": 200, "k": 2, "threshold": 0.99,
         "mean_sim": 0.5},
        {"cell": "badnets1 p=10%", "kind": "badnets1", "p": 0.1, "pool": "random", "n": 200, "k": 40,
         "threshold": 0.99, "mean_sim": 0.6},
        {"cell": "relabel p=10%", "kind": "relabel", "p": 0.1, "pool": "random", "n": 200, "k": 90,
         "threshold": 0.99, "mean_sim": 0.9},
    ])
    rng = np.random.default_rng(0)
    sims = {"clean": rng.normal(0.5, 0.05, 200), "badnets1 p=10%": rng.normal(0.5, 0.05, 200),
            "relabel p=10%": rng.normal(0.9, 0.05, 200)}
    finder = pd.DataFrame([{"embedding": "pixels", "threshold": 0.99, "precision": 0.9, "recall": 0.8,
                            "threshold_source": "profile (memorization.duplicate_threshold)"}])
    rows = ms.claims_from_tables(_dup_table(), rep, finder, sims, guidance=1.0)
    by = {(r["claim"].split()[-1], r["setting"], r["metric"]): r for r in rows}
    g1 = by[("G1", "badnets1, p=0.05, w=1", "G1(duplicate) - G1(random)")]
    assert g1["ours"] == pytest.approx(0.4) and g1["verdict"] == "reproduced"
    from bibad_utils import paper

    assert g1["paper"] == paper.paper_text("duplicates_g1", p=0.05) and "ImageNette 33.8 % -> 37.8 %" in g1["paper"]
    assert g1["key"] == "duplicates_g1" and g1["kind"] == "paper claim"
    g2 = by[("G2", "badnets1, p=0.05, w=1", "G2(duplicate) - G2(random)")]
    # 10 vs 12 of 100: an interval ~0.18 wide cannot see the paper's rise of 1.9 points
    assert g2["verdict"] == "underpowered" and g2["ours_lo"] < 0 < g2["ours"]
    assert "could detect only effects of" in g2["note"] and "+0.019" in g2["note"]
    rate = [r for r in rows if r["claim"].startswith("Poisoned DMs replicate")]
    assert len(rate) == 1 and rate[0]["setting"] == "badnets1 p=10%"  # the relabel control is no claim
    assert rate[0]["ours"] == pytest.approx(0.19) and rate[0]["verdict"] == "reproduced"
    closer = [r for r in rows if r["claim"].startswith("Poisoned DMs' generations")][0]
    assert closer["ours_lo"] < 0 < closer["ours_hi"] and closer["verdict"] != "reproduced"
    assert rate[0]["kind"] == closer["kind"] == "no paper number"
    # the finder's check: precision 0.9 passes (>= FINDER_MIN), recall 0.8 does not; the rows differ by setting
    info = [r for r in rows if r["key"] == "duplicate_finder"]
    assert [r["ours"] for r in info] == [0.9, 0.8] and {r["kind"] for r in info} == {"control"}
    assert [r["verdict"] for r in info] == ["reproduced", "not reproduced"]
    assert info[0]["setting"].startswith("pairwise precision") and info[1]["setting"].startswith("pairwise recall")
    # judges that fail their check on a clean DM's generations: the G1 / G2 rows are not tested
    from bibad_utils.verdicts import Check

    failed = Check(False, "the badnets1 detector flags 95 % of a clean DM's generations")
    gated = ms.claims_from_tables(_dup_table(), rep, finder, sims, guidance=1.0, baselines={"badnets1": failed})
    dup_rows = [r for r in gated if r["claim"].startswith("Poisoning duplicated images")]
    assert dup_rows and all(r["verdict"] == "not tested" and "95 %" in r["note"] for r in dup_rows)
    assert "underpowered" in ms.resolution_sentence(rows)
    assert ms.verdict_phrase(rows, ("duplicates_g1", "duplicates_g2")) == "2 settings: 1 reproduced, 1 underpowered"
    rate_rows = [r for r in rows if r["key"] == "replication" and r["metric"].startswith("replication rate")]
    assert ms.verdict_phrase(rows, "replication", "replication rate").startswith(f"{len(rate_rows)} setting")
    # an instrument blind at this scale: no DM, the clean one included, has a replica: not tested
    blind = rep.assign(k=0)
    rate = [r for r in ms.claims_from_tables(_dup_table(), blind, finder, sims, guidance=1.0)
            if r["claim"].startswith("Poisoned DMs replicate")]
    assert rate[0]["verdict"] == "not tested" and "sees no replication" in rate[0]["note"]   # old: not reproduced


@pytest.fixture()
def smoke_study(tmp_path):
    return Study("smoke", {"run_dir": str(tmp_path)}, progress=False)


def test_duplicate_finder_recovers_planted_groups(smoke_study):
    table = ms.duplicate_finder_table(smoke_study)
    row = table.iloc[0]
    assert row["planted_groups"] == len(smoke_study.train_set.meta["duplicate_groups"]) > 0
    assert row["threshold_source"].startswith("F1 optimum") and row["threshold"] == row["best_f1_threshold"]
    assert row["recall"] == 1.0 and row["precision"] > 0.9  # noisy copies of 2 levels vs distinct shapes
    sweep = ms.duplicate_threshold_sweep(smoke_study)
    assert len(sweep) == 41 and sweep["f1"].max() == pytest.approx(row["f1"])
    assert ms.duplicate_threshold(smoke_study) == row["threshold"]
    examples = ms.found_group_examples(smoke_study, n_groups=3)
    assert 1 <= len(examples) <= 3 and all(v.dtype == np.uint8 and v.ndim == 4 for v in examples.values())
    assert any(name.startswith("planted #") for name in examples)


def test_profile_threshold_is_used_and_stated(tmp_path):
    study = Study("smoke", {"run_dir": str(tmp_path), "memorization": {"duplicate_threshold": 0.5,
                                                                       "replication_threshold": 0.9}},
                  progress=False)
    row = ms.duplicate_finder_table(study).iloc[0]
    assert row["threshold"] == 0.5 and row["threshold_source"].startswith("profile")
    assert row["recall"] == 1.0 and row["precision"] < 0.5  # a loose threshold merges distinct images
    assert ms.replication_threshold(study) == 0.9


def test_replication_threshold_sources(tmp_path, smoke_study):
    sim, idx = ms.heldout_similarity(smoke_study)
    assert sim.shape == idx.shape == (len(smoke_study.test_set),) and sim.dtype == np.float32
    assert np.all(sim <= 1.0 + 1e-5) and idx.max() < len(smoke_study.train_set)
    q = smoke_study.cfg["memorization"]["replication_quantile"]
    assert ms.replication_threshold(smoke_study) == pytest.approx(np.quantile(sim.astype(np.float64), q))
    assert "quantile" in ms.replication_threshold_source(smoke_study)
    strict = Study("smoke", {"run_dir": str(tmp_path), "memorization": {"replication_quantile": None}},
                   progress=False)
    assert ms.replication_threshold(strict) == ms.duplicate_threshold(strict)
    assert ms.replication_threshold_source(strict) == "the duplicate threshold"
    with pytest.raises(ConfigError, match="memorization.replication_quantile"):
        Study("smoke", {"run_dir": str(tmp_path), "memorization": {"replication_quantile": 1.0}})


def test_duplicate_pool_too_small_is_a_config_error(tmp_path):
    study = Study("smoke", {"run_dir": str(tmp_path), "memorization": {"ratios": [0.5]}}, progress=False)
    with pytest.raises(ConfigError, match="memorization.ratios"):
        ms.random_vs_duplicate(study)
    no_dups = Study("smoke", {"run_dir": str(tmp_path), "dataset": {"options": {"duplicate_fraction": 0.0}}},
                    progress=False)
    with pytest.raises(ConfigError, match="duplicate_fraction"):
        ms.check_duplicate_pool(no_dups)
    assert ms.check_duplicate_pool(Study("smoke", {"run_dir": str(tmp_path)}, progress=False)) == 36


def test_a_real_dataset_without_duplicates_leaves_the_comparison_not_tested(tmp_path):
    """A dataset with no planted groups (real data) and no group at the finder's threshold: the random vs
    duplicate comparison is "not tested" with the reason (a finding about the data), no duplicate cell is
    trained, and chapter 06's claims say so; a dataset with planted groups still fails early instead."""
    study = Study("smoke", {"run_dir": str(tmp_path), "dataset": {"options": {"duplicate_fraction": 0.0}},
                            "memorization": {"duplicate_threshold": 0.9999}}, progress=False)
    assert not ms.planted_groups(study) and study.duplicate_pool() is None
    reason = ms.duplicate_shortfall(study)
    assert "no duplicate group at the finder's threshold (cos >= 0.9999)" in reason
    assert ms.duplicate_comparison_cells(study) == []
    dup = ms.random_vs_duplicate(study)
    assert dup.empty and dup.attrs["not_tested"] == reason
    assert all(c.pool == "random" for c in ms.replication_cells(study))


def test_the_duplicate_pool_is_found_with_the_whole_embedding_of_chapter_06(tmp_path):
    """Without planted groups, the pool that duplicate poisoning draws from (Study.duplicate_groups) is found
    with the same embedding as chapter 06's finder, thumbnail size and high-pass included."""
    from bibad_utils import store as st
    study = Study("smoke", {"run_dir": str(tmp_path), "dataset": {"options": {"duplicate_fraction": 0.0}},
                            "memorization": {"pixel_size": 8, "highpass": 3, "duplicate_threshold": 0.6}},
                  progress=False)
    finder = st.load_json(ms.finder_path(study) / "groups.json")
    assert finder and study.duplicate_groups() == finder
