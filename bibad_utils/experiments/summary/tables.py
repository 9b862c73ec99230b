"""The claims of a run as tables: one frame of every claim row (with the families no stage reported), the
verdict counts with the paper's claims apart from the controls, the styled table of chapter 08, its
Markdown for the README and ``claims.md``, and the values chapter 08 glues."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bibad_utils.paper import PAPER_EPOCHS
from bibad_utils.base import ConfigError
from bibad_utils.experiments.summary.families import (CLAIM_STAGES, family_coverage, family_of, kind_of, present_stages,
                                                      uncovered_rows)
from bibad_utils.report import (COLUMNS, VERDICTS, HtmlBlock, check_claim_rows, cite_sources, fold_note, load_claims,
                                sources_html)
from bibad_utils.verdicts import count_verdicts, counts_text, headline


FIGURES_DIR = "figures"


CLAIMS_MD_FILE = "claims.md"


# Background tints of the verdicts in the styled table (Okabe-Ito green / orange / vermillion, grey).
VERDICT_COLORS = {"reproduced": "#c9ecdf", "partly": "#fbe3b5", "not reproduced": "#f6cbb4", "underpowered": "#d4e6f4",
                  "not tested": "#e6e6e6"}


def frame_from_rows(rows: list[dict], stages_present) -> pd.DataFrame:
    """The claims table from claim rows: ``rows`` plus :func:`uncovered_rows`, with the report's
    columns and ``family`` (key, "" for a row of no family), ``kind`` (:func:`kind_of`) and ``origin``
    ("run" | "coverage check"), grouped by stage in book order (rows keep their order within a stage)."""
    check_claim_rows(rows)
    extra = uncovered_rows(rows, stages_present)
    records = ([{**r, "origin": "run"} for r in rows] + [{**r, "origin": "coverage check"} for r in extra])
    cols = [*COLUMNS, "family", "kind", "origin", "exposure"]
    if not records:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(records)
    df["family"] = [family_of(r) for r in records]
    df["kind"] = [kind_of(r) for r in records]
    order = list(dict.fromkeys([*CLAIM_STAGES, *sorted(set(df["stage"]))]))
    df["_stage_order"] = df["stage"].map(order.index)
    df = df.sort_values("_stage_order", kind="stable").drop(columns="_stage_order").reset_index(drop=True)
    if "exposure" not in df:
        df["exposure"] = math.nan
    for c in ("ours", "ours_lo", "ours_hi", "exposure"):
        df[c] = df[c].astype(float)
    return df[cols]


def claims_frame(run_dir) -> pd.DataFrame:
    """Every claim row of the run in ``run_dir`` (:func:`bibad_utils.report.load_claims`) plus a "not
    tested" row per uncovered family (:func:`frame_from_rows`)."""
    return frame_from_rows(load_claims(run_dir), present_stages(run_dir))


def verdict_counts(df: pd.DataFrame) -> dict:
    """``{verdict: number of rows}`` for every verdict of :data:`bibad_utils.report.VERDICTS` (0 when
    absent), plus ``"total"``, over all rows whatever their kind (see :func:`kind_counts`)."""
    if "verdict" not in df.columns:
        raise ConfigError("df", f"columns {list(df.columns)}", "a claims frame with a 'verdict' column")
    counts = {v: int((df["verdict"] == v).sum()) for v in VERDICTS}
    counts["total"] = int(len(df))
    return counts


def kind_counts(df: pd.DataFrame) -> dict:
    """Verdict counts per kind (:func:`bibad_utils.verdicts.count_verdicts`): the paper's claims apart
    from the controls and the rows without a paper number."""
    return count_verdicts(_with_kind(df))


def _with_kind(df: pd.DataFrame) -> pd.DataFrame:
    return df if "kind" in df.columns else df.assign(kind=[kind_of(r) for r in df.to_dict("records")])


def claims_headline(df: pd.DataFrame) -> str:
    """The verdict counts as one sentence, the paper's claims first and apart from the controls and the
    rows without a paper number (:func:`bibad_utils.verdicts.headline`)."""
    return headline(_with_kind(df).to_dict("records"))


def coverage_table(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`family_coverage` for display: index (stage, family label), columns rows, tested, status."""
    cov = family_coverage(df)
    out = cov.rename(columns={"label": "family of claims", "n_rows": "rows", "n_tested": "tested"})
    return out.set_index(["stage", "family of claims"])[["rows", "tested", "status"]]


def glue_values(df: pd.DataFrame, missing=()) -> dict:
    """Values the results chapter quotes (keys ``nb08_*``): rows per verdict over all rows
    (``nb08_n_reproduced``, ..., ``nb08_n_claims``), the same per kind (``nb08_paper_reproduced``, ...,
    ``nb08_n_paper``; ``nb08_control_*``, ``nb08_n_control``; ``nb08_nonumber_*``, ``nb08_n_nonumber``),
    the headline sentence (``nb08_headline``), the stages without claims and the families of the paper
    without a row (texts, "none" when empty), and the number of families and of those tested."""
    counts = verdict_counts(df)
    cov = family_coverage(df)
    out = {f"nb08_n_{v.replace(' ', '_')}": counts[v] for v in VERDICTS}
    out["nb08_n_claims"] = counts["total"]
    for kind, short in (("paper claim", "paper"), ("control", "control"), ("no paper number", "nonumber")):
        c = kind_counts(df)[kind]
        out.update({f"nb08_{short}_{v.replace(' ', '_')}": c[v] for v in VERDICTS})
        out[f"nb08_n_{short}"] = c["total"]
    out["nb08_headline"] = claims_headline(df)
    out["nb08_missing_stages"] = ", ".join(missing) or "none"
    out["nb08_uncovered"] = "; ".join(cov.loc[cov["status"] == "missing", "label"]) or "none"
    out["nb08_n_families"] = len(cov)
    out["nb08_n_families_tested"] = int((cov["status"] == "tested").sum())
    return out


def stage_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per stage, kind and verdict: index (stage, kind) with the stages in table order and the kinds
    in the order of :data:`bibad_utils.paper.KINDS` (pairs without rows left out), one column per
    verdict, and the total."""
    df = _with_kind(df)
    out = []
    for stage in pd.unique(df["stage"]):
        out += [{"stage": stage, "kind": kind, **c} for kind, c in count_verdicts(df[df["stage"] == stage]).items()
                if c["total"]]
    cols = ["stage", "kind", *VERDICTS, "total"]
    return pd.DataFrame(out, columns=cols).set_index(["stage", "kind"])


def ours_text(ours: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """Our value with its 95 % interval, e.g. ``"0.312 [0.201, 0.423]"``; ``"n/a"`` without a value."""
    def fmt(x):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.4g}"

    if ours is None or not np.isfinite(ours):
        return "n/a"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        return f"{fmt(ours)} [{fmt(lo)}, {fmt(hi)}]"
    return fmt(ours)


DISPLAY_COLUMNS = ["claim", "setting", "paper", "ours (95 % CI)", "verdict", "kind", "exposure", "note"]


def exposure_text(epochs: float) -> str:
    """The fine-tuning exposure of a row's DM(s) in the paper's unit, e.g. "7.7 of ~50 epochs"; "" when not
    stated (a control of an instrument, a row saved before exposures were recorded)."""
    return "" if epochs is None or not np.isfinite(epochs) else f"{epochs:.1f} of ~{PAPER_EPOCHS} epochs"


def claims_table(df: pd.DataFrame) -> pd.DataFrame:
    """The display table: index (stage, row number within the stage), columns :data:`DISPLAY_COLUMNS`
    with ours formatted by :func:`ours_text`."""
    out = pd.DataFrame({
        "stage": df["stage"].astype(str),
        "#": df.groupby("stage", sort=False).cumcount() + 1,
        "claim": df["claim"], "setting": df["setting"], "paper": df["paper"],
        "ours (95 % CI)": [ours_text(o, lo, hi) for o, lo, hi in zip(df["ours"], df["ours_lo"], df["ours_hi"])],
        "verdict": df["verdict"], "kind": _with_kind(df)["kind"],
        "exposure": [exposure_text(e) for e in (df["exposure"] if "exposure" in df else [math.nan] * len(df))],
        "note": df["note"]})
    return out.set_index(["stage", "#"])[DISPLAY_COLUMNS]


def verdict_style(verdict: str) -> str:
    """CSS of a verdict cell."""
    return f"background-color: {VERDICT_COLORS[verdict]}; font-weight: bold" if verdict in VERDICT_COLORS else ""


def styled_claims(df: pd.DataFrame) -> HtmlBlock:
    """:func:`claims_table` for the book: verdict cells tinted by verdict, text left-aligned, grouped by stage;
    each paper source cited once as a numbered reference listed under the table, the notes folded behind
    an expandable "note" (:func:`bibad_utils.report.cite_sources`, as in the chapters' tables)."""
    import html

    table = claims_table(df)
    sources: list[str] = []
    table["paper"] = cite_sources(table["paper"], sources)
    table["note"] = [fold_note(html.escape(str(v))) if isinstance(v, str) else v for v in table["note"]]
    plain = [c for c in table.columns if c not in ("paper", "note")]
    styler = (table.style.format(escape="html", subset=plain).map(verdict_style, subset=["verdict"])
              .set_properties(**{"text-align": "left", "vertical-align": "top", "font-size": "0.85em"})
              .set_properties(subset=["claim", "paper", "note"], **{"min-width": "6em"})
              .set_table_styles([{"selector": "th", "props": "text-align: left; vertical-align: top;"}]))
    return HtmlBlock(styler.to_html() + sources_html(sources))


def md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(df: pd.DataFrame, missing=()) -> str:
    """The claims as Markdown for the README: the verdict counts with the paper's claims apart from the
    controls and the rows without a paper number (:func:`claims_headline`), the stages without claims
    (``missing``), then one table per stage (claim, setting, paper, ours with interval, verdict, kind)."""
    counts = verdict_counts(df)
    parts = [f"{counts['total']} claim rows. " + claims_headline(df)]
    if missing:
        parts.append("Stages without claims in this run: " + ", ".join(f"`{s}`" for s in missing) + ".")
    table = claims_table(df) if len(df) else None
    for stage in ([] if table is None else pd.unique(table.index.get_level_values(0))):
        rows = table.loc[stage]
        lines = [f"### {stage}", "", "| claim | setting | paper | ours (95 % CI) | verdict | kind | exposure |",
                 "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(md_cell(r[c]) for c in ("claim", "setting", "paper", "ours (95 % CI)", "verdict",
                                                              "kind", "exposure"))
                  + " |" for _, r in rows.iterrows()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def save_claims_markdown(run_dir, df: pd.DataFrame, missing=()) -> Path:
    """Write :func:`claims_markdown` to ``<run_dir>/figures/claims.md``; returns the path."""
    path = Path(run_dir) / FIGURES_DIR / CLAIMS_MD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(claims_markdown(df, missing))
    return path


# The landing page's families of claims: (heading, claim keys, the chapter that makes them).
LANDING_FAMILIES = (
    ("Trojan horses: the poisoned DM generates trigger-carrying images of the wrong class", ("trojan_g1",),
     "04_insights"),
    ("Trigger amplification: more triggers in the generations than in the training data", ("amplification",),
     "04_insights"),
    ("Phase transition: G2 at low poisoning ratios, G1 at high ones", ("phase_transition",), "04_insights"),
    ("Backdoor detection is easier on generations (CD, STRIP, FCT)",
     ("detection_cd", "detection_strip", "detection_fct"), "05_castle_walls"),
    ("Training a classifier on generations defuses the backdoor",
     ("train_on_generations_asr", "train_on_generations_ta"), "05_castle_walls"),
    ("The poisoned DM as a classifier resists the backdoor",
     ("diffusion_classifier_asr", "diffusion_classifier_ta", "p_filter"), "05_castle_walls"),
    ("Duplicated images and replication", ("duplicates_g1", "duplicates_g2", "replication"), "06_memorization"),
    ("Controls (clean and relabel-only models, the duplicate finder)",
     ("clean_control", "relabel_control", "duplicate_finder"), ""),
)


def family_sentence(df: pd.DataFrame, keys) -> str:
    """The verdicts of the rows of claim ``keys`` as one sentence: "9 rows: 3 reproduced, 2 partly, 4 not
    tested." (verdicts without rows left out; "no row in this run." without rows)."""
    rows = df[df["family"].isin(keys)] if "family" in df.columns else df.iloc[0:0]
    if not len(rows):
        return "no row in this run."
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}: {counts_text(rows['verdict'])}."


def landing_markdown(df: pd.DataFrame, profile: str) -> str:
    """MyST for the book's first page: one line per family of :data:`LANDING_FAMILIES` with its verdict
    counts in this run and a link to the chapter that makes the claims."""
    lines = [f"**What the `{profile}` run found**, family by family (every row with the paper's number beside "
             f"ours: {{doc}}`../notebooks/08_results`):", ""]
    for heading, keys, stage in LANDING_FAMILIES:
        where = f" ({{doc}}`chapter {stage[:2]} <../notebooks/{stage}>`)" if stage else ""
        lines.append(f"- *{heading}*{where}: {family_sentence(df, keys)}")
    listed = [k for _, keys, _ in LANDING_FAMILIES for k in keys]
    others = df[~df["family"].isin(listed)] if "family" in df.columns else df
    if len(others):
        lines.append(f"- *Other rows of this study*: {family_sentence(others.assign(family='_'), ['_'])}")
    return "\n".join(lines) + "\n"
