"""Claim rows of stage 04 with computed verdicts (Trojan horse, Insight 1 per p, Insight 2 over every p, the
controls, image quality), their display table and the glued values of the chapter."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import paper, verdicts
from bibad_utils.experiments.insights.judging import generated_judge_table, judge_table, template_table
from bibad_utils.experiments.insights.readings import STAGE, attack_claims, combine_readings
from bibad_utils.experiments.insights.trigger_truth import g_rows_by_instrument, planted_check, preferred_instrument
from bibad_utils.report import claim_row


def control_verdict(r_gen_lo: float, fpr_hi: float, poisoned_lo: float | None) -> str:
    """Verdict of "a control (no trigger in training) generates no trigger".

    Reproduced when the control's trigger ratio is consistent with the instrument's false alarms on real
    clean images (its lower bound ``r_gen_lo`` at most the FPR's upper bound ``fpr_hi``); partly when it
    is above them but still below the poisoned model's lower bound ``poisoned_lo`` under the same
    instrument (None: no poisoned reference); not reproduced otherwise.
    """
    if r_gen_lo <= fpr_hi:
        return "reproduced"
    return "partly" if poisoned_lo is not None and r_gen_lo < poisoned_lo else "not reproduced"


def template_checks(tpl, poisoned) -> list[verdicts.Check]:
    """What a control's instrument, the training-free trigger template, must pass before its reading of
    a control counts: it exists for the trigger, it passes its own check on real images (``tpl``, a row
    of :func:`template_table`), and it sees the trigger in the generations of the poisoned DM at the
    attack's largest p (``poisoned``, that DM's g_table row; skipped when None), since its silence on a
    control would otherwise show nothing."""
    if tpl is None or not bool(tpl["has_template"]):
        return [verdicts.Check(False, "no training-free instrument for this trigger"
                                      + (f" ({tpl['reason']})" if tpl is not None else ""))]
    checks = [verdicts.Check(bool(tpl["passes"]),
                             f"the trigger template fails its own check on real images: {tpl['reason']}"
                             if not bool(tpl["passes"]) else "the trigger template passes its check on real images")]
    if poisoned is not None:
        sees = bool(poisoned["tpl_r_gen_lo"] > tpl["fpr_hi"])
        checks.append(verdicts.Check(sees, (
            f"the trigger template {'sees' if sees else 'does not see'} the trigger in the poisoned DM's generations"
            f" ({poisoned['cell']}: {paper.pct(poisoned['tpl_r_gen'])}, its false alarms <= {paper.pct(tpl['fpr_hi'])})"
            + ("" if sees else ", so its silence on this control shows nothing"))))
    return checks


def control_row(c, jdf: pd.DataFrame, tpl, poisoned, w: float) -> dict:
    """The claim row of one control (a row of :func:`g_table` with its template columns), judged by the
    training-free trigger template, not by the detector: the detector's false alarms are calibrated on the
    clean DM's generations (:func:`generated_judge_table`), so they cannot also show that this DM generates
    no trigger. ``tpl``: the attack's row of :func:`template_table` (None: no row); ``poisoned``: the
    g_table row of the attack's DM at its largest p (None: no poisoned DM).

    Verdict: "not tested" when the attack has no template, when the template fails its own check on real
    images, or when it does not see the trigger in the poisoned DM's generations either (its silence on
    the control would then show nothing); otherwise :func:`control_verdict` on the template's readings."""
    kind = c["detector"]
    det = jdf[jdf["judge"] == f"{kind} detector"]
    det_fpr_hi = float(det["fpr_hi"].iloc[0]) if len(det) else math.nan
    claim = ("Clean control: a DM trained without poison generates no trigger" if c["attack"] == "clean" else
             "Relabel-only control: target labels without a trigger plant no trigger")
    detector_note = (f"the {kind} detector flags {paper.pct(c['r_gen'])} [{paper.pct(c['r_gen_lo'])}, "
                     f"{paper.pct(c['r_gen_hi'])}] of them (false alarms on real clean images <= "
                     f"{paper.pct(det_fpr_hi)}); it is not the evidence here, since a clean DM's generations "
                     "calibrate it")
    ours, lo, hi = c["tpl_r_gen"], c["tpl_r_gen_lo"], c["tpl_r_gen_hi"]
    failed = verdicts.first_failed(*template_checks(tpl, poisoned))
    if failed is None:
        verdict = control_verdict(lo, float(tpl["fpr_hi"]), None if poisoned is None else float(poisoned["tpl_r_gen_lo"]))
        note = (f"trigger template: false alarms on real clean images <= {paper.pct(tpl['fpr_hi'])}"
                + ("" if poisoned is None else f"; it reads {paper.pct(poisoned['tpl_r_gen'])} "
                   f"(>= {paper.pct(poisoned['tpl_r_gen_lo'])}) of the poisoned {poisoned['cell']} DM's generations")
                + f"; {detector_note}")
    else:
        if tpl is None or not bool(tpl["has_template"]):
            ours, lo, hi = c["r_gen"], c["r_gen_lo"], c["r_gen_hi"]
        verdict, note = "not tested", f"not tested: {failed.reason}; {detector_note}"
    return claim_row(
        STAGE, claim, setting=f"{c['cell']}, {kind} trigger, w={w:g}",
        key="clean_control" if c["attack"] == "clean" else "relabel_control",
        metric="r_gen read by the training-free trigger template",
        paper="~0 (no trigger in training)" if c["attack"] == "clean" else "",
        ours=ours, lo=lo, hi=hi, verdict=verdict, note=note)


CLEAN_FALSE_ALARM_MAX = 0.10  # above this trigger ratio on the clean DM's generations, a detector is not trusted
# The content judge must read at least this share of a clean DM's all-class generations as their prompt's
# class (by the lower bound of its interval) before a G1 / G2 split (T and not M, T and M) is read.
CONTENT_MIN = 0.5


def clean_detector_check(attack: str, clean_hi: float, instrument: str = "detector") -> verdicts.Check:
    """A trigger reading's check on the clean DM's target-prompt generations: the upper 95 % bound
    ``clean_hi`` of the share it flags must be at most :data:`CLEAN_FALSE_ALARM_MAX`; an instrument (the
    ``detector`` or the ``trigger template``) that fires on the clean DM's generations cannot measure
    amplification (chapter 04's claims, the teaser)."""
    return verdicts.false_alarm_check(
        clean_hi, max_rate=CLEAN_FALSE_ALARM_MAX,
        what=f"share of the clean DM's target-prompt generations the {attack} {instrument} flags")


def untrusted_detectors(gdf: pd.DataFrame, guidance: float) -> list[str]:
    """The trigger kinds whose detector fails :func:`clean_detector_check` on the clean DM's
    target-prompt generations at ``guidance`` (rows of :func:`g_table`); their figures are no evidence."""
    clean = gdf[(gdf["attack"] == "clean") & (gdf["guidance"].astype(float) == float(guidance))]
    return [str(r["detector"]) for _, r in clean.iterrows()
            if not clean_detector_check(str(r["detector"]), float(r["r_gen_hi"])).ok]


def content_check(study, gjdf: pd.DataFrame | None = None, guidance: float | None = None) -> verdicts.Check | None:
    """The content judge's check on generations (:data:`CONTENT_MIN`): the judge that reads M in this chapter
    (:func:`~bibad_utils.experiments.insights.judging.content_choice`) on the clean DM's all-class generations
    at ``guidance`` where the clean DM has such a set (else at ``sampling.guidance_all``), from
    :func:`~bibad_utils.experiments.insights.judging.generated_judge_table` (computed when ``gjdf`` is None or
    was computed at another w; the rows judged "as configured" when it has a ``judges`` column); None without
    a clean model."""
    if gjdf is None or (guidance is not None and len(gjdf) and float(gjdf["guidance"].iloc[0]) != float(guidance)):
        gjdf = generated_judge_table(study, guidance=guidance)
    if "judges" in gjdf.columns:
        gjdf = gjdf[gjdf["judges"] == "as configured"]
    chosen = gjdf[gjdf["judge"].astype(str).str.startswith("content judge: ")]
    row = chosen if len(chosen) else gjdf[gjdf["judge"] == "clean classifier"]
    if row.empty:
        return None
    r = row.iloc[0]
    name = str(r["judge"]).removeprefix("content judge: ")
    return verdicts.baseline_check(float(r["accuracy_lo"]), float(r["accuracy_hi"]), chance=CONTENT_MIN,
                                   what=f"{name}'s accuracy on the clean DM's all-class generations "
                                        f"(w = {float(r['guidance']):g})",
                                   floor_name="the share a content judge needs")


def insight_claims(study, gdf: pd.DataFrame, jdf: pd.DataFrame | None = None,
                   qdf: pd.DataFrame | None = None, guidance: float | None = None,
                   spread: pd.DataFrame | None = None, gjdf: pd.DataFrame | None = None,
                   tdf: pd.DataFrame | None = None, truth: pd.DataFrame | None = None,
                   planted: pd.DataFrame | None = None) -> list[dict]:
    """Claim rows (:func:`bibad_utils.report.claim_row`) of this stage, at ``guidance`` (default the
    profile's first): the Trojan horse (G1 above the clean model's level at the largest p, per attack),
    Insight 1 per (attack, p), Insight 2 per attack (needs two values of p, else "not tested"), the
    controls (no trigger without a trigger in training, per detector), and image quality (informational).
    ``gdf``: :func:`g_table`; ``jdf``: :func:`judge_table` (default: computed); ``qdf``: the first element
    of :func:`quality_table` (default: no quality rows); ``spread``: :func:`seed_spread`, whose interval
    across training runs replaces the sampling interval of the Trojan-horse and Insight-1 rows of the cells
    trained more than once (default: none); ``gjdf``: the judges on generations (default: computed), whose
    content check (:func:`content_check`) the Trojan-horse and phase-transition rows need besides the
    detector's (they split triggered generations by the classifier's reading); ``tdf``: the trigger templates
    (:func:`template_table`, default: computed), which judge the controls (:func:`control_row`) and give the
    grid's claims their second reading; ``truth``: the G rows under each instrument
    (:func:`~bibad_utils.experiments.insights.trigger_truth.g_rows_by_instrument`, default: computed) and
    ``planted``: the planted faint-trigger check (:func:`~bibad_utils.experiments.insights.trigger_truth.planted_check`,
    default: computed), which says which reading the grid's claims rest on (:mod:`.readings`)."""
    w = study.first_guidance if guidance is None else float(guidance)
    jdf = judge_table(study) if jdf is None else jdf
    at_w = gdf[gdf["guidance"] == w]
    grid = at_w[~at_w["control"].astype(bool)]
    controls = at_w[at_w["control"].astype(bool)]
    rows: list[dict] = []
    content = content_check(study, gjdf, guidance=w)
    tdf = template_table(study) if tdf is None else tdf
    truth = g_rows_by_instrument(study) if truth is None else truth
    exposure = {c.name: study.exposure(c) for c in study.cells() if c.trigger_kind}
    planted = planted_check(study) if planted is None else planted
    tpl_at_w = truth[(truth["instrument"] == "template") & (truth["guidance"] == w)] if len(truth) else truth
    for attack in pd.unique(grid["attack"]):
        by_reading = {}
        for reading, table in (("detector", at_w), ("template", tpl_at_w)):
            sel = table[(table["attack"] == attack) & (table["detector"] == attack)] if len(table) else table
            passes = tdf[tdf["kind"] == attack]["passes"]
            if reading == "template" and (not len(sel) or not (len(passes) and bool(passes.iloc[0]))):
                continue  # no template, or one that fails its own check on real images
            a = sel.sort_values("ratio")
            clean = (table[(table["attack"] == "clean") & (table["detector"] == attack)] if len(table) else table)
            clean_row = clean.iloc[0] if len(clean) else None
            # the baseline of every claim: the reading must not fire on the clean DM's generations
            check = clean_detector_check(attack, float(clean_row["r_gen_hi"]) if clean_row is not None else 0.0,
                                         instrument="trigger template" if reading == "template" else "detector")
            by_reading[reading] = attack_claims(attack, a, clean_row, w, check=check, content=content,
                                                spread=spread if reading == "detector" else None, reading=reading,
                                                exposure=exposure)
        rows += combine_readings(by_reading, preferred_instrument(planted, attack) if len(planted) else "none")
    for _, c in controls.iterrows():
        t = tdf[tdf["kind"] == c["detector"]]
        pois = grid[grid["attack"] == c["detector"]].sort_values("ratio")
        rows.append(control_row(c, jdf, t.iloc[0] if len(t) else None, pois.iloc[-1] if len(pois) else None, w))
    if qdf is not None:
        clean = qdf[qdf["attack"] == "clean"]
        floor = qdf[qdf["attack"] == "real"]
        for _, q in qdf[~qdf["attack"].isin(["real", "clean", "relabel"])].iterrows():
            extra = (f"clean DM: {clean['fd_clf'].iloc[0]:.3g}; " if len(clean) else "") + (
                f"real training images: {floor['fd_clf'].iloc[0]:.3g}" if len(floor) else "")
            rows.append(claim_row(
                STAGE, "Image quality of the poisoned DM (informational, no paper number here)",
                setting=q["cell"], metric="FD-clf of all-class generations to real test images (lower: closer)",
                ours=q["fd_clf"], verdict="not tested", kind="no paper number", note=extra))
    return rows


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """The claim rows as a display table: claim, setting, paper, ours with its interval (text), verdict,
    note."""
    def ours(r):
        if not np.isfinite(r["ours"]):
            return "n/a"
        if np.isfinite(r["ours_lo"]):
            return f"{r['ours']:.3f} [{r['ours_lo']:.3f}, {r['ours_hi']:.3f}]"
        return f"{r['ours']:.3g}"
    return pd.DataFrame([{"claim": r["claim"], "setting": r["setting"], "paper": r["paper"], "ours": ours(r),
                          "verdict": r["verdict"], "note": r["note"]} for r in rows])


def verdict_summary(rows: list[dict], keys) -> str:
    """A phrase counting the verdicts of the rows of claim key(s) ``keys`` (:func:`verdicts.rows_of`), e.g.
    "6 settings: 4 reproduced, 1 partly, 1 not reproduced"."""
    sel = [r["verdict"] for r in verdicts.rows_of(rows, keys)]
    if not sel:
        return "no setting in this profile"
    return f"{len(sel)} setting{'s' if len(sel) > 1 else ''}: " + verdicts.counts_text(sel, always=("reproduced",))


def shortfall_sentence(rows: list[dict]) -> str:
    """A sentence saying, from the computed verdicts, whether Insights 1 and 2 show in this run."""
    missing = []
    for key, name in (("amplification", "trigger amplification"), ("phase_transition", "the phase transition")):
        sel = [r["verdict"] for r in verdicts.rows_of(rows, key)]
        if not sel or all(v == "not tested" for v in sel):
            missing.append(f"{name} is not tested in this profile")
        elif any(v != "reproduced" for v in sel if v != "not tested"):
            missing.append(f"{name} is not reproduced in every setting ({verdict_summary(rows, key)})")
    if not missing:
        return "Both insights are reproduced in every setting of this run."
    return "In this run, " + "; ".join(missing) + "."


def glue_values(study, gdf: pd.DataFrame, jdf: pd.DataFrame, qdf: pd.DataFrame, rows: list[dict],
                gjdf: pd.DataFrame | None = None, tdf: pd.DataFrame | None = None) -> dict:
    """Numbers and computed sentences the notebook's text quotes, keyed ``nb04_*``: the judges, the first
    attack at its largest p (``attack0``, ``pmax``), the clean control, and verdict summaries."""
    w = study.first_guidance
    attack0 = study.cfg.attacks[0]
    at_w = gdf[gdf["guidance"] == w]
    top = at_w[at_w["attack"] == attack0].sort_values("ratio").iloc[-1]
    clean = at_w[(at_w["attack"] == "clean") & (at_w["detector"] == attack0)]
    det = jdf[jdf["judge"] == f"{attack0} detector"].iloc[0]
    clf = jdf[jdf["kind"] == "classifier"].iloc[0]
    out = {
        "nb04_w": w, "nb04_attack0": attack0, "nb04_pmax": float(top["ratio"]),
        "nb04_clf_acc": float(clf["accuracy"]), "nb04_det_acc": float(det["accuracy"]),
        "nb04_det_fpr": float(det["fpr"]), "nb04_det_fnr": float(det["fnr"]),
        "nb04_g1_top": float(top["G1"]), "nb04_g2_top": float(top["G2"]), "nb04_rgen_top": float(top["r_gen"]),
        "nb04_rtrain_top": float(top["r_train"]), "nb04_amp_top": float(top["amplification"]),
        "nb04_rgen_clean": float(clean["r_gen"].iloc[0]) if len(clean) else math.nan,
        "nb04_tpl_rgen_clean": float(clean["tpl_r_gen"].iloc[0]) if len(clean) else math.nan,
        "nb04_tpl_rgen_top": float(top["tpl_r_gen"]),
        "nb04_trojan_summary": verdict_summary(rows, "trojan_g1"),
        "nb04_amp_summary": verdict_summary(rows, "amplification"),
        "nb04_phase_summary": verdict_summary(rows, "phase_transition"),
        "nb04_control_summary": verdict_summary(rows, "clean_control"),
        "nb04_relabel_summary": verdict_summary(rows, "relabel_control"),
        "nb04_shortfall": shortfall_sentence(rows),
        # the paper's own G2 shares (ImageNette, random poisoning), which the phase-transition rule must pass
        "nb04_paper_share_p5": paper.g2_share(0.05), "nb04_paper_share_p10": paper.g2_share(0.10),
        "nb04_paper_share_drop": paper.g2_share(0.05) - paper.g2_share(0.10),
    }
    # judges on generations (NaN when the profile has no clean model or no ablation block)
    out.update({k: math.nan for k in ("nb04_gen_n", "nb04_gen_clf_acc", "nb04_gen_det_fpr", "nb04_gen_det_tpr",
                                      "nb04_gen_worst_fpr", "nb04_gen_worst_tpr", "nb04_plain_clf_acc",
                                      "nb04_plain_worst_fpr")})
    if gjdf is not None and len(gjdf):
        mine = gjdf[gjdf["judges"] == "as configured"] if "judges" in gjdf.columns else gjdf
        gclf = mine[mine["judge"] == "clean classifier"].iloc[0]
        gdet = mine[mine["judge"] == f"{attack0} detector"].iloc[0]
        out.update({"nb04_gen_n": int(gclf["n"]), "nb04_gen_clf_acc": float(gclf["accuracy"]),
                    "nb04_gen_det_fpr": float(gdet["fpr"]), "nb04_gen_det_tpr": float(gdet["tpr"]),
                    "nb04_gen_worst_fpr": float(mine["fpr"].max()), "nb04_gen_worst_tpr": float(mine["tpr"].min())})
        if "judges" in gjdf.columns and (gjdf["judges"] != "as configured").any():
            plain = gjdf[gjdf["judges"] != "as configured"]
            out.update({"nb04_plain_clf_acc": float(plain.loc[plain["judge"] == "clean classifier", "accuracy"].iloc[0]),
                        "nb04_plain_worst_fpr": float(plain["fpr"].max())})
    out["nb04_plain_sentence"] = plain_sentence(out["nb04_plain_clf_acc"], out["nb04_plain_worst_fpr"])
    out["nb04_tpl_sentence"] = template_sentence(tdf if tdf is not None else template_table(study))
    if qdf is not None and len(qdf):
        clean_q = qdf[qdf["attack"] == "clean"]
        out["nb04_fd_clean"] = float(clean_q["fd_clf"].iloc[0]) if len(clean_q) else math.nan
        out["nb04_fd_real"] = float(qdf[qdf["attack"] == "real"]["fd_clf"].iloc[0])
    return out


def template_sentence(tdf: pd.DataFrame) -> str:
    """A sentence saying, per attack, whether its trigger template passes its check on real images (with
    the rates), fails it, or does not exist."""
    parts = []
    for _, t in tdf.iterrows():
        if not bool(t["has_template"]):
            parts.append(f"{t['kind']} has no template ({t['reason']}), so its controls are not tested")
        elif bool(t["passes"]):
            parts.append(f"the {t['kind']} template finds {paper.pct(t['tpr'])} of the triggered ones "
                         f"and fires on {paper.pct(t['fpr'])} of the clean ones (AUROC {t['auroc']:.3f}): it passes")
        else:
            parts.append(f"the {t['kind']} template fails its check ({t['reason']}), so its controls are not tested")
    return ("On real held-out images given the judges' grain, blur and colour cast, " + "; ".join(parts) + ".") \
        if parts else ""


def plain_sentence(clf_acc: float, worst_fpr: float) -> str:
    """What the second block of the judges-on-generations table shows: the same judges trained without
    photometric augmentation (NaN: the profile did not train them, ``judges.ablation: false``)."""
    if not (math.isfinite(clf_acc) and math.isfinite(worst_fpr)):
        return ("This profile does not train the judges a second time without photometric augmentation "
                "(its judges.ablation is false: three more judges, about 195 s of one CPU core in a first run); "
                "the mnist and full profiles do, and BENCHMARKS.md (\"Judges on generated images\") records that "
                "comparison measured on this profile's data.")
    return (f"The second block of the table is the same check for judges trained the same way but without "
            f"photometric augmentation: their classifier names the prompt's class for {clf_acc:.1%} of the clean "
            f"generations, and their worst detector flags {worst_fpr:.1%} of clean generations as triggered. Every "
            f"G ratio read through such judges would measure the judges, not the DM.")
