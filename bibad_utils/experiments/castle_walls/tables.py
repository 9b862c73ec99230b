"""Display tables of stage 05 (strings with intervals, for reading)."""

from __future__ import annotations

import math

import pandas as pd

from bibad_utils.experiments.castle_walls.config import detection_cells
from bibad_utils.experiments.castle_walls.detection import clean_dm_flag_rate, detection_csv  # noqa: F401
from bibad_utils.experiments.castle_walls.stats import _paper_text, _with_interval



def detection_wide(det: pd.DataFrame, flags: dict | None = None) -> pd.DataFrame:
    """:func:`detection_table` for reading: one row per (cell, detector), AUROC [95 % interval] on the
    known-answer set, the training subset and the generations (scored with the victim and, where scored,
    with the classifier trained on the generations), the positives of each truth, the paper's CD values,
    and (``flags``: cell name -> rate, e.g. from :func:`clean_dm_flags`) the share of the clean DM's
    generations the cell's trigger detector flags."""
    def pick(g, set_name, clf="victim"):
        sel = g[(g.set == set_name) & (g.classifier == clf)] if "classifier" in g else g[g.set == set_name]
        return sel.iloc[0] if len(sel) else None

    rows = []
    for (cell, detector), g in det.groupby(["cell", "detector"], sort=False):
        kn, tr, ge = pick(g, "known answer"), pick(g, "training"), pick(g, "generated")
        gg = pick(g, "generated", "generations classifier")
        row = {"cell": cell, "detector": detector}
        if kn is not None:
            row["AUROC known answer"] = _with_interval(kn.auroc, kn.auroc_lo, kn.auroc_hi, False)
        row.update({"AUROC training": _with_interval(tr.auroc, tr.auroc_lo, tr.auroc_hi, False),
                    "AUROC generated (victim)": _with_interval(ge.auroc, ge.auroc_lo, ge.auroc_hi, False)})
        if gg is not None:
            row["AUROC generated (gen. classifier)"] = _with_interval(gg.auroc, gg.auroc_lo, gg.auroc_hi, False)
        row.update({"poisoned / n (training)": f"{tr.n_poisoned} / {tr.n}",
                    "triggered / n (generated)": f"{ge.n_poisoned} / {ge.n}",
                    "paper training": _paper_text(tr.paper, False), "paper generated": _paper_text(ge.paper, False)})
        rows.append(row)
    out = pd.DataFrame(rows).set_index(["cell", "detector"])
    if flags is not None:
        out["clean DM flagged"] = [f"{flags.get(c, math.nan):.1%}" for c, _ in out.index]
    return out


def clean_dm_flags(study) -> dict:
    """Cell name -> :func:`clean_dm_flag_rate` of its trigger, for every grid cell."""
    return {c.name: clean_dm_flag_rate(study, c.trigger_kind)["rate"] for c in study.grid_cells()}


def rates_wide(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """TA and ASR [95 % Wilson intervals] per (cell, ``by``) of :func:`train_on_generations_table`
    (``by="source"``) or :func:`diffusion_classifier_table` (``by="method"``), with the paper's values."""
    rows = []
    for r in df.itertuples():
        label = getattr(r, by)
        if by == "method" and label == "diffusion classifier":
            label = f"DC, p_filter {r.p_filter:g}"
        row = {"cell": r.cell, by: label}
        if "n_train" in df:
            row["n_train"] = int(r.n_train)
        row.update({"TA": _with_interval(r.TA, r.TA_lo, r.TA_hi, True),
                    "ASR": _with_interval(r.ASR, r.ASR_lo, r.ASR_hi, True)})
        if "acc_generated" in df:
            row["acc. on generations"] = f"{r.acc_generated:.1%}"
        row.update({"paper TA": _paper_text(r.paper_TA, True), "paper ASR": _paper_text(r.paper_ASR, True)})
        if "paper_ASR_caltech15" in df:
            row["paper ASR (Caltech15)"] = _paper_text(r.paper_ASR_caltech15, True)
        if "seconds_per_image" in df and not math.isnan(r.seconds_per_image):
            row["s / image"] = f"{r.seconds_per_image:.3f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["cell", by]).fillna("")


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """Claim rows for reading: claim, setting, the paper's value, ours [95 % interval], verdict, note."""
    return pd.DataFrame([{"claim": r["claim"], "setting": r["setting"], "metric": r["metric"], "paper": r["paper"],
                          "ours": _with_interval(r["ours"], r["ours_lo"], r["ours_hi"], False),
                          "verdict": r["verdict"], "note": r["note"]} for r in rows])




def example_cell(study):
    """The cell whose CD masks are shown: the first attack's largest p among the detection cells."""
    cells = detection_cells(study)
    return max((c for c in cells if c.kind == cells[0].kind), key=lambda c: c.ratio)


