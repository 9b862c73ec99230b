"""``bibad readme``: a finished run's summary published in the repository: its teaser, claims table,
detection AUROCs and run record copied to ``results/<profile>/`` with a ``README.md`` page that shows them,
and the profile's one-line entry in the README's results list rewritten from them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

from bibad_utils.base import ConfigError
from bibad_utils.experiments.summary import (CLAIMS_MD_FILE, FIGURES_DIR, claims_frame, claims_headline, md_cell,
                                             stage_verdicts, verdict_counts)
from bibad_utils.report import TEASER_CAPTION, TEASER_PNG, replace_marked_section

RESULTS_DIR = "results"  # committed snapshots of runs, for the README: results/<profile>/


def _markdown_table(df: pd.DataFrame, index_name: str) -> str:
    """``df`` (with a multi-index) as Markdown: first a column ``index_name`` of its index joined by ", "."""
    cols = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(v) for v in (", ".join(map(str, idx)), *row)) + " |"
              for idx, row in zip(df.index, df.values)]
    return "\n".join(lines)


def results_key(profile: str) -> str:
    """The README block of a profile's results: between ``<!-- results PROFILE -->`` and its closing mark."""
    return f"results {profile}"


def readme_results(run_dir, profile: str, repo_root, readme="README.md") -> Path:
    """Publish a run's results: copy ``<run_dir>/figures/{teaser.png, claims.md, detection.csv}`` and the
    run record to ``results/<profile>/``, write ``results/<profile>/README.md`` (the teaser, the verdicts
    per stage and every claim row) and rewrite the README's one-line entry of that profile (between
    ``<!-- results PROFILE -->`` and ``<!-- /results PROFILE -->``, :func:`results_key`): its verdict counts
    and the links. Everything comes from the run's files. Returns the snapshot folder."""
    run_dir, repo_root = Path(run_dir), Path(repo_root)
    figures = run_dir / FIGURES_DIR
    needed = [figures / TEASER_PNG, figures / CLAIMS_MD_FILE, run_dir / "executed" / "run.json"]
    absent = [str(p) for p in needed if not p.is_file()]
    if absent:
        raise ConfigError("profile", profile, f"a finished run (missing {', '.join(absent)}): run "
                          f"`bibad run --profile {profile}` first")
    record = json.loads(needed[2].read_text())
    if record["status"] != "ok":
        raise ConfigError("profile", profile, f"a run that finished (its run.json says {record['status']!r}): run "
                          f"`bibad run --profile {profile}` to the end first")
    dest = repo_root / RESULTS_DIR / profile
    dest.mkdir(parents=True, exist_ok=True)
    for path in needed:
        shutil.copy2(path, dest / path.name)
    if (figures / "detection.csv").is_file():  # stage 05's AUROCs, one row per (attack, p, detector, set, classifier)
        shutil.copy2(figures / "detection.csv", dest / "detection.csv")
    df = claims_frame(run_dir)
    counts = verdict_counts(df)
    minutes = sum(n["seconds"] for n in record["notebooks"]) / 60
    caption = (figures / TEASER_CAPTION).read_text().strip() if (figures / TEASER_CAPTION).is_file() else ""
    try:
        shown_dir = run_dir.resolve().relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        shown_dir = run_dir.name
    _write_page(dest, profile,
                f"Written by `bibad readme --profile {profile}` from `{shown_dir}`; its last `bibad run` spent "
                f"{minutes:.0f} minutes in the notebooks (a run reuses whatever the artifact store already holds, "
                f"so this is not a first-run time). {counts['total']} claim rows. " + claims_headline(df),
                [f"> {caption}" if caption else "", _markdown_table(stage_verdicts(df), "stage, kind"),
                 f"Every claim with the paper's number, ours with its 95 % interval and the verdict (also in "
                 f"[{CLAIMS_MD_FILE}]({CLAIMS_MD_FILE}) and the book's results chapter):",
                 (figures / CLAIMS_MD_FILE).read_text()])
    _write_entry(repo_root / readme, profile, f"{counts['total']} claim rows. {claims_headline(df)}")
    return dest


def readme_from_snapshot(profile: str, repo_root, readme="README.md") -> Path:
    """Rewrite the README entry of ``profile`` and its ``results/<profile>/README.md`` from the committed
    snapshot alone (``claims.md``, whose first line is the run's own headline, and ``teaser.png``), for a
    profile whose run directory is not on this machine. Returns the snapshot folder."""
    repo_root = Path(repo_root)
    dest = repo_root / RESULTS_DIR / profile
    claims = dest / CLAIMS_MD_FILE
    if not claims.is_file():
        raise ConfigError("profile", profile, f"a published snapshot ({claims} is missing): run "
                          f"`bibad run --profile {profile}` and `bibad readme --profile {profile}` first")
    text = claims.read_text().strip()
    headline = text.split("\n", 1)[0].strip()
    _write_page(dest, profile,
                f"Re-rendered from the committed snapshot `{RESULTS_DIR}/{profile}/` (the run directory was not on "
                f"the machine that wrote this page). {headline}", [text.split("\n", 1)[1]])
    _write_entry(repo_root / readme, profile, headline)
    return dest


def _write_page(dest: Path, profile: str, intro: str, blocks: list[str]) -> None:
    """``results/<profile>/README.md``: the title, ``intro``, the teaser (when the snapshot has one) and
    ``blocks`` (the claims Markdown among them, its stage headings one level up)."""
    body = [b.strip().replace("\n### ", "\n## ") for b in blocks]
    body = [b.replace("### ", "## ", 1) if b.startswith("### ") else b for b in body]
    teaser = f"![teaser]({TEASER_PNG})" if (dest / TEASER_PNG).is_file() else ""
    page = "\n\n".join([f"# Results of the `{profile}` run", intro, teaser, *body])
    (dest / "README.md").write_text(page.replace("\n\n\n\n", "\n\n") + "\n")


def _write_entry(readme: Path, profile: str, summary: str) -> None:
    rel = f"{RESULTS_DIR}/{profile}"
    line = f"- **`{profile}`**: {summary} [Summary and teaser]({rel}/README.md), [all claims]({rel}/{CLAIMS_MD_FILE}).\n"
    _insert_entry(readme, profile)
    replace_marked_section(readme, results_key(profile), line)


def _insert_entry(readme: Path, profile: str) -> None:
    """Give ``profile`` an empty entry after the README's last results entry when it has none yet (a first
    publication lands in the results list, not at the end of the file)."""
    text = readme.read_text() if readme.is_file() else ""
    if f"<!-- {results_key(profile)} -->" in text:
        return
    ends = [m.end() for m in re.finditer(r"<!-- /results [^>]+ -->\n", text)]
    if ends:
        block = f"<!-- {results_key(profile)} -->\n<!-- /{results_key(profile)} -->\n"
        readme.write_text(text[:ends[-1]] + block + text[ends[-1]:])
