"""``bibad readme``: a finished run's summary published in the repository: its teaser, claims table,
detection AUROCs and run record copied to ``results/<profile>/``, and the README's results block rewritten
from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from bibad_utils.base import ConfigError
from bibad_utils.experiments.summary import (CLAIMS_MD_FILE, FIGURES_DIR, claims_frame, claims_headline, md_cell,
                                             stage_verdicts, verdict_counts)
from bibad_utils.report import TEASER_CAPTION, TEASER_PNG, replace_marked_section

RESULTS_DIR = "results"  # committed snapshots of runs, for the README: results/<profile>/


def _markdown_table(df: pd.DataFrame, index_name: str) -> str:
    cols = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(v) for v in (idx, *row)) + " |" for idx, row in zip(df.index, df.values)]
    return "\n".join(lines)


def _flat_index(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_axis([", ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in table.index])


def results_key(profile: str) -> str:
    """The README block of a profile's results: between ``<!-- results PROFILE -->`` and its closing mark."""
    return f"results {profile}"


def readme_results(run_dir, profile: str, repo_root, readme="README.md") -> Path:
    """Publish a run's results summary in the README: copy ``<run_dir>/figures/{teaser.png, claims.md}``
    and the run record to ``results/<profile>/`` and rewrite the README's block of that profile (between
    ``<!-- results PROFILE -->`` and ``<!-- /results PROFILE -->``, :func:`results_key`) with the teaser, the verdicts per stage and a link
    to the whole claims table. Everything comes from the run's files. Returns the snapshot folder."""
    run_dir, repo_root = Path(run_dir), Path(repo_root)
    figures = run_dir / FIGURES_DIR
    needed = [figures / TEASER_PNG, figures / CLAIMS_MD_FILE, run_dir / "executed" / "run.json"]
    absent = [str(p) for p in needed if not p.is_file()]
    if absent:
        raise ConfigError("profile", profile, f"a finished run (missing {', '.join(absent)}): run "
                          f"`bibad run --profile {profile}` first")
    dest = repo_root / RESULTS_DIR / profile
    dest.mkdir(parents=True, exist_ok=True)
    for path in needed:
        shutil.copy2(path, dest / path.name)
    if (figures / "detection.csv").is_file():  # stage 05's AUROCs, one row per (attack, p, detector, set, classifier)
        shutil.copy2(figures / "detection.csv", dest / "detection.csv")
    df = claims_frame(run_dir)
    counts = verdict_counts(df)
    record = json.loads((run_dir / "executed" / "run.json").read_text())
    minutes = sum(n.get("seconds", 0) for n in record.get("notebooks", [])) / 60
    caption = (figures / TEASER_CAPTION).read_text().strip() if (figures / TEASER_CAPTION).is_file() else ""
    rel = f"{RESULTS_DIR}/{profile}"
    try:
        shown_dir = run_dir.resolve().relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        shown_dir = run_dir.name
    body = "\n\n".join([
        f"Results of the `{profile}` run (written by `bibad readme --profile {profile}` from "
        f"`{shown_dir}`; its last `bibad run` spent {minutes:.0f} minutes in the notebooks; a run reuses "
        f"whatever the artifact store already holds, so this is not a first-run time: the README's profile "
        f"table has those). "
        f"{counts['total']} claim rows. " + claims_headline(df),
        f"![teaser]({rel}/{TEASER_PNG})",
        f"> {caption}" if caption else "",
        _markdown_table(_flat_index(stage_verdicts(df)), "stage, kind"),
        f"Every claim with the paper's number, ours with its 95 % interval and the verdict (also in "
        f"[{rel}/{CLAIMS_MD_FILE}]({rel}/{CLAIMS_MD_FILE}) and the book's results chapter):",
        f"<details><summary>all {counts['total']} claim rows</summary>\n\n"
        + (figures / CLAIMS_MD_FILE).read_text().strip().replace("\n### ", "\n#### ") + "\n\n</details>",
    ]).replace("\n\n\n\n", "\n\n") + "\n"
    replace_marked_section(repo_root / readme, results_key(profile), body)
    return dest
