"""The teaser figure of a run (the book's first page and the README): target-prompt generations of a clean
and a poisoned DM beside the trigger ratio of generations against training, with its caption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bibad_utils import metrics
from bibad_utils.experiments.explorer import ExplorerData, panel_grids
from bibad_utils.experiments.insights import clean_detector_check, content_check
from bibad_utils.experiments.insights.judging import trigger_r_train
from bibad_utils.experiments.summary.tables import FIGURES_DIR
from bibad_utils.plots import MAX_FIGURE_WIDTH_IN, draw_interval_bars
from bibad_utils.plots.grids import grid_panels
from bibad_utils.report import TEASER_CAPTION, TEASER_PNG
from bibad_utils.stages import Cell
from bibad_utils.metrics import Z95


TEASER_DPI = 150
UNTRUSTED_COLOR = "#e6e6e6"  # bars of a detector that fails its own check


def ratio_row(trigger, r_train: float, z: float = Z95, **keys) -> dict:
    """``keys`` plus ``n``, ``n_triggered``, ``r_gen`` with its Wilson interval (``r_gen_lo``/``_hi``)
    and ``r_train`` from the detector's decisions ``trigger`` (bool ``[N]``)."""
    t = np.asarray(trigger, dtype=bool)
    k, n = int(t.sum()), int(len(t))
    return {**keys, "n": n, "n_triggered": k, **metrics.rate_columns("r_gen", k, n, z), "r_train": float(r_train)}


def ratio_frame(study, guidance: float | None = None, data: ExplorerData | None = None) -> pd.DataFrame:
    """r_gen (with its 95 % Wilson interval) and r_train per attack and p (the clean control first, with
    r_train 0), target-prompt generations at ``guidance`` judged by the attack's detector. Columns:
    attack, p, label ("clean" or "5%"), n, n_triggered, r_gen, r_gen_lo, r_gen_hi, r_train, and ``trusted``:
    whether the attack's detector passes chapter 04's check on the clean DM's generations
    (:func:`~bibad_utils.experiments.insights.clean_detector_check`; True without a clean control)."""
    w = study.first_guidance if guidance is None else float(guidance)
    data = data or ExplorerData(study)
    rows = []
    for attack in study.cfg.attacks:
        cells = ([Cell("clean")] if "clean" in study.cfg.controls else []) + [
            Cell(attack, p) for p in study.ratios_of(attack)]
        for cell in cells:
            label = "clean" if cell.kind == "clean" else f"{100 * cell.ratio:g}%"
            rows.append(ratio_row(data.view(cell, w, attack)["trigger"], trigger_r_train(study, cell), attack=attack,
                                  p=cell.ratio, label=label))
    df = pd.DataFrame(rows)
    df["trusted"] = True
    for attack, g in df.groupby("attack", sort=False):
        clean = g[g["label"] == "clean"]
        if len(clean):
            df.loc[g.index, "trusted"] = clean_detector_check(attack, float(clean["r_gen_hi"].iloc[0])).ok
    return df


def draw_ratio_bars(ax, df: pd.DataFrame) -> None:
    """Bars of r_gen with their intervals per (attack, p) of :func:`ratio_frame`, grouped by p, one colour
    per attack, with r_train as a black tick on each bar. An attack whose detector fails its check on the
    clean DM's generations (``trusted`` False) is drawn hatched in light grey and labelled so: its bars
    are no evidence."""
    trusted = df.groupby("attack", sort=False)["trusted"].all() if "trusted" in df else {}

    def bar_style(attack) -> dict:
        if trusted.get(attack, True):
            return {"label": f"r_gen, {attack}"}
        return {"color": UNTRUSTED_COLOR, "hatch": "///", "edgecolor": "#999999",
                "label": f"{attack}: detector fails its check, no evidence"}

    draw_interval_bars(ax, df, "label", "r_gen", "r_gen_lo", "r_gen_hi", hue="attack", ref="r_train",
                       bar_style=bar_style)
    ax.set_xlabel("poisoning ratio p")
    ax.set_ylabel("trigger ratio")
    ax.set_ylim(0, 1.02)
    ax.yaxis.grid(True, color="#dddddd")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    # below the axes: bars near 1 (a run whose detector fires on everything) would hide under a legend inside
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=df["attack"].nunique() + 1,
              frameon=False)


def teaser_drawing(panels: list[dict], bars: pd.DataFrame, bars_title: str, ncol: int = 4) -> Figure:
    """Image panels (dicts as in :func:`~bibad_utils.experiments.explorer.panel_grids`) side by side, then
    the r_gen vs r_train bars of ``bars`` (:func:`ratio_frame`)."""
    panels_w, panels_h, draw = grid_panels(**panel_grids(panels, ncol))
    bar_w = max(3.6, 0.5 * bars["label"].nunique() * max(1, bars["attack"].nunique()) + 1.6)
    whole = dict(left=0, right=1, bottom=0, top=1, wspace=0, hspace=0)
    if panels_w + bar_w <= MAX_FIGURE_WIDTH_IN:  # one row: the image panels (top), then the bars
        bar_h, bar_left = max(panels_h, 3.2), 0.15
        fig = Figure(figsize=(panels_w + bar_w, bar_h), dpi=100)
        grid = fig.add_gridspec(2, 2, width_ratios=[panels_w, bar_w], height_ratios=[panels_h, bar_h - panels_h],
                                **whole)
        image_spec, bar_spec = grid[0, 0], grid[:, 1]
    else:  # two rows at the text column's width: the image panels above (centred), the bars below
        width = max(panels_w, min(bar_w, MAX_FIGURE_WIDTH_IN))
        bar_h, bar_left, pad = 3.4, 0.1, (width - panels_w) / 2
        fig = Figure(figsize=(width, panels_h + bar_h), dpi=100)
        grid = fig.add_gridspec(2, 3, width_ratios=[pad, panels_w, pad], height_ratios=[panels_h, bar_h], **whole)
        image_spec, bar_spec = grid[0, 1], grid[1, :]
    draw(fig.add_subfigure(image_spec))
    bar_sub = fig.add_subfigure(bar_spec)
    ax = bar_sub.add_subplot()
    bar_sub.subplots_adjust(left=bar_left, right=0.97, bottom=0.22, top=1 - 0.5 / bar_h)
    draw_ratio_bars(ax, bars)
    ax.set_title(bars_title, fontsize=8.5, weight="bold")
    return fig


def teaser_cells(study) -> tuple[Cell | None, Cell]:
    """The teaser's two models: the clean control (None when the profile has none) and the first attack
    at the largest p."""
    clean = Cell("clean") if "clean" in study.cfg.controls else None
    return clean, study.top_cells()[0]


def teaser_figure(study, n: int = 16, data: ExplorerData | None = None) -> Figure:
    """The book's teaser from our run: the first ``n`` target-prompt generations of the clean DM and of
    the DM poisoned with the first attack at the largest p (frames: the attack's trigger detector;
    labels: the clean classifier's class), and r_gen vs r_train for every attack and p, at the profile's
    first w (where chapter 04 states its claims)."""
    data = data or ExplorerData(study)
    w = study.first_guidance
    clean, poisoned = teaser_cells(study)
    attack = poisoned.trigger_kind
    panels = []
    for cell in ([clean] if clean else []) + [poisoned]:
        title = "clean DM" if cell.kind == "clean" else f"poisoned DM: {cell.name}"
        panels.append(data.panel(cell, w, attack, n, title))
    bars = ratio_frame(study, w, data)
    return teaser_drawing(panels, bars, f"target-prompt generations with the trigger, w = {w:g}")


def teaser_caption(study, untrusted=(), content=None) -> str:
    """The teaser's caption (Markdown), naming the run's attack, p, w and target class, the attacks
    ``untrusted`` whose bars are drawn hatched (their detector fails its check), and, when ``content`` (the
    content judge's :class:`~bibad_utils.verdicts.Check` at the teaser's w) fails, that the labels and the
    G1-G4 counts are no evidence at this w."""
    clean, poisoned = teaser_cells(study)
    w = study.first_guidance
    target = study.class_names[study.target]
    models = ("the clean DM (left) and " if clean else "") + f"the DM poisoned with {poisoned.kind} at " \
             f"p = {100 * poisoned.ratio:g} % ({'middle' if clean else 'left'})"
    return (f"Generations for the target prompt (class *{target}*, guidance $w$ = {w:g}) of {models}, from the "
            f"`{study.cfg.name}` run. A vermillion frame marks an image in which the trigger detector finds "
            f"the trigger; the label under each image is the class the clean classifier sees. The titles count "
            f"G1-G4 over all target-prompt generations. Right: the share of triggered generations, $r_{{gen}}$ "
            f"(bars, 95 % Wilson intervals), against the share of triggered images among the target-prompt "
            f"training images, $r_{{train}}$ (black ticks), for every attack and $p$."
            + (f" Hatched grey bars ({', '.join(untrusted)}): the attack's detector flags the clean DM's "
               f"generations too, so they are no evidence (chapter 04 marks those rows not tested)." if untrusted else "")
            + (f" The labels and the G1-G4 counts are no evidence at this $w$: {content.reason} (chapter 04 marks "
               f"the G1 and G2 rows at this $w$ not tested; the trigger ratios do not depend on content)."
               if content is not None and not content.ok else ""))


def save_teaser(study, fig: Figure) -> Path:
    """Write the teaser to ``<run_dir>/figures/teaser.png`` and its caption (:func:`teaser_caption`) to
    ``teaser_caption.md`` beside it, which ``bibad book`` puts on the book's first page. Returns the PNG."""
    folder = Path(study.run_dir) / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEASER_PNG
    fig.savefig(path, dpi=TEASER_DPI, bbox_inches="tight", facecolor="white")
    bars = ratio_frame(study)
    untrusted = list(pd.unique(bars.loc[~bars["trusted"].astype(bool), "attack"]))
    content = content_check(study, guidance=study.first_guidance)
    (folder / TEASER_CAPTION).write_text(teaser_caption(study, untrusted, content) + "\n")
    return path
