"""The verdict rules: baselines that must pass their own check, underpowered tests, the phase transition
over any number of poisoning ratios, and counts that keep controls apart from the paper's claims."""

import math

import pytest

from bibad_utils import paper
from bibad_utils import verdicts as v
from bibad_utils.config import ConfigError
from bibad_utils.metrics import Z95, newcombe_difference
from bibad_utils.report import claim_row


# ---------------------------------------------------------------------------------------- baselines

def test_baseline_check_refuses_a_detector_at_or_below_chance():
    # The demo's CD on BadNets-1 p = 5 %: training AUROC 0.208 [0.02, 0.47].
    below = v.baseline_check(0.02, 0.47)
    assert not below.ok and "lies below chance" in below.reason
    straddle = v.baseline_check(0.40, 0.62)
    assert not straddle.ok and "includes or lies below" in straddle.reason
    assert v.baseline_check(0.91, 0.99).ok
    assert not v.baseline_check(math.nan).ok


def test_compare_refuses_a_broken_baseline_whatever_the_difference():
    # generated 0.658 vs training 0.208: a large "improvement" that rests on a broken detector.
    j = v.compare(0.45, 0.162, 0.693, baseline=v.baseline_check(0.02, 0.47))
    assert j.verdict == "not tested"
    assert "baseline fails" in j.reason
    # the same difference over a working detector is a reproduction
    assert v.compare(0.45, 0.162, 0.693, baseline=v.baseline_check(0.90, 0.97)).verdict == "reproduced"


def test_false_alarm_check():
    assert v.false_alarm_check(0.02, max_rate=0.1).ok
    bad = v.false_alarm_check(0.3, max_rate=0.1)
    assert not bad.ok and "exceeds" in bad.reason
    assert v.first_failed(v.false_alarm_check(0.02, max_rate=0.1), bad, None) is bad
    assert v.first_failed(v.false_alarm_check(0.02, max_rate=0.1), None) is None


# ---------------------------------------------------------------------------------------- power

def test_compare_says_underpowered_when_the_interval_dwarfs_the_papers_effect():
    # chapter 06's G1 row on the demo: -0.015 [-0.100, 0.071], the paper's effect +0.005 (ImageNette 10 %)
    j = v.compare(-0.015, -0.100, 0.071, paper_effect=0.005)
    assert j.verdict == "underpowered"
    assert j.mde > 0.1 and f"{j.mde:.3f}" in j.reason
    # the same interval without a paper effect keeps the plain rule
    assert v.compare(-0.015, -0.100, 0.071).verdict == "not reproduced"
    # a narrow interval around zero with a large paper effect: the test could see it, and did not
    assert v.compare(0.001, -0.01, 0.012, paper_effect=0.2).verdict == "partly"
    assert v.compare(-0.001, -0.012, 0.01, paper_effect=0.2).verdict == "not reproduced"


def test_compare_directions_and_decisive_intervals():
    assert v.compare(0.3, 0.2, 0.4).verdict == "reproduced"
    assert v.compare(-0.3, -0.4, -0.2, paper_effect=0.5).verdict == "not reproduced"  # wrong side, decisively
    assert v.compare(-0.3, -0.4, -0.2, direction="less").verdict == "reproduced"
    assert v.compare(0.05, 0.01, 0.09, margin=0.02).verdict == "partly"
    assert v.compare(math.nan, math.nan, math.nan).verdict == "not tested"
    with pytest.raises(ConfigError, match="direction"):
        v.compare(0.1, 0.0, 0.2, direction="up")


def test_mde_from_interval_agrees_with_two_proportions():
    d, lo, hi = newcombe_difference(30, 100, 30, 100)
    mde = v.mde_from_interval(lo, hi)
    # the normal approximation for two proportions of 0.3 with 100 samples each, 80 % power
    assert mde == pytest.approx((Z95 + v.Z_POWER80) * math.sqrt(2 * 0.3 * 0.7 / 100), rel=0.1)
    d, lo, hi = newcombe_difference(120, 400, 120, 400)
    assert v.mde_from_interval(lo, hi) == pytest.approx(mde / 2, rel=0.1)  # 4x n halves the MDE
    assert math.isnan(v.mde_from_interval(math.nan, 0.1))


def test_non_inferior_comparable_ta():
    # 60 vs 60 images, both 60/60: the difference 0 has a lower bound of -0.060, below a 0.05 margin, so
    # no outcome of 60 images could show comparability; at 100 images a perfect tie can
    d, lo, hi = newcombe_difference(60, 60, 60, 60)
    j = v.non_inferior(d, lo, hi, margin=0.05)
    assert lo < -0.05 and j.verdict == "underpowered"
    assert v.non_inferior(*newcombe_difference(100, 100, 100, 100), margin=0.05).verdict == "reproduced"
    assert v.non_inferior(*newcombe_difference(372, 400, 384, 400), margin=0.05).verdict == "partly"
    assert v.non_inferior(*newcombe_difference(95, 100, 97, 100), margin=0.05).verdict == "underpowered"
    assert v.non_inferior(-0.01, -0.03, 0.01, margin=0.05).verdict == "reproduced"
    assert v.non_inferior(-0.2, -0.3, -0.1, margin=0.05).verdict == "not reproduced"
    wide = v.non_inferior(0.0, -0.2, 0.2, margin=0.05)
    assert wide.verdict == "underpowered" and "half-width" in wide.reason
    assert v.non_inferior(0.0, -0.01, 0.01, margin=0.05, baseline=v.Check(False, "no")).verdict == "not tested"
    with pytest.raises(ConfigError, match="margin"):
        v.non_inferior(0.0, -0.01, 0.01, margin=0)


def test_magnitude_rule_needs_the_papers_size_not_only_its_sign():
    # the diffusion classifier at p = 1 %: ASR 100 -> 92 % "resists" by sign, while the paper's drop is
    # 99.4 -> 62.4 %: our interval lies wholly short of it, so the direction holds and the size does not
    d, lo, hi = newcombe_difference(100, 100, 92, 100)
    effect = paper.resnet18(0.01, "ASR") - paper.diffusion_classifier(0.01, "ASR")
    assert lo > 0 and hi < effect
    j = v.compare(d, lo, hi, paper_effect=effect)
    assert j.verdict == "partly" and "falls short" in j.reason          # old rule: "reproduced"
    # an interval that contains the paper's effect, or exceeds it, reproduces
    assert v.compare(0.40, 0.30, 0.50, paper_effect=effect).verdict == "reproduced"
    assert v.compare(0.60, 0.50, 0.70, paper_effect=effect).verdict == "reproduced"
    # the same in the other direction (less)
    assert v.compare(-0.05, -0.08, -0.02, direction="less", paper_effect=-0.30).verdict == "partly"
    assert v.compare(-0.30, -0.40, -0.20, direction="less", paper_effect=-0.30).verdict == "reproduced"
    # without a paper number the direction alone decides
    assert v.compare(0.05, 0.01, 0.09).verdict == "reproduced"
    # a paper effect against the claim's direction is not used for the size check, and the reason says so
    j = v.compare(0.05, 0.01, 0.09, paper_effect=-0.1)
    assert j.verdict == "reproduced" and "not in the claimed direction" in j.reason


def test_inverted_intervals_are_refused():
    with pytest.raises(ConfigError, match="lo <= hi"):
        v.compare(0.5, 0.6, 0.4)                    # old rule: "reproduced"
    with pytest.raises(ConfigError, match="lo <= hi"):
        v.non_inferior(0.0, 0.02, -0.02, margin=0.05)
    with pytest.raises(ConfigError, match="lo <= hi"):
        claim_row("05_castle_walls", "x", metric="m", ours=0.5, lo=0.6, hi=0.4, verdict="partly")


def test_a_paper_claim_row_needs_a_paper_number():
    row = claim_row("05_castle_walls", "Detection is easier on generations", metric="m", ours=0.1,
                    verdict="reproduced", key="detection_strip", paper="")
    assert row["kind"] == "no paper number"                 # old rule: "paper claim" from the key
    row = claim_row("05_castle_walls", "Detection is easier on generations", metric="m", ours=0.1,
                    verdict="reproduced", key="detection_cd", paper="0.956 -> 0.970")
    assert row["kind"] == "paper claim"


# ---------------------------------------------------------------------------------------- phase transition

def test_phase_transition_on_the_papers_own_numbers_shows_the_fall_not_the_dominance():
    pts = paper.phase_points("imagenette")
    effect = paper.g2_share(0.05) - paper.g2_share(0.10)
    r = v.phase_transition(pts, paper_effect=effect)
    # the trend test accepts the paper's own fall (two-sided), but at 5 and 10 % the paper's G2 share is
    # 33 % and 26 %: G2 never dominates in this table, so the G2-then-G1 pattern is not shown by it
    assert r["p_two_sided"] < 0.05 and r["trend_z"] < 0
    assert r["verdict"] == "partly" and "never dominates" in r["reason"], r["reason"]
    assert not r["g2_dominates"] and not r["crosses_half"]
    assert r["drop"] == pytest.approx(effect, abs=1e-3)
    # the slides' quantities, per p, as fractions of the generations
    assert r["points"][0]["G1_minus_r_train"] == pytest.approx(0.338 - 0.330)
    assert r["points"][1]["G2_minus_r_train"] == pytest.approx(0.194 - 0.496)


def test_phase_transition_on_caltech15_and_on_a_five_point_curve():
    assert v.phase_transition(paper.phase_points("caltech15"))["verdict"] == "partly"   # G2 share 42 -> 26 %
    curve = [{"p": p, "n": 400, "n_G1": g1, "n_G2": g2}
             for p, g1, g2 in ((0.01, 20, 60), (0.02, 40, 70), (0.05, 90, 70), (0.10, 150, 60), (0.20, 220, 50))]
    r = v.phase_transition(list(reversed(curve)))  # order of the points does not matter
    assert r["verdict"] == "reproduced" and r["crosses_half"] and r["g2_dominates"]
    assert r["trend_z"] < 0 and r["p_two_sided"] < 0.05
    assert [pt["p"] for pt in r["points"]] == [0.01, 0.02, 0.05, 0.10, 0.20]


def test_phase_transition_is_two_sided_at_alpha():
    # a fall with one-sided p between 0.025 and 0.05: significant under the old one-sided rule, not now
    pts = [{"p": 0.05, "n": 200, "n_G1": 42, "n_G2": 58}, {"p": 0.10, "n": 200, "n_G1": 54, "n_G2": 46}]
    r = v.phase_transition(pts)
    assert 0.025 < r["p_fall"] < 0.05 and r["p_two_sided"] > 0.05
    assert r["verdict"] == "partly" and "not significantly" in r["reason"]   # old rule: "reproduced"


def test_phase_transition_dominance_and_a_significant_rise():
    # G2 share falls 45 % -> 20 % significantly, G1 takes over, but G2 never dominates: partly
    pts = [{"p": 0.05, "n": 400, "n_G1": 110, "n_G2": 90}, {"p": 0.10, "n": 400, "n_G1": 240, "n_G2": 60}]
    r = v.phase_transition(pts)
    assert r["p_two_sided"] < 0.05 and r["verdict"] == "partly" and "never dominates" in r["reason"]
    rise = [{"p": 0.05, "n": 400, "n_G1": 150, "n_G2": 30}, {"p": 0.10, "n": 400, "n_G1": 150, "n_G2": 120}]
    r = v.phase_transition(rise)
    assert r["verdict"] == "not reproduced" and "rises significantly" in r["reason"]


def test_phase_transition_other_verdicts():
    flat = [{"p": 0.05, "n": 200, "n_G1": 50, "n_G2": 20}, {"p": 0.10, "n": 200, "n_G1": 80, "n_G2": 32}]
    assert v.phase_transition(flat)["verdict"] == "not reproduced"  # same share at both p
    small = [{"p": 0.05, "n": 200, "n_G1": 30, "n_G2": 14}, {"p": 0.10, "n": 200, "n_G1": 60, "n_G2": 25}]
    r = v.phase_transition(small, paper_effect=0.063)
    assert r["verdict"] == "underpowered" and r["mde"] > 0.063
    assert v.phase_transition(small)["verdict"] == "partly"
    # a small rise that the test could not tell from the paper's fall: underpowered too; a clear rise is not
    up = [{"p": 0.05, "n": 200, "n_G1": 30, "n_G2": 12}, {"p": 0.10, "n": 200, "n_G1": 60, "n_G2": 26}]
    assert v.phase_transition(up, paper_effect=0.063)["verdict"] == "underpowered"
    rise = [{"p": 0.05, "n": 400, "n_G1": 150, "n_G2": 30}, {"p": 0.10, "n": 400, "n_G1": 150, "n_G2": 120}]
    assert v.phase_transition(rise, paper_effect=0.063)["verdict"] == "not reproduced"
    none = [{"p": 0.05, "n": 200, "n_G1": 0, "n_G2": 0}, {"p": 0.10, "n": 200, "n_G1": 60, "n_G2": 25}]
    r = v.phase_transition(none)
    assert r["verdict"] == "not tested" and "5 %" in r["reason"] and "fewer than two" in r["reason"]
    # over five ratios, the two the DM did not learn are left out and said; the other three are tested
    curve = [{"p": 0.01, "n": 200, "n_G1": 0, "n_G2": 0}, {"p": 0.02, "n": 200, "n_G1": 0, "n_G2": 0},
             {"p": 0.05, "n": 200, "n_G1": 20, "n_G2": 60}, {"p": 0.10, "n": 200, "n_G1": 80, "n_G2": 40},
             {"p": 0.20, "n": 200, "n_G1": 150, "n_G2": 10}]
    r = v.phase_transition(curve)
    assert r["verdict"] == "reproduced" and r["left_out"] == [0.01, 0.02] and len(r["points"]) == 5
    assert r["reason"].startswith("fewer than 10 triggered generations at p = 1 %, 2 %, left out") and "5 -> 20 % (3 ratios)" in r["reason"]
    # one triggered generation makes a share of 0 or 1: too few, left out as well
    curve[1] = {"p": 0.02, "n": 200, "n_G1": 1, "n_G2": 0}
    assert v.phase_transition(curve)["left_out"] == [0.01, 0.02]
    assert r["drop"] == pytest.approx(60 / 80 - 10 / 160)
    with pytest.raises(ConfigError, match="at least two"):
        v.phase_transition(flat[:1])
    with pytest.raises(ConfigError, match="phase point 0"):
        v.phase_transition([{"p": 0.05, "n": 10, "n_G1": 8, "n_G2": 8}, flat[1]])


# ---------------------------------------------------------------------------------------- counting

def test_counts_keep_controls_and_rows_without_paper_number_apart():
    rows = [claim_row("04_insights", "a", metric="m", ours=0.1, verdict="reproduced", key="amplification",
                      paper="r_gen > r_train; ImageNette r_train at p = 5 %: 33.0 %"),
            claim_row("04_insights", "b", metric="m", ours=0.0, verdict="reproduced", key="clean_control"),
            claim_row("05_castle_walls", "c", metric="m", ours=0.1, verdict="partly", paper=""),
            claim_row("05_castle_walls", "d", metric="m", ours=0.1, verdict="not tested", paper="0.9 -> 0.95"),
            claim_row("06_memorization", "e", metric="m", ours=0.1, verdict="underpowered", key="duplicates_g1",
                      paper="G1 random -> duplicate at p = 5 %: ImageNette 33.8 % -> 37.8 %")]
    assert [v.row_kind(r) for r in rows] == ["paper claim", "control", "no paper number", "paper claim", "paper claim"]
    c = v.count_verdicts(rows)
    assert c["paper claim"]["total"] == 3 and c["paper claim"]["reproduced"] == 1
    assert c["paper claim"]["underpowered"] == 1
    assert c["control"]["reproduced"] == 1 and c["no paper number"]["partly"] == 1
    text = v.headline(rows)
    assert text.startswith("3 paper claims: 1 reproduced, 1 underpowered, 1 not tested;")
    assert "1 controls: 1 reproduced" in text and "1 rows without a paper number: 1 partly" in text
    # a row saved before kinds existed: its kind follows its paper text
    assert v.row_kind({"paper": "", "verdict": "reproduced"}) == "no paper number"
    with pytest.raises(ConfigError, match="kind"):
        v.row_kind({"kind": "footnote"})
    with pytest.raises(ConfigError, match="verdict"):
        v.count_verdicts([{"verdict": "maybe", "paper": "x"}])


def test_a_not_reproduced_far_below_the_papers_exposure_is_not_tested():
    # the demo fine-tunes 600 steps x 64 images of 5,000: 7.7 of the paper's ~50 epochs
    row = claim_row("04_insights", "Insight 1", metric="m", ours=0.2, lo=0.1, hi=0.3, verdict="not reproduced",
                    paper="r_train 33 %", key="amplification", exposure=600 * 64 / 5000, note="r_gen below r_train")
    assert row["verdict"] == "not tested"                                     # old rule: "not reproduced"
    assert row["note"].startswith("not tested at the paper's exposure (7.7 of about 50 epochs)")
    assert row["exposure"] == pytest.approx(7.68)
    # near the paper's exposure the finding stands; a positive result stands at any exposure
    assert claim_row("x", "y", metric="m", ours=0.2, verdict="not reproduced", exposure=40)["verdict"] == "not reproduced"
    assert claim_row("x", "y", metric="m", ours=0.2, verdict="reproduced", exposure=2)["verdict"] == "reproduced"
    assert claim_row("x", "y", metric="m", ours=0.2, verdict="not reproduced")["verdict"] == "not reproduced"  # no exposure stated
    assert v.exposure_check(25).ok and not v.exposure_check(24.9).ok
