"""Claim rows of stage 05 (:mod:`bibad_utils.report`) with computed verdicts, and the numbers the notebook
quotes.

The verdict rules are the shared ones of :mod:`bibad_utils.verdicts`, the paper's numbers and claim keys
those of :mod:`bibad_utils.paper`:

- a comparison is stated only when its baseline passes its own check, else "not tested" with the reason.
  For detection the baseline is the detector itself: its AUROC interval on the known-answer set (clean
  test images vs the same images with the trigger pasted) and on the poisoned training set must lie above
  chance. For the diffusion classifier it is the backdoored classifier, whose ASR interval must lie above
  one half (a backdoor to resist);
- a test whose minimum detectable effect exceeds the paper's effect says "underpowered"
  (:func:`bibad_utils.verdicts.compare`); "comparable TA" is a non-inferiority test
  (:func:`bibad_utils.verdicts.non_inferior`), "underpowered" when its interval is wider than the margin.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import paper as P
from bibad_utils.metrics import newcombe_difference
from bibad_utils import verdicts as V
from bibad_utils.experiments.castle_walls.config import (DC_TA_MARGIN, GEN_FLAG_MAX, MIN_CLASS_COUNT, SOURCES,
                                                         STAGE, TA_COST_MAX, classifier_settings, detector_key,
                                                         detectors)
from bibad_utils.experiments.castle_walls.detection import detection_differences, victim_logit_profile
from bibad_utils.experiments.castle_walls.diffusion_classifier import dc_cells, diffusion_classifier_table
from bibad_utils.experiments.castle_walls.tables import example_cell
from bibad_utils.experiments.castle_walls.train_on_generations import train_on_generations_table
from bibad_utils.report import claim_row

# The detectors the paper's claim is about (with their claim keys); others (the project's FCT variant) are
# shown, not claimed.
CLAIM_DETECTORS = {"CD": "detection_cd", "STRIP": "detection_strip", "FCT": "detection_fct"}
# The backdoored classifier's ASR must exceed this (by its interval) for "the DC resists" to be a test.
BACKDOOR_ASR_MIN = 0.5


def _detection_judgement(r, effect, n_triggered: int, diff: float, lo: float, hi: float,
                         auroc_gen: float) -> tuple[str, str]:
    """Verdict and note of one (cell, detector) row under one reading of the generations' truth
    (``n_triggered`` triggered of ``r.n``; ``diff`` with its interval; ``auroc_gen`` on generations)."""
    if r.clean_dm_flagged_lo > GEN_FLAG_MAX:
        return "not tested", (f"no truth on generations: the trigger detector flags {r.clean_dm_flagged:.0%} of the "
                              f"clean DM's generations")
    if min(r.n_poisoned_train, r.n_train - r.n_poisoned_train, n_triggered,
           r.n - n_triggered) < MIN_CLASS_COUNT:
        return "not tested", (f"too few of one kind: {r.n_poisoned_train} poisoned (training) and {n_triggered} "
                              f"triggered (generated) of {r.n} each; at least {MIN_CLASS_COUNT} of each kind needed")
    if math.isnan(diff):
        return "not tested", (f"AUROC undefined on the generations ({n_triggered} of {r.n} triggered)"
                              if n_triggered in (0, r.n) else "AUROC undefined on the training subset")
    failed = V.first_failed(*[
        V.baseline_check(getattr(r, f"auroc_{name}_lo"), getattr(r, f"auroc_{name}_hi"),
                         what=f"{r.detector}'s {what} AUROC")
        for name, what in (("known", "known-answer"), ("train", "training-set"))])
    j = V.compare(diff, lo, hi, reference=0.0, direction="greater", paper_effect=effect, baseline=failed)
    return j.verdict, "; ".join(filter(None, [f"AUROC {r.auroc_train:.3f} (training) -> {auroc_gen:.3f} (generations)",
                                              j.reason]))


def detection_claims(diffs: pd.DataFrame, exposure: dict | None = None) -> list[dict]:
    """One claim row per (cell, detector) of :func:`detection_differences`: AUROC higher on generations.
    Not tested where the generated truth is unreliable, a set holds too few of one kind, or the detector
    fails its own check (known-answer or training-set AUROC interval not above chance). Only the paper's
    detectors (:data:`CLAIM_DETECTORS`) make claims; the project's FCT variant is shown, not counted.

    The generations' truth has two readings, the trigger detector's and the template's (columns
    ``*_tpl``); the row rests on the one that passes the planted faint-trigger check (``reading``), the
    other in its note; where neither passes and their verdicts differ, the row is "not tested"."""
    rows = []
    for r in diffs.itertuples():
        if r.detector not in CLAIM_DETECTORS:
            continue
        key = CLAIM_DETECTORS[r.detector]
        paper = P.setting_text(key, attack=r.attack, p=r.p)
        effect = (r.paper_gen - r.paper_train) if not math.isnan(r.paper_train) else None
        readings = {"detector": (_detection_judgement(r, effect, r.n_triggered_gen, r.diff, r.diff_lo, r.diff_hi,
                                                      r.auroc_gen), (r.diff, r.diff_lo, r.diff_hi))}
        if not math.isnan(r.n_triggered_gen_tpl):
            readings["template"] = (_detection_judgement(r, effect, int(r.n_triggered_gen_tpl), r.diff_tpl,
                                                         r.diff_tpl_lo, r.diff_tpl_hi, r.auroc_gen_tpl),
                                    (r.diff_tpl, r.diff_tpl_lo, r.diff_tpl_hi))
        main = "template" if r.reading == "template" and "template" in readings else "detector"
        (verdict, note), (ours, lo, hi) = readings[main]
        others = [f"under the {k}'s truth: {v[1][0]:+.3f} [{v[1][1]:+.3f}, {v[1][2]:+.3f}], {v[0][0]}"
                  for k, v in readings.items() if k != main]
        if r.reading == "none" and len({v[0][0] for v in readings.values()}) > 1:
            verdict = "not tested"
            note = "not tested: the two readings of the generations' truth disagree and neither passes the planted check; " + note
        elif r.reading == "none":
            note = "neither truth reading passes the planted faint-trigger check (they agree); " + note
        else:
            note = f"truth on generations read by the {main}; " + note
        note = "; ".join(filter(None, [note, *others, "" if r.detector == "CD" else "the slides give CD only"]))
        rows.append(claim_row(STAGE, "Detection is easier on generations",
                              setting=f"{r.detector}, {r.cell}, w={r.guidance:g}",
                              metric="AUROC(generated) - AUROC(training)", paper=paper, ours=ours,
                              lo=lo, hi=hi, verdict=verdict, note=note, key=key,
                              exposure=(exposure or {}).get(r.cell, math.nan)))
    return rows


def _paper_drop(real, gen) -> float | None:
    """The paper's ASR drop ``real - generated`` (``paper_ASR`` columns), ImageNette's number first, else
    Caltech15's; None where the paper gives none."""
    for col in ("paper_ASR", "paper_ASR_caltech15"):
        if not (math.isnan(real[col]) or math.isnan(gen[col])):
            return float(real[col]) - float(gen[col])
    return None


def smallest_paper_asr_drop() -> float:
    """The smallest ASR drop (training set -> generations) the paper reports anywhere in its train-on-
    generations table: what "far lower ASR" means at least, used where it gives no number at a setting."""
    return min(v["ASR"][0] - v["ASR"][1] for t in P.TRAIN_ON_GENERATIONS.values() for v in t.values())


def train_on_generations_claims(tog: pd.DataFrame, exposure: dict | None = None) -> list[dict]:
    """Per cell: ASR lower when trained on generations (vs the same-size real subset), at a TA cost of at
    most :data:`TA_COST_MAX` (the paper's own largest reported drop).

    Preconditions: a backdoor to defuse: the classifier trained on the real subset must have an ASR above
    :data:`BACKDOOR_ASR_MIN` by its interval, else both rows are "not tested". The ASR row uses the
    magnitude rule (:func:`bibad_utils.verdicts.compare` with the paper's drop at that setting, or, where
    it gives none, the smallest drop it reports anywhere, :func:`smallest_paper_asr_drop`: "far lower"
    means at least that): a drop whose interval falls short of it is "partly". The TA row qualifies the ASR row: it is
    "not tested" when the ASR row is "not tested" or "not reproduced" (no defence whose cost to measure).
    """
    rows = []
    for (cell, _), g in tog.groupby(["cell", "guidance"], sort=False):
        real = g[g.source == SOURCES[1]].iloc[0]
        gen = g[g.source == "generated"].iloc[0]
        setting = f"{cell}, w={gen.guidance:g}, {int(real.n_train)} images each"
        paper_asr = paper_ta = ""
        if not math.isnan(gen.paper_ASR):
            paper_asr = f"ASR {real.paper_ASR:.2%} -> {gen.paper_ASR:.2%} (ImageNette)"
            paper_ta = f"TA {real.paper_TA:.2%} -> {gen.paper_TA:.2%} (ImageNette)"
        if not math.isnan(gen.paper_ASR_caltech15):
            sep = "; " if paper_asr else ""
            paper_asr += f"{sep}ASR {real.paper_ASR_caltech15:.2%} -> {gen.paper_ASR_caltech15:.2%} (Caltech15)"
            paper_ta += f"{sep}TA {real.paper_TA_caltech15:.2%} -> {gen.paper_TA_caltech15:.2%} (Caltech15)"
        backdoor = V.baseline_check(real.ASR_lo, chance=BACKDOOR_ASR_MIN,
                                    what=f"real-subset classifier's ASR ({real.ASR:.1%}; a backdoor to defuse)")
        d, lo, hi = newcombe_difference(real.k_asr, real.n_asr, gen.k_asr, gen.n_asr)
        effect = _paper_drop(real, gen)
        proxy = effect is None
        effect = smallest_paper_asr_drop() if proxy else effect
        j = V.compare(d, lo, hi, reference=0.0, direction="greater", baseline=backdoor, paper_effect=effect)
        if proxy and j.verdict in ("reproduced", "partly") and j.reason:
            j = j._replace(reason=j.reason + " (the paper's smallest reported drop: it gives no number at this setting)")
        d_ta, lo_ta, hi_ta = newcombe_difference(real.k_ta, real.n_ta, gen.k_ta, gen.n_ta)
        jt = V.compare(d_ta, lo_ta, hi_ta, reference=TA_COST_MAX, direction="less")
        if j.verdict in ("not tested", "not reproduced"):
            jt = V.Judgement("not tested", "no backdoor to defuse" if j.verdict == "not tested" else
                             "the ASR is not lowered: there is no defence whose cost to measure")
        verdict, why = V.capped_verdict(j.verdict, jt.verdict)
        rows.append(claim_row(STAGE, "Training on generations lowers ASR", setting=setting,
                              metric="ASR(real subset) - ASR(generated)", paper=paper_asr, ours=d, lo=lo, hi=hi,
                              verdict=verdict, key="train_on_generations_asr", exposure=(exposure or {}).get(cell, math.nan),
                              note="; ".join(filter(None, [f"ASR {real.ASR:.1%} -> {gen.ASR:.1%}", j.reason, why]))))
        rows.append(claim_row(STAGE, f"... at a TA cost of a few points (at most {TA_COST_MAX:.1%}, the paper's "
                              "largest reported drop)", setting=setting,
                              metric="TA(real subset) - TA(generated)", paper=paper_ta, ours=d_ta, lo=lo_ta,
                              hi=hi_ta, verdict=jt.verdict, key="train_on_generations_ta",
                              exposure=(exposure or {}).get(cell, math.nan),
                              note="; ".join(filter(None, [f"TA {real.TA:.1%} -> {gen.TA:.1%}", jt.reason]))))
    return rows


def diffusion_classifier_claims(dc: pd.DataFrame, exposure: dict | None = None) -> list[dict]:
    """Per cell: the diffusion classifier (p_filter 0) has a lower ASR than the backdoored classifier
    (tested only where that classifier has a backdoor: ASR interval above :data:`BACKDOOR_ASR_MIN`;
    "underpowered" where the test cannot see the paper's effect at that p) at a TA within
    :data:`DC_TA_MARGIN` of it (non-inferiority); the largest p_filter lowers the ASR further."""
    rows = []
    for cell, g in dc.groupby("cell", sort=False):
        clf = g[g.method != "diffusion classifier"].iloc[0]
        dcs = g[g.method == "diffusion classifier"].sort_values("p_filter")
        d0 = dcs.iloc[0]
        p = float(clf.p)
        setting = f"{cell}, p_filter {d0.p_filter:g}"
        r18, dc0 = P.resnet18(p, "ASR"), P.diffusion_classifier(p, "ASR", float(d0.p_filter))
        backdoor = V.baseline_check(clf.ASR_lo, clf.ASR_hi, chance=BACKDOOR_ASR_MIN,
                                    what="backdoored classifier's ASR")
        d, lo, hi = newcombe_difference(clf.k_asr, clf.n_asr, d0.k_asr, d0.n_asr)
        j = V.compare(d, lo, hi, reference=0.0, direction="greater", baseline=backdoor,
                      paper_effect=None if r18 is None or dc0 is None else r18 - dc0)
        d_ta, lo_ta, hi_ta = newcombe_difference(d0.k_ta, d0.n_ta, clf.k_ta, clf.n_ta)
        jt = V.non_inferior(d_ta, lo_ta, hi_ta, margin=DC_TA_MARGIN)
        verdict, why = V.capped_verdict(j.verdict, jt.verdict)
        rows.append(claim_row(STAGE, "The diffusion classifier resists the backdoor", setting=setting,
                              metric=f"ASR({clf.method}) - ASR(DC)",
                              paper=P.setting_text("diffusion_classifier_asr", p=p), ours=d, lo=lo, hi=hi,
                              verdict=verdict, key="diffusion_classifier_asr", exposure=(exposure or {}).get(cell, math.nan),
                              note="; ".join(filter(None, [f"ASR {clf.ASR:.1%} -> {d0.ASR:.1%}", j.reason, why]))))
        rows.append(claim_row(STAGE, f"... with a comparable TA (at most {DC_TA_MARGIN:.0%} lower)", setting=setting,
                              metric=f"TA(DC) - TA({clf.method})", paper=P.setting_text("diffusion_classifier_ta", p=p),
                              ours=d_ta, lo=lo_ta, hi=hi_ta, verdict=jt.verdict, key="diffusion_classifier_ta",
                              exposure=(exposure or {}).get(cell, math.nan),
                              note="; ".join(filter(None, [f"TA {clf.TA:.1%} ({clf.method}) vs {d0.TA:.1%} (DC)",
                                                           jt.reason]))))
        if len(dcs) > 1:
            dm = dcs.iloc[-1]
            a, b = P.diffusion_classifier(p, "ASR", float(d0.p_filter)), P.diffusion_classifier(p, "ASR", float(dm.p_filter))
            d, lo, hi = newcombe_difference(d0.k_asr, d0.n_asr, dm.k_asr, dm.n_asr)
            lo_ta, hi_ta = newcombe_difference(dm.k_ta, dm.n_ta, clf.k_ta, clf.n_ta)[1:]
            jf = V.compare(d, lo, hi, reference=0.0, direction="greater",
                           paper_effect=None if a is None or b is None else a - b)
            verdict, why = V.capped_verdict(jf.verdict, V.non_inferior(dm.TA - clf.TA, lo_ta, hi_ta,
                                                                     margin=DC_TA_MARGIN).verdict)
            rows.append(claim_row(STAGE, "Filtering the largest errors lowers the DC's ASR further",
                                  setting=f"{cell}, p_filter {d0.p_filter:g} -> {dm.p_filter:g}",
                                  metric="ASR(DC, p_filter min) - ASR(DC, p_filter max)",
                                  paper=P.setting_text("p_filter", p=p) if dm.p_filter == 0.1 else "", ours=d,
                                  lo=lo, hi=hi, verdict=verdict, key="p_filter", exposure=(exposure or {}).get(cell, math.nan),
                                  note="; ".join(filter(None, [f"ASR {d0.ASR:.1%} -> {dm.ASR:.1%}; TA {d0.TA:.1%} "
                                                               f"-> {dm.TA:.1%}", jf.reason, why]))))
    return rows


def castle_claims(study, diffs: pd.DataFrame | None = None, tog: pd.DataFrame | None = None,
                  dc: pd.DataFrame | None = None) -> list[dict]:
    """All claim rows of the stage (tables computed, or loaded from the cache, when not given): the
    detection and train-on-generations claims at ``guidance_all`` (from ``diffs`` and ``tog``) and at every
    w of :func:`castle_guidances` (computed here), then the diffusion classifier's."""

    diffs = detection_differences(study) if diffs is None else diffs
    tog = train_on_generations_table(study) if tog is None else tog
    dc = diffusion_classifier_table(study) if dc is None else dc
    exposure = {c.name: study.exposure(c) for c in [*study.cells(), *dc_cells(study)] if c.trigger_kind}
    rows = detection_claims(diffs, exposure) + train_on_generations_claims(tog, exposure)
    for w in castle_guidances(study):  # the same claims on the further all-class sets (castle_guidance)
        rows += detection_claims(detection_differences(study, w=w), exposure)
        rows += train_on_generations_claims(train_on_generations_table(study, w=w), exposure)
    return rows + diffusion_classifier_claims(dc, exposure)


def castle_guidances(study) -> list[float]:
    """The further w of the poisoned DMs' all-class sets (``sampling.castle_guidance``) at which the detection
    and train-on-generations claims are judged too (the reference implementation trains on generations at
    w = 2, 5 and 10); empty when the profile sets none."""
    return [float(w) for w in (study.cfg.sampling.castle_guidance or [])]


def castle_summary(study, diffs: pd.DataFrame, tog: pd.DataFrame, dc: pd.DataFrame, claims: list[dict],
                   bench: pd.DataFrame | None = None) -> dict:
    """The numbers and verdict counts the notebook quotes, keyed by glue name (``nb05_...``):
    means over cells (NaN-aware) of AUROCs, TA/ASR per source, DC rates, settings, verdict counts."""
    d = study.cfg.defenses
    out = {"nb05_n_cells": len(study.grid_cells()), "nb05_n_detect": int(diffs["n"].iloc[0]) if len(diffs) else 0,
           "nb05_clf_arch": classifier_settings(study)["arch"], "nb05_guidance_all": study.guidance_all,
           "nb05_castle_guidance": ", ".join(f"{w:g}" for w in castle_guidances(study)) or "none",
           "nb05_dc_levels": d.dc_levels, "nb05_dc_n_images": d.dc_n_images,
           "nb05_n_known": d.n_known,
           "nb05_n_detect_poisoned": "p's share" if d.n_detect_poisoned is None else d.n_detect_poisoned,
           "nb05_cd_logit_reference": "none (logits as they are)" if d.cd["logit_reference"] is None
           else f"{d.cd['logit_reference']:g}",
           "nb05_cd_steps": d.cd["steps"], "nb05_strip_mode": d.strip["mode"],
           "nb05_dc_ratios": ", ".join(f"{r:.0%}" for r in d.dc_ratios) or "none",
           "nb05_dc_adaptive": "none (every class at every level)" if d.dc_adaptive is None
           else str(d.dc_adaptive), "nb05_n_all": int(study.cfg.sampling.n_all)}
    for det in detectors():
        rows = diffs[diffs.detector == det]
        key = detector_key(det)
        for s in ("known", "train", "gen"):
            col = rows[f"auroc_{s}"]
            out[f"nb05_{key}_{s}"] = float(np.nanmean(col)) if col.notna().any() else math.nan

    prof = victim_logit_profile(study, example_cell(study))
    out.update({"nb05_victim_max_logit": prof["mean_max_logit_clean"], "nb05_victim_runner_up": prof["true_runner_up"],
                "nb05_victim_target_top1": prof["target_top1"]})
    for key, source in zip(("full", "subset", "gen"), SOURCES):
        rows = tog[tog.source == source]
        out[f"nb05_tog_ta_{key}"] = float(rows.TA.mean())
        out[f"nb05_tog_asr_{key}"] = float(rows.ASR.mean())
        out[f"nb05_tog_accgen_{key}"] = float(rows.acc_generated.mean())
    flags = diffs.drop_duplicates("attack").set_index("attack")["clean_dm_flagged"]
    out["nb05_flag_text"] = ", ".join(f"{k} {v:.1%}" for k, v in flags.items()) if len(flags) else "none"
    out["nb05_flag_max"] = GEN_FLAG_MAX
    out["nb05_ta_cost_max"] = TA_COST_MAX
    out["nb05_backdoor_asr_min"] = BACKDOOR_ASR_MIN
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
    groups = {"det": ("detection_cd", "detection_strip", "detection_fct"), "tog_asr": "train_on_generations_asr",
              "tog_ta": "train_on_generations_ta", "dc_asr": "diffusion_classifier_asr",
              "dc_ta": "diffusion_classifier_ta", "dc_filter": "p_filter"}
    for name, keys in groups.items():
        rows = V.rows_of(claims, keys)
        counts = V.counts_text(r["verdict"] for r in rows)
        out[f"nb05_verdicts_{name}"] = f"{counts} (of {len(rows)})" if rows else "none"
    out["nb05_verdicts_all"] = V.headline(claims) if claims else "none"  # the paper's claims apart from controls
    if bench is not None and len(bench):
        for r in bench.itertuples():
            out[f"nb05_bench_{r.mode}_evals"] = float(r.unet_evals_per_image)
            out[f"nb05_bench_{r.mode}_seconds"] = float(r.seconds_per_image)
            out[f"nb05_bench_{r.mode}_agreement"] = float(r.agreement)
    return out
