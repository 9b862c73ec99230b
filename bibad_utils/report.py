"""Claims of the paper against our numbers: one row per claim, saved by each analysis notebook and
collected into the book's results table.

A claim row is a dict with keys:
``stage`` (e.g. "04_insights"), ``claim`` (the paper's statement, short), ``setting`` (trigger, p, w...),
``metric`` (what is compared), ``paper`` (the paper's value as text, "" if the paper gives none),
``ours`` (float), ``ours_lo`` / ``ours_hi`` (95 % interval, NaN if none), ``verdict``
(one of :data:`VERDICTS`: "reproduced" | "partly" | "not reproduced" | "underpowered" | "not tested"),
``note`` (why, in a sentence); and, optional for rows saved before they existed, ``key`` (the claim
family's key in :mod:`bibad_utils.paper`, "" for a row of no family) and ``kind`` ("paper claim" |
"control" | "no paper number", :data:`bibad_utils.paper.KINDS`). The verdict rules are in
:mod:`bibad_utils.verdicts`.
Rows are written to ``<run_dir>/claims/<stage>.json`` so the results page can gather them.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

from bibad_utils.base import ConfigError
from bibad_utils.paper import claim as paper_claim
from bibad_utils.files import load_json, save_json
from bibad_utils.verdicts import VERDICTS, at_exposure, check_interval, row_kind

COLUMNS = ("stage", "claim", "setting", "metric", "paper", "ours", "ours_lo", "ours_hi", "verdict", "note")
OPTIONAL_COLUMNS = ("key", "kind", "exposure")
# The run's teaser (drawn by the results chapter into <run_dir>/figures/, staged into the book by
# bibad_utils.publish.book as book/_generated/, copied to results/<profile>/ by bibad readme).
TEASER_PNG, TEASER_CAPTION = "teaser.png", "teaser_caption.md"
GENERATED_DIR = "_generated"  # per-build files of the book's first page, never committed


def claim_row(stage: str, claim: str, *, metric: str, ours: float, verdict: str, setting: str = "",
              paper: str = "", lo: float = math.nan, hi: float = math.nan, note: str = "", key: str = "",
              kind: str = "", exposure: float = math.nan) -> dict:
    """One validated claim row (see the module docstring). ``key``: a claim key of
    :data:`bibad_utils.paper.CLAIM_KEYS` ("" for none); ``kind``: default the key's kind, else "no paper
    number" when ``paper`` is empty and "paper claim" otherwise (left "" without a key: readers infer
    it, :func:`bibad_utils.verdicts.row_kind`). A row counts as a "paper claim" only with a paper number:
    a paper-claim row whose ``paper`` text is empty becomes "no paper number". An inverted interval
    (``lo > hi``) is refused. ``exposure``: the epochs of fine-tuning of the DM(s) behind the row (NaN: not
    stated, e.g. a control of an instrument); a "not reproduced" far below the paper's exposure becomes
    "not tested" (:func:`bibad_utils.verdicts.at_exposure`)."""
    if verdict not in VERDICTS:
        raise ConfigError("verdict", verdict, " | ".join(VERDICTS))
    check_interval(lo, hi, f"interval of the claim row {claim!r} ({setting})")
    if key:
        kind = kind or paper_claim(key).kind
    if kind == "paper claim" and not str(paper or "").strip():
        kind = "no paper number"
    verdict, why = at_exposure(verdict, exposure)
    note = f"{why}; {note}" if why and note else why or note
    row = {"stage": stage, "claim": claim, "setting": setting, "metric": metric, "paper": paper,
           "ours": float(ours), "ours_lo": float(lo), "ours_hi": float(hi), "verdict": verdict, "note": note,
           "key": key, "kind": kind, "exposure": float(exposure)}
    if kind:
        row_kind(row)  # validates it
    return row


def claims_path(run_dir, stage: str) -> Path:
    return Path(run_dir) / "claims" / f"{stage}.json"


def check_claim_rows(rows: list[dict]) -> None:
    """ConfigError naming the first row that lacks a column of :data:`COLUMNS` or has an unknown verdict."""
    for r in rows:
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise ConfigError("claim row", r, f"a row with keys {list(COLUMNS)} (missing {missing})")
        if r["verdict"] not in VERDICTS:
            raise ConfigError("verdict", r["verdict"], " | ".join(VERDICTS))


def save_claims(run_dir, stage: str, rows: list[dict]) -> Path:
    """Write ``rows`` (from :func:`claim_row`) as ``<run_dir>/claims/<stage>.json``."""
    check_claim_rows(rows)
    path = claims_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_json(path, rows)


def load_claims(run_dir) -> list[dict]:
    """All claim rows of a run, stage by stage (sorted by file name)."""
    folder = Path(run_dir) / "claims"
    rows: list[dict] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rows.extend(load_json(path))
    return rows


def replace_marked_section(path, key: str, body: str, default_header: str = "") -> None:
    """Replace the block between ``<!-- KEY -->`` and ``<!-- /KEY -->`` in the Markdown file ``path``
    by ``body`` (or append the block, after ``default_header`` for a new file); the rest is kept."""
    path = Path(path)
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body}{end}\n"
    text = path.read_text() if path.is_file() else default_header
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def book_tables() -> None:
    """Display settings for the book's notebooks: every character of every cell (no "..." truncation of a
    claim or a note), every column and row, and data frames drawn by :func:`frame_html` (intervals in one
    column, no meaningless row numbers). The page's CSS wraps long text."""
    import pandas as pd

    for option, value in (("display.max_colwidth", None), ("display.max_columns", None),
                          ("display.max_rows", 500), ("display.width", None)):
        pd.set_option(option, value)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover (IPython comes with the notebooks' kernel)
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)


def _number(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return ""
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.4g}"


def compact_frame(df):
    """``df`` for reading: each numeric column ``x`` with columns ``x_lo`` and ``x_hi`` beside it becomes one
    text column "x [lo, hi]" (the interval's columns dropped), so that a table of estimates fits a page."""
    import pandas as pd

    out = df.copy()
    for col in list(out.columns):
        lo, hi = f"{col}_lo", f"{col}_hi"
        if not isinstance(col, str) or lo not in out.columns or hi not in out.columns:
            continue
        if not all(pd.api.types.is_numeric_dtype(out[c]) for c in (col, lo, hi)):
            continue
        out[col] = [f"{_number(v)} [{_number(a)}, {_number(b)}]" if _number(a) else _number(v)
                    for v, a, b in zip(out[col], out[lo], out[hi])]
        out = out.drop(columns=[lo, hi])
    return out


# A paper number's source at the end of its text: "...: 0.956 -> 0.970 [slides, Inspiration 1, Table 3 ...]"
_SOURCE_TAIL = re.compile(r"\s*\[([^\[\]]{12,})\]\s*$")


def frame_html(df) -> str:
    """HTML of a data frame for a book page: :func:`compact_frame`; no index when it is only row numbers; a
    ``paper`` column's sources cited once, as numbered references listed under the table; a ``note`` column's
    text folded into an expandable "note" (a verdict table's rows stay one line high)."""
    import pandas as pd

    plain = isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
    out = compact_frame(df)
    sources: list[str] = []

    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = [html.escape(str(v)) if isinstance(v, str) else v for v in out[col]]
    if "paper" in df.columns and "paper" in out.columns:
        out["paper"] = cite_sources(df["paper"], sources)
    if "note" in out.columns:
        out["note"] = [fold_note(v) for v in out["note"]]
    table = out.to_html(index=not plain, na_rep="", border=0, classes="bibad-table", escape=False)
    return table + sources_html(sources)


def cite_sources(texts, sources: list[str]) -> list:
    """Each text (HTML-escaped) with its trailing source (``[...]``, :data:`_SOURCE_TAIL`) replaced by a number
    ``[n]`` into ``sources``, which collects each source once, in order of first use; non-texts as they are."""
    out = []
    for text in texts:
        m = _SOURCE_TAIL.search(str(text)) if isinstance(text, str) else None
        if m is None:
            out.append(html.escape(text) if isinstance(text, str) else text)
            continue
        if m.group(1) not in sources:
            sources.append(m.group(1))
        out.append(html.escape(text[:m.start()]) + f" [{sources.index(m.group(1)) + 1}]")
    return out


def fold_note(text):
    """An (escaped) note folded behind an expandable "note", so that a verdict table's rows stay one line."""
    return f"<details><summary>note</summary>{text}</details>" if isinstance(text, str) and text else text


def sources_html(sources: list[str]) -> str:
    """The numbered sources of :func:`cite_sources` as a paragraph under a table ("" without any)."""
    if not sources:
        return ""
    listed = "; ".join(f"[{i}] {html.escape(s)}" for i, s in enumerate(sources, 1))
    return f'\n<p class="bibad-sources">Sources of the paper\'s numbers: {listed}.</p>'


class HtmlBlock:
    """Ready HTML shown as such by a notebook (its ``_repr_html_``), e.g. a styled table and its sources."""

    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self) -> str:
        return self.html


def with_interval(v: float, lo: float, hi: float, percent: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.1%} [{lo:.1%}, {hi:.1%}]" if percent else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def paper_value_text(v: float, percent: bool) -> str:
    return "" if v is None or math.isnan(v) else (f"{v:.2%}" if percent else f"{v:.3f}")
