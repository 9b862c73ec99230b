"""Stage 04 analysis: G rows, the phase-transition and control verdicts, claims and figures on hand-made
judgments with known answers; one tiny real Study for the cached judging path."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bibad_utils import metrics, plots
from bibad_utils.config import ConfigError
from bibad_utils.experiments import insights as ins
from bibad_utils.experiments.insights.quality import _fid_plan as fid_plan
from bibad_utils.report import COLUMNS, OPTIONAL_COLUMNS
from bibad_utils.study_judges import JUDGED_STAGE


def judgments(g1, g2, g3, g4):
    """trigger / match vectors with the given group counts."""
    t = np.array([True] * (g1 + g2) + [False] * (g3 + g4))
    m = np.array([False] * g1 + [True] * g2 + [False] * g3 + [True] * g4)
    return t, m


def row(counts, r_train, **keys):
    """A g_table row; the trigger template reads the generations as the detector does."""
    trigger, _ = judgments(*counts)
    k, n = int(trigger.sum()), len(trigger)
    lo, hi = metrics.wilson_interval(k, n)
    return {**ins.g_row(*judgments(*counts), r_train=r_train, **keys), "tpl_n_trig": k, "tpl_r_gen": k / n,
            "tpl_r_gen_lo": lo, "tpl_r_gen_hi": hi, "agreement": 1.0}


def grid_row(attack, ratio, counts, r_train, w=1.0):
    return row(counts, r_train, cell=f"{attack} p={ratio * 100:g}%", attack=attack, control=False, ratio=ratio,
               p=f"{ratio * 100:g}%", detector=attack, guidance=w, n_poison=1)


def control_row(kind, counts, detector, w=1.0):
    return row(counts, 0.0, cell=kind, attack=kind, control=True, ratio=0.0, p="0%", detector=detector,
               guidance=w, n_poison=0)


def test_g_row_counts_ratios_and_insight2_quantities():
    r = row((3, 1, 2, 4), 0.2, cell="x")
    assert list(r)[0] == "cell"
    assert (r["n"], r["n_G1"], r["n_G2"], r["n_G3"], r["n_G4"]) == (10, 3, 1, 2, 4)
    assert r["r_gen"] == pytest.approx(0.4) and r["amplification"] == pytest.approx(2.0)
    assert r["G2_share"] == pytest.approx(0.25)
    assert (r["G2_share_lo"], r["G2_share_hi"]) == pytest.approx(metrics.wilson_interval(1, 4))
    assert r["G1_minus_r_train"] == pytest.approx(0.1) and r["G2_minus_r_train"] == pytest.approx(-0.1)
    assert r["r_gen_lo"] < 0.4 < r["r_gen_hi"]


def test_g_row_without_triggers_has_undefined_share():
    r = row((0, 0, 5, 5), 0.0)
    assert math.isnan(r["G2_share"]) and (r["G2_share_lo"], r["G2_share_hi"]) == (0.0, 1.0)
    assert math.isnan(r["amplification"])  # 0 / 0: no poison, no trigger


def test_newcombe_difference_matches_published_example():
    # Newcombe (1998), Stat. Med. 17:873, example (a): 56/70 - 48/80, method 10 -> 0.0524 to 0.3339.
    d, lo, hi = metrics.newcombe_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-4)
    assert math.isnan(metrics.newcombe_difference(0, 0, 1, 2)[0])


@pytest.mark.parametrize("low, high, verdict", [
    ((10, 90), (90, 10), "reproduced"),        # G2 dominant at low p, G1 at high p, clear drop
    ((60, 40), (90, 10), "partly"),            # significant drop, G1 takes over, but G2 never dominates
    ((5, 6), (5, 5), "underpowered"),          # a drop in the point estimate that no test this small could confirm
    ((90, 10), (10, 90), "not reproduced"),    # the share rises
    ((0, 0), (90, 10), "not tested"),          # no triggered generation at low p: the DM did not learn it
])
def test_phase_verdict(low, high, verdict):
    lo_row = grid_row("badnets1", 0.05, (low[0], low[1], 50, 50), 0.1)
    hi_row = grid_row("badnets1", 0.2, (high[0], high[1], 50, 50), 0.5)
    pv = ins.phase_verdict([hi_row, lo_row])
    assert pv["verdict"] == verdict, pv["reason"]
    if verdict != "not tested":
        assert pv["share_low"] == pytest.approx(low[1] / sum(low))


def test_phase_verdict_over_three_ratios_uses_the_slides_quantities():
    rows = [grid_row("badnets1", p, c, rt) for p, c, rt in
            ((0.02, (20, 60, 60, 60), 0.15), (0.05, (50, 50, 50, 50), 0.3), (0.1, (90, 40, 35, 35), 0.5))]
    pv = ins.phase_verdict(rows)
    assert pv["verdict"] == "reproduced" and len(pv["points"]) == 3
    assert pv["points"][1]["G1_minus_r_train"] == pytest.approx(50 / 200 - 0.3)
    assert pv["g1_rise"] > pv["g2_rise"]


def test_control_verdict():
    assert ins.control_verdict(0.01, 0.04, 0.5) == "reproduced"
    assert ins.control_verdict(0.10, 0.04, 0.5) == "partly"
    assert ins.control_verdict(0.10, 0.04, 0.05) == "not reproduced"
    assert ins.control_verdict(0.10, 0.04, None) == "not reproduced"


def make_gdf():
    rows = [control_row("clean", (1, 0, 60, 39), "badnets1"), control_row("relabel", (2, 0, 60, 38), "badnets1")]
    rows += [grid_row("badnets1", 0.2, (60, 20, 10, 10), 0.6), grid_row("badnets1", 0.05, (10, 50, 20, 20), 0.3)]
    rows += [grid_row("badnets1", 0.05, (20, 60, 10, 10), 0.3, w=4.0)]
    return pd.DataFrame(rows)


def make_jdf():
    return pd.DataFrame([
        {"judge": "clean classifier", "kind": "classifier", "n": 100, "accuracy": 0.9, "accuracy_lo": 0.8,
         "accuracy_hi": 0.95},
        {"judge": "badnets1 detector", "kind": "trigger_detector", "n": 200, "accuracy": 0.98, "accuracy_lo": 0.95,
         "accuracy_hi": 0.99, "fpr": 0.01, "fpr_lo": 0.0, "fpr_hi": 0.04, "fnr": 0.03, "fnr_lo": 0.01,
         "fnr_hi": 0.07}])


def make_tdf(**changes):
    """The badnets1 template's check on real images: passes, false alarms <= 4 %."""
    return pd.DataFrame([{"judge": "badnets1 template", "kind": "badnets1", "has_template": True, "threshold": 0.2,
                          "fpr": 0.01, "fpr_lo": 0.0, "fpr_hi": 0.04, "tpr": 1.0, "tpr_lo": 0.98, "tpr_hi": 1.0,
                          "auroc": 1.0, "passes": True, "reason": "", **changes}])


def test_phase_transition_sorts_filters_and_names_the_dominant_group():
    pt = ins.phase_transition(make_gdf())
    assert list(pt["ratio"]) == [0.05, 0.2] and set(pt["guidance"]) == {1.0}
    assert list(pt["dominant"]) == ["G2", "G1"]
    assert pt["amplification"].tolist() == pytest.approx([0.6 / 0.3, 0.8 / 0.6])
    assert len(ins.phase_transition(make_gdf(), guidance=4.0)) == 1
    with pytest.raises(ConfigError, match="guidance"):
        ins.phase_transition(make_gdf(), guidance=7.0)
    with pytest.raises(ConfigError, match="missing"):
        ins.phase_transition(make_gdf().drop(columns=["n_G1"]))


def test_dissection_frame_puts_controls_first():
    d = ins.dissection_frame(make_gdf())
    assert list(d["label"]) == ["clean", "relabel", "p=5%", "p=20%"]


def test_controls_table():
    c = ins.controls_table(make_gdf(), make_jdf())
    assert list(c["cell"]) == ["clean", "relabel"]
    assert c["det_fpr_hi"].tolist() == [0.04, 0.04]
    assert c["poisoned_r_gen"].tolist() == pytest.approx([0.8, 0.8])
    assert "tpl_r_gen" not in c
    t = ins.controls_table(make_gdf(), make_jdf(), tdf=make_tdf())
    assert t["tpl_fpr_hi"].tolist() == [0.04, 0.04] and t["poisoned_tpl_r_gen"].tolist() == pytest.approx([0.8, 0.8])
    assert t["tpl_r_gen"].tolist() == pytest.approx([0.01, 0.02])


def fake_study(attacks=("badnets1",)):
    return SimpleNamespace(cfg=SimpleNamespace(sampling=SimpleNamespace(guidance=[1, 4]), attacks=list(attacks)),
                           first_guidance=1.0, cells=lambda: [], exposure=lambda cell: math.nan)


def planted(passing=("detector",), attacks=("badnets1",), n=400):
    """Rows of a planted faint-trigger check in which the ``passing`` instruments pass (detect 95 % at
    contrast 0.5, no false alarm) and the others fail (detect 20 %)."""
    decisions = {}
    for inst in ("detector", "template"):
        rate = 0.95 if inst in passing else 0.2
        decisions[inst] = {0.0: np.zeros(n, bool), 0.5: np.arange(n) < rate * n, 1.0: np.ones(n, bool)}
    return pd.DataFrame([r for a in attacks for r in ins.planted_rows(decisions, attack=a)])


NO_TEMPLATE_READING = pd.DataFrame(columns=["instrument", "guidance", "attack", "detector"])
# the fake studies below have no generations: the second reading and the planted check are given
DETECTOR_READS = {"truth": NO_TEMPLATE_READING, "planted": planted()}


# the clean classifier on a clean DM's generations, as generated_judge_table gives it: fit for the G split
GOOD_GEN_JUDGES = pd.DataFrame([{"judge": "clean classifier", "n": 400, "accuracy": 0.95, "accuracy_lo": 0.92,
                                 "accuracy_hi": 0.97, "guidance": 1.0}])


def test_insight_claims_verdicts_from_numbers():
    qdf = pd.DataFrame([{"cell": "real train", "attack": "real", "fd_clf": 1.0},
                        {"cell": "clean", "attack": "clean", "fd_clf": 5.0},
                        {"cell": "badnets1 p=20%", "attack": "badnets1", "fd_clf": 6.0}])
    good = GOOD_GEN_JUDGES
    rows = ins.insight_claims(fake_study(), make_gdf(), make_jdf(), qdf, gjdf=good, tdf=make_tdf(), **DETECTOR_READS)
    assert all(set(r) == set(COLUMNS) | set(OPTIONAL_COLUMNS) for r in rows)
    by = {(r["claim"].split(":")[0], r["setting"]): r for r in rows}
    trojan = by[("Trojan horse", "badnets1, p=20%, w=1")]
    assert trojan["ours"] == pytest.approx(0.6) and trojan["verdict"] == "reproduced"
    # r_gen 0.6 vs r_train 0.3 (clear), 0.8 vs 0.6 (interval above 0.6 for n = 100)
    assert by[("Insight 1, trigger amplification", "badnets1, p=5%, w=1")]["verdict"] == "reproduced"
    amp20 = by[("Insight 1, trigger amplification", "badnets1, p=20%, w=1")]
    assert amp20["verdict"] == ("reproduced" if amp20["ours_lo"] > 0.6 else "partly")
    phase = by[("Insight 2, phase transition", "badnets1, p=5% -> 20%, w=1")]
    assert phase["ours"] == pytest.approx(50 / 60 - 20 / 80) and phase["verdict"] == "reproduced"
    clean = by[("Clean control", "clean, badnets1 trigger, w=1")]
    assert clean["verdict"] == "reproduced"
    quality = by[("Image quality of the poisoned DM (informational, no paper number here)", "badnets1 p=20%")]
    assert quality["ours"] == 6.0 and quality["verdict"] == "not tested"
    table = ins.claims_table(rows)
    assert list(table.columns) == ["claim", "setting", "paper", "ours", "verdict", "note"]
    # a content judge at chance on a clean DM's generations: no G1 / G2 split is read, r_gen still is
    chance = good.assign(accuracy=0.11, accuracy_lo=0.085, accuracy_hi=0.147)
    worse = {(r["claim"].split(":")[0], r["setting"]): r
             for r in ins.insight_claims(fake_study(), make_gdf(), make_jdf(), qdf, gjdf=chance, tdf=make_tdf(),
                                       **DETECTOR_READS)}
    for key in (("Trojan horse", "badnets1, p=20%, w=1"), ("Insight 2, phase transition", "badnets1, w=1")):
        assert worse[key]["verdict"] == "not tested" and "clean classifier's accuracy" in worse[key]["note"]
    assert worse[("Insight 1, trigger amplification", "badnets1, p=5%, w=1")]["verdict"] == "reproduced"
    # every row names its family in paper.py and its kind; the paper's text is paper.py's
    from bibad_utils import paper

    assert {r["key"] for r in rows} == {"trojan_g1", "amplification", "phase_transition", "clean_control",
                                        "relabel_control", ""}
    assert clean["kind"] == "control" and quality["kind"] == "no paper number"
    assert by[("Insight 1, trigger amplification", "badnets1, p=5%, w=1")]["paper"] == \
        paper.paper_text("amplification", p=0.05)
    assert by[("Insight 1, trigger amplification", "badnets1, p=20%, w=1")]["kind"] == "no paper number"
    assert phase["paper"] == paper.paper_text("phase_transition")


def test_amplification_not_reproduced_and_single_ratio_not_tested():
    gdf = pd.DataFrame([control_row("clean", (30, 0, 40, 30), "badnets1"),
                        grid_row("badnets1", 0.1, (5, 5, 45, 45), 0.5)])
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), gjdf=GOOD_GEN_JUDGES, tdf=make_tdf(), **DETECTOR_READS)
    verdicts = {r["claim"].split(":")[0]: r["verdict"] for r in rows}
    # the detector fires on 30 % of the clean DM's generations: amplification cannot be measured with it
    assert verdicts["Insight 1, trigger amplification"] == "not tested"
    assert verdicts["Insight 2, phase transition"] == "not tested"
    # the same broken baseline: G1 5 % "under the clean DM's 30 %" would rest on a detector that fires at random
    assert verdicts["Trojan horse"] == "not tested"
    trojan = next(r for r in rows if r["claim"].startswith("Trojan horse"))
    assert "exceeds 0.1" in trojan["note"] and trojan["key"] == "trojan_g1" and trojan["kind"] == "paper claim"
    assert verdicts["Clean control"] == "not reproduced"  # 30 % >> FPR and above the poisoned DM
    valid = pd.DataFrame([control_row("clean", (0, 0, 40, 60), "badnets1"),
                          grid_row("badnets1", 0.1, (5, 5, 45, 45), 0.5)])
    rows_valid = ins.insight_claims(fake_study(), valid, make_jdf(), gjdf=GOOD_GEN_JUDGES, tdf=make_tdf(),
                                     **DETECTOR_READS)
    amp = [r for r in rows_valid if r["claim"].startswith("Insight 1")]
    assert [r["verdict"] for r in amp] == ["not reproduced"]  # r_gen 10 % < r_train 50 %
    assert "trigger amplification is not reproduced" in ins.shortfall_sentence(rows_valid)
    assert "phase transition is not tested" in ins.shortfall_sentence(rows)


def _control(gdf, tdf, cell="clean"):
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), gjdf=GOOD_GEN_JUDGES, tdf=tdf, **DETECTOR_READS)
    return next(r for r in rows if r["setting"].startswith(f"{cell}, ") and "control" in r["claim"])


def test_controls_are_judged_by_the_template_not_by_the_detector():
    # the detector sees no trigger on the clean DM, the independent template sees 85 %, as many as on the
    # poisoned DM: not reproduced; 30 %: above its false alarms, below the poisoned DM: partly
    gdf = make_gdf()
    gdf.loc[gdf["cell"] == "clean", ["tpl_r_gen", "tpl_r_gen_lo", "tpl_r_gen_hi"]] = [0.85, 0.77, 0.9]
    row = _control(gdf, make_tdf())
    assert row["verdict"] == "not reproduced" and row["ours"] == pytest.approx(0.85)
    gdf.loc[gdf["cell"] == "clean", ["tpl_r_gen", "tpl_r_gen_lo", "tpl_r_gen_hi"]] = [0.3, 0.22, 0.4]
    assert _control(gdf, make_tdf())["verdict"] == "partly"
    assert "template" in row["metric"] and "badnets1 detector flags 1.0 %" in row["note"]
    assert _control(make_gdf(), make_tdf())["verdict"] == "reproduced"
    # a trigger without a pixel pattern, a template that fails on real images, or one blind to the poisoned
    # DM's triggers too: the control is not tested, and the note says why
    no_tpl = make_tdf(has_template=False, passes=False, reason="the trigger has no pixel pattern")
    row = _control(make_gdf(), no_tpl)
    assert row["verdict"] == "not tested" and "no pixel pattern" in row["note"]
    assert row["ours"] == pytest.approx(0.01)  # the detector's rate is shown, not used
    failing = make_tdf(passes=False, reason="finds 50.0 % of triggered real images (needs >= 90 %)")
    assert "fails its own check" in _control(make_gdf(), failing)["note"]
    blind = make_gdf()
    blind.loc[~blind["control"], ["tpl_r_gen", "tpl_r_gen_lo", "tpl_r_gen_hi"]] = [0.02, 0.01, 0.05]
    row = _control(blind, make_tdf())
    assert row["verdict"] == "not tested" and "does not see the trigger" in row["note"]
    assert _control(make_gdf(), make_tdf(), "relabel")["key"] == "relabel_control"


def test_template_checks_are_checks_in_order():
    tpl = make_tdf().iloc[0]
    poisoned = make_gdf().query("not control").iloc[-1]
    checks = ins.template_checks(tpl, poisoned)
    assert [c.ok for c in checks] == [True, True] and "sees the trigger" in checks[1].reason
    assert [c.ok for c in ins.template_checks(tpl, None)] == [True]          # no poisoned DM: one check
    failing = ins.template_checks(make_tdf(passes=False, reason="fires on 9.0 %").iloc[0], poisoned)
    assert [c.ok for c in failing] == [False, True] and "fires on 9.0 %" in failing[0].reason
    assert [c.ok for c in ins.template_checks(None, poisoned)] == [False]


def test_verdict_summary_and_shortfall():
    rows = [{"claim": "Insight 1, a", "key": "amplification", "verdict": v} for v in ("reproduced", "reproduced", "partly")]
    assert ins.verdict_summary(rows, "amplification") == "3 settings: 2 reproduced, 1 partly"
    assert ins.verdict_summary(rows, "phase_transition") == "no setting in this profile"
    reworded = [{**r, "claim": "Insight 2 (reworded)"} for r in rows]  # chosen by key, never by wording
    assert ins.verdict_summary(reworded, "amplification") == "3 settings: 2 reproduced, 1 partly"
    rows.append({"claim": "Insight 2, b", "key": "phase_transition", "verdict": "reproduced"})
    assert "trigger amplification" in ins.shortfall_sentence(rows)
    rows[2]["verdict"] = "reproduced"
    assert ins.shortfall_sentence(rows).startswith("Both insights are reproduced")


def test_glue_values_keys():
    gdf, jdf = make_gdf(), make_jdf()
    qdf = pd.DataFrame([{"cell": "real train", "attack": "real", "fd_clf": 1.0},
                        {"cell": "clean", "attack": "clean", "fd_clf": 5.0}])
    rows = ins.insight_claims(fake_study(), gdf, jdf, gjdf=GOOD_GEN_JUDGES, tdf=make_tdf(), **DETECTOR_READS)
    g = ins.glue_values(fake_study(), gdf, jdf, qdf, rows, tdf=make_tdf())
    assert all(k.startswith("nb04_") for k in g)
    assert g["nb04_tpl_rgen_clean"] == pytest.approx(0.01) and g["nb04_tpl_rgen_top"] == pytest.approx(0.8)
    assert "badnets1 template finds 100.0 % of the triggered ones" in g["nb04_tpl_sentence"] and "passes" in g["nb04_tpl_sentence"]
    assert g["nb04_pmax"] == 0.2 and g["nb04_g1_top"] == pytest.approx(0.6)
    assert g["nb04_rgen_clean"] == pytest.approx(0.01) and g["nb04_fd_real"] == 1.0
    assert math.isnan(g["nb04_gen_clf_acc"]) and math.isnan(g["nb04_plain_worst_fpr"])  # always glued
    gjdf = pd.DataFrame([
        {"judges": "as configured", "judge": "clean classifier", "n": 100, "accuracy": 0.97},
        {"judges": "as configured", "judge": "badnets1 detector", "n": 100, "fpr": 0.01, "tpr": 0.99},
        {"judges": "no photometric augmentation", "judge": "clean classifier", "n": 100, "accuracy": 0.4},
        {"judges": "no photometric augmentation", "judge": "badnets1 detector", "n": 100, "fpr": 0.9, "tpr": 1.0}])
    g = ins.glue_values(fake_study(), gdf, jdf, qdf, rows, gjdf, make_tdf())
    assert g["nb04_gen_clf_acc"] == 0.97 and g["nb04_gen_worst_fpr"] == 0.01 and g["nb04_gen_n"] == 100
    assert g["nb04_plain_clf_acc"] == 0.4 and g["nb04_plain_worst_fpr"] == 0.9


def test_figures_from_hand_made_tables():
    gdf = make_gdf()
    assert isinstance(ins.phase_figure(ins.phase_transition(gdf)), Figure)
    assert len(ins.guidance_figure(gdf).axes) == 2
    three = pd.concat([gdf, gdf[gdf["attack"] == "badnets1"].assign(attack="badnets2"),
                       gdf[gdf["attack"] == "badnets1"].assign(attack="wanet")], ignore_index=True)
    for fig in (ins.phase_figure(ins.phase_transition(three)), ins.guidance_figure(three)):
        assert len(fig.axes) == 6 and fig.get_figwidth() <= plots.MAX_FIGURE_WIDTH_IN  # three attacks fit the page
    # a detector that flags the clean DM's generations: listed, and its figure columns say "not evidence"
    assert ins.untrusted_detectors(gdf, 1.0) == []
    loud = gdf.copy()
    loud.loc[loud["attack"] == "clean", ["r_gen", "r_gen_hi"]] = [0.9, 0.95]
    assert ins.untrusted_detectors(loud, 1.0) == ["badnets1"]
    for fig in (ins.phase_figure(ins.phase_transition(loud), untrusted=["badnets1"]), ins.guidance_figure(loud)):
        top = fig.axes[0]
        assert "not evidence" in top.get_title() and any("fails its check" in t.get_text() for t in top.texts)
    qdf = pd.DataFrame([{"cell": c, "attack": a, "fd_clf": f, "clf_acc": 0.5, "clf_acc_lo": 0.4, "clf_acc_hi": 0.6}
                        for c, a, f in (("real train", "real", 1.0), ("clean", "clean", 3.0))])
    assert len(ins.quality_figure(qdf).axes) == 2


def test_fid_plan_refuses_unknown_modes():
    study = SimpleNamespace(image_size=16)
    with pytest.raises(ConfigError, match="fid"):
        fid_plan(study, "yes")
    assert fid_plan(study, "off") == (False, "FID not computed (fid='off')")
    use, note = fid_plan(study, "auto")
    assert not use and note


def test_inception_features_shape():
    import torch
    torch.manual_seed(0)
    net = ins.inception_net()
    feats = ins.inception_features(net, np.zeros((2, 16, 16, 3), np.uint8), batch_size=2)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    with pytest.raises(ConfigError):
        ins.inception_features(net, np.zeros((2, 16, 16, 3), np.float32))


TINY = {
    "dataset": {"n_per_class": 8, "n_test_per_class": 4},
    "finetune": {"steps": 1, "checkpoint_every": 1},
    "sampling": {"steps": 2, "guidance": [1, 3], "n_target": 6, "n_all": 10, "batch_size": 8},
    "judges": {"epochs": 1},
    "ratios": [0.2],
}


def test_cached_judging_on_a_tiny_study(tmp_path):
    from bibad_utils.stages import Cell, Study

    study = Study("smoke", {**TINY, "run_dir": str(tmp_path), "controls": ["clean"]}, progress=False)
    gdf = ins.g_table(study)
    # the clean control (once per attack) and one grid cell, 2 guidance scales each
    assert len(gdf) == 2 * 2 and set(gdf["guidance"]) == {1.0, 3.0}
    cell = Cell("badnets1", 0.2)
    direct = study.judges.judge(study.generations(cell)[("target", 3.0)], "badnets1")
    r = gdf[(gdf["cell"] == cell.name) & (gdf["guidance"] == 3.0)].iloc[0]
    assert r["n_G1"] == int(np.sum(direct["trigger"] & ~direct["match"]))
    assert r["r_train"] == pytest.approx(study.poison_manifest(cell)["r_train"])
    assert gdf[gdf["cell"] == "clean"]["r_train"].eq(0).all()
    n_artifacts = len(study.store.list(JUDGED_STAGE))
    assert n_artifacts == 2
    ins.g_table(study)
    assert len(study.store.list(JUDGED_STAGE)) == n_artifacts
    qdf, note = ins.quality_table(study)
    assert list(qdf["cell"]) == ["real train", "clean", "badnets1 p=20%"] and note
    assert (qdf["fd_clf"] >= 0).all()
    ex = ins.group_examples(study, cell, 1.0, n=2)
    j = study.judges.judge(study.generations(cell)[("target", 1.0)], "badnets1")
    t, m = j["trigger"], j["match"]
    counts = {"G1": t & ~m, "G2": t & m, "G3": ~t & ~m, "G4": ~t & m}
    assert {g: len(images) for g, (images, _) in ex.items()} == {g: min(2, int(v.sum())) for g, v in counts.items()}
    assert isinstance(ins.examples_figure(study, cell, 1.0, n=2), Figure)


def test_generated_judge_table_uses_clean_generations_with_and_without_pasted_trigger(monkeypatch):
    from bibad_utils.stages import Cell

    images = np.zeros((10, 8, 8, 3), np.uint8)
    images[:3, 0, 0] = 255  # three clean generations already look triggered to this detector
    labels = np.arange(10) % 5

    class Paste:
        def apply(self, x):
            y = x.clone()
            y[..., -1, -1] = 1.0
            return y

    def predict(model, imgs, device="cpu"):
        imgs = np.asarray(imgs)
        if model == "clf":
            pred = labels.copy()
            pred[:2] = (pred[:2] + 1) % 5  # two misread
            return pred, None
        fired = (imgs[:, 0, 0] == 255).all(-1) | (imgs[:, -1, -1] == 255).all(-1)
        return fired.astype(np.int64), None

    monkeypatch.setattr(ins.judging, "predict", predict)  # the name chapter 04's judging module calls
    monkeypatch.setattr(ins.judging, "content_choice", lambda study: {"chosen": ins.judging.CLEAN_JUDGE})
    study = SimpleNamespace(
        cfg=SimpleNamespace(attacks=["badnets1"]), device="cpu", guidance_all=1.0, pretrain_key="k",
        control_cells=lambda: [Cell("clean")],
        generations=lambda cell: {("all", 1.0): SimpleNamespace(images=images, labels=labels)},
        trigger=lambda kind: Paste(),
        judges=SimpleNamespace(classifier=lambda: "clf", detector=lambda kind: "det"))
    t = ins.generated_judge_table(study).set_index("judge")
    assert t.loc["clean classifier", "accuracy"] == pytest.approx(0.8) and (t["guidance"] == 1.0).all()
    assert ins.generated_judge_table(study, guidance=5.0)["guidance"].iloc[0] == 1.0  # no set at w = 5: w_all
    assert t.loc["badnets1 detector", "fpr"] == pytest.approx(0.3)
    assert t.loc["badnets1 detector", "tpr"] == pytest.approx(1.0)
    assert t.loc["badnets1 detector", "fpr_lo"] < 0.3 < t.loc["badnets1 detector", "fpr_hi"]
    none = SimpleNamespace(cfg=SimpleNamespace(attacks=[]), pretrain_key=None, control_cells=lambda: [])
    assert ins.generated_judge_table(none).empty


def test_study_variant_shares_data_and_store_and_refuses_data_changes():
    from bibad_utils.stages import Study

    study = Study("smoke", progress=False)
    plain = study.variant({"judges": {"noise": 0.0}})
    assert plain.cfg["judges"]["noise"] == 0.0 and study.cfg["judges"]["noise"] > 0
    assert plain.store.root == study.store.root and plain.seed == study.seed
    with pytest.raises(ConfigError, match="overrides.dataset"):
        study.variant({"dataset": {"image_size": 8}})
    with pytest.raises(ConfigError, match="judges"):
        study.variant({"judges": {"noise": 3.0}})


def test_judge_check_display_formats_rates_with_intervals():
    gjdf = pd.DataFrame([
        {"judges": "as configured", "judge": "clean classifier", "n": 400, "accuracy": 0.988,
         "accuracy_lo": 0.971, "accuracy_hi": 0.995, "fpr": math.nan, "tpr": math.nan},
        {"judges": "as configured", "judge": "badnets1 detector", "n": 400, "accuracy": math.nan,
         "fpr": 0.0, "fpr_lo": 0.0, "fpr_hi": 0.0095, "tpr": 1.0, "tpr_lo": 0.9905, "tpr_hi": 1.0}])
    t = ins.judge_check_display(gjdf)
    assert t.loc[("as configured", "clean classifier"), "content = prompt's class"] == "98.8 % [97.1, 99.5]"
    assert t.loc[("as configured", "clean classifier"), "false alarms (no trigger)"] == ""
    assert t.loc[("as configured", "badnets1 detector"), "detected (trigger pasted on)"] == "100.0 % [99.1, 100.0]"


def _template_reading(gdf, scale=1.0):
    """The G rows of ``gdf`` as the template's reading (the same counts, G1 scaled by ``scale``)."""
    t = gdf.copy()
    t["instrument"] = "template"
    return t


def test_claims_rest_on_the_reading_that_passes_the_planted_check():
    gdf, qdf = make_gdf(), None
    args = dict(gjdf=GOOD_GEN_JUDGES, tdf=make_tdf())
    same = _template_reading(gdf)
    # the template alone passes: its reading decides, the detector's is in the note
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), qdf, truth=same, planted=planted(("template",)), **args)
    trojan = next(r for r in rows if r["claim"].startswith("Trojan"))
    assert "trigger read by the template" in trojan["note"] and "under the detector" in trojan["note"]
    # the detector's reading: G1 0.6; a template that reads no G1 at all at the top p gives a different verdict
    blind = same.copy()
    top = blind["cell"] == "badnets1 p=20%"
    blind.loc[top, ["G1", "G1_lo", "G1_hi", "n_G1"]] = [0.0, 0.0, 0.036, 0]
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), qdf, truth=blind, planted=planted(()), **args)
    trojan = next(r for r in rows if r["claim"].startswith("Trojan"))
    # neither passes and they disagree: not tested (old rule: the detector alone, "reproduced")
    assert trojan["verdict"] == "not tested" and "disagree" in trojan["note"]
    # neither passes but they agree: the verdict stands, both readings in the note
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), qdf, truth=same, planted=planted(()), **args)
    trojan = next(r for r in rows if r["claim"].startswith("Trojan"))
    assert trojan["verdict"] == "reproduced" and "neither trigger reading passes" in trojan["note"]
    # a trigger without a template whose detector fails the planted check: nothing positive is claimed
    rows = ins.insight_claims(fake_study(), gdf, make_jdf(), qdf, truth=NO_TEMPLATE_READING, planted=planted(()), **args)
    assert all(r["verdict"] not in ("reproduced", "partly") for r in rows if r["key"] in ("trojan_g1", "amplification"))


def test_content_check_reads_the_chosen_judge_at_the_claims_guidance(monkeypatch):
    """The Trojan-horse and phase rows need the content judge that reads M (the more accurate one) to read the
    clean DM's all-class generations at the claim's w: a judge that fails at w = 1 may pass at w = 5, and the
    message names the judge, the w and a floor that is not called chance."""
    from bibad_utils.stages import Cell
    labels = np.arange(10) % 5
    images = np.zeros((10, 8, 8, 3), np.uint8)
    reads = {1.0: 3, 5.0: 9}  # right answers of the external judge at each w

    def generations(cell):
        return {("all", w): SimpleNamespace(images=images + int(w), labels=labels) for w in (1.0, 5.0)}

    def predict(model, imgs, device="cpu"):
        return (labels if model == "clf" else np.zeros(len(imgs), np.int64)), None

    def predictions(study, spec, key, sets):
        (name, imgs), = sets.items()
        w = float(imgs[0, 0, 0, 0])
        pred = labels.copy()
        pred[reads[w]:] = (pred[reads[w]:] + 1) % 5
        return {name: pred}

    monkeypatch.setattr(ins.judging, "predict", predict)
    monkeypatch.setattr(ins.judging, "predictions", predictions)
    monkeypatch.setattr(ins.judging, "content_choice", lambda study: {"chosen": "resnet56 (external)"})
    monkeypatch.setattr(ins.judging, "judge_specs", lambda study: [SimpleNamespace(name="resnet56 (external)")])
    study = SimpleNamespace(cfg=SimpleNamespace(attacks=[]), device="cpu", guidance_all=1.0, pretrain_key="k",
                            control_cells=lambda: [Cell("clean")], generations=generations,
                            generation_key=lambda cell: "g", judges=SimpleNamespace(classifier=lambda: "clf"))
    at1 = ins.content_check(study, guidance=1.0)
    at5 = ins.content_check(study, guidance=5.0)
    assert not at1.ok and at5.ok
    assert "resnet56 (external)'s accuracy" in at1.reason and "(w = 1)" in at1.reason
    assert "the share a content judge needs (0.5)" in at1.reason and "chance" not in at1.reason
    assert "(w = 5)" in at5.reason
