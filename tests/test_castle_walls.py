"""Tests of the castle-walls stage helpers: subsets, intervals, configuration, claims and figures on
tiny hand-made inputs (the study-level tables run in the smoke notebook)."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bibad_utils import metrics, verdicts
from bibad_utils.config import ConfigError, load_profile
from bibad_utils.defenses.profile import DEFENSES
from bibad_utils.experiments import castle_walls as cw
from bibad_utils.typed_config import typed_profile


def test_verdict_helpers():
    assert cw.TA_COST_MAX == pytest.approx(0.99833 - 0.87333)   # the paper's own largest TA drop
    assert verdicts.capped_verdict("reproduced", "reproduced") == ("reproduced", "")
    assert verdicts.capped_verdict("reproduced", "partly") == ("reproduced", "")
    assert verdicts.capped_verdict("reproduced", "not reproduced")[0] == "not tested"
    assert verdicts.capped_verdict("not reproduced", "not reproduced")[0] == "not reproduced"


def test_paper_lookup_tolerates_float_rounding():
    assert cw.paper_at(cw.PAPER_CD_AUROC, ("badnets1", 0.1 + 1e-12)) == (0.948, 0.983)
    assert cw.paper_at(cw.PAPER_CD_AUROC, ("badnets1", 0.2)) is None
    assert cw.paper_at(cw.PAPER_DC["resnet18"], 0.05)["ASR"] == 100.0


# ------------------------------------------------------------------------------------ config

def test_validate_config_fills_defaults_and_merges_subsections():
    cfg = DEFENSES.validate({"cd": {"steps": 7}, "p_filter": [0, 0.1]})
    assert cfg["cd"]["steps"] == 7 and cfg["cd"]["lr"] == DEFENSES.defaults()["cd"]["lr"]
    assert cfg["strip"] == DEFENSES.defaults()["strip"] and cfg["p_filter"] == [0.0, 0.1]
    assert DEFENSES.validate({}) == DEFENSES.validate(None)


@pytest.mark.parametrize("section, param", [
    ({"n_detct": 5}, "defenses.n_detct"),
    ({"cd": {"step": 5}}, "defenses.cd.step"),
    ({"cd": {"steps": 0}}, "defenses.cd.steps"),
    ({"cd": {"betas": [0.1]}}, "defenses.cd.betas"),
    ({"classifier": {"arc": "resnet18"}}, "defenses.classifier.arc"),
    ({"n_detect": 1}, "defenses.n_detect"),
    ({"p_filter": [0.0, 1.0]}, "defenses.p_filter"),
    ({"p_filter": []}, "defenses.p_filter"),
    ({"dc_attacks": ["badnets3"]}, "defenses.dc_attacks"),
    ({"dc_levels": 4, "dc_adaptive": [[3, 2], [2, 1]]}, "defenses.dc_adaptive"),
    ({"dc_adaptive": [[3]]}, "defenses.dc_adaptive"),
    ({"gen_classifier": {"epochs": True}}, "defenses.gen_classifier.epochs"),
    ({"gen_classifier": {"lr_": 1}}, "defenses.gen_classifier.lr_"),
    ({"gen_classifier": {"color_jitter": 2.0}}, "defenses.gen_classifier.color_jitter"),
])
def test_validate_config_names_the_bad_parameter(section, param):
    with pytest.raises(ConfigError) as err:
        DEFENSES.validate(section, "defenses")
    assert err.value.param == param


def test_classifier_settings_do_not_inherit_the_judges_photometric_augmentation():
    from types import SimpleNamespace

    judges = {"arch": "small_cnn", "epochs": 3, "batch_size": 128, "lr": 1e-3, "noise": 0.25, "blur": 1.0}
    defenses = DEFENSES.validate({"gen_classifier": {"color_jitter": 0.4}})
    study = SimpleNamespace(cfg=typed_profile({**load_profile("smoke"), "judges": judges, "defenses": defenses}))
    assert "noise" not in cw.classifier_settings(study) and "blur" not in cw.classifier_settings(study)
    small = cw.classifier_settings(study, small=True)
    assert small["color_jitter"] == 0.4 and "noise" not in small and small["epochs"] == 3


@pytest.mark.parametrize("name", ["smoke", "demo", "paper"])
def test_shipped_profiles_have_a_valid_defenses_section(name):
    cfg = load_profile(name)
    assert DEFENSES.validate(cfg["defenses"])["p_filter"]
    with pytest.raises(ConfigError):
        load_profile(name, {"defenses": {"dc_levels": 0}})


# ------------------------------------------------------------------------------- claims, figures

def _diffs(diff_lo=0.01, n_trig=5, flag_lo=0.0):
    # the columns of detection_differences that every row shares: a detector that passes its own checks
    same = {"guidance": 2.0, "n_train": 50, "auroc_known": 0.95, "auroc_known_lo": 0.9, "auroc_known_hi": 0.99,
            "auroc_train_lo": 0.55, "auroc_train_hi": 0.9, "n_triggered_gen_tpl": math.nan, "reading": "detector"}
    return pd.DataFrame([{**same, **r} for r in [
        {"cell": "badnets1 p=10%", "attack": "badnets1", "p": 0.1, "detector": "CD", "auroc_train": 0.8,
         "auroc_gen": 0.9, "diff": 0.1, "diff_lo": diff_lo, "diff_hi": 0.2, "n_poisoned_train": 5,
         "n_triggered_gen": n_trig, "n": 50, "paper_train": 0.948, "paper_gen": 0.983,
         "clean_dm_flagged": flag_lo + 0.02, "clean_dm_flagged_lo": flag_lo},
        {"cell": "badnets1 p=10%", "attack": "badnets1", "p": 0.1, "detector": "STRIP", "auroc_train": 0.6,
         "auroc_gen": math.nan, "diff": math.nan, "diff_lo": math.nan, "diff_hi": math.nan, "n_poisoned_train": 5,
         "n_triggered_gen": 0, "n": 50, "paper_train": math.nan, "paper_gen": math.nan,
         "clean_dm_flagged": flag_lo + 0.02, "clean_dm_flagged_lo": flag_lo},
    ]])


def test_detection_claims_verdicts():
    rows = cw.detection_claims(_diffs())
    assert [r["verdict"] for r in rows] == ["reproduced", "not tested"]
    assert rows[0]["paper"].startswith("0.948 -> 0.983") and rows[1]["paper"] == ""
    assert "too few" in rows[1]["note"]
    few = cw.detection_claims(_diffs(n_trig=2))[0]                 # 2 triggered generations: no test
    assert few["verdict"] == "not tested" and "2 triggered" in few["note"]
    # an interval that includes 0 and cannot see the paper's 0.035 rise: underpowered, not "partly"
    assert cw.detection_claims(_diffs(diff_lo=-0.05))[0]["verdict"] == "underpowered"
    flagged = cw.detection_claims(_diffs(flag_lo=0.5))            # detector fires on the clean DM's images
    assert [r["verdict"] for r in flagged] == ["not tested", "not tested"]
    assert "clean DM" in flagged[0]["note"]


def _rates(source_or_method, k_ta, k_asr, n=100, **extra):
    rep = metrics.ta_asr_report(np.r_[np.zeros(k_ta), np.ones(n - k_ta)].astype(int), np.zeros(n, int),
                           np.r_[np.zeros(k_asr), np.ones(n - k_asr)].astype(int), target=0)
    return {"cell": "badnets1 p=5%", "attack": "badnets1", "p": 0.05, **rep, **source_or_method, **extra}


def test_train_on_generations_claims():
    paper = {"paper_TA": 0.99, "paper_ASR": 0.9, "paper_ASR_caltech15": math.nan, "guidance": 2.0}
    tog = pd.DataFrame([
        _rates({"source": cw.SOURCES[0]}, 95, 99, n_train=1000, **paper),
        _rates({"source": cw.SOURCES[1]}, 90, 95, n_train=100, **paper),
        _rates({"source": "generated"}, 88, 10, n_train=100, **{**paper, "paper_ASR": 0.1}),
    ])
    asr, ta = cw.train_on_generations_claims(tog)
    assert asr["ours"] == pytest.approx(0.85) and asr["verdict"] == "reproduced"
    assert ta["ours"] == pytest.approx(0.02) and ta["verdict"] == "reproduced"   # hi ~ 0.11 < 0.125
    assert "100 images each" in asr["setting"]
    tog.loc[2, ["k_ta", "TA"]] = [20, 0.2]                     # generations useless: no robustness claim
    asr, ta = cw.train_on_generations_claims(tog)
    assert ta["verdict"] == "not reproduced" and asr["verdict"] == "not tested"


def test_train_on_generations_needs_a_backdoor_and_the_papers_size():
    paper = {"paper_TA": 0.99, "paper_ASR": 0.99434, "paper_ASR_caltech15": math.nan, "guidance": 2.0}
    gen_paper = {**paper, "paper_TA": 0.94446, "paper_ASR": 0.55600}       # ImageNette BadNets-1 p = 5 %
    # demo BadNets-2 p = 5 %: the real-subset classifier's ASR is 19.7 %: no backdoor to defuse
    tog = pd.DataFrame([_rates({"source": cw.SOURCES[0]}, 95, 20, n_train=1000, **paper),
                        _rates({"source": cw.SOURCES[1]}, 95, 20, n_train=100, **paper),
                        _rates({"source": "generated"}, 94, 0, n_train=100, **gen_paper)])
    asr, ta = cw.train_on_generations_claims(tog)
    assert asr["verdict"] == "not tested" and "a backdoor to defuse" in asr["note"]   # old rule: reproduced
    assert ta["verdict"] == "not tested"                   # old rule: a TA-cost "reproduced" beside it
    # BadNets-1: ASR 99 -> 76 %, a drop of 0.23 whose interval falls short of the paper's 0.44: partly
    tog = pd.DataFrame([_rates({"source": cw.SOURCES[0]}, 95, 99, n_train=1000, **paper),
                        _rates({"source": cw.SOURCES[1]}, 95, 99, n_train=100, n=400, **paper),
                        _rates({"source": "generated"}, 94, 76, n_train=100, n=100, **gen_paper)])
    tog.loc[1, ["k_asr", "n_asr", "ASR", "ASR_lo"]] = [396, 400, 0.99, 0.974]
    asr, ta = cw.train_on_generations_claims(tog)
    assert asr["verdict"] == "partly" and "falls short" in asr["note"]   # old rule: reproduced


def test_train_on_generations_ta_margin_accepts_the_papers_own_drops():
    # Caltech15 BadNets-1 p = 1 %: TA 99.83 -> 90.67 % (9.2 points), ASR 95.5 -> 1.3 %; a margin of 10
    # points rejected drops like the paper's own 8.8-12.5 points
    paper = {"paper_TA": 0.99833, "paper_ASR": math.nan, "paper_ASR_caltech15": 0.95536, "paper_TA_caltech15": 0.99833,
             "guidance": 2.0}
    tog = pd.DataFrame([_rates({"source": s}, k_ta, k_asr, n=2000, n_train=100, **paper)
                        for s, k_ta, k_asr in ((cw.SOURCES[0], 1997, 1911), (cw.SOURCES[1], 1997, 1911),
                                               ("generated", 1813, 25))])
    tog.loc[2, ["paper_ASR_caltech15", "paper_TA_caltech15"]] = [0.0125, 0.90667]
    asr, ta = cw.train_on_generations_claims(tog)
    assert ta["ours"] == pytest.approx(0.092) and ta["ours_hi"] < cw.TA_COST_MAX
    assert ta["verdict"] == "reproduced"          # old margin 0.10: the interval reaches above it


def test_diffusion_classifier_claims():
    na = {"p_filter": math.nan, "paper_TA": 0.94, "paper_ASR": 1.0}
    dc = pd.DataFrame([
        _rates({"method": "classifier (small_cnn)"}, 90, 95, **na),
        _rates({"method": "diffusion classifier"}, 88, 60, p_filter=0.0, paper_TA=0.95, paper_ASR=0.97),
        _rates({"method": "diffusion classifier"}, 87, 30, p_filter=0.1, paper_TA=0.92, paper_ASR=0.39),
    ])
    resist, ta, filt = cw.diffusion_classifier_claims(dc)
    assert resist["verdict"] == "reproduced" and resist["ours"] == pytest.approx(0.35)
    assert ta["verdict"] == "underpowered" and ta["ours"] == pytest.approx(-0.02)  # half-width ~0.09 > 0.05
    # the paper's filtering drop at p = 5 % is 0.58 (97.0 -> 39.0 %); ours 0.30 [0.16, 0.42] falls short
    assert filt["verdict"] == "partly" and filt["ours"] == pytest.approx(0.3)
    assert "97.04 %" in resist["paper"] and "39.00 %" in filt["paper"]


def test_figures_from_tiny_tables():
    det = pd.DataFrame([{"cell": c, "detector": d, "set": s, "classifier": "victim", "auroc": a, "auroc_lo": a - 0.1,
                         "auroc_hi": a + 0.05,
                         "paper": 0.9 if d == "CD" else math.nan}
                        for c in ("a", "b") for d in cw.detectors() for s, a in (("training", 0.7), ("generated", math.nan))])
    assert isinstance(cw.detection_figure(det), Figure)
    tog = pd.DataFrame([_rates({"source": s}, 80, 20, paper_TA=0.9, paper_ASR=0.5, acc_generated=0.5)
                        for s in cw.SOURCES])
    assert isinstance(cw.train_on_generations_figure(tog), Figure)
    dc = pd.DataFrame([_rates({"method": "classifier (x)"}, 80, 90, p_filter=math.nan, paper_TA=0.9, paper_ASR=1.0),
                       _rates({"method": "diffusion classifier"}, 70, 20, p_filter=0.0, paper_TA=math.nan,
                              paper_ASR=math.nan)])
    fig = cw.dc_figure(dc, n_classes=10)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["TA", "ASR"]


def _saved_width_px(fig) -> int:
    import io

    from PIL import Image

    from bibad_utils.plots import DPI
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")  # as the notebooks' inline backend saves it
    return Image.open(io.BytesIO(buf.getvalue())).size[0]


def test_wide_figures_fit_the_text_column():
    """Chapter 05's figures with many cells and models wrap their panels into rows instead of growing past
    the book's column (the page check fails a figure shrunk below a readable label size)."""
    from bibad_utils.plots import DPI, MAX_FIGURE_WIDTH_IN
    limit = MAX_FIGURE_WIDTH_IN * DPI * 1.08  # bbox_inches="tight" may add a little outside the axes
    cells = [f"badnets{k} p={p}%" for k in (1, 2) for p in (1, 2, 5, 10, 20)]
    det = pd.DataFrame([{"cell": c, "detector": d, "set": s, "classifier": "victim", "auroc": 0.7, "auroc_lo": 0.6,
                         "auroc_hi": 0.8, "paper": math.nan} for c in cells for d in cw.detectors() for s in ("training", "generated")])
    fig = cw.detection_figure(det)
    assert _saved_width_px(fig) <= limit and sum(ax.get_visible() for ax in fig.axes) == len(cw.detectors())
    dc = pd.DataFrame([_rates({"method": m, "cell": c}, 80, 20, p_filter=pf, paper_TA=0.9, paper_ASR=0.5)
                       for c in cells[:6] for m, pf in (("classifier (x)", math.nan), ("diffusion classifier", 0.0),
                                                        ("diffusion classifier", 0.1))])
    fig = cw.dc_figure(dc, n_classes=10)
    assert _saved_width_px(fig) <= limit
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["TA", "ASR"]


def test_display_tables():
    det = pd.DataFrame([{"cell": "c", "detector": "CD", "set": s, "classifier": c, "n": 20, "n_poisoned": k, "auroc": a,
                         "auroc_lo": a - 0.1, "auroc_hi": min(1.0, a + 0.1), "paper": p}
                        for s, c, k, a, p in (("known answer", "victim", 10, 0.9, math.nan),
                                              ("training", "victim", 2, 0.7, 0.948),
                                              ("generated", "victim", 0, math.nan, 0.983),
                                              ("generated", "generations classifier", 0, math.nan, 0.983))])
    wide = cw.detection_wide(det, {"c": 0.25})
    assert wide.loc[("c", "CD"), "AUROC training"] == "0.700 [0.600, 0.800]"
    assert wide.loc[("c", "CD"), "AUROC generated (victim)"] == "n/a"
    assert wide.loc[("c", "CD"), "triggered / n (generated)"] == "0 / 20"
    assert wide.loc[("c", "CD"), "clean DM flagged"] == "25.0%"
    dc = pd.DataFrame([_rates({"method": "diffusion classifier"}, 70, 20, p_filter=0.05, paper_TA=math.nan,
                              paper_ASR=0.4543, unet_evals_per_image=44.0, seconds_per_image=0.1)])
    row = cw.rates_wide(dc, by="method").iloc[0]
    assert row.name == ("badnets1 p=5%", "DC, p_filter 0.05")
    assert row["TA"].startswith("70.0% [") and row["paper TA"] == "" and row["paper ASR"] == "45.43%"
    claims = cw.claims_table(cw.detection_claims(_diffs()))
    assert list(claims.verdict) == ["reproduced", "not tested"] and claims.ours[1] == "n/a"


def test_detection_claims_refuse_a_detector_that_fails_its_own_check():
    broken = _diffs().assign(auroc_known=0.9, auroc_known_lo=0.8, auroc_known_hi=0.95, auroc_train=0.208,
                             auroc_train_lo=0.02, auroc_train_hi=0.47)
    row = cw.detection_claims(broken)[0]                           # diff interval above 0, baseline below chance
    assert row["verdict"] == "not tested" and "training-set AUROC" in row["note"] and "0.020" in row["note"]
    known = _diffs().assign(auroc_known=0.55, auroc_known_lo=0.45, auroc_train=0.8, auroc_train_lo=0.7)
    row = cw.detection_claims(known)[0]
    assert row["verdict"] == "not tested" and "known-answer" in row["note"]
    fine = _diffs().assign(auroc_known=0.95, auroc_known_lo=0.9, auroc_train=0.8, auroc_train_lo=0.7)
    assert cw.detection_claims(fine)[0]["verdict"] == "reproduced"
    variant = fine.assign(detector="FCT variant")                 # the project's variant makes no claim
    assert cw.detection_claims(variant) == []


def test_diffusion_classifier_claims_at_p1_underpowered_and_untestable_ta():
    na = {"p_filter": math.nan, "paper_TA": 0.95, "paper_ASR": 0.99}

    def table(k_clf_asr, k_dc_asr, n, p):
        rows = [_rates({"method": "classifier (small_cnn)"}, n, k_clf_asr, n=n, **na),
                _rates({"method": "diffusion classifier"}, n, k_dc_asr, n=n, p_filter=0.0, paper_TA=0.95,
                       paper_ASR=0.6)]
        return pd.DataFrame(rows).assign(p=p, cell=f"badnets1 p={p * 100:g}%")

    # p = 5 %: the paper's effect is 2.96 points, far inside a 100-image interval: underpowered
    resist, ta = cw.diffusion_classifier_claims(table(100, 100, 100, 0.05))
    assert resist["verdict"] == "underpowered" and "could detect only" in resist["note"]
    assert ta["verdict"] == "reproduced"                                    # 100 of 100 each: lower bound -0.037
    # 60 images: even two perfect TAs cannot show "comparable" (lower bound -0.060 < -0.05)
    _, ta60 = cw.diffusion_classifier_claims(table(60, 60, 60, 0.05))
    assert ta60["verdict"] == "underpowered"
    # p = 1 %: no backdoor in the classifier, nothing to resist
    resist, _ = cw.diffusion_classifier_claims(table(20, 10, 100, 0.01))
    assert resist["verdict"] == "not tested" and "backdoored classifier's ASR" in resist["note"]
    resist, _ = cw.diffusion_classifier_claims(table(99, 30, 100, 0.01))
    assert resist["verdict"] == "reproduced" and resist["key"] == "diffusion_classifier_asr"


def test_detection_csv_columns_and_paper_caltech_ta(tmp_path):
    det = pd.DataFrame([{"cell": "c", "attack": "badnets1", "p": 0.05, "detector": d, "set": s, "classifier": c,
                         "n": 200, "n_poisoned": 100, "n_clean": 100, "auroc": 0.8, "auroc_lo": 0.7,
                         "auroc_hi": 0.9, "seconds": 1.0, "paper": math.nan, "note": ""}
                        for d in cw.detectors() for s, c in (("known answer", "victim"), ("training", "victim"),
                                                            ("generated", "generations classifier"))])
    csv = cw.detection_csv(det)
    assert list(csv.columns) == ["attack", "p", "detector", "set", "classifier", "auroc", "lo", "hi", "n_pos", "n_neg"]
    assert len(csv) == 3 * len(cw.detectors()) and set(csv.set) == set(cw.SETS)
    assert cw.detectors() == ("CD", "STRIP", "FCT", "FCT variant")
    path = cw.save_detection_csv(tmp_path, det)
    assert path == tmp_path / "figures" / cw.DETECTION_CSV
    assert pd.read_csv(path).equals(pd.read_csv(io.StringIO(csv.to_csv(index=False, float_format="%.4f"))))
    assert cw.paper_at(cw.PAPER_TRAIN_ON_GEN["caltech15"], ("badnets2", 0.05))["TA"] == pytest.approx((99.833, 87.333))


@pytest.mark.parametrize("section, param", [
    ({"fct_variant": {"temperature": -1}}, "defenses.fct_variant.temperature"),
    ({"strip": {"mode": "max"}}, "defenses.strip.mode"),
    ({"cd": {"logit_reference": 0}}, "defenses.cd.logit_reference"),
    ({"n_detect": 10, "n_detect_poisoned": 10}, "defenses.n_detect_poisoned"),
    ({"n_known": 1}, "defenses.n_known"),
    ({"dc_ratios": [0.0]}, "defenses.dc_ratios"),
])
def test_validate_config_names_the_new_parameters(section, param):
    with pytest.raises(ConfigError) as err:
        DEFENSES.validate(section, "defenses")
    assert err.value.param == param


def test_training_detection_indices_draw_the_poisoned_images_apart():
    from types import SimpleNamespace

    labels = np.repeat(np.arange(10), 100)
    poisoned = np.zeros(1000, bool)
    poisoned[np.flatnonzero(labels != 0)[::18]] = True                      # 50 poisoned, 5 %
    ps = SimpleNamespace(labels=np.where(poisoned, 0, labels), is_poisoned=poisoned)
    study = SimpleNamespace(poisoned=lambda cell: ps, seed=0)
    idx = cw.training_detection_indices(study, None, 300, 40)
    assert len(idx) == 300 and np.all(np.diff(idx) > 0)
    assert poisoned[idx].sum() == 40                                       # not p's share (15)
    again = cw.training_detection_indices(study, None, 300, 40)
    np.testing.assert_array_equal(idx, again)
    natural = cw.training_detection_indices(study, None, 300, None)
    assert poisoned[natural].sum() == 15
    capped = cw.training_detection_indices(study, None, 300, 80)          # only 50 exist
    assert poisoned[capped].sum() == 50 and len(capped) == 300


def test_detect_ratios_pick_the_detection_cells():
    from bibad_utils.stages import Cell, Study

    full = Study("full", progress=False)
    cells = cw.detection_cells(full)
    assert sorted({c.ratio for c in cells}) == [0.01, 0.05, 0.1] and {c.kind for c in cells} == {"badnets1", "badnets2", "wanet"}
    assert cw.dc_cells(full) == [Cell("badnets1", r) for r in (0.01, 0.05, 0.1)]
    demo = Study("demo", progress=False)
    assert cw.detection_cells(demo) == demo.grid_cells()  # null: every grid cell
    with pytest.raises(ConfigError, match="defenses.detect_ratios"):
        DEFENSES.validate({"detect_ratios": [0.0]})
    off_grid = Study("demo", {"defenses": {"detect_ratios": [0.2]}}, progress=False)
    with pytest.raises(ConfigError, match="ratios of the grid"):
        cw.detection_cells(off_grid)


def test_detection_claims_rest_on_the_truth_reading_that_passes_the_planted_check():
    # the detector's truth gives a clear rise; the template's truth on the same generations gives none
    both = _diffs().iloc[:1].assign(n_triggered_gen_tpl=40, auroc_gen_tpl=0.80, diff_tpl=-0.15, diff_tpl_lo=-0.25,
                                    diff_tpl_hi=-0.05)
    row = cw.detection_claims(both.assign(reading="detector"))[0]
    assert row["verdict"] == "reproduced" and "read by the detector" in row["note"]
    assert "under the template's truth: -0.150" in row["note"]
    row = cw.detection_claims(both.assign(reading="template"))[0]
    assert row["verdict"] == "not reproduced" and row["ours"] == pytest.approx(-0.15)
    row = cw.detection_claims(both.assign(reading="none"))[0]   # old rule: the detector alone, "reproduced"
    assert row["verdict"] == "not tested" and "disagree" in row["note"]


def test_train_on_generations_without_a_paper_number_needs_the_papers_smallest_drop():
    # demo BadNets-1 p = 10 %: ASR 98.9 -> 78.4 % while the backdoor is still active; the paper reports no
    # number at p = 10 %, and its smallest drop anywhere is 0.311 (Caltech15 BadNets-2 p = 5 %)
    na = {"paper_TA": math.nan, "paper_ASR": math.nan, "paper_ASR_caltech15": math.nan, "guidance": 2.0}
    tog = pd.DataFrame([_rates({"source": s}, k_ta, k_asr, n=400, n_train=400, **na)
                        for s, k_ta, k_asr in ((cw.SOURCES[0], 396, 396), (cw.SOURCES[1], 396, 396),
                                               ("generated", 390, 314))])
    asr, _ = cw.train_on_generations_claims(tog)
    assert cw.claims.smallest_paper_asr_drop() == pytest.approx(0.95893 - 0.64821)
    assert asr["verdict"] == "partly" and "smallest reported drop" in asr["note"]   # old rule: reproduced
    assert asr["kind"] == "no paper number"
