"""Stage 02, training: model summaries, pre-training and fine-tuning records, loss curves, samples of
the pre-trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bibad_utils import plots
from bibad_utils.base import ConfigError
from bibad_utils.diffusion import build_model
from bibad_utils.experiments.training_report.common import check_count
from bibad_utils.experiments.castle_walls import dc_cells
from bibad_utils.experiments.memorization_study import duplicate_comparison_cells
from bibad_utils.parallel import compute_cells


def model_summary(model) -> pd.DataFrame:
    """The architecture of a DM as a one-column table (``value``, indexed by ``item``): backend, image
    size, trainable parameters, and for pixel models the UNet's levels, attention, blocks, class
    embeddings (classes + the null class of guidance) and the noise schedule."""
    c = model.config
    rows = {"backend": c["backend"], "image size (px)": model.image_size,
            "trainable parameters": sum(p.numel() for p in model.trainable_parameters()),
            "classes (+1 null for guidance)": f"{model.num_classes} + 1"}
    if c["backend"] == "pixel":
        rows.update({
            "UNet channels per level": " / ".join(str(ch) for ch in c["block_out_channels"]),
            "self-attention per level": " / ".join("yes" if a else "no" for a in c["attention"]),
            "residual blocks per level": c["layers_per_block"],
            "pixel unshuffle": c["unshuffle"],
            "noise schedule": f"{c['beta_schedule']} betas {c['beta_start']:g} .. {c['beta_end']:g}, "
                              f"T = {c['num_train_timesteps']}",
        })
    df = pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="item"))
    return df


def loss_at(loss_log, step: int) -> float:
    """The logged mean loss of the window that contains ``step`` (the first entry at or after it; the
    last entry when ``step`` is beyond the log). loss_log: ``[(step, loss), ...]`` as training writes it."""
    if not len(loss_log):
        raise ConfigError("loss_log", loss_log, "a non-empty list of (step, loss)")
    for s, v in sorted((int(a), float(b)) for a, b in loss_log):
        if s >= step:
            return v
    return float(sorted(loss_log)[-1][1])


def _record_row(name, rec, n_images, batch_size) -> dict:
    return {"model": name, "steps": rec["steps"], "batch size": batch_size, "images seen": rec["images_seen"],
            "epochs": rec["images_seen"] / n_images, "wall time (s)": rec["wall_time_s"],
            "s / step": rec["wall_time_s"] / max(rec["steps"], 1), "device": rec["device"],
            "threads": rec["threads"], "parameters": rec["n_params"]}


def pretrain_table(study) -> pd.DataFrame:
    """Compute of the clean pre-training (one row; a ``note`` row saying so when the profile has no
    pre-training)."""
    if study.pretrain_key is None:
        return pd.DataFrame({"note": ["none: pretrain.steps = 0, every cell trains from scratch"]},
                            index=pd.Index(["clean pre-training"], name="model"))
    rec = study.train_record(None)
    row = _record_row("clean pre-training", rec, len(study.pretrain_data[0]), study.cfg.pretrain.batch_size)
    return pd.DataFrame([row]).set_index("model")


def later_chapter_cells(study) -> tuple[list, list]:
    """DMs that later chapters fine-tune beyond the grid: (sampled: the duplicate-pool cells of the
    memorization chapter, which it generates from; train only: the cells of the diffusion classifier's
    extra ratios, ``defenses.dc_ratios``)."""
    has_pool = study.duplicate_pool() is not None  # a dataset without duplicate groups: no such cells
    duplicate = [dup for _, dup in duplicate_comparison_cells(study)] if has_pool else []
    return duplicate, [c for c in dc_cells(study) if c not in study.cells()]


def finetune_all(study) -> pd.DataFrame:
    """Fine-tune (or load from the store) the DM of every cell and tabulate the compute of each: steps,
    batch size, images seen, epochs over the training set, wall time, seconds per step, device, CPU
    threads, trainable parameters (one row per cell, from ``study.train_record``). Cells not yet in the
    store are trained, and their generation sets sampled (chapter 03 then finds them), in parallel worker
    processes on the CPU (:func:`bibad_utils.parallel.compute_cells`)."""
    cells = study.cells()
    # cells missing from the store: trained, and their sets sampled, by one process per usable core,
    # together with the other training runs of cells trained more than once (train_seeds), the DMs of
    # later chapters (06's duplicate-pool cells, 05's diffusion-classifier-only p) and the judges (03, 04)
    sampled, train_only = later_chapter_cells(study)
    replicates = [r for c in cells for r in study.seed_cells(c) if r != c]
    compute_cells(study, [c for c in cells + replicates + sampled if not study.model_cached(c)], generate=True,
                  train_only=[c for c in train_only if c not in cells and not study.model_cached(c)], judges=True)
    rows = []
    for cell in cells:
        study.model(cell)
        rows.append(_record_row(cell.name, study.train_record(cell), len(study.train_set),
                                study.cfg.finetune.batch_size))
    return pd.DataFrame(rows).set_index("model")


def loss_logs(study) -> dict[str, list]:
    """name -> ``[(step, loss), ...]`` of every cell's fine-tuning (for ``plots.loss_curves``)."""
    return {cell.name: study.train_record(cell)["loss_log"] for cell in study.cells()}


def class_samples(images, labels, per_class: int) -> np.ndarray:
    """int64 indices of the first ``per_class`` images of every class present (class order, then array
    order): a small per-class selection of a large generation set."""
    labels = np.asarray(labels).reshape(-1)
    check_count("per_class", per_class)
    if len(np.asarray(images)) != len(labels):
        raise ConfigError("labels", f"{len(labels)} labels", f"one per image ({len(images)})")
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
                          or [np.zeros(0, np.int64)]).astype(np.int64)


def pretrained_samples_figure(study, per_class: int = 8):
    """One row per class of the clean pre-trained model's all-class generations (``plots.class_grid``);
    a short notice instead when the profile has no pre-training."""
    if study.pretrain_key is None:
        return plots.message_figure("no pre-training in this profile (pretrain.steps = 0)")
    gen = study.generations(None)[("all", study.guidance_all)]
    idx = class_samples(gen.images, gen.labels, per_class)
    return plots.class_grid(gen.images[idx], gen.labels[idx], study.class_names, per_class=per_class,
                            title=f"clean pre-trained model, w = {gen.guidance:g}")


def base_model(study):
    """The clean pre-trained DM (trained on first use), or, when the profile has no pre-training, a
    freshly initialised model of the same configuration (for describing the architecture)."""
    if study.pretrain_key is not None:
        return study.model(None)
    return build_model(study.cfg.model.as_dict(), study.class_names, image_size=study.image_size)


def pretrain_loss_figure(study):
    """The pre-training loss curve (``plots.loss_curves``), or a notice when there is no pre-training."""
    if study.pretrain_key is None:
        return plots.message_figure("no pre-training in this profile (pretrain.steps = 0)")
    return plots.loss_curves({"clean pre-training": study.train_record(None)["loss_log"]},
                             title="pre-training on the clean training set")


def starting_point(study) -> str:
    """One sentence saying where every cell's training starts in this run (pre-trained pixel DM, pre-trained
    Stable Diffusion weights, or from scratch)."""
    model = study.cfg.model
    if model.backend != "pixel":
        return (f"every cell fine-tunes the pre-trained {model.backend} weights "
                f"`{model.get('pretrained', 'default')}` (the UNet only)")
    steps = int(study.cfg.pretrain.steps)
    if steps:
        return (f"every cell fine-tunes a copy of one clean pixel DM pre-trained for {steps} steps on the clean "
                f"training set")
    return "this profile has no pre-training (pretrain.steps = 0): every cell trains a pixel DM from scratch"


def scratch_comparison(study) -> str:
    """One sentence comparing the fine-tuning budget with the pre-training loss curve: the mean loss the
    pre-training had reached after as many steps as one fine-tuning takes, against its final loss."""
    ft = int(study.cfg.finetune.steps)
    if study.pretrain_key is None:
        return "This run has no pre-training, so it has no such curve to compare with."
    pt = int(study.cfg.pretrain.steps)
    log = study.train_record(None)["loss_log"]
    return (f"With only the fine-tuning budget of {ft} steps ({ft / pt:.2f} of the {pt} pre-training steps), "
            f"a from-scratch model would stand where the pre-training loss curve below stands at step {ft}: "
            f"a mean loss of {loss_at(log, ft):.4f} there, against {loss_at(log, pt):.4f} at the end.")


def training_facts(study, compute: pd.DataFrame, pretrain: pd.DataFrame) -> dict:
    """Values the training chapter quotes (glue them), from :func:`finetune_all` and
    :func:`pretrain_table`: the sentence of :func:`scratch_comparison`, the
    number of models, wall times in minutes, images seen in all, device and CPU threads."""
    has_pt = study.pretrain_key is not None
    pt_minutes = float(pretrain["wall time (s)"].sum()) / 60 if has_pt else 0.0
    pt_images = int(pretrain["images seen"].sum()) if has_pt else 0
    ft_minutes = float(compute["wall time (s)"].sum()) / 60
    shipped = has_pt and bool(study.store.load_manifest("pretrain", study.pretrain_key).get("shipped_from"))
    device = str(compute["device"].iloc[0]) if len(compute) else str(study.device)
    threads = int(compute["threads"].max()) if len(compute) else 0
    images = int(compute["images seen"].sum())
    sentence = (f"The {len(compute)} fine-tunings took {ft_minutes:.1f} minutes of wall time in all on {device} "
                f"with {threads} thread(s) each, over {images:,} training images. ")
    if not has_pt:
        sentence += "There is no pre-training: every model was trained from scratch."
    elif shipped:
        sentence += (f"The clean base DM came with the package (shipped, not trained in this run); its "
                     f"pre-training took {pt_minutes:.1f} minutes where it was made, over {pt_images:,} images.")
    else:
        sentence += f"The clean base DM was pre-trained in this run: {pt_minutes:.1f} minutes over {pt_images:,} images."
    return {
        "training_sentence": sentence,
        "scratch_comparison": scratch_comparison(study), "n_models": len(compute),
        "pretrain_minutes": pt_minutes, "finetune_minutes": ft_minutes,
        "total_minutes": pt_minutes + ft_minutes,
        "images_seen": int(compute["images seen"].sum()) + pt_images,
        "device": device, "threads": threads,
    }
