"""The results summary of chapter 08: every claim of the paper against our run, and the teaser figure.

Claim rows come from the executed analysis notebooks (``<run_dir>/claims/<stage>.json``, written with
:func:`bibad_utils.report.save_claims`). :data:`PAPER_CLAIM_FAMILIES` lists the families of claims that the
paper makes, from :data:`bibad_utils.paper.CLAIMS` (a row names its family by its ``key``), so that a family
no stage reported (a stage not run, or a profile that does not reach it) still appears in the table, as
"not tested", instead of silently vanishing. Every count keeps the paper's claims apart from the controls
and the rows without a paper number (:func:`bibad_utils.verdicts.headline`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bibad_utils import metrics, paper
from bibad_utils.config import ConfigError
from bibad_utils.experiments.explorer import ExplorerData, draw_panel, panel_size
from bibad_utils.plots import PALETTE, REF_COLOR
from bibad_utils.report import COLUMNS, TEASER_CAPTION, TEASER_PNG, VERDICTS, claims_path, load_claims
from bibad_utils.verdicts import count_verdicts, headline, row_kind
from bibad_utils.stages import Cell

FIGURES_DIR = "figures"
CLAIMS_MD_FILE = "claims.md"
TEASER_DPI = 150

# Background tints of the verdicts in the styled table (Okabe-Ito green / orange / vermillion, grey).
VERDICT_COLORS = {"reproduced": "#c9ecdf", "partly": "#fbe3b5", "not reproduced": "#f6cbb4", "underpowered": "#d4e6f4",
                  "not tested": "#e6e6e6"}


@dataclass(frozen=True)
class ClaimFamily:
    """One family of claims, from :data:`bibad_utils.paper.CLAIMS`. A claim row belongs to it when the
    row's ``key`` is ``key`` (rows saved before rows carried keys: see :func:`legacy_family`). ``label``,
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
        if row.get("stage") != self.stage:
            return False
        key = row.get("key") or ""
        return key == self.key if key else legacy_family(row) == self.key


def _family(c: paper.PaperClaim) -> ClaimFamily:
    return ClaimFamily(c.key, c.stage, c.label, c.metric, paper.paper_text(c.key), c.setting, c.kind)


# Every family of claim rows (the paper's and this study's controls), and those the coverage check
# demands a row of: the paper's (a control is this study's own addition and appears when run).
CLAIM_FAMILIES = tuple(_family(c) for c in paper.CLAIMS)
PAPER_CLAIM_FAMILIES = tuple(f for f in CLAIM_FAMILIES if f.kind != "control")
# The stages that report claims, in book order, as the families name them.
CLAIM_STAGES = tuple(dict.fromkeys(f.stage for f in CLAIM_FAMILIES))

# Claim files written before claim rows carried a ``key`` (an earlier run's, or a stage not yet keyed)
# are recognised by their stage and wording, field by field (case-insensitive search; ``text`` is the
# claim and the metric together). New rows carry their key and never reach this table.
_LEGACY_PATTERNS = {
    "trojan_g1": (("claim", r"trojan"),),
    "amplification": (("claim", r"amplif"),),
    "phase_transition": (("claim", r"phase transition"),),
    "clean_control": (("claim", r"clean control"),),
    "relabel_control": (("claim", r"relabel"),),
    "detection_cd": (("claim", r"detect"), ("setting", r"\bCD\b")),
    "detection_strip": (("claim", r"detect"), ("setting", r"\bSTRIP\b")),
    "detection_fct": (("claim", r"detect"), ("setting", r"\bFCT\b")),
    "train_on_generations_asr": (("metric", r"\bASR\b.*generat"),),
    "train_on_generations_ta": (("metric", r"\bTA\b.*generat"),),
    "diffusion_classifier_asr": (("claim", r"diffusion classifier"), ("metric", r"\bASR\b")),
    "diffusion_classifier_ta": (("metric", r"\bTA\b"), ("text", r"\bDC\b|diffusion classifier")),
    "p_filter": (("text", r"filter"),),
    "duplicates_g1": (("claim", r"duplicated images"), ("text", r"\bG1\b")),
    "duplicates_g2": (("claim", r"duplicated images"), ("text", r"\bG2\b")),
    "replication": (("claim", r"replicat|nearest training"),),
    "duplicate_finder": (("claim", r"duplicate finder"),),
}


def legacy_family(row: dict, families=CLAIM_FAMILIES) -> str:
    """The family of a claim row saved without a ``key`` (see :data:`_LEGACY_PATTERNS`), "" when none."""
    fields = {"claim": row.get("claim", ""), "metric": row.get("metric", ""), "setting": row.get("setting", ""),
              "text": f"{row.get('claim', '')} {row.get('metric', '')}"}
    for f in families:
        pats = _LEGACY_PATTERNS.get(f.key)
        if pats and row.get("stage") == f.stage and all(
                re.search(rx, str(fields[field]), re.IGNORECASE) for field, rx in pats):
            return f.key
    return ""


# ------------------------------------------------------------------------------------ the claims

def family_of(row: dict, families=CLAIM_FAMILIES) -> str:
    """Key of the family ``row`` belongs to (its ``key``, or :func:`legacy_family` for a row without),
    "" when none."""
    return next((f.key for f in families if f.matches(row)), "")


def kind_of(row: dict, families=CLAIM_FAMILIES) -> str:
    """The row's ``kind`` (:data:`bibad_utils.paper.KINDS`): its own when set; else "control" for a row of
    a control family, "no paper number" for a row whose paper text is empty, and its family's kind (or
    "paper claim") otherwise."""
    if row.get("kind"):
        return row_kind(row)
    fam = next((f for f in families if f.key == family_of(row, families)), None)
    if fam is not None and fam.kind == "control":
        return "control"
    if not str(row.get("paper", "") or "").strip():
        return "no paper number"
    return fam.kind if fam is not None else "paper claim"


def present_stages(run_dir, stages=CLAIM_STAGES) -> list[str]:
    """The ``stages`` whose claims file exists in ``run_dir``."""
    return [s for s in stages if claims_path(run_dir, s).is_file()]


def missing_stages(run_dir, stages=CLAIM_STAGES) -> list[str]:
    """The ``stages`` without a claims file in ``run_dir`` (not run, or failed before saving)."""
    done = set(present_stages(run_dir, stages))
    return [s for s in stages if s not in done]


def family_coverage(rows, families=PAPER_CLAIM_FAMILIES) -> pd.DataFrame:
    """Per family: ``family``, ``stage``, ``label``, ``n_rows`` (claim rows that belong to it),
    ``n_tested`` (those with a verdict other than "not tested") and ``status``: "tested", "not tested"
    (rows exist, none with a verdict) or "missing" (no row). ``rows``: claim rows, or a frame of
    :func:`claims_frame` (whose coverage-check rows are then left out)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows[rows["origin"] == "run"].to_dict("records") if "origin" in rows else rows.to_dict("records")
    out = []
    for f in families:
        mine = [r for r in rows if f.matches(r)]
        tested = [r for r in mine if r.get("verdict") != "not tested"]
        status = "tested" if tested else ("not tested" if mine else "missing")
        out.append({"family": f.key, "stage": f.stage, "label": f.label, "n_rows": len(mine),
                    "n_tested": len(tested), "status": status})
    return pd.DataFrame(out, columns=["family", "stage", "label", "n_rows", "n_tested", "status"])


def uncovered_rows(rows: list[dict], stages_present, families=PAPER_CLAIM_FAMILIES) -> list[dict]:
    """A "not tested" claim row for every family that no row of ``rows`` belongs to; the note says
    whether its stage did not report (not in ``stages_present``) or reported without it."""
    present = set(stages_present)
    out = []
    for f in families:
        if any(f.matches(r) for r in rows):
            continue
        note = (f"stage {f.stage} has no claims in this run (not run, or stopped before saving them)"
                if f.stage not in present else
                f"stage {f.stage} reported no claim of this family (the profile does not reach it)")
        out.append({"stage": f.stage, "claim": f.label, "setting": f.setting, "metric": f.metric, "paper": f.paper,
                    "ours": math.nan, "ours_lo": math.nan, "ours_hi": math.nan, "verdict": "not tested",
                    "note": note, "key": f.key, "kind": f.kind})
    return out


def frame_from_rows(rows: list[dict], stages_present, families=PAPER_CLAIM_FAMILIES) -> pd.DataFrame:
    """The claims table from claim rows: ``rows`` plus :func:`uncovered_rows`, with the report's
    columns and ``family`` (key, "" for a row of no family), ``kind`` (:func:`kind_of`) and ``origin``
    ("run" | "coverage check"), grouped by stage in book order (rows keep their order within a stage)."""
    for r in rows:
        missing = [c for c in COLUMNS if c not in r]
        if missing:
            raise ConfigError("claim row", r, f"a row with keys {list(COLUMNS)} (missing {missing})")
        if r["verdict"] not in VERDICTS:
            raise ConfigError("verdict", r["verdict"], " | ".join(VERDICTS))
    extra = uncovered_rows(rows, stages_present, families)
    records = ([{**r, "origin": "run"} for r in rows] + [{**r, "origin": "coverage check"} for r in extra])
    cols = [*COLUMNS, "family", "kind", "origin"]
    if not records:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(records)
    everything = tuple(dict.fromkeys([*families, *CLAIM_FAMILIES]))
    df["family"] = [family_of(r, everything) for r in records]
    df["kind"] = [kind_of(r, everything) for r in records]
    order = list(dict.fromkeys([f.stage for f in everything] + sorted(set(df["stage"]))))
    df["_stage_order"] = df["stage"].map(order.index)
    df = df.sort_values("_stage_order", kind="stable").drop(columns="_stage_order").reset_index(drop=True)
    for c in ("ours", "ours_lo", "ours_hi"):
        df[c] = df[c].astype(float)
    return df[cols]


def claims_frame(run_dir, families=PAPER_CLAIM_FAMILIES) -> pd.DataFrame:
    """Every claim row of the run in ``run_dir`` (:func:`bibad_utils.report.load_claims`) plus a "not
    tested" row per uncovered family (:func:`frame_from_rows`)."""
    stages = list(dict.fromkeys(f.stage for f in families))
    return frame_from_rows(load_claims(run_dir), present_stages(run_dir, stages), families)


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
    if "kind" in df.columns:
        return df
    return df.assign(kind=[kind_of(r) for r in df.to_dict("records")])


def claims_headline(df: pd.DataFrame) -> str:
    """The verdict counts as one sentence, the paper's claims first and apart from the controls and the
    rows without a paper number (:func:`bibad_utils.verdicts.headline`)."""
    return headline(_with_kind(df).to_dict("records"))


def coverage_table(df: pd.DataFrame, families=PAPER_CLAIM_FAMILIES) -> pd.DataFrame:
    """:func:`family_coverage` for display: index (stage, family label), columns rows, tested, status."""
    cov = family_coverage(df, families)
    out = cov.rename(columns={"label": "family of claims", "n_rows": "rows", "n_tested": "tested"})
    return out.set_index(["stage", "family of claims"])[["rows", "tested", "status"]]


def glue_values(df: pd.DataFrame, missing=(), families=PAPER_CLAIM_FAMILIES) -> dict:
    """Values the results chapter quotes (keys ``nb08_*``): rows per verdict over all rows
    (``nb08_n_reproduced``, ..., ``nb08_n_claims``), the same per kind (``nb08_paper_reproduced``, ...,
    ``nb08_n_paper``; ``nb08_control_*``, ``nb08_n_control``; ``nb08_nonumber_*``, ``nb08_n_nonumber``),
    the headline sentence (``nb08_headline``), the stages without claims and the families of the paper
    without a row (texts, "none" when empty), and the number of families and of those tested."""
    counts = verdict_counts(df)
    cov = family_coverage(df, families)
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
    stages = list(pd.unique(df["stage"]))
    out = []
    for stage in stages:
        for kind in paper.KINDS:
            sel = df[(df["stage"] == stage) & (df["kind"] == kind)]
            if len(sel):
                out.append({"stage": stage, "kind": kind, **{v: int((sel["verdict"] == v).sum()) for v in VERDICTS},
                            "total": int(len(sel))})
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


DISPLAY_COLUMNS = ["claim", "setting", "paper", "ours (95 % CI)", "verdict", "kind", "note"]


def claims_table(df: pd.DataFrame) -> pd.DataFrame:
    """The display table: index (stage, row number within the stage), columns :data:`DISPLAY_COLUMNS`
    with ours formatted by :func:`ours_text`."""
    out = pd.DataFrame({
        "stage": df["stage"].astype(str),
        "#": df.groupby("stage", sort=False).cumcount() + 1,
        "claim": df["claim"], "setting": df["setting"], "paper": df["paper"],
        "ours (95 % CI)": [ours_text(o, lo, hi) for o, lo, hi in zip(df["ours"], df["ours_lo"], df["ours_hi"])],
        "verdict": df["verdict"], "kind": _with_kind(df)["kind"], "note": df["note"]})
    return out.set_index(["stage", "#"])[DISPLAY_COLUMNS]


def verdict_style(verdict: str) -> str:
    """CSS of a verdict cell."""
    return f"background-color: {VERDICT_COLORS[verdict]}; font-weight: bold" if verdict in VERDICT_COLORS else ""


def styled_claims(df: pd.DataFrame):
    """:func:`claims_table` as a pandas Styler: verdict cells tinted by verdict, text left-aligned,
    grouped by stage."""
    table = claims_table(df)
    return (table.style.map(verdict_style, subset=["verdict"])
            .set_properties(**{"text-align": "left", "vertical-align": "top", "font-size": "0.85em"})
            .set_properties(subset=["ours (95 % CI)", "verdict"], **{"white-space": "nowrap"})
            .set_properties(subset=["claim", "paper", "note"], **{"min-width": "10em"})
            .set_table_styles([{"selector": "th", "props": "text-align: left; vertical-align: top;"}]))


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
        lines = [f"### {stage}", "", "| claim | setting | paper | ours (95 % CI) | verdict | kind |",
                 "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(md_cell(r[c]) for c in ("claim", "setting", "paper", "ours (95 % CI)", "verdict",
                                                              "kind"))
                  + " |" for _, r in rows.iterrows()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def save_claims_markdown(run_dir, df: pd.DataFrame, missing=()) -> Path:
    """Write :func:`claims_markdown` to ``<run_dir>/figures/claims.md``; returns the path."""
    path = Path(run_dir) / FIGURES_DIR / CLAIMS_MD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(claims_markdown(df, missing))
    return path


# ------------------------------------------------------------------------------------- the teaser

def ratio_row(trigger, r_train: float, z: float = 1.96, **keys) -> dict:
    """``keys`` plus ``n``, ``n_triggered``, ``r_gen`` with its Wilson interval (``r_gen_lo``/``_hi``)
    and ``r_train`` from the detector's decisions ``trigger`` (bool ``[N]``)."""
    t = np.asarray(trigger, dtype=bool)
    k, n = int(t.sum()), int(len(t))
    lo, hi = metrics.wilson_interval(k, n, z)
    return {**keys, "n": n, "n_triggered": k, "r_gen": metrics.r_gen(t), "r_gen_lo": lo, "r_gen_hi": hi,
            "r_train": float(r_train)}


def teaser_guidance(study) -> float:
    """The guidance scale of the teaser: the profile's first, at which chapter 04 states its claims."""
    return float(study.cfg["sampling"]["guidance"][0])


def ratio_frame(study, guidance: float | None = None, data: ExplorerData | None = None) -> pd.DataFrame:
    """r_gen (with its 95 % Wilson interval) and r_train per attack and p (the clean control first, with
    r_train 0), target-prompt generations at ``guidance`` judged by the attack's detector. Columns:
    attack, p, label ("clean" or "5%"), n, n_triggered, r_gen, r_gen_lo, r_gen_hi, r_train."""
    w = teaser_guidance(study) if guidance is None else float(guidance)
    data = data or ExplorerData(study)
    rows = []
    for attack in study.cfg["attacks"]:
        cells = ([Cell("clean")] if "clean" in study.cfg["controls"] else []) + [
            Cell(attack, float(p)) for p in sorted(study.cfg["ratios"])]
        for cell in cells:
            r_train = float(study.poison_manifest(cell)["r_train"]) if cell.trigger_kind else 0.0
            label = "clean" if cell.kind == "clean" else f"{100 * cell.ratio:g}%"
            rows.append(ratio_row(data.view(cell, w, attack)["trigger"], r_train, attack=attack, p=cell.ratio,
                                  label=label))
    return pd.DataFrame(rows)


def draw_ratio_bars(ax, df: pd.DataFrame) -> None:
    """Bars of r_gen with their intervals per (attack, p) of :func:`ratio_frame`, grouped by p, one colour
    per attack, with r_train as a black tick on each bar."""
    labels = list(pd.unique(df["label"]))
    attacks = list(pd.unique(df["attack"]))
    width = 0.8 / len(attacks)
    for i, attack in enumerate(attacks):
        rows = df[df["attack"] == attack]
        x = np.array([labels.index(v) for v in rows["label"]]) - 0.4 + width * (i + 0.5)
        y = rows["r_gen"].to_numpy(float)
        err = np.clip(np.vstack([y - rows["r_gen_lo"].to_numpy(float), rows["r_gen_hi"].to_numpy(float) - y]), 0, None)
        ax.bar(x, y, width=0.92 * width, color=PALETTE[i % len(PALETTE)], label=f"r_gen, {attack}")
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="#333333", elinewidth=1.0, capsize=2.5)
        ax.hlines(rows["r_train"].to_numpy(float), x - 0.46 * width, x + 0.46 * width, colors=REF_COLOR,
                  linewidth=2.2, label="r_train" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("poisoning ratio p")
    ax.set_ylabel("trigger ratio")
    ax.set_ylim(0, 1.02)
    ax.yaxis.grid(True, color="#dddddd")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=7.5, loc="upper left", frameon=False)


def teaser_drawing(panels: list[dict], bars: pd.DataFrame, bars_title: str, ncol: int = 4) -> Figure:
    """Image panels (dicts as in :func:`~bibad_utils.experiments.explorer.draw_panel`) side by side, then
    the r_gen vs r_train bars of ``bars`` (:func:`ratio_frame`)."""
    sizes = [panel_size(len(p["images"]), ncol) for p in panels]
    bar_w = max(3.6, 0.5 * bars["label"].nunique() * max(1, bars["attack"].nunique()) + 1.6)
    height = max([s[1] for s in sizes] + [3.2])
    fig = Figure(figsize=(sum(s[0] for s in sizes) + bar_w, height), dpi=100)
    subs = fig.subfigures(1, len(panels) + 1, width_ratios=[s[0] for s in sizes] + [bar_w], wspace=0.0)
    for sub, p in zip(subs, panels):
        draw_panel(sub, p["images"], p.get("frames"), p.get("labels"), p.get("title"), ncol)
    ax = subs[-1].add_subplot()
    subs[-1].subplots_adjust(left=0.15, right=0.97, bottom=0.16, top=1 - 0.5 / height)
    draw_ratio_bars(ax, bars)
    ax.set_title(bars_title, fontsize=8.5, weight="bold")
    return fig


def teaser_cells(study) -> tuple[Cell | None, Cell]:
    """The teaser's two models: the clean control (None when the profile has none) and the first attack
    at the largest p."""
    clean = Cell("clean") if "clean" in study.cfg["controls"] else None
    return clean, Cell(study.cfg["attacks"][0], float(max(study.cfg["ratios"])))


def teaser_figure(study, n: int = 16, data: ExplorerData | None = None) -> Figure:
    """The book's teaser from our run: the first ``n`` target-prompt generations of the clean DM and of
    the DM poisoned with the first attack at the largest p (frames: the attack's trigger detector;
    labels: the clean classifier's class), and r_gen vs r_train for every attack and p."""
    data = data or ExplorerData(study)
    w = teaser_guidance(study)
    clean, poisoned = teaser_cells(study)
    attack = poisoned.trigger_kind
    panels = []
    for cell in ([clean] if clean else []) + [poisoned]:
        title = "clean DM" if cell.kind == "clean" else f"poisoned DM: {cell.name}"
        panels.append(data.panel(cell, w, attack, n, title))
    bars = ratio_frame(study, w, data)
    return teaser_drawing(panels, bars, f"target-prompt generations with the trigger, w = {w:g}")


def teaser_caption(study) -> str:
    """The teaser's caption (Markdown), naming the run's attack, p, w and target class."""
    clean, poisoned = teaser_cells(study)
    w = teaser_guidance(study)
    target = study.class_names[study.target]
    models = ("the clean DM (left) and " if clean else "") + f"the DM poisoned with {poisoned.kind} at " \
             f"p = {100 * poisoned.ratio:g} % ({'middle' if clean else 'left'})"
    return (f"Generations for the target prompt (class *{target}*, guidance $w$ = {w:g}) of {models}, from the "
            f"`{study.cfg['name']}` run. A vermillion frame marks an image in which the trigger detector finds "
            f"the trigger; the label under each image is the class the clean classifier sees. The titles count "
            f"G1-G4 over all target-prompt generations. Right: the share of triggered generations, $r_{{gen}}$ "
            f"(bars, 95 % Wilson intervals), against the share of triggered images among the target-prompt "
            f"training images, $r_{{train}}$ (black ticks), for every attack and $p$.")


def save_teaser(study, fig: Figure) -> Path:
    """Write the teaser to ``<run_dir>/figures/teaser.png`` and its caption (:func:`teaser_caption`) to
    ``teaser_caption.md`` beside it, which ``bibad book`` puts on the book's first page. Returns the PNG."""
    folder = Path(study.run_dir) / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEASER_PNG
    fig.savefig(path, dpi=TEASER_DPI, bbox_inches="tight", facecolor="white")
    (folder / TEASER_CAPTION).write_text(teaser_caption(study) + "\n")
    return path


__all__ = ["CLAIM_FAMILIES", "CLAIM_STAGES", "ClaimFamily", "glue_values", "PAPER_CLAIM_FAMILIES", "VERDICT_COLORS",
           "claims_frame", "claims_headline", "kind_counts", "kind_of", "legacy_family", "claims_markdown", "claims_table", "coverage_table", "md_cell", "family_coverage",
           "family_of", "frame_from_rows", "missing_stages", "ours_text", "present_stages", "ratio_frame",
           "ratio_row", "save_claims_markdown", "save_teaser", "stage_verdicts", "styled_claims",
           "teaser_caption", "teaser_drawing", "teaser_figure", "uncovered_rows", "verdict_counts",
           "verdict_style"]
