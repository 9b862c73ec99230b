"""The families of claims the paper makes (from :data:`bibad_utils.paper.CLAIMS`): which family and kind a claim
row belongs to, which stages reported, and which families no stage reported (shown as "not tested")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bibad_utils import paper
from bibad_utils.report import claims_path
from bibad_utils.verdicts import row_kind


@dataclass(frozen=True)
class ClaimFamily:
    """One family of claims, from :data:`bibad_utils.paper.CLAIMS`. A claim row belongs to it when the
    row's ``key`` is ``key`` and its stage the family's (never by its wording). ``label``,
    ``metric``, ``paper`` (the paper's statement and numbers, :func:`bibad_utils.paper.paper_text`),
    ``setting`` and ``kind`` fill the family's "not tested" row, which thus belongs to the family itself."""

    key: str
    stage: str
    label: str
    metric: str
    paper: str
    setting: str = ""
    kind: str = "paper claim"

    def matches(self, row: dict) -> bool:
        # a claims frame's row carries its family (computed from its key when the frame was made)
        return row.get("stage") == self.stage and (row.get("key") or row.get("family") or "") == self.key


# Every family of claim rows (the paper's and this study's controls), and those the coverage check
# demands a row of: the paper's (a control is this study's own addition and appears when run).
CLAIM_FAMILIES = tuple(ClaimFamily(c.key, c.stage, c.label, c.metric, paper.paper_text(c.key), c.setting, c.kind)
                       for c in paper.CLAIMS)


PAPER_CLAIM_FAMILIES = tuple(f for f in CLAIM_FAMILIES if f.kind != "control")


# The stages that report claims, in book order, as the families name them.
CLAIM_STAGES = tuple(dict.fromkeys(f.stage for f in CLAIM_FAMILIES))


def family_of(row: dict) -> str:
    """Key of the family ``row`` belongs to (by its ``key``), "" when none."""
    return next((f.key for f in CLAIM_FAMILIES if f.matches(row)), "")


def kind_of(row: dict) -> str:
    """The row's ``kind`` (:data:`bibad_utils.paper.KINDS`): its own when set; else "control" for a row of
    a control family, "no paper number" for a row whose paper text is empty, and its family's kind (or
    "paper claim") otherwise."""
    if row.get("kind"):
        return row_kind(row)
    fam = next((f for f in CLAIM_FAMILIES if f.key == family_of(row)), None)
    if fam is not None and fam.kind == "control":
        return "control"
    if not str(row.get("paper", "") or "").strip():
        return "no paper number"
    return fam.kind if fam is not None else "paper claim"


def present_stages(run_dir) -> list[str]:
    """The :data:`CLAIM_STAGES` whose claims file exists in ``run_dir``."""
    return [s for s in CLAIM_STAGES if claims_path(run_dir, s).is_file()]


def missing_stages(run_dir) -> list[str]:
    """The :data:`CLAIM_STAGES` without a claims file in ``run_dir`` (not run, or failed before saving)."""
    done = set(present_stages(run_dir))
    return [s for s in CLAIM_STAGES if s not in done]


def family_coverage(rows) -> pd.DataFrame:
    """Per family of the paper: ``family``, ``stage``, ``label``, ``n_rows`` (claim rows that belong to it),
    ``n_tested`` (those with a verdict other than "not tested") and ``status``: "tested", "not tested"
    (rows exist, none with a verdict) or "missing" (no row). ``rows``: claim rows, or a frame of
    :func:`claims_frame` (whose coverage-check rows are then left out)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows[rows["origin"] == "run"].to_dict("records") if "origin" in rows else rows.to_dict("records")
    out = []
    for f in PAPER_CLAIM_FAMILIES:
        mine = [r for r in rows if f.matches(r)]
        tested = [r for r in mine if r.get("verdict") != "not tested"]
        status = "tested" if tested else ("not tested" if mine else "missing")
        out.append({"family": f.key, "stage": f.stage, "label": f.label, "n_rows": len(mine),
                    "n_tested": len(tested), "status": status})
    return pd.DataFrame(out, columns=["family", "stage", "label", "n_rows", "n_tested", "status"])


def uncovered_rows(rows: list[dict], stages_present) -> list[dict]:
    """A "not tested" claim row for every paper family that no row of ``rows`` belongs to; the note says
    whether its stage did not report (not in ``stages_present``) or reported without it."""
    present = set(stages_present)
    out = []
    for f in PAPER_CLAIM_FAMILIES:
        if any(f.matches(r) for r in rows):
            continue
        note = (f"stage {f.stage} has no claims in this run (not run, or stopped before saving them)"
                if f.stage not in present else
                f"stage {f.stage} reported no claim of this family (the profile does not reach it)")
        out.append({"stage": f.stage, "claim": f.label, "setting": f.setting, "metric": f.metric, "paper": f.paper,
                    "ours": math.nan, "ours_lo": math.nan, "ours_hi": math.nan, "verdict": "not tested",
                    "note": note, "key": f.key, "kind": f.kind})
    return out
