"""Stage 03, generation: sampling settings, the regeneration check, target-prompt grids framed by the
trigger detector, the guidance sweep, all-class grids and the clean classifier's accuracy per class."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bibad_utils import plots
from bibad_utils.experiments.training_report.common import check_count, showcase_cell
from bibad_utils.experiments.training_report.training import class_samples
from bibad_utils.metrics import per_class_accuracy
from bibad_utils.plots.style import FRAME_COLOR
from bibad_utils.sampling import sample_images, set_seeds


def sampling_settings(study) -> pd.DataFrame:
    """The profile's sampling settings as a one-column table (``value`` by ``setting``)."""
    s = study.cfg.sampling
    rows = {
        "sampler": "DDIM",
        "steps": s.steps,
        "eta (0 = deterministic)": s.eta,
        "guidance w of the target set": ", ".join(f"{w:g}" for w in s.guidance),
        "guidance w of the all-class set": f"{study.guidance_all:g}",
        "guided noise": "eps_u + w (eps_c - eps_u), one batched forward",
        "target-prompt images per w": s.n_target,
        "all-class images": s.n_all,
        "batch size": s.batch_size,
        "seed of image i": f"derive_seed({study.seed}, set name, i)",
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="setting"))


def regeneration_check(study, cell, n: int = 4, seed: int = 0) -> dict:
    """Regenerate ``n`` images of ``cell``'s stored target-prompt set at the first w (picked with ``seed``)
    from their per-image seeds alone and compare pixels with the stored ones.

    Returns ``{"indices": int64 [n], "equal": bool, "max_abs_diff": int (0..255), "guidance": w}``.
    """
    s = study.cfg.sampling
    w = study.first_guidance
    gen = study.generations(cell)[("target", w)]
    check_count("n", n)
    idx = np.sort(np.random.default_rng(seed).choice(len(gen.labels), size=min(n, len(gen.labels)), replace=False))
    seeds = set_seeds(study.seed, "target", len(gen.labels))[idx]
    again = sample_images(study.model(cell), gen.labels[idx], seeds, steps=s.steps, eta=s.eta,
                          guidance=w, batch_size=s.batch_size, device=study.device, progress=False)
    diff = int(np.abs(again.astype(np.int16) - gen.images[idx].astype(np.int16)).max())
    return {"indices": idx, "equal": bool(diff == 0), "max_abs_diff": diff, "guidance": w}


def detector_kind(study, cell) -> str:
    """The trigger detector that judges ``cell``'s generations: its own trigger, or for the clean and
    relabel controls (and the pre-trained model, ``None``) the grid's first attack."""
    kind = None if cell is None else cell.trigger_kind
    return kind or study.cfg.attacks[0]


def trigger_borders(flags) -> list:
    """Border colours for ``plots`` image grids: :data:`~bibad_utils.plots.style.FRAME_COLOR` (Okabe-Ito
    vermillion) where ``flags`` (bool ``[N]``) is True, None (no frame) elsewhere."""
    return [FRAME_COLOR if f else None for f in np.asarray(flags, dtype=bool).reshape(-1)]


def _panel(study, cell, w, n, kind):
    gen = study.generations(cell)[("target", w)]
    flags = study.judges.judge(gen, kind)["trigger"]
    return gen.images[:n], trigger_borders(flags[:n]), int(flags.sum()), len(flags)


def target_grid_figure(study, cells, n: int, kind: str):
    """Target-prompt generations of ``cells`` at the profile's first w side by side, the first ``n`` of each,
    framed where the trigger detector ``kind`` fires: every model starts image i from the same seed, so a
    column position compares the same noise across models. Panel titles give the triggered count over
    the whole set.
    """
    grids, borders = {}, {}
    for cell in cells:
        images, frames, hits, total = _panel(study, cell, study.first_guidance, n, kind)
        name = f"{cell.name}: {hits}/{total} flagged ({kind})"
        grids[name], borders[name] = images, frames
    return plots.side_by_side_grids(grids, nrow=4, border_colors=borders)


def guidance_sweep_figure(study, n: int = 16):
    """The target-prompt generations of :func:`showcase_cell` at every guidance w of the profile, the same
    seeds in every panel, framed where the cell's trigger detector fires."""
    cell = showcase_cell(study)
    kind = detector_kind(study, cell)
    grids, borders = {}, {}
    for w in study.claim_guidances():
        images, frames, hits, total = _panel(study, cell, w, n, kind)
        name = f"w = {w:g}: {hits}/{total} triggered"
        grids[name], borders[name] = images, frames
    return plots.side_by_side_grids(grids, nrow=4, border_colors=borders)


def all_class_figure(study, cell, per_class: int = 8):
    """One row per class of ``cell``'s all-class generations (``None``: the pre-trained model), framed
    where the trigger detector of :func:`detector_kind` fires."""
    gen = study.generations(cell)[("all", study.guidance_all)]
    kind = detector_kind(study, cell)
    flags = study.judges.judge(gen, kind)["trigger"]
    idx = class_samples(gen.images, gen.labels, per_class)
    name = "pre-trained" if cell is None else cell.name
    return plots.class_grid(gen.images[idx], gen.labels[idx], study.class_names, per_class=per_class,
                            border_colors=trigger_borders(flags[idx]),
                            title=f"{name}, all-class set, w = {gen.guidance:g} (frame: {kind} detector)")


def class_accuracy_table(study) -> pd.DataFrame:
    """Per-class accuracy of the clean classifier (fractions in [0, 1]; NaN for a class with no image).

    Rows: ``real test images`` (the classifier's own held-out accuracy, ``study.judges.classifier_report()``),
    the pre-trained model (if any) and every cell, each on its all-class
    generations; columns: the classes, then ``all`` (accuracy over every image of the row)."""
    k = len(study.class_names)
    report = study.judges.classifier_report()
    rows = {"real test images": list(report["per_class_accuracy"]) + [report["accuracy"]]}
    models = ([None] if study.pretrain_key is not None else []) + study.cells()
    for cell in models:
        gen = study.generations(cell)[("all", study.guidance_all)]
        judged = study.judges.judge(gen, detector_kind(study, cell))
        acc = per_class_accuracy(judged["pred"], gen.labels, k)
        rows["pre-trained" if cell is None else cell.name] = list(acc) + [float(np.mean(judged["match"]))]
    cols = [f"{n}*" if i == study.target else n for i, n in enumerate(study.class_names)] + ["all"]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    df.index.name = "images"
    df.columns.name = "class (* target)"
    return df


def target_figures(study, n: int = 16) -> dict:
    """Title -> Figure of :func:`target_grid_figure`: the controls side by side (framed by the grid's first
    attack's detector), then for every attack the clean model beside that attack's cells (framed by that
    attack's detector, the clean panel included, so its frames count the detector's false alarms)."""
    controls = study.control_cells()
    clean = [c for c in controls if c.kind == "clean"]
    out = {}
    if controls:
        out["controls"] = target_grid_figure(study, controls, n, detector_kind(study, None))
    for attack in study.cfg.attacks:
        cells = clean + [c for c in study.grid_cells() if c.kind == attack]
        out[attack] = target_grid_figure(study, cells, n, attack)
    return out


def accuracy_facts(table: pd.DataFrame, study) -> dict:
    """Scalars the generation chapter quotes (glue them), from :func:`class_accuracy_table`: the
    classifier's held-out accuracy, and the accuracy over all classes and on the target class of the
    clean model and of the showcase cell (NaN for a model the profile does not train)."""
    target_col = table.columns[study.target]
    show = showcase_cell(study).name

    def get(row, col):
        return float(table.loc[row, col]) if row in table.index else float("nan")

    return {
        "classifier_acc": get("real test images", "all"),
        "classifier_target_acc": get("real test images", target_col),
        "clean_all_acc": get("clean", "all"), "clean_target_acc": get("clean", target_col),
        "showcase_name": show, "showcase_all_acc": get(show, "all"),
        "showcase_target_acc": get(show, target_col),
    }
