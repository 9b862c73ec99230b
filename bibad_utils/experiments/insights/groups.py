"""The G1-G4 dissection of target-prompt generations: one row per (cell, detector, w), the phase-transition
and controls views of it, and the text helpers of stage 04."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.experiments.insights.judging import detectors_for, trigger_r_train
from bibad_utils.metrics import Z95


def g_row(trigger, match, *, r_train: float, z: float = Z95, **keys) -> dict:
    """One row of the G table from the judges' decisions on N target-prompt generations.

    Args:
        trigger: bool ``[N]``, the trigger detector fired (``T``).
        match: bool ``[N]``, the clean classifier predicts the prompt's class (``M``).
        r_train: trigger ratio among the target-prompt training images, in [0, 1] (0 for the controls).
        **keys: identifying columns put first (cell, attack, ratio, detector, guidance, ...).

    Returns:
        the row of :func:`bibad_utils.metrics.g_table` (counts, ratios and Wilson bounds of G1-G4 and
        r_gen, r_train, amplification = r_gen / r_train, inf/nan when r_train = 0) plus ``G2_share`` =
        G2 / (G1 + G2) with its Wilson bounds (nan, (0, 1) without triggered images), and
        ``G1_minus_r_train`` / ``G2_minus_r_train`` (the quantities of the paper's Insight 2 figure,
        as ratios).
    """
    row = metrics.g_table(trigger, match, r_train=r_train, z=z, **keys)
    n_trig = row["n_G1"] + row["n_G2"]
    row["n_triggered"] = n_trig
    row.update(metrics.rate_columns("G2_share", row["n_G2"], n_trig, z))
    row["G1_minus_r_train"] = row["G1"] - r_train
    row["G2_minus_r_train"] = row["G2"] - r_train
    return row


def p_label(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def cell_keys(cell) -> dict:
    """The identifying columns of a cell in the stage's tables: cell, attack, control, ratio, p (label)."""
    return {"cell": cell.name, "attack": cell.kind, "control": cell.trigger_kind is None, "ratio": cell.ratio,
            "p": p_label(cell.ratio)}


def target_sets(study):
    """Every target-prompt generation set of every cell, once per detector that reads it (controls once per
    attack): yields ``(keys, gen, judgment, detector)``, ``keys`` the G table's identifying columns (cell,
    attack, control, ratio, p, detector, guidance, n_poison) plus ``r_train``, ``gen`` the GenSet and
    ``judgment`` the cached :meth:`~bibad_utils.study_judges.StudyJudges.judged` decisions on it."""
    for cell in study.cells():
        r_train = trigger_r_train(study, cell)
        n_poison = int(study.poison_manifest(cell)["n_poison"])
        gens = study.generations(cell)
        for det in detectors_for(study, cell):
            for (name, w), j in study.judges.judged(cell, det, gens).items():
                if name == "target":
                    keys = {**cell_keys(cell), "detector": det, "guidance": w, "n_poison": n_poison}
                    yield {**keys, "r_train": r_train}, gens[(name, w)], j, det


def g_table(study, z: float = Z95) -> pd.DataFrame:
    """The G1-G4 dissection of every cell's target-prompt generations at every guidance w.

    One row per (cell, detector, w): ``cell`` (name), ``attack`` (the cell's kind: clean | relabel |
    a trigger), ``control`` (bool), ``ratio`` (p), ``p`` (label like "10%"), ``detector``, ``guidance``,
    ``n_poison``, then the columns of :func:`g_row` (G1-G4 and r_gen with counts and Wilson bounds,
    r_train, amplification, G2_share, G1/G2_minus_r_train). Controls appear once per detector.
    """
    rows = []
    for keys, gen, j, det in target_sets(study):
        row = g_row(j["trigger"], j["match"], z=z, **keys)
        rows.append({**row, **template_columns(study.judges.template(det), gen.images, j["trigger"], z)})
    return pd.DataFrame(rows)


def template_columns(template, images, detector_fires, z: float = Z95) -> dict:
    """The training-free template's reading of one generation set, beside the detector's: ``tpl_n_trig``,
    ``tpl_r_gen`` with Wilson ``tpl_r_gen_lo`` / ``_hi``, and ``agreement`` (share of images on which
    template and detector decide alike); nan without a template (a warp trigger)."""
    if template is None:
        return {"tpl_n_trig": math.nan, "tpl_r_gen": math.nan, "tpl_r_gen_lo": math.nan, "tpl_r_gen_hi": math.nan,
                "agreement": math.nan}
    fires = template.fires(images)
    k, n = int(fires.sum()), len(fires)
    return {"tpl_n_trig": k, **metrics.rate_columns("tpl_r_gen", k, n, z),
            "agreement": float(np.mean(fires == np.asarray(detector_fires, bool))) if n else math.nan}


def phase_transition(df: pd.DataFrame, guidance: float | None = None) -> pd.DataFrame:
    """Insight 2 per attack across p, at one guidance (default: the first in ``df``).

    ``df``: the output of :func:`g_table`. Returns the grid rows (no controls), sorted by attack then p,
    with columns attack, ratio, p, guidance, n, n_G1, n_G2, G1, G2, r_gen (+ Wilson bounds), r_train,
    amplification, G1_minus_r_train, G2_minus_r_train, G2_share (+ bounds), and ``dominant``: "G1", "G2" or "tie",
    the larger of the two among triggered generations ("none" without triggered generations).
    """
    need = ["attack", "control", "ratio", "guidance", "n_G1", "n_G2", "G1", "G2", "r_train"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ConfigError("df", f"columns {list(df.columns)}", f"a g_table DataFrame (missing {missing})")
    guidance = float(df["guidance"].iloc[0]) if guidance is None else guidance
    rows = df[(~df["control"].astype(bool)) & (df["guidance"] == guidance)].copy()
    if rows.empty:
        raise ConfigError("guidance", guidance, f"a guidance of the table: {sorted(df['guidance'].unique())}")
    rows["dominant"] = np.select([rows["n_G1"] + rows["n_G2"] == 0, rows["n_G1"] > rows["n_G2"],
                                  rows["n_G2"] > rows["n_G1"]], ["none", "G1", "G2"], "tie")
    order = {a: k for k, a in enumerate(pd.unique(rows["attack"]))}
    rows = rows.sort_values(["attack", "ratio"], key=lambda s: s.map(order) if s.name == "attack" else s)
    cols = ["attack", "ratio", "p", "guidance", "n", "n_G1", "n_G2", "G1", "G1_lo", "G1_hi", "G2", "G2_lo",
            "G2_hi", "r_gen", "r_gen_lo", "r_gen_hi", "r_train", "amplification", "G1_minus_r_train",
            "G2_minus_r_train", "G2_share", "G2_share_lo", "G2_share_hi", "dominant"]
    return rows.reindex(columns=[c for c in cols if c in rows.columns]).reset_index(drop=True)


def controls_table(gdf: pd.DataFrame, jdf: pd.DataFrame, guidance: float | None = None,
                   tdf: pd.DataFrame | None = None) -> pd.DataFrame:
    """The controls at one guidance (default: the first in ``gdf``) beside each detector's false-positive
    rate on real clean images and the poisoned DM at the largest p of that detector's attack: columns
    cell, detector, n, r_gen (+ bounds), G1, G2, det_fpr (+ upper bound), poisoned_r_gen; with ``tdf``
    (:func:`~bibad_utils.experiments.insights.judging.template_table`) also the training-free template's
    reading of the same generations (tpl_r_gen + bounds), its false-alarm bound on real clean images
    (tpl_fpr_hi) and its reading of the poisoned DM (poisoned_tpl_r_gen)."""
    guidance = float(gdf["guidance"].iloc[0]) if guidance is None else guidance
    at_w = gdf[gdf["guidance"] == guidance]
    rows = []
    for _, c in at_w[at_w["control"].astype(bool)].iterrows():
        det = jdf[jdf["judge"] == f"{c['detector']} detector"]
        pois = at_w[(~at_w["control"].astype(bool)) & (at_w["attack"] == c["detector"])].sort_values("ratio")
        row = {"cell": c["cell"], "detector": c["detector"], "n": c["n"], "r_gen": c["r_gen"],
               "r_gen_lo": c["r_gen_lo"], "r_gen_hi": c["r_gen_hi"], "G1": c["G1"], "G2": c["G2"],
               "det_fpr": float(det["fpr"].iloc[0]) if len(det) else math.nan,
               "det_fpr_hi": float(det["fpr_hi"].iloc[0]) if len(det) else math.nan,
               "poisoned_r_gen": float(pois["r_gen"].iloc[-1]) if len(pois) else math.nan}
        if tdf is not None:
            t = tdf[tdf["kind"] == c["detector"]]
            row.update({k: c[k] for k in ("tpl_r_gen", "tpl_r_gen_lo", "tpl_r_gen_hi")})
            row.update({"tpl_fpr_hi": float(t["fpr_hi"].iloc[0]) if len(t) else math.nan,
                        "poisoned_tpl_r_gen": float(pois["tpl_r_gen"].iloc[-1]) if len(pois) else math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def dissection_frame(df: pd.DataFrame, guidance: float | None = None) -> pd.DataFrame:
    """Rows for the stacked G1-G4 bars: per detector (= attack), the controls judged by it and then the
    attack's cells in increasing p, at one guidance (default: the first in ``df``); a ``label`` column
    names the bar (clean, relabel, p=...)."""
    guidance = float(df["guidance"].iloc[0]) if guidance is None else guidance
    rows = df[df["guidance"] == guidance].copy()
    rows = rows[rows["control"].astype(bool) | (rows["attack"] == rows["detector"])]
    rows["label"] = np.where(rows["control"].astype(bool), rows["attack"], "p=" + rows["p"].astype(str))
    rows["_order"] = np.where(rows["control"].astype(bool), -1.0, rows["ratio"])
    order = {a: k for k, a in enumerate(pd.unique(rows["detector"]))}
    rows["_det"] = rows["detector"].map(order)
    return rows.sort_values(["_det", "_order"], kind="stable").drop(columns=["_order", "_det"]).reset_index(drop=True)
