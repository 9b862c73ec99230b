"""What changed since a profile's published results: the verdict of every row of this run beside the
verdict the committed ``results/<profile>/claims.md`` gives for the same row.

A row is identified by its stage, its setting and the start of its claim text (:data:`CLAIM_PREFIX`
characters, so that a claim reworded after its first words still matches). Rows only in the run are
"new", rows only in the published table "dropped". The published table is read from its Markdown, the
only form the repository keeps of earlier runs (:func:`bibad_utils.experiments.summary.claims_markdown`
writes it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bibad_utils.experiments.summary.tables import CLAIMS_MD_FILE

CLAIM_PREFIX = 24
CHANGE_COLUMNS = ("stage", "claim", "setting", "before", "after", "change")


def published_claims(path) -> pd.DataFrame:
    """The rows of a published ``claims.md`` (stage, claim, setting, ours, verdict); empty when the file does
    not exist. Cells keep their text (escaped pipes restored)."""
    path = Path(path)
    cols = ["stage", "claim", "setting", "ours", "verdict"]
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    rows, stage = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            stage = line[4:].strip()
        elif line.startswith("| ") and stage and not line.startswith("| claim |"):
            cells = [c.strip().replace("\\|", "|") for c in line.replace("\\|", "\x00").strip("|").split("|")]
            cells = [c.replace("\x00", "|") for c in cells]
            if len(cells) >= 5:
                rows.append({"stage": stage, "claim": cells[0], "setting": cells[1], "ours": cells[3],
                             "verdict": cells[4]})
    return pd.DataFrame(rows, columns=cols)


def _key(stage, claim, setting) -> tuple:
    return str(stage), str(claim)[:CLAIM_PREFIX], str(setting)


def verdict_changes(claims: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Every row whose verdict differs from the published one, plus the new and dropped rows.

    ``claims``: this run's claims frame (:func:`bibad_utils.experiments.summary.claims_frame`: columns stage,
    claim, setting, verdict); ``published``: :func:`published_claims`. Returns :data:`CHANGE_COLUMNS`, one
    row per change (``change``: "changed" | "new" | "dropped"), in the run's order, dropped rows last."""
    old = {_key(r.stage, r.claim, r.setting): r.verdict for r in published.itertuples()}
    seen, out = set(), []
    for r in claims.itertuples():
        k = _key(r.stage, r.claim, r.setting)
        seen.add(k)
        before = old.get(k)
        if before is None:
            out.append((r.stage, r.claim, r.setting, "", r.verdict, "new"))
        elif before != r.verdict:
            out.append((r.stage, r.claim, r.setting, before, r.verdict, "changed"))
    for r in published.itertuples():
        if _key(r.stage, r.claim, r.setting) not in seen:
            out.append((r.stage, r.claim, r.setting, r.verdict, "", "dropped"))
    return pd.DataFrame(out, columns=list(CHANGE_COLUMNS))


def changes_sentence(changes: pd.DataFrame, published: pd.DataFrame) -> str:
    """One sentence counting :func:`verdict_changes` (or saying that nothing was published before)."""
    if published.empty:
        return "No results of this profile were published before this run, so there is nothing to compare."
    n = changes["change"].value_counts()
    return (f"Against the {len(published)} rows of the published results, {int(n.get('changed', 0))} rows changed "
            f"their verdict, {int(n.get('new', 0))} rows are new and {int(n.get('dropped', 0))} were dropped.")


def published_path(repo_root, profile: str) -> Path:
    """``<repo_root>/results/<profile>/claims.md``: the committed results of ``profile``."""
    return Path(repo_root) / "results" / profile / CLAIMS_MD_FILE
