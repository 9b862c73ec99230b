"""Chapter 04's trigger truth: Cohen's kappa, the agreement counts, the planted faint-trigger check on a
synthetic setup with a known answer, the preferred-instrument rule, the leak table, and one tiny real Study."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bibad_utils import metrics
from bibad_utils.config import ConfigError
from bibad_utils.data import make_procedural
from bibad_utils.experiments import insights as ins
from bibad_utils.judges.template import TriggerTemplate
from bibad_utils.triggers import make_trigger


def test_kappa_matches_sklearn_on_random_decisions():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for n, pa, pb in ((50, 0.5, 0.5), (200, 0.1, 0.4), (31, 0.9, 0.7), (400, 0.02, 0.03)):
        a = rng.random(n) < pa
        b = np.where(rng.random(n) < 0.6, a, rng.random(n) < pb)
        assert metrics.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert metrics.cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert math.isnan(metrics.cohen_kappa([False] * 5, [False] * 5))  # both constant: undefined
    assert math.isnan(metrics.cohen_kappa([], []))
    with pytest.raises(ConfigError, match="b"):
        metrics.cohen_kappa([True], [True, False])


def test_agreement_row_counts_rates_and_missing_template():
    d = np.array([1, 1, 0, 0, 0, 1, 0, 0], bool)
    t = np.array([1, 0, 1, 1, 0, 1, 0, 0], bool)
    r = ins.agreement_row(d, t)
    assert (r["n"], r["n_both"], r["n_detector_only"], r["n_template_only"], r["n_neither"]) == (8, 2, 1, 2, 3)
    assert r["det"] == pytest.approx(3 / 8) and r["tpl"] == pytest.approx(4 / 8)
    assert (r["tpl_lo"], r["tpl_hi"]) == pytest.approx(metrics.wilson_interval(4, 8))
    assert r["agreement"] == pytest.approx(5 / 8) and r["kappa"] == pytest.approx(metrics.cohen_kappa(d, t))
    none = ins.agreement_row(d, None)
    assert none["det_k"] == 3 and math.isnan(none["tpl"]) and math.isnan(none["kappa"])


def corner_detector(trigger):
    """A crisp-trigger instrument: fires when the trigger's corner is within 65 grey levels (mean absolute
    difference) of the patch itself, so it loses faint copies."""
    s = trigger.side
    patch = ins.plant(trigger, np.zeros((1, 16, 16, 3), np.uint8), 1.0)[0, -s:, -s:].astype(float)
    return lambda x: np.abs(np.asarray(x)[:, -s:, -s:].astype(float) - patch).mean(axis=(1, 2, 3)) < 65


def synthetic_check(contrasts=ins.PLANT_CONTRASTS):
    trigger = make_trigger("badnets1", 16)
    template = TriggerTemplate.of(trigger).calibrate(make_procedural(20, image_size=16, seed=1).images, 0.02)
    images = make_procedural(10, image_size=16, seed=2).images  # other images than the calibration's
    dec = ins.planted_decisions(images, trigger, {"template": template.fires,
                                                  "detector": corner_detector(trigger)}, contrasts)
    return pd.DataFrame(ins.planted_rows(dec, attack="badnets1", images="synthetic"))


def test_planted_check_on_a_synthetic_setup():
    images = make_procedural(2, image_size=16, seed=3).images
    trigger = make_trigger("badnets1", 16)
    assert np.array_equal(ins.plant(trigger, images, 0.0), images)
    corner = ins.plant(trigger, images, 1.0)[:, -trigger.side:, -trigger.side:]
    assert (corner == corner[:1]).all()  # full contrast: the same patch on every image
    with pytest.raises(ConfigError, match="contrast"):
        ins.plant(trigger, images, 1.5)
    df = synthetic_check()
    tpl = df[df["instrument"] == "template"].set_index("contrast")
    assert tpl.loc[1.0, "rate"] >= 0.95  # a full-contrast pasted patch is found
    assert tpl.loc[0.0, "measure"] == "false alarm" and tpl.loc[0.0, "rate"] <= 0.1
    det = df[df["instrument"] == "detector"].set_index("contrast")["rate"]
    assert det[1.0] == 1.0 and det[0.15] < 0.5 and det[0.0] == 0.0  # the crisp instrument loses faint copies
    for inst, r in df.groupby("instrument"):
        rates = r[r["contrast"] > 0].sort_values("contrast")["rate"].to_numpy()
        assert np.all(np.diff(rates) >= -0.05), (inst, rates)  # more contrast, no fewer detections
    assert (df["rate_lo"] <= df["rate"]).all() and (df["rate"] <= df["rate_hi"]).all()
    assert synthetic_check().equals(df)  # deterministic


def check_rows(det_rates, tpl_rates, n=100):
    """Planted-check rows with given rates at contrasts (0, 0.5, 1) per instrument (None: no rows)."""
    dec = {}
    for inst, rates in (("detector", det_rates), ("template", tpl_rates)):
        if rates is not None:
            dec[inst] = {c: np.arange(n) < round(r * n) for c, r in zip((0.0, 0.5, 1.0), rates)}
    return ins.planted_rows(dec, attack="badnets1", images="x")


@pytest.mark.parametrize("det, tpl, expected", [
    ((0.0, 0.9, 1.0), (0.0, 0.85, 1.0), "both"),
    ((0.0, 0.3, 1.0), (0.0, 0.95, 1.0), "template"),
    ((0.0, 0.95, 1.0), (0.0, 0.2, 0.9), "detector"),
    ((0.0, 0.3, 1.0), (0.0, 0.5, 1.0), "none"),
    ((0.0, 0.9, 1.0), (0.08, 0.99, 1.0), "detector"),   # the template finds them but false-alarms too often
    ((0.0, 0.9, 1.0), None, "detector"),                 # no template (a warp)
    ((0.03, 0.9, 1.0), None, "none"),                    # 3 of 100 false alarms: the upper bound is above 5 %
])
def test_preferred_instrument_rule(det, tpl, expected):
    rows = check_rows(det, tpl)
    assert ins.preferred_instrument(rows, "badnets1") == expected
    assert ins.preferred_instrument(pd.DataFrame(rows), "badnets1") == expected
    v = ins.check_verdicts(pd.DataFrame(rows)).set_index("instrument")
    assert (v["preferred"] == expected).all()
    assert all(bool(r) != bool(p) for r, p in zip(v["reason"], v["passes"]))
    with pytest.raises(ConfigError, match="contrast"):
        ins.preferred_instrument(rows, "badnets1", contrast=0.25)


def test_planted_figure_and_glue_from_hand_made_tables():
    check = pd.DataFrame(check_rows((0.0, 0.3, 1.0), (0.0, 0.95, 1.0)))
    assert isinstance(ins.planted_figure(check), Figure)
    assert isinstance(ins.planted_figure(check.iloc[:0]), Figure)
    atab = pd.DataFrame([{"cell": "badnets1 p=5%", "attack": "badnets1", "control": False, "detector": "badnets1",
                          "set": "target", "guidance": 1.0, **ins.agreement_row([1, 0, 0, 1], [1, 1, 1, 0])}])
    leak = pd.DataFrame([{"cell": c, "attack": a, "control": a == "clean", "detector": "badnets1",
                          "instrument": "template", "leak": x, "leak_lo": 0.0, "leak_hi": 0.3, "vs_clean": x - 0.01,
                          "vs_clean_lo": -0.1, "vs_clean_hi": 0.2} for c, a, x in
                         (("clean", "clean", 0.01), ("badnets1 p=5%", "badnets1", 0.16))])
    g = ins.truth_glue_values(atab, check, leak)
    assert all(k.startswith("nb04_truth_") for k in g)
    assert g["nb04_truth_top_det_only"] == 1 and g["nb04_truth_top_tpl_only"] == 2
    assert g["nb04_truth_check_tpl"] == pytest.approx(0.95) and "badnets1: template" in g["nb04_truth_preferred"]
    assert "16.0%" in g["nb04_truth_leak_sentence"] and "1.0%" in g["nb04_truth_leak_sentence"]


TINY = {
    "dataset": {"n_per_class": 8, "n_test_per_class": 4},
    "finetune": {"steps": 1, "checkpoint_every": 1},
    "sampling": {"steps": 2, "guidance": [1, 3], "n_target": 6, "n_all": 10, "batch_size": 8},
    "judges": {"epochs": 1},
    "ratios": [0.2],
    "controls": ["clean"],
}


def test_trigger_truth_on_a_tiny_study(tmp_path):
    from bibad_utils.stages import Cell, Study

    study = Study("smoke", {**TINY, "run_dir": str(tmp_path)}, progress=False)
    cell = Cell("badnets1", 0.2)
    atab = ins.agreement_table(study)
    # clean and the grid cell, one detector each, 2 target sets and the all-class set; both also have an
    # all-class set at castle_guidance's w = 5 (the clean DM's checks chapter 04's content judge there)
    assert len(atab) == 2 * 3 + 2 and set(atab["set"]) == {"target", "all"}
    assert (atab["n_both"] + atab["n_detector_only"] + atab["n_template_only"] + atab["n_neither"] == atab["n"]).all()
    gdf = ins.g_table(study)
    r = atab[(atab["cell"] == cell.name) & (atab["set"] == "target") & (atab["guidance"] == 3.0)].iloc[0]
    g = gdf[(gdf["cell"] == cell.name) & (gdf["guidance"] == 3.0)].iloc[0]
    assert r["det_k"] == g["n_G1"] + g["n_G2"] and r["tpl_k"] == g["tpl_n_trig"]
    assert r["agreement"] == pytest.approx(g["agreement"])
    d = ins.instrument_decisions(study, cell, guidance=3.0)
    assert d["detector"].shape == d["template"].shape == d["match"].shape == (6,)
    with pytest.raises(ConfigError, match="detector"):
        ins.instrument_decisions(study, Cell("clean"))
    by = ins.g_rows_by_instrument(study)
    assert set(by["instrument"]) == {"detector", "template"} and len(by) == 2 * len(gdf)
    t = by[(by["instrument"] == "template") & (by["cell"] == cell.name) & (by["guidance"] == 3.0)].iloc[0]
    assert t["n_G1"] + t["n_G2"] == r["tpl_k"]

    check = ins.planted_check(study, contrasts=(1.0, 0.5))
    assert len(check) == 2 * 3 and set(check["contrast"]) == {0.0, 0.5, 1.0}
    n_planted = len(study.store.list(ins.PLANTED_STAGE))
    assert ins.planted_check(study, contrasts=(1.0, 0.5)).equals(check)  # cached, deterministic
    assert len(study.store.list(ins.PLANTED_STAGE)) == n_planted == 1
    assert ins.preferred_instrument(check, "badnets1") in ("detector", "template", "both", "none")

    leak = ins.leak_table(study)
    n_other = int((study.generations(cell)[("all", 1.0)].labels != study.target).sum())
    assert len(leak) == 2 * 2 and (leak["n"] == n_other).all()
    assert leak[leak["attack"] == "clean"]["vs_clean"].isna().all()
    assert leak[leak["attack"] == "badnets1"]["vs_clean"].notna().all()
    assert isinstance(ins.disputed_figure(study, atab, n=2), Figure)
    glue = ins.truth_glue_values(atab, check, leak)
    assert isinstance(glue["nb04_truth_leak_sentence"], str)
