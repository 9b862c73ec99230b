"""The grid's claims of stage 04 (Trojan horse, Insight 1 per p, Insight 2 over p) for one attack at one
guidance scale, under each reading of "this generation carries the trigger".

Two instruments read the trigger on generations (:mod:`.trigger_truth`): the learned detector and the
training-free template. They disagree on faint generated triggers, so each claim is computed under both
readings and stated under the one that passes the planted faint-trigger check
(:func:`~bibad_utils.experiments.insights.trigger_truth.preferred_instrument`), the other reading in its note:

- "detector" or "both": the detector's reading decides (it is the one the across-run spread is
  measured with);
- "template": the template's reading decides;
- "none": neither passes; where the two readings give the same verdict it stands, otherwise the row is
  "not tested" and its note gives both.
An attack without a template (a warp) is read by the detector alone, and says so.
"""

from __future__ import annotations

import math

import pandas as pd

from bibad_utils import paper, verdicts
from bibad_utils.experiments.insights.groups import p_label
from bibad_utils.experiments.insights.seeds import across_seeds, pooled_counts
from bibad_utils.report import claim_row
from bibad_utils.metrics import Z95

STAGE = "04_insights"
TROJAN_CLAIM = "Trojan horse: the poisoned DM generates trigger-carrying images of the wrong class (G1)"
AMPLIFICATION_CLAIM = "Insight 1, trigger amplification: r_gen > r_train"
PHASE_CLAIM = "Insight 2, phase transition: the G2 share of triggered generations falls as p grows"


def _seed_note(sd: dict | None, value: float, lo: float, hi: float) -> str:
    """The note's account of a claim judged across training runs (empty for one run)."""
    if sd is None:
        return ""
    return (f"; across {sd['n']} training runs: mean {sd['mean']:.3f}, sd {sd['sd']:.3f}, 95 % interval "
            f"[{sd['lo']:.3f}, {sd['hi']:.3f}] (t, at least the pooled sampling interval; the verdict uses it); "
            f"run 0 alone {value:.3f} "
            f"[{lo:.3f}, {hi:.3f}] (sampling only)")


def phase_verdict(rows, z: float = Z95) -> dict:
    """Verdict of Insight 2 for one attack from its rows at every p of the profile
    (:func:`bibad_utils.verdicts.phase_transition`: the slides' quantities G1 - r_train and G2 - r_train
    per p, a significant fall of the G2 share G2 / (G1 + G2) (two-sided), and "partly" where G2 never
    dominates). A row's ``n`` / ``n_G1`` / ``n_G2`` may be the counts of several training runs pooled.

    ``rows``: rows of :func:`g_row` (need ``ratio``, ``n``, ``n_G1``, ``n_G2``, ``r_train``), two or more.
    The paper's drop of the G2 share on ImageNette (5 -> 10 %) is the effect a test must be able to see
    before a miss counts as "not reproduced".

    Returns the dict of :func:`~bibad_utils.verdicts.phase_transition` plus ``share_low`` / ``share_high``
    (the G2 share at the lowest and the highest p that the test used).
    """
    pts = [{"p": float(r["ratio"]), "n": int(r["n"]), "n_G1": int(r["n_G1"]), "n_G2": int(r["n_G2"]),
            "r_train": float(r["r_train"])} for r in rows]
    effect = paper.g2_share(0.05) - paper.g2_share(0.10)
    out = verdicts.phase_transition(pts, paper_effect=effect, z=z)
    used = [pt for pt in out["points"] if pt["p"] not in out["left_out"]] or out["points"]
    out["share_low"], out["share_high"] = used[0]["G2_share"], used[-1]["G2_share"]
    return out


def attack_claims(attack: str, a: pd.DataFrame, clean: pd.Series | None, w: float, *, check: verdicts.Check,
                  content: verdicts.Check | None, spread: pd.DataFrame | None, reading: str,
                  exposure: dict | None = None) -> list[dict]:
    """The Trojan-horse row, the Insight-1 rows (one per p) and the Insight-2 row of ``attack`` at ``w``
    under one reading.

    ``a``: the attack's G rows (:func:`~bibad_utils.experiments.insights.groups.g_row` columns) at ``w``
    under that reading, sorted by p; ``clean``: the clean DM's row under the same reading (None: none);
    ``check``: the instrument's check on the clean DM's generations; ``content``: the content judge's
    check (None: none); ``spread``: the across-run spread (:func:`seed_spread`, detector reading only);
    ``exposure``: cell name -> epochs of fine-tuning (absent: not stated), which a "not reproduced" needs
    near the paper's (:func:`bibad_utils.verdicts.at_exposure`)."""
    rows: list[dict] = []
    epochs = lambda cell: (exposure or {}).get(cell, math.nan)  # noqa: E731
    top = a.iloc[-1]
    floor = float(clean["G1"]) if clean is not None else 0.0
    sd = across_seeds(spread, top["cell"], attack, w, "G1")
    g1, g1_lo, g1_hi = (sd["mean"], sd["lo"], sd["hi"]) if sd else (top["G1"], top["G1_lo"], top["G1_hi"])
    failed = verdicts.first_failed(check, content)  # G1 needs the trigger reading and the classifier
    paper_g1 = paper.duplicates(top["ratio"], "G1")
    trojan = verdicts.compare(g1, g1_lo, g1_hi, reference=floor, baseline=failed,
                              paper_effect=None if paper_g1 is None else paper_g1[0])
    rows.append(claim_row(
        STAGE, TROJAN_CLAIM, setting=f"{attack}, p={top['p']}, w={w:g}", metric="G1 ratio of target-prompt generations",
        paper=paper.setting_text("trojan_g1", p=top["ratio"]), key="trojan_g1",
        ours=g1, lo=g1_lo, hi=g1_hi, verdict=trojan.verdict, exposure=epochs(top["cell"]),
        note=f"reference: G1 of the clean DM under the same {reading} = {paper.pct(floor)}"
             + _seed_note(sd, top["G1"], top["G1_lo"], top["G1_hi"])
             + (f"; {trojan.verdict}: {trojan.reason}" if trojan.reason else "")))
    for _, r in a.iterrows():
        g1p, g2p = paper.duplicates(r["ratio"], "G1"), paper.duplicates(r["ratio"], "G2")
        rt = paper.r_train(r["ratio"])
        effect = g1p[0] + g2p[0] - rt if g1p and g2p and rt is not None else None
        sd = across_seeds(spread, r["cell"], attack, w, "r_gen")
        val, lo, hi = (sd["mean"], sd["lo"], sd["hi"]) if sd else (r["r_gen"], r["r_gen_lo"], r["r_gen_hi"])
        j = verdicts.compare(val, lo, hi, reference=r["r_train"], paper_effect=effect, baseline=check)
        rows.append(claim_row(
            STAGE, AMPLIFICATION_CLAIM, setting=f"{attack}, p={r['p']}, w={w:g}", metric="r_gen = G1 + G2",
            paper=paper.paper_text("amplification", p=r["ratio"]) if rt is not None else "", key="amplification",
            ours=val, lo=lo, hi=hi, verdict=j.verdict, exposure=epochs(r["cell"]),
            note=(f"r_train = {paper.pct(r['r_train'])}; amplification r_gen / r_train = {r['amplification']:.2f}"
                  + _seed_note(sd, r["r_gen"], r["r_gen_lo"], r["r_gen_hi"])
                  + (f"; paper (ImageNette): r_gen - r_train = {effect:+.3f}" if effect is not None else "")
                  + (f"; {j.verdict}: {j.reason}" if j.reason else ""))))
    metric = "drop of G2 / (G1 + G2) from the lowest to the highest p"
    text = paper.paper_text("phase_transition")
    if len(a) < 2:
        rows.append(claim_row(STAGE, PHASE_CLAIM, setting=f"{attack}, w={w:g}", metric=metric, paper=text,
                              key="phase_transition", ours=math.nan, verdict="not tested",
                              note="the profile has a single poisoning ratio"))
    elif failed is not None:
        rows.append(claim_row(STAGE, PHASE_CLAIM, setting=f"{attack}, w={w:g}", metric=metric, paper=text,
                              key="phase_transition", ours=math.nan, verdict="not tested",
                              note=f"not tested: {failed.reason}"))
    else:
        pooled = [pooled_counts(spread, r["cell"], attack, w) for _, r in a.iterrows()]
        pv = phase_verdict([{**r.to_dict(), **(pc or {})} for (_, r), pc in zip(a.iterrows(), pooled)])
        runs = max((pc["runs"] for pc in pooled if pc), default=1)
        slides = "; ".join(f"p={p_label(pt['p'])}: G1 - r_train {pt['G1_minus_r_train']:+.3f}, "
                           f"G2 - r_train {pt['G2_minus_r_train']:+.3f}, G2 share {paper.pct(pt['G2_share'])}"
                           for pt in pv["points"])
        rows.append(claim_row(
            STAGE, PHASE_CLAIM, setting=f"{attack}, p={a.iloc[0]['p']} -> {top['p']}, w={w:g}", metric=metric,
            paper=text, key="phase_transition", ours=pv["drop"], lo=pv["drop_lo"], hi=pv["drop_hi"],
            verdict=pv["verdict"], exposure=min((epochs(c) for c in a["cell"]), default=math.nan),
            note=(f"{pv['reason']}; {slides}"
                  + (f"; counts pooled over the {runs} training runs of each cell trained more than once"
                     if runs > 1 else ""))))
    return rows


def _reading_text(row: dict, name: str) -> str:
    if not math.isfinite(row["ours"]):
        return f"under the {name}: {row['verdict']}"
    ci = (f" [{row['ours_lo']:.3f}, {row['ours_hi']:.3f}]" if math.isfinite(row["ours_lo"]) else "")
    return f"under the {name}: {row['ours']:.3f}{ci}, {row['verdict']}"


def combine_readings(by_reading: dict[str, list[dict]], preferred: str) -> list[dict]:
    """One row per claim from the rows of each reading (``{"detector": rows, "template": rows}``, the same
    claims in the same order; "template" absent or empty where the trigger has no template) and the
    planted check's ``preferred`` instrument ("detector" | "template" | "both" | "none"); see the module
    docstring for the rule. Every row's note names the reading its verdict rests on and gives the other."""
    det, tpl = by_reading["detector"], by_reading.get("template") or []
    if tpl and len(tpl) != len(det):
        raise ValueError(f"the two readings give {len(det)} and {len(tpl)} rows")
    out = []
    for i, d in enumerate(det):
        t = tpl[i] if tpl else None
        if t is None:
            row = {**d, "note": d["note"] + "; read by the trigger detector alone (no template for this trigger)"
                   + ("" if preferred in ("detector", "both") else
                      "; the detector fails the planted faint-trigger check")}
            if preferred not in ("detector", "both") and row["verdict"] in ("reproduced", "partly"):
                row["verdict"] = "not tested"
            out.append(row)
            continue
        if preferred in ("detector", "both", "template"):
            main, other, name, other_name = ((t, d, "template", "detector") if preferred == "template"
                                             else (d, t, "detector", "template"))
            out.append({**main, "note": (f"trigger read by the {name} (it passes the planted faint-trigger check"
                                         + (", as does the template" if preferred == "both" else "") + "); "
                                         + main["note"] + "; " + _reading_text(other, other_name))})
        elif d["verdict"] == t["verdict"]:
            out.append({**d, "note": ("neither trigger reading passes the planted faint-trigger check; both give "
                                      "this verdict; " + d["note"] + "; " + _reading_text(t, "template"))})
        else:
            out.append({**d, "verdict": "not tested",
                        "note": ("not tested: the detector and the template disagree and neither passes the planted "
                                 "faint-trigger check; " + _reading_text(d, "detector") + "; "
                                 + _reading_text(t, "template") + "; " + d["note"])})
    return out
