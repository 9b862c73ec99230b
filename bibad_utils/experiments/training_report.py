"""Tables and figures of the training side of the study: poisoning (01), training (02), generation (03).

The functions read a :class:`~bibad_utils.stages.Study` (whose methods compute and cache the poisoned
sets, the models and the generations) and return DataFrames, dicts of arrays or Figures; none of them
trains anything itself except through the Study. Images follow the project's conventions: uint8
``[N, H, W, 3]`` at rest, float ``[N, 3, H, W]`` in [-1, 1] for triggers and models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bibad_utils.config import ConfigError
from bibad_utils.poison import r_train

# The paper's trigger ratio among training images of the target prompt, ImageNette (SD, target
# "garbage truck"), p -> r_train (fractions). Source: the paper's Insight-1 figure (trigger
# amplification, training-set bars), as listed in PAPER.md under "Metrics".
PAPER_R_TRAIN_IMAGENETTE = {0.01: 0.089, 0.02: 0.164, 0.05: 0.330, 0.10: 0.496}
# ImageNette (imagenette2) official train split: 9,469 images, 961 of them garbage trucks (the target).
IMAGENETTE_TRAIN_N = 9469
IMAGENETTE_TARGET_N = 961
TRIGGER_KINDS = ("badnets1", "badnets2", "wanet")
# Frame of a generated image on which the trigger detector fires (Okabe-Ito vermillion).
TRIGGER_COLOR = "#D55E00"


def _cells(study, cells):
    return list(study.cells() if cells is None else cells)


def _check_count(name, value, low=1):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ConfigError(name, value, f"an integer >= {low}")


# ------------------------------------------------------------------------------------------------
# 01 poisoning


def example_indices(labels, target: int, n: int, seed: int) -> np.ndarray:
    """int64 ``[n]`` indices of example images, one per non-target class in turn (classes in a seeded
    order, a seeded image within each), so n examples show n different classes when there are enough.

    labels: int ``[N]`` class indices; target: the class left out (its images are never poisoned).
    """
    labels = np.asarray(labels).reshape(-1)
    _check_count("n", n)
    classes = [c for c in np.unique(labels) if c != target]
    if not classes:
        raise ConfigError("labels", "only the target class", "images of at least one non-target class")
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in order}
    out = []
    while len(out) < n and any(pools.values()):
        for c in order:
            if pools[c] and len(out) < n:
                out.append(pools[c].pop())
    return np.asarray(out, dtype=np.int64)


def trigger_examples(study, n: int = 4, seed: int = 0, kinds=TRIGGER_KINDS) -> dict[str, np.ndarray]:
    """The same ``n`` clean non-target training images, plain and with each trigger of ``kinds``.

    Returns ``{"clean": uint8 [n, H, W, 3], kind: uint8 [n, H, W, 3] for kind in kinds}``; the triggers
    are the study's (``study.trigger(kind)``: profile options and seed), whether or not the grid uses
    them.
    """
    from bibad_utils.data import to_float, to_uint8

    idx = example_indices(study.train_set.labels, study.target, n, seed)
    clean = study.train_set.images_uint8(idx)
    out = {"clean": clean}
    for kind in kinds:
        out[kind] = to_uint8(study.trigger(kind).apply(to_float(clean)))
    return out


def trigger_differences(examples: dict[str, np.ndarray], gain: float = 4.0) -> dict[str, np.ndarray]:
    """What each trigger changes: ``min(255, gain * |triggered - clean|)`` per pixel and channel, uint8
    ``[n, H, W, 3]`` for every entry of ``examples`` but ``"clean"`` (from :func:`trigger_examples`),
    keyed ``"<kind>: |difference| x <gain>"``."""
    if "clean" not in examples:
        raise ConfigError("examples", sorted(examples), "a dict with a 'clean' entry")
    if not gain > 0:
        raise ConfigError("gain", gain, "a number > 0")
    clean = examples["clean"].astype(np.float64)
    return {f"{k}: |difference| x {gain:g}": np.clip(np.rint(gain * np.abs(v.astype(np.float64) - clean)), 0, 255).astype(np.uint8)
            for k, v in examples.items() if k != "clean"}


def corner_box(study, margin: int = 2) -> tuple[int, int, int]:
    """``(top, left, size)`` of the bottom-right square holding the BadNets-1 patch plus ``margin`` pixels
    of context: the close-up region of the trigger figures."""
    side = study.trigger("badnets1").side
    size = min(study.image_size, side + margin)
    return study.image_size - size, study.image_size - size, size


def trigger_pattern_data(study) -> dict:
    """The study's triggers as data for :func:`bibad_utils.plots.trigger_patterns`: ``patch`` (bool
    ``[s, s]``, white pixels of BadNets-1), ``pattern`` (uint8 ``[S, S, 3]``, the BadNets-2 picture),
    ``displacement`` (float ``[S, S, 2]``, WaNet's per-pixel (dx, dy) in pixels) and ``titles``."""
    b1, b2, wa = (study.trigger(k) for k in TRIGGER_KINDS)
    disp = wa.displacement_px.numpy()
    mean = float(np.hypot(disp[..., 0], disp[..., 1]).mean())
    return {
        "patch": b1.patch.numpy() > 0,
        "pattern": b2.pattern_uint8,
        "displacement": disp,
        "titles": [f"BadNets-1\n{b1.side}x{b1.side} px patch, bottom-right corner",
                   f"BadNets-2\npattern blended at alpha = {b2.alpha:g}",
                   f"WaNet\nwarp field, mean shift {mean:.2f} px"],
    }


def poison_manifests(study, cells=None, n_first: int = 8) -> pd.DataFrame:
    """Write (if missing) the poisoned-set artifact of every cell and list them: one row per cell with
    its artifact key, seed, number of poisoned images, the first ``n_first`` poisoned indices and the
    manifest's path relative to the store's root (``<run_dir>/artifacts``). Calls ``study.poison_key(cell)`` for each cell."""
    from pathlib import Path

    rows = []
    for cell in _cells(study, cells):
        key = study.poison_key(cell)
        m = study.poison_manifest(cell)
        path = study.store.path("poison", key) / "poison_manifest.json"
        first = ", ".join(str(i) for i in m["indices"][:n_first])
        rows.append({"cell": cell.name, "key": key, "seed": m["seed"], "n_poison": m["n_poison"],
                     "first indices": first + (", ..." if m["n_poison"] > n_first else ""),
                     "manifest (under artifacts/)": str(Path(path).relative_to(study.store.root))})
    return pd.DataFrame(rows).set_index("cell")


def manifest_table(manifest: dict, n_first: int = 10, width: int = 50) -> pd.DataFrame:
    """A manifest as a two-column table (``value`` by dotted ``field``): nested dicts flattened, lists
    cut to their first ``n_first`` items plus ``... (N items)``, every value at most ``width``
    characters; for showing a manifest without its thousands of indices."""
    def short(v):
        if isinstance(v, list):
            items = [short(x) for x in v[:n_first]] + ([f"... ({len(v)} items)"] if len(v) > n_first else [])
            return "[" + ", ".join(items) + "]"
        return str(v)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                text = short(v)
                yield f"{prefix}{k}", text if len(text) <= width else text[:width - 3] + "..."

    rows = dict(flat(manifest))
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="field"))


def same_indices_across_kinds(study) -> bool:
    """True when every kind poisons the same images at a given p (the draw depends on the seed, p and
    the labels only), so the attacks of one p differ by their trigger alone."""
    by_ratio: dict[float, list] = {}
    for cell in study.cells():
        if cell.kind != "clean":
            by_ratio.setdefault(cell.ratio, []).append(study.poison_manifest(cell)["indices"])
    return all(all(ix == group[0] for ix in group) for group in by_ratio.values())


def class_counts_table(study, cells=None) -> pd.DataFrame:
    """Images per label before poisoning (``clean``) and after it for each non-clean cell: int columns,
    one row per class (the target class marked), plus a ``total`` row (unchanged: the poisoned copies
    replace the clean ones)."""
    cells = [c for c in _cells(study, cells) if c.kind != "clean"]
    before = np.asarray(study.train_set.class_counts(), dtype=np.int64)
    cols = {"clean": before}
    for cell in cells:
        cols[cell.name] = np.asarray(study.poison_manifest(cell)["counts_after"], dtype=np.int64)
    names = [f"{n} (target)" if i == study.target else n for i, n in enumerate(study.class_names)]
    df = pd.DataFrame(cols, index=pd.Index(names, name="class"))
    df.loc["total"] = df.sum(axis=0)
    return df


def class_counts_long(table: pd.DataFrame) -> pd.DataFrame:
    """Long form of :func:`class_counts_table` for a grouped bar chart: columns ``class``, ``images``,
    ``training set``; the ``total`` row is dropped and identical count columns are merged into one
    group named by all of them (cells of the same p share their counts)."""
    table = table.drop(index="total", errors="ignore")
    groups: dict[tuple, list[str]] = {}
    for col in table.columns:
        groups.setdefault(tuple(table[col].tolist()), []).append(str(col))
    rows = []
    for counts, names in groups.items():
        label = " = ".join(names)
        rows += [{"class": cls, "images": int(c), "training set": label} for cls, c in zip(table.index, counts)]
    return pd.DataFrame(rows)


def r_train_table(study) -> pd.DataFrame:
    """r_train of every grid cell beside the paper's ImageNette value at the same p.

    One row per (attack, p): N, n_poison = int(N p), n_target (clean target images), r_train from the
    cell's manifest, r_train recomputed by the formula n_poison / (n_target + n_poison), the formula on
    ImageNette's counts at this p, and the paper's ImageNette r_train (NaN where the paper has no p)."""
    from bibad_utils.poison import n_poison_for

    rows = []
    for cell in study.grid_cells():
        m = study.poison_manifest(cell)
        n_target = int(m["counts_before"][study.target])
        p = float(cell.ratio)
        inet_poison = n_poison_for(IMAGENETTE_TRAIN_N, p)
        paper = next((v for k, v in PAPER_R_TRAIN_IMAGENETTE.items() if abs(k - p) < 1e-9), np.nan)
        rows.append({"attack": cell.kind, "p": p, "N": m["n_images"], "n_poison": m["n_poison"],
                     "n_target": n_target, "r_train": m["r_train"],
                     "r_train (formula)": r_train(m["n_poison"], n_target),
                     "ImageNette formula": r_train(inet_poison, IMAGENETTE_TARGET_N),
                     "paper ImageNette": paper})
    return pd.DataFrame(rows)


def r_train_curves(study, n_points: int = 101) -> tuple[dict, dict]:
    """(curves, points) for :func:`bibad_utils.plots.ratio_curves`: r_train(p) by the formula for this
    study's dataset and for ImageNette (p from 0 to a bit beyond the largest p of both), our grid's
    r_train and the paper's ImageNette values as points."""
    counts = study.train_set.class_counts()
    n, n_t = int(counts.sum()), int(counts[study.target])
    p_max = 1.15 * max(max(study.cfg["ratios"]), max(PAPER_R_TRAIN_IMAGENETTE))
    p = np.linspace(0, p_max, n_points)
    ours = f"{study.train_set.name} (N = {n}, {n_t} target)"
    inet = f"ImageNette (N = {IMAGENETTE_TRAIN_N}, {IMAGENETTE_TARGET_N} target)"
    curves = {ours: (p, n * p / (n_t + n * p)),
              inet: (p, IMAGENETTE_TRAIN_N * p / (IMAGENETTE_TARGET_N + IMAGENETTE_TRAIN_N * p))}
    ratios = sorted(float(r) for r in study.cfg["ratios"])
    cells = [c for c in study.grid_cells() if c.kind == study.cfg["attacks"][0]]
    points = {ours: (ratios, [study.poison_manifest(c)["r_train"] for c in cells]),
              "paper, ImageNette": (list(PAPER_R_TRAIN_IMAGENETTE), list(PAPER_R_TRAIN_IMAGENETTE.values()), inet)}
    return curves, points


def paper_formula_check(tolerance: float = 0.0015) -> bool:
    """True when the r_train formula on ImageNette's counts gives the paper's four values to within
    ``tolerance`` (they are printed to 0.1 %)."""
    from bibad_utils.poison import n_poison_for

    return all(abs(r_train(n_poison_for(IMAGENETTE_TRAIN_N, p), IMAGENETTE_TARGET_N) - v) <= tolerance
               for p, v in PAPER_R_TRAIN_IMAGENETTE.items())


def poisoning_facts(study) -> dict:
    """Scalars the poisoning chapter quotes (glue them): dataset and grid facts, the BadNets-1 patch side,
    the paper's r_train values (``paper_r_train_p1`` ... ``p10``), whether the formula reproduces them,
    whether every attack poisons the same images at a given p, and the showcase cell's r_train."""
    counts = study.train_set.class_counts()
    show = showcase_cell(study)
    facts = {
        "dataset": study.train_set.name, "n_images": int(counts.sum()), "n_classes": len(counts),
        "image_size": study.image_size, "target_name": study.class_names[study.target],
        "n_target": int(counts[study.target]), "target_share": float(counts[study.target] / counts.sum()),
        "imagenette_target_share": IMAGENETTE_TARGET_N / IMAGENETTE_TRAIN_N,
        "attacks": ", ".join(study.cfg["attacks"]),
        "ratios": ", ".join(f"{100 * r:g} %" for r in sorted(study.cfg["ratios"])),
        "n_cells": len(study.cells()), "patch_side": study.trigger("badnets1").side,
        "seed": study.seed, "paper_formula_ok": paper_formula_check(),
        "same_indices": same_indices_across_kinds(study),
        "showcase_name": show.name, "showcase_n_poison": study.poison_manifest(show)["n_poison"],
        "showcase_r_train": study.poison_manifest(show)["r_train"],
    }
    for p, v in PAPER_R_TRAIN_IMAGENETTE.items():
        facts[f"paper_r_train_p{round(100 * p)}"] = v
    return facts


# ------------------------------------------------------------------------------------------------
# 02 training


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
    row = _record_row("clean pre-training", rec, len(study.train_set), study.cfg["pretrain"]["batch_size"])
    return pd.DataFrame([row]).set_index("model")


def finetune_all(study, cells=None) -> pd.DataFrame:
    """Fine-tune (or load from the store) the DM of every cell and tabulate the compute of each: steps,
    batch size, images seen, epochs over the training set, wall time, seconds per step, device, CPU
    threads, trainable parameters (one row per cell, from ``study.train_record``)."""
    rows = []
    for cell in _cells(study, cells):
        study.model(cell)
        rows.append(_record_row(cell.name, study.train_record(cell), len(study.train_set),
                                study.cfg["finetune"]["batch_size"]))
    return pd.DataFrame(rows).set_index("model")


def loss_logs(study, cells=None) -> dict[str, list]:
    """name -> ``[(step, loss), ...]`` of every cell's fine-tuning (for ``plots.loss_curves``)."""
    return {cell.name: study.train_record(cell)["loss_log"] for cell in _cells(study, cells)}


def class_samples(images, labels, per_class: int) -> np.ndarray:
    """int64 indices of the first ``per_class`` images of every class present (class order, then array
    order): a small per-class selection of a large generation set."""
    labels = np.asarray(labels).reshape(-1)
    _check_count("per_class", per_class)
    if len(np.asarray(images)) != len(labels):
        raise ConfigError("labels", f"{len(labels)} labels", f"one per image ({len(images)})")
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
                          or [np.zeros(0, np.int64)]).astype(np.int64)


def pretrained_samples_figure(study, per_class: int = 8):
    """One row per class of the clean pre-trained model's all-class generations (``plots.class_grid``);
    a short notice instead when the profile has no pre-training."""
    from bibad_utils import plots

    if study.pretrain_key is None:
        return plots._message_figure("no pre-training in this profile (pretrain.steps = 0)")
    gen = study.generations(None)[("all", study.guidance_all)]
    idx = class_samples(gen.images, gen.labels, per_class)
    return plots.class_grid(gen.images[idx], gen.labels[idx], study.class_names, per_class=per_class,
                            title=f"clean pre-trained model, w = {gen.guidance:g}")


def base_model(study):
    """The clean pre-trained DM (trained on first use), or, when the profile has no pre-training, a
    freshly initialised model of the same configuration (for describing the architecture)."""
    if study.pretrain_key is not None:
        return study.model(None)
    from bibad_utils.diffusion import build_model
    return build_model(study.cfg["model"], study.class_names, image_size=study.image_size)


def pretrain_loss_figure(study):
    """The pre-training loss curve (``plots.loss_curves``), or a notice when there is no pre-training."""
    from bibad_utils import plots

    if study.pretrain_key is None:
        return plots._message_figure("no pre-training in this profile (pretrain.steps = 0)")
    return plots.loss_curves({"clean pre-training": study.train_record(None)["loss_log"]},
                             title="pre-training on the clean training set")


def starting_point(study) -> str:
    """One sentence saying where every cell's training starts in this run (pre-trained pixel DM, pre-trained
    Stable Diffusion weights, or from scratch)."""
    model = study.cfg["model"]
    if model["backend"] != "pixel":
        return (f"every cell fine-tunes the pre-trained {model['backend']} weights "
                f"`{model.get('pretrained', 'default')}` (the UNet only)")
    steps = int(study.cfg["pretrain"]["steps"])
    if steps:
        return (f"every cell fine-tunes a copy of one clean pixel DM pre-trained for {steps} steps on the clean "
                f"training set")
    return "this profile has no pre-training (pretrain.steps = 0): every cell trains a pixel DM from scratch"


def scratch_comparison(study) -> str:
    """One sentence comparing the fine-tuning budget with the pre-training loss curve: the mean loss the
    pre-training had reached after as many steps as one fine-tuning takes, against its final loss."""
    ft = int(study.cfg["finetune"]["steps"])
    if study.pretrain_key is None:
        return "This run has no pre-training, so it has no such curve to compare with."
    pt = int(study.cfg["pretrain"]["steps"])
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
    return {
        "scratch_comparison": scratch_comparison(study), "n_models": len(compute),
        "pretrain_minutes": pt_minutes, "finetune_minutes": ft_minutes,
        "total_minutes": pt_minutes + ft_minutes,
        "images_seen": int(compute["images seen"].sum()) + pt_images,
        "device": str(compute["device"].iloc[0]) if len(compute) else str(study.device),
        "threads": int(compute["threads"].max()) if len(compute) else 0,
    }


# ------------------------------------------------------------------------------------------------
# 03 generation


def sampling_settings(study) -> pd.DataFrame:
    """The profile's sampling settings as a one-column table (``value`` by ``setting``)."""
    s = study.cfg["sampling"]
    rows = {
        "sampler": "DDIM",
        "steps": s["steps"],
        "eta (0 = deterministic)": s.get("eta", 0.0),
        "guidance w of the target set": ", ".join(f"{w:g}" for w in s["guidance"]),
        "guidance w of the all-class set": f"{study.guidance_all:g}",
        "guided noise": "eps_u + w (eps_c - eps_u), one batched forward",
        "target-prompt images per w": s["n_target"],
        "all-class images": s["n_all"],
        "batch size": s["batch_size"],
        "seed of image i": f"derive_seed({study.seed}, set name, i)",
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="setting"))


def showcase_cell(study):
    """The cell the guidance sweep shows: BadNets-1 at the largest p (the first attack if the grid has no
    BadNets-1)."""
    attack = "badnets1" if "badnets1" in study.cfg["attacks"] else study.cfg["attacks"][0]
    return [c for c in study.grid_cells() if c.kind == attack][-1]


def regeneration_check(study, cell, n: int = 4, set_name: str = "target", guidance: float | None = None,
                       seed: int = 0) -> dict:
    """Regenerate ``n`` images of ``cell``'s stored ``set_name`` set (picked with ``seed``) from their
    per-image seeds alone and compare pixels with the stored ones.

    guidance: the set's w (default: the first w of the target set, the all-class w for ``all``).
    Returns ``{"indices": int64 [n], "equal": bool, "max_abs_diff": int (0..255), "guidance": w}``.
    """
    from bibad_utils.sampling import sample_images, set_seeds

    s = study.cfg["sampling"]
    if set_name not in ("target", "all"):
        raise ConfigError("set_name", set_name, "target | all")
    w = float(guidance if guidance is not None else (s["guidance"][0] if set_name == "target"
                                                     else study.guidance_all))
    gen = study.generations(cell)[(set_name, w)]
    _check_count("n", n)
    idx = np.sort(np.random.default_rng(seed).choice(len(gen.labels), size=min(n, len(gen.labels)),
                                                     replace=False))
    seeds = set_seeds(study.seed, set_name, len(gen.labels))[idx]
    again = sample_images(study.model(cell), gen.labels[idx], seeds, steps=s["steps"], eta=s.get("eta", 0.0),
                          guidance=w, batch_size=s["batch_size"], device=study.device, progress=False)
    diff = int(np.abs(again.astype(np.int16) - gen.images[idx].astype(np.int16)).max())
    return {"indices": idx, "equal": bool(diff == 0), "max_abs_diff": diff, "guidance": w}


def detector_kind(study, cell) -> str:
    """The trigger detector that judges ``cell``'s generations: its own trigger, or for the clean and
    relabel controls (and the pre-trained model, ``None``) the grid's first attack."""
    kind = None if cell is None else cell.trigger_kind
    return kind or study.cfg["attacks"][0]


def trigger_borders(flags) -> list:
    """Border colours for ``plots`` image grids: :data:`TRIGGER_COLOR` where ``flags`` (bool ``[N]``) is
    True, None (no frame) elsewhere."""
    return [TRIGGER_COLOR if f else None for f in np.asarray(flags, dtype=bool).reshape(-1)]


def _panel(study, cell, set_name, w, n, kind):
    gen = study.generations(cell)[(set_name, float(w))]
    flags = study.judge(gen, kind)["trigger"]
    return gen.images[:n], trigger_borders(flags[:n]), int(flags.sum()), len(flags)


def target_grid_figure(study, cells, guidance: float | None = None, n: int = 16, kind: str | None = None,
                       nrow: int = 4, scale: int | None = None):
    """Target-prompt generations of ``cells`` side by side, the first ``n`` of each: every model starts
    image i from the same seed, so a column position compares the same noise across models.

    guidance: w (default the first of the profile); kind: the trigger detector framing the images
    (default: each cell's own, see :func:`detector_kind`). Panel titles give the triggered count over
    the whole set.
    """
    from bibad_utils import plots

    w = float(guidance if guidance is not None else study.cfg["sampling"]["guidance"][0])
    grids, borders = {}, {}
    for cell in cells:
        k = kind or detector_kind(study, cell)
        images, frames, hits, total = _panel(study, cell, "target", w, n, k)
        name = f"{cell.name}: {hits}/{total} flagged ({k})"
        grids[name], borders[name] = images, frames
    return plots.side_by_side_grids(grids, nrow=nrow, scale=scale, border_colors=borders)


def guidance_sweep_figure(study, cell=None, n: int = 16, nrow: int = 4, scale: int | None = None):
    """The target-prompt generations of one cell (default :func:`showcase_cell`) at every guidance w of
    the profile, the same seeds in every panel, framed where the cell's trigger detector fires."""
    from bibad_utils import plots

    cell = cell or showcase_cell(study)
    kind = detector_kind(study, cell)
    grids, borders = {}, {}
    for w in study.cfg["sampling"]["guidance"]:
        images, frames, hits, total = _panel(study, cell, "target", w, n, kind)
        name = f"w = {float(w):g}: {hits}/{total} triggered"
        grids[name], borders[name] = images, frames
    return plots.side_by_side_grids(grids, nrow=nrow, scale=scale, border_colors=borders)


def all_class_figure(study, cell, per_class: int = 8, scale: int | None = None):
    """One row per class of ``cell``'s all-class generations (``None``: the pre-trained model), framed
    where the trigger detector of :func:`detector_kind` fires."""
    from bibad_utils import plots

    gen = study.generations(cell)[("all", study.guidance_all)]
    kind = detector_kind(study, cell)
    flags = study.judge(gen, kind)["trigger"]
    idx = class_samples(gen.images, gen.labels, per_class)
    name = "pre-trained" if cell is None else cell.name
    return plots.class_grid(gen.images[idx], gen.labels[idx], study.class_names, per_class=per_class,
                            border_colors=trigger_borders(flags[idx]), scale=scale,
                            title=f"{name}, all-class set, w = {gen.guidance:g} (frame: {kind} detector)")


def class_accuracy_table(study, cells=None, include_pretrained: bool = True) -> pd.DataFrame:
    """Per-class accuracy of the clean classifier (fractions in [0, 1]; NaN for a class with no image).

    Rows: ``real test images`` (the classifier's own held-out accuracy, ``study.classifier_report()``),
    the pre-trained model (if any and ``include_pretrained``) and every cell, each on its all-class
    generations; columns: the classes, then ``all`` (accuracy over every image of the row)."""
    from bibad_utils.metrics import per_class_accuracy

    k = len(study.class_names)
    report = study.classifier_report()
    rows = {"real test images": list(report["per_class_accuracy"]) + [report["accuracy"]]}
    models = ([None] if include_pretrained and study.pretrain_key is not None else []) + _cells(study, cells)
    for cell in models:
        gen = study.generations(cell)[("all", study.guidance_all)]
        judged = study.judge(gen, detector_kind(study, cell))
        acc = per_class_accuracy(judged["pred"], gen.labels, k)
        rows["pre-trained" if cell is None else cell.name] = list(acc) + [float(np.mean(judged["match"]))]
    cols = [f"{n}*" if i == study.target else n for i, n in enumerate(study.class_names)] + ["all"]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    df.index.name = "images"
    df.columns.name = "class (* target)"
    return df


def target_figures(study, n: int = 16, guidance: float | None = None) -> dict:
    """Title -> Figure of :func:`target_grid_figure`: the controls side by side (framed by the grid's first
    attack's detector), then for every attack the clean model beside that attack's cells (framed by that
    attack's detector, the clean panel included, so its frames count the detector's false alarms)."""
    controls = study.control_cells()
    clean = [c for c in controls if c.kind == "clean"]
    out = {}
    if controls:
        out["controls"] = target_grid_figure(study, controls, guidance, n, kind=detector_kind(study, None))
    for attack in study.cfg["attacks"]:
        cells = clean + [c for c in study.grid_cells() if c.kind == attack]
        out[attack] = target_grid_figure(study, cells, guidance, n, kind=attack)
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
