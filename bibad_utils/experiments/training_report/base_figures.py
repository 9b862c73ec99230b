"""Stage 02, the clean base DM's quality shown: its samples per class, its accuracy against pre-training
time, and the values chapter 02 glues (``nb02_base_*``), from the tables of :mod:`.base_quality`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from bibad_utils import plots
from bibad_utils.content_judges import CLEAN_JUDGE, judge_specs, predictions
from bibad_utils.experiments.training_report.base_quality import ALL_CLASSES, NO_BASE, base_sets, has_base
from bibad_utils.experiments.training_report.common import check_count

# Frame of a generation the clean classifier reads as another class than the prompt's (Okabe-Ito blue).
MISREAD_COLOR = "#0072B2"


def base_samples_figure(study, per_class: int = 8, guidance: float | None = None) -> Figure:
    """One row per class, ``per_class`` columns: the first generations of each class in the base DM's
    all-class set at ``guidance`` (default ``sampling.guidance_all``), framed in :data:`MISREAD_COLOR`
    where the clean classifier reads another class (``plots.class_grid``); a notice without a base DM."""
    check_count("per_class", per_class)
    if not has_base(study):
        return plots.message_figure(NO_BASE)
    sets, key = base_sets(study, guidance)
    gen = sets["all"]
    clean = judge_specs(study)[0]
    pred = predictions(study, clean, key, {n: g.images for n, g in sets.items()})["all"]
    frames = [None if p == y else MISREAD_COLOR for p, y in zip(pred, gen.labels)]
    return plots.class_grid(gen.images, gen.labels, study.class_names, per_class=per_class, border_colors=frames,
                            title=f"clean base DM, w = {gen.guidance:g}")


def quality_curve_figure(curve: pd.DataFrame, table: pd.DataFrame | None = None) -> Figure:
    """Share of the all-class generations read as the prompt's class (Wilson bars) per judge against
    pre-training steps (left) and wall time in minutes (right), from :func:`.base_quality.quality_curve`;
    chance dashed and, with ``table`` (:func:`.base_quality.base_quality_table`), each judge's accuracy on
    real test images dotted (the ceiling). A notice when no checkpoint was kept."""
    if curve is None or curve.empty:
        return plots.message_figure("no pre-training checkpoints kept (pretrain.keep_checkpoints = 0)")
    overall = table[table["class"] == ALL_CLASSES].set_index("judge") if table is not None and len(table) else None
    with plots.style():
        fig, axes, _ = plots.panel_figure(2, 3.9, 3.4, sharey=True)  # 8.4 x 3.4 in
        for ax, (col, scale, label) in zip(axes, (("step", 1.0, "pre-training steps"),
                                                  ("wall_time_s", 60.0, "pre-training wall time (min)"))):
            for k, (judge, part) in enumerate(curve.groupby("judge", sort=False)):
                colour = plots.PALETTE[k % len(plots.PALETTE)]
                part = part.sort_values("step")
                x, y = part[col].to_numpy(float) / scale, part["rate"].to_numpy(float)
                err = np.vstack([y - part["rate_lo"].to_numpy(float), part["rate_hi"].to_numpy(float) - y])
                ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=4, linewidth=1.4, capsize=2, label=judge)
                if overall is not None and judge in overall.index:
                    ax.axhline(float(overall.loc[judge, "real_rate"]), color=colour, linestyle=":", linewidth=1.2,
                               label=f"{judge}: real test images")
            if overall is not None:
                ax.axhline(float(table["chance"].iloc[0]), color=plots.REF_COLOR, linestyle="--", linewidth=1.0,
                           label="chance")
            ax.set_xlabel(label)
            ax.set_xlim(left=0)
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes[0].set_ylabel("generations read as the prompt's class")
        axes[1].legend(fontsize=7, loc="best")
        fig.suptitle("clean base DM during pre-training (all-class set)", fontsize=10)
        fig.tight_layout()
    return fig


def _overall(table: pd.DataFrame, judge: str | None) -> dict:
    row = table[(table["judge"] == judge) & (table["class"] == ALL_CLASSES)] if judge and len(table) else table.iloc[:0]
    if row.empty:
        return {k: math.nan for k in ("rate", "rate_lo", "rate_hi", "real_rate", "n")}
    return {k: float(row.iloc[0][k]) for k in ("rate", "rate_lo", "rate_hi", "real_rate", "n")}


def base_quality_facts(study, table: pd.DataFrame, agreement: pd.DataFrame, fd: pd.DataFrame,
                       curve: pd.DataFrame) -> dict:
    """Values chapter 02 glues, every key always present (nan or a sentence saying why where there is
    nothing): ``nb02_base_*`` rates of the clean classifier (``clf``) and the external judge (``ext``) on the
    base DM's all-class set, their real-test ceilings, chance, the worst class, agreement and kappa, FD-clf
    and its floor, the number of curve points, and four sentences (``summary``, ``agreement_sentence``,
    ``fd_sentence``, ``curve_sentence``) for the text."""
    nan = math.nan
    judges = list(table.attrs.get("judges", [])) if len(table) else []
    ext = judges[1] if len(judges) > 1 else None
    clf, ex = _overall(table, CLEAN_JUDGE if judges else None), _overall(table, ext)
    per_class = table[(table["judge"] == CLEAN_JUDGE) & (table["class"] != ALL_CLASSES)] if len(table) else table
    worst = per_class.sort_values(["rate", "class"]).iloc[0] if len(per_class) else None
    chance = float(table["chance"].iloc[0]) if len(table) else 1.0 / max(1, len(study.class_names))
    out = {"nb02_base_exists": bool(has_base(study)), "nb02_base_n": int(clf["n"]) if judges else 0,
           "nb02_base_guidance": float(table.attrs.get("guidance", study.guidance_all)),
           "nb02_base_chance": chance}
    for tag, r in (("clf", clf), ("ext", ex)):
        out.update({f"nb02_base_{tag}_rate": r["rate"], f"nb02_base_{tag}_lo": r["rate_lo"],
                    f"nb02_base_{tag}_hi": r["rate_hi"], f"nb02_base_{tag}_real": r["real_rate"]})
    out["nb02_base_ext_name"] = ext or "none"
    out["nb02_base_worst_class"] = str(worst["class"]) if worst is not None else "none"
    out["nb02_base_worst_rate"] = float(worst["rate"]) if worst is not None else nan
    a = agreement.iloc[0] if len(agreement) else None
    out["nb02_base_agreement"] = float(a["agreement"]) if a is not None else nan
    out["nb02_base_kappa"] = float(a["kappa"]) if a is not None else nan
    out["nb02_base_fd"] = float(fd["fd_clf"].iloc[0]) if len(fd) else nan
    out["nb02_base_fd_floor"] = float(fd["fd_clf"].iloc[1]) if len(fd) > 1 else nan
    out["nb02_base_curve_points"] = int(curve["step"].nunique()) if len(curve) else 0
    out.update(_sentences(out, judges))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _sentences(f: dict, judges: list) -> dict:
    if not f["nb02_base_exists"]:
        none = "This profile has no clean base DM (pretrain.steps = 0), so there is nothing to judge here."
        return {"nb02_base_summary": none,
                "nb02_base_agreement_sentence": "There is no base DM to compare the judges on.",
                "nb02_base_fd_sentence": "There is no base DM to measure FD-clf on.",
                "nb02_base_curve_sentence": "There is no pre-training, so there is no curve against pre-training time."}
    summary = (f"The clean classifier reads {_pct(f['nb02_base_clf_rate'])} of the base DM's {f['nb02_base_n']} "
               f"all-class generations (w = {f['nb02_base_guidance']:g}) as the prompt's class (95 % interval "
               f"{_pct(f['nb02_base_clf_lo'])} to {_pct(f['nb02_base_clf_hi'])}), against "
               f"{_pct(f['nb02_base_clf_real'])} of real test images and a chance level of "
               f"{_pct(f['nb02_base_chance'])}; its weakest class is {f['nb02_base_worst_class']} "
               f"({_pct(f['nb02_base_worst_rate'])}).")
    if len(judges) > 1:
        summary += (f" The external judge ({f['nb02_base_ext_name']}), which nobody in this project trained, reads "
                    f"{_pct(f['nb02_base_ext_rate'])} of them right ({_pct(f['nb02_base_ext_lo'])} to "
                    f"{_pct(f['nb02_base_ext_hi'])}), against {_pct(f['nb02_base_ext_real'])} of real test images.")
        agree = (f"The two judges give the same class to {_pct(f['nb02_base_agreement'])} of the generations "
                 f"(Cohen's kappa {f['nb02_base_kappa']:.2f}).")
    else:
        agree = "The profile names no external judge (judges.external), so there is no second reading to compare."
    fd = (f"FD-clf of the base DM's all-class set to the real test images is {f['nb02_base_fd']:.3g}, against "
          f"{f['nb02_base_fd_floor']:.3g} for as many real training images (the floor at this sample size).")
    n = f["nb02_base_curve_points"]
    curve = (f"The curve below shows the same overall rate at {n} kept pre-training checkpoints." if n else
             "The pre-training kept no checkpoints (pretrain.keep_checkpoints = 0, or a shipped base DM), so "
             "there is no curve against pre-training time.")
    return {"nb02_base_summary": summary, "nb02_base_agreement_sentence": agree, "nb02_base_fd_sentence": fd,
            "nb02_base_curve_sentence": curve}
