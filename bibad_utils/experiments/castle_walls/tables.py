"""Display tables of stage 05 (strings with intervals, for reading)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils.experiments.castle_walls.config import detection_cells
from bibad_utils.experiments.castle_walls.detection import clean_dm_flag_rate
from bibad_utils.report import paper_value_text, with_interval


def detection_wide(det: pd.DataFrame, flags: dict | None = None) -> pd.DataFrame:
    """:func:`detection_table` for reading: one row per (cell, detector), AUROC [95 % interval] on the
    known-answer set, the training subset and the generations (scored with the victim and with the
    classifier trained on the generations), the positives of each truth, the paper's CD values,
    and (``flags``: cell name -> rate, e.g. from :func:`clean_dm_flags`) the share of the clean DM's
    generations the cell's trigger detector flags."""
    def pick(g, set_name, clf="victim"):
        return g[(g.set == set_name) & (g.classifier == clf)].iloc[0]

    rows = []
    for (cell, detector), g in det.groupby(["cell", "detector"], sort=False):
        kn, tr, ge = pick(g, "known answer"), pick(g, "training"), pick(g, "generated")
        gg = pick(g, "generated", "generations classifier")
        rows.append({"cell": cell, "detector": detector,
                     "AUROC known answer": with_interval(kn.auroc, kn.auroc_lo, kn.auroc_hi, False),
                     "AUROC training": with_interval(tr.auroc, tr.auroc_lo, tr.auroc_hi, False),
                     "AUROC generated (victim)": with_interval(ge.auroc, ge.auroc_lo, ge.auroc_hi, False),
                     "AUROC generated (gen. classifier)": with_interval(gg.auroc, gg.auroc_lo, gg.auroc_hi, False),
                     "poisoned / n (training)": f"{tr.n_poisoned} / {tr.n}",
                     "triggered / n (generated)": f"{ge.n_poisoned} / {ge.n}",
                     "paper training": paper_value_text(tr.paper, False),
                     "paper generated": paper_value_text(ge.paper, False)})
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
        row.update({"TA": with_interval(r.TA, r.TA_lo, r.TA_hi, True),
                    "ASR": with_interval(r.ASR, r.ASR_lo, r.ASR_hi, True)})
        if "acc_generated" in df:
            row["acc. on generations"] = f"{r.acc_generated:.1%}"
        row.update({"paper TA": paper_value_text(r.paper_TA, True), "paper ASR": paper_value_text(r.paper_ASR, True)})
        if "paper_ASR_caltech15" in df:
            row["paper ASR (Caltech15)"] = paper_value_text(r.paper_ASR_caltech15, True)
        if "seconds_per_image" in df and not math.isnan(r.seconds_per_image):
            row["s / image"] = f"{r.seconds_per_image:.3f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["cell", by]).fillna("")


def claims_table(rows: list[dict]) -> pd.DataFrame:
    """Claim rows for reading: claim, setting, the paper's value, ours [95 % interval], verdict, note."""
    return pd.DataFrame([{"claim": r["claim"], "setting": r["setting"], "metric": r["metric"], "paper": r["paper"],
                          "ours": with_interval(r["ours"], r["ours_lo"], r["ours_hi"], False),
                          "verdict": r["verdict"], "note": r["note"]} for r in rows])


def example_cell(study):
    """The cell whose CD masks are shown: the first attack's largest p among the detection cells."""
    cells = detection_cells(study)
    return max((c for c in cells if c.kind == cells[0].kind), key=lambda c: c.ratio)


def cd_sensitivity_wide(sens: pd.DataFrame) -> pd.DataFrame:
    """:func:`~bibad_utils.experiments.castle_walls.detection.cd_sensitivity` for reading: one row per logit
    reference (the profile's marked "in use"), the scale it gives the victim's logits, AUROC [95 % interval]
    on the training subset and the generations, and their difference."""
    rows = [{"logit reference": r.label, "in use": "yes" if r.in_use else "", "logit scale": f"{r.logit_scale:.2f}",
             "AUROC training": with_interval(r.auroc_train, r.auroc_train_lo, r.auroc_train_hi, False),
             "AUROC generated": with_interval(r.auroc_gen, r.auroc_gen_lo, r.auroc_gen_hi, False),
             "generated - training": with_interval(r.diff, r.diff_lo, r.diff_hi, False)}
            for r in sens.itertuples()]
    return pd.DataFrame(rows).set_index("logit reference")


def cd_sensitivity_summary(sens: pd.DataFrame) -> dict:
    """Numbers and phrases of the calibration section of chapter 05 (``nb05_cdsens_*`` keys, for ``glue``):
    the profile's calibration (method, reference, scale, the held-out images and the victim's mean largest
    logit on them), the references shown, the range of the difference over them, and whether its sign holds."""
    use = sens[sens["in_use"].astype(bool)].iloc[0]
    diffs = sens["diff"].to_numpy(float)
    finite = diffs[np.isfinite(diffs)]
    signs = set(np.sign(finite).tolist())
    if not len(finite):
        sign = "undefined at every reference (no triggered image among the scored generations)"
    elif len(signs) == 1:
        sign = {1.0: "positive", -1.0: "negative", 0.0: "zero"}[signs.pop()] + " at every reference shown"
    else:
        flip = ", ".join(f"{lab}: {d:+.3f}" for lab, d in zip(sens["label"], diffs))
        sign = f"changes sign with the reference ({flip})"
    return {"nb05_cdsens_cell": str(use["cell"]),
            "nb05_cdsens_method": ("none: the victim's logits as they are" if use["calibration"] == "none"
                                   else "clean held-out test images"),
            "nb05_cdsens_reference": str(use["label"]),
            "nb05_cdsens_scale": float(use["logit_scale"]),
            "nb05_cdsens_n_heldout": int(use["n_heldout"]),
            "nb05_cdsens_max_logit": float(use["mean_max_logit_heldout"]),
            "nb05_cdsens_refs": ", ".join(sens["label"]),
            "nb05_cdsens_diff": float(use["diff"]),
            "nb05_cdsens_diff_min": float(np.min(finite)) if len(finite) else math.nan,
            "nb05_cdsens_diff_max": float(np.max(finite)) if len(finite) else math.nan,
            "nb05_cdsens_sign": sign,
            "nb05_cdsens_seconds": float(sens["seconds"].sum())}
