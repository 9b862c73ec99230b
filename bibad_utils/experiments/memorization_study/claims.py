"""Claim rows of stage 06 with computed verdicts, and the glued values of the chapter."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import paper, verdicts
from bibad_utils.experiments.insights import CLEAN_FALSE_ALARM_MAX, content_check, generated_judge_table
from bibad_utils.metrics import newcombe_difference
from bibad_utils.experiments.memorization_study.common import STAGE, mean_difference, paper_duplicate_values
from bibad_utils.experiments.memorization_study.duplicates import duplicate_finder_table, random_vs_duplicate
from bibad_utils.experiments.memorization_study.replication import (replication_similarities, replication_table,
                                                                    replication_threshold, replication_threshold_source)
from bibad_utils.report import claim_row
from bibad_utils.stages import Cell, Study

# the duplicate finder's check: pairwise precision and recall on the planted groups at least this
FINDER_MIN = 0.9


DUPLICATE_KEYS = ("duplicates_g1", "duplicates_g2")
# the replication family's two measures, told apart by the start of their metric
REPLICATION_RATE, NEAREST_COSINE = "replication rate", "mean nearest-training cosine"

def memorization_claims(study: Study, dup: pd.DataFrame | None = None, rep: pd.DataFrame | None = None,
                        finder: pd.DataFrame | None = None) -> list[dict]:
    """Claim rows of the stage (see :func:`claims_from_tables`); the tables are recomputed (from the cache)
    when not given."""
    dup = random_vs_duplicate(study) if dup is None else dup
    rep = replication_table(study) if rep is None else rep
    finder = duplicate_finder_table(study) if finder is None else finder
    cells = [Cell(r["kind"], float(r["p"]), r["pool"]) for _, r in rep.iterrows() if r["kind"] != "real"]
    sims = replication_similarities(study, cells, heldout=False)
    if len(dup):
        gj = generated_judge_table(study)  # once: every attack's check reads the same table
        baselines = {a: judge_check(study, a, gj) for a in pd.unique(dup["attack"])}
    else:
        baselines = {}
    epochs = min((study.exposure(c) for c in cells if c.kind not in ("clean", "relabel")), default=math.nan)
    rows = claims_from_tables(dup, rep, finder, sims, guidance=study.first_guidance,
                              baselines=baselines, exposure=epochs)
    if not len(dup) and dup.attrs.get("not_tested"):
        rows = [claim_row(STAGE, f"Poisoning duplicated images raises {metric}",
                          metric=f"{metric}(duplicate) - {metric}(random)", setting=f"{study.cfg.attacks[0]}",
                          paper=paper.paper_text(f"duplicates_{metric.lower()}"), key=f"duplicates_{metric.lower()}",
                          ours=math.nan, verdict="not tested", note=f"not tested: {dup.attrs['not_tested']}")
                for metric in ("G1", "G2")] + rows
    return rows


def judge_check(study: Study, attack: str, gj: pd.DataFrame | None = None) -> verdicts.Check | None:
    """The judges' checks on a clean DM's generations that a G1 / G2 comparison rests on (chapter 04's
    rules): the content classifier's (:func:`~bibad_utils.experiments.insights.content_check`) and the
    attack's trigger detector's false alarms (upper bound at most ``CLEAN_FALSE_ALARM_MAX``); the first
    that fails, None when both pass or there is no clean DM. ``gj``: the judges on generations
    (:func:`~bibad_utils.experiments.insights.generated_judge_table`; default: computed)."""
    gj = generated_judge_table(study) if gj is None else gj
    det = gj[gj["judge"] == f"{attack} detector"]
    alarms = None if det.empty else verdicts.false_alarm_check(
        float(det["fpr_hi"].iloc[0]), max_rate=CLEAN_FALSE_ALARM_MAX,
        what=f"share of a clean DM's generations the {attack} detector flags")
    return verdicts.first_failed(content_check(study, gj), alarms)


def claims_from_tables(dup: pd.DataFrame, rep: pd.DataFrame, finder: pd.DataFrame, sims: dict,
                       guidance: float, baselines: dict | None = None, exposure: float = math.nan) -> list[dict]:
    """Claim rows (:func:`bibad_utils.report.claim_row`) from the stage's tables.

    dup: :func:`random_vs_duplicate`; rep: :func:`replication_table`; finder: :func:`duplicate_finder_table`;
    sims: ``{cell name: nearest-training similarities}`` of the cells in ``rep``; guidance: the w of ``dup``;
    baselines: attack -> the failed judge check (:func:`judge_check`) that makes its G1 / G2 rows "not
    tested" (None or absent: the judges passed); exposure: the fine-tuning epochs of the poisoned DMs
    compared (the least of them; NaN: not stated), which a "not reproduced" needs near the paper's.

    - "duplicate poisoning raises G1 / G2", per p: ours = G_dup - G_random (fraction) with Newcombe's
      interval (:func:`bibad_utils.verdicts.compare`): reproduced when the interval lies above 0;
      "underpowered" when it does not and the paper's largest rise at this p is below the test's minimum
      detectable effect; partly when only the point is above 0; a row where the paper reports no such p
      is of kind "no paper number".
    - "poisoned DMs replicate more than the clean DM", per random-poisoning cell of ``rep``: the
      replication-rate difference (Newcombe) and the mean-similarity difference (Welch interval); the
      paper's claim is qualitative (kind "no paper number"). The rate row is "not tested" when neither the
      poisoned nor the clean DM has a single generation over the threshold (the instrument is blind there).
    - the finder's precision and recall on planted duplicates: a control of our measure, reproduced at
      :data:`FINDER_MIN` or more each ("not tested" without planted groups).
    """
    rows = []
    for (p, metric), r in dup.groupby(["p", "metric"], sort=True):
        r = r.set_index("pool")
        d, lo, hi = newcombe_difference(int(r.loc["duplicate", "k"]), int(r.loc["duplicate", "n"]),
                                    int(r.loc["random", "k"]), int(r.loc["random", "n"]))
        values = paper_duplicate_values(p, metric)
        key = f"duplicates_{metric.lower()}"
        effect = max((dup_v - rnd_v for rnd_v, dup_v in values.values()), default=None)
        j = verdicts.compare(d, lo, hi, reference=0.0, paper_effect=effect,
                             baseline=(baselines or {}).get(r["attack"].iloc[0]))
        rows.append(claim_row(
            STAGE, f"Poisoning duplicated images raises {metric}", metric=f"{metric}(duplicate) - {metric}(random)",
            setting=f"{r['attack'].iloc[0]}, p={p:g}, w={guidance:g}", paper=paper.paper_text(key, p=p), key=key,
            kind="" if values else "no paper number", ours=d, lo=lo, hi=hi, verdict=j.verdict, exposure=exposure,
            note=(f"{metric}: {r.loc['random', 'ours']:.3f} (random) vs {r.loc['duplicate', 'ours']:.3f} "
                  f"(duplicate), n = {int(r.loc['random', 'n'])} each; Newcombe 95 % interval"
                  + (f"; paper's largest rise at this p {effect:+.3f}" if effect is not None else "")
                  + (f"; {j.verdict}: {j.reason}" if j.reason else ""))))
    clean = rep[rep["kind"] == "clean"]
    if len(clean):
        c = clean.iloc[0]
        threshold = float(c["threshold"])
        poisoned = rep[~rep["kind"].isin(["clean", "relabel", "real"]) & (rep["pool"] == "random")]
        for _, r in poisoned.iterrows():
            d, lo, hi = newcombe_difference(int(r["k"]), int(r["n"]), int(c["k"]), int(c["n"]))
            blind = int(r["k"]) == 0 and int(c["k"]) == 0
            rows.append(claim_row(
                STAGE, "Poisoned DMs replicate training images more than the clean DM",
                metric=f"{REPLICATION_RATE} (cos > {threshold:.4g}), poisoned - clean", setting=r["cell"],
                paper=paper.paper_text("replication"), key="replication", ours=d, lo=lo, hi=hi,
                verdict="not tested" if blind else verdicts.compare(d, lo, hi).verdict, exposure=exposure,
                note=f"{int(r['k'])}/{int(r['n'])} vs {int(c['k'])}/{int(c['n'])} replicas; Newcombe 95 % interval"
                     + ("; not tested: neither DM, the clean one included, has a generation over the threshold, "
                        "so the instrument sees no replication at this scale" if blind else "")))
            d, lo, hi = mean_difference(sims[r["cell"]], sims[c["cell"]])
            rows.append(claim_row(
                STAGE, "Poisoned DMs' generations lie closer to their nearest training image",
                metric=f"{NEAREST_COSINE}, poisoned - clean", setting=r["cell"],
                paper=paper.paper_text("replication"), key="replication", ours=d, lo=lo, hi=hi,
                verdict=verdicts.compare(d, lo, hi).verdict, exposure=exposure,
                note=f"means {r['mean_sim']:.4f} vs {c['mean_sim']:.4f}; Welch normal 95 % interval"))
    f = finder.iloc[0]
    source = str(f["threshold_source"])
    for metric in ("precision", "recall"):
        value = float(f[metric])
        verdict = ("not tested" if not np.isfinite(value) else
                   "reproduced" if value >= FINDER_MIN else "not reproduced")
        rows.append(claim_row(
            STAGE, "The duplicate finder recovers planted near-duplicates", metric=f"pairwise {metric}",
            setting=f"pairwise {metric}, {f['embedding']}, cos >= {float(f['threshold']):.4g}", ours=value,
            verdict=verdict, key="duplicate_finder",
            note=(f"the check of our measure on the planted groups (passes at >= {FINDER_MIN:.0%}); threshold: "
                  f"{source}"
                  + ("; chosen on these same groups, so the check is in-sample" if source.startswith("F1") else "")
                  + "; the paper has no counterpart")))
    return rows


def claims_frame(rows: list[dict]) -> pd.DataFrame:
    """The claim rows for display: claim, setting, metric, paper, ours and its interval (rounded to 4
    digits), verdict, note."""
    cols = ["claim", "setting", "metric", "paper", "ours", "ours_lo", "ours_hi", "verdict", "note"]
    return pd.DataFrame(rows, columns=cols).round({"ours": 4, "ours_lo": 4, "ours_hi": 4})


def verdict_phrase(rows: list[dict], keys, metric: str | None = None) -> str:
    """The verdicts of the rows of claim key(s) ``keys`` (and measure ``metric``, :func:`verdicts.rows_of`),
    counted, e.g. "2 settings: 1 reproduced, 1 partly"; "no setting" when there is none."""
    sel = [r["verdict"] for r in verdicts.rows_of(rows, keys, metric)]
    if not sel:
        return "no setting"
    return f"{len(sel)} setting{'s' if len(sel) > 1 else ''}: {verdicts.counts_text(sel)}"


def resolution_sentence(rows: list[dict]) -> str:
    """Whether our intervals on "duplicate minus random" are narrow enough to see an effect of the
    paper's size: compares the widest half-width with the largest difference the paper reports."""
    dup = verdicts.rows_of(rows, DUPLICATE_KEYS)
    if not dup:
        return "No duplicate-poisoning comparison ran in this profile."
    half = max((r["ours_hi"] - r["ours_lo"]) / 2 for r in dup)
    largest = max(abs(b - a) for table in paper.DUPLICATES.values() for v in table.values() for a, b in v.values())
    mde = max(verdicts.mde_from_interval(r["ours_lo"], r["ours_hi"]) for r in dup)
    if half > largest:
        return (f"Our intervals on the difference reach ±{half:.1%}, wider than the largest difference the paper "
                f"reports ({largest:.1%}); the tests could detect only rises of {mde:.1%} or more (80 % power, "
                f"alpha 0.05), so where the paper's rise is smaller the verdict is \"underpowered\": not "
                f"detected rather than contradicted.")
    return (f"Our intervals on the difference are at most ±{half:.1%} wide, narrower than the largest difference "
            f"the paper reports ({largest:.1%}): an effect of that size would have been detected.")


def glue_values(study: Study, finder: pd.DataFrame, dup: pd.DataFrame, rep: pd.DataFrame, rows: list[dict]) -> dict:
    """The numbers and phrases the notebook's text quotes, keyed ``nb06_*`` (for ``myst_nb.glue``)."""
    f = finder.iloc[0]
    clean = rep[rep["kind"] == "clean"]
    return {
        "nb06_embedding": str(f["embedding"]),
        "nb06_dup_threshold": float(f["threshold"]),
        "nb06_threshold_source": str(f["threshold_source"]),
        "nb06_rep_threshold": replication_threshold(study),
        "nb06_rep_threshold_source": replication_threshold_source(study),
        "nb06_rate_heldout": float(rep.loc[rep["kind"] == "real", "rate"].iloc[0]) if len(rep) else math.nan,
        "nb06_planted_groups": int(f["planted_groups"]),
        "nb06_found_groups": int(f["found_groups"]),
        "nb06_finder_precision": float(f["precision"]),
        "nb06_finder_recall": float(f["recall"]),
        "nb06_finder_f1": float(f["f1"]),
        "nb06_attack": str(study.cfg.attacks[0]),
        "nb06_w": study.first_guidance,
        "nb06_w_all": float(study.guidance_all),
        "nb06_n_target": int(dup["n"].iloc[0]) if len(dup) else 0,
        "nb06_n_all": int(rep.loc[rep["kind"] != "real", "n"].iloc[0]) if (rep["kind"] != "real").any() else 0,
        "nb06_rate_clean": float(clean["rate"].iloc[0]) if len(clean) else math.nan,
        "nb06_dup_summary": verdict_phrase(rows, DUPLICATE_KEYS),
        "nb06_rep_summary": verdict_phrase(rows, "replication", REPLICATION_RATE),
        "nb06_closer_summary": verdict_phrase(rows, "replication", NEAREST_COSINE),
        "nb06_resolution": resolution_sentence(rows),
    }
