"""Stage 01, poisoning: trigger examples and patterns, poison manifests, class counts, r_train against p."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bibad_utils.base import ConfigError
from bibad_utils.data import to_float, to_uint8
from bibad_utils.experiments.training_report.common import (IMAGENETTE_TARGET_N, IMAGENETTE_TRAIN_N,
                                                            PAPER_R_TRAIN_IMAGENETTE, check_count, showcase_cell)
from bibad_utils.poison import n_poison_for, r_train
from bibad_utils.triggers import TRIGGERS


def example_indices(labels, target: int, n: int, seed: int) -> np.ndarray:
    """int64 ``[n]`` indices of example images, one per non-target class in turn (classes in a seeded
    order, a seeded image within each), so n examples show n different classes when there are enough.

    labels: int ``[N]`` class indices; target: the class left out (its images are never poisoned).
    """
    labels = np.asarray(labels).reshape(-1)
    check_count("n", n)
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


def trigger_examples(study, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """The same ``n`` clean non-target training images, plain and with each trigger of the registry
    :data:`bibad_utils.triggers.TRIGGERS`.

    Returns ``{"clean": uint8 [n, H, W, 3], kind: uint8 [n, H, W, 3] for every kind}``; the triggers
    are the study's (``study.trigger(kind)``: profile options and seed), whether or not the grid uses
    them.
    """
    idx = example_indices(study.train_set.labels, study.target, n, seed)
    clean = study.train_set.images_uint8(idx)
    out = {"clean": clean}
    for kind in TRIGGERS:
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


def trigger_pattern_data(study) -> list[dict]:
    """The study's triggers as each kind draws itself (``Trigger.view()``, for
    :func:`bibad_utils.plots.trigger_patterns`): every kind of the registry :data:`~bibad_utils.triggers.TRIGGERS`,
    with the profile's options and seed, whether or not the grid uses it."""
    return [study.trigger(kind).view() for kind in TRIGGERS]


def poison_manifests(study, n_first: int = 8) -> pd.DataFrame:
    """Write (if missing) the poisoned-set artifact of every cell and list them: one row per cell with
    its artifact key, seed, number of poisoned images, the first ``n_first`` poisoned indices and the
    manifest's path relative to the store's root (``<run_dir>/artifacts``). Calls ``study.poison_key(cell)`` for each cell."""
    rows = []
    for cell in study.cells():
        key = study.poison_key(cell)
        m = study.poison_manifest(cell)
        path = study.store.path("poison", key) / "poison_manifest.json"
        first = ", ".join(str(i) for i in m["indices"][:n_first])
        rows.append({"cell": cell.name, "key": key, "seed": m["seed"], "n_poison": m["n_poison"],
                     "first indices": first + (f" (+{m['n_poison'] - n_first} more)" if m["n_poison"] > n_first else ""),
                     "manifest (under artifacts/)": str(Path(path).relative_to(study.store.root))})
    return pd.DataFrame(rows).set_index("cell")


def manifest_table(manifest: dict, n_first: int = 10) -> pd.DataFrame:
    """A manifest as a two-column table (``value`` by dotted ``field``): nested dicts flattened, lists
    shortened to their first ``n_first`` items and their length ("[3, 7, 14; 250 items]"); for showing a
    manifest without its thousands of indices. No value is cut otherwise (the page wraps long text)."""
    def short(v):
        if isinstance(v, list):
            if len(v) > n_first:
                return "[" + ", ".join(short(x) for x in v[:n_first]) + f"; {len(v)} items]"
            return "[" + ", ".join(short(x) for x in v) + "]"
        return str(v)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", short(v)

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


def class_counts_table(study) -> pd.DataFrame:
    """Images per label before poisoning (``clean``) and after it for each non-clean cell: int columns,
    one row per class (the target class marked), plus a ``total`` row (unchanged: the poisoned copies
    replace the clean ones)."""
    cells = [c for c in study.cells() if c.kind != "clean"]
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
    p_max = 1.15 * max(max(study.cfg.ratios), max(PAPER_R_TRAIN_IMAGENETTE))
    p = np.linspace(0, p_max, n_points)
    ours = f"{study.train_set.name} (N = {n}, {n_t} target)"
    inet = f"ImageNette (N = {IMAGENETTE_TRAIN_N}, {IMAGENETTE_TARGET_N} target)"
    curves = {ours: (p, n * p / (n_t + n * p)),
              inet: (p, IMAGENETTE_TRAIN_N * p / (IMAGENETTE_TARGET_N + IMAGENETTE_TRAIN_N * p))}
    cells = [c for c in study.grid_cells() if c.kind == study.cfg.attacks[0]]
    points = {ours: ([c.ratio for c in cells], [study.poison_manifest(c)["r_train"] for c in cells]),
              "paper, ImageNette": (list(PAPER_R_TRAIN_IMAGENETTE), list(PAPER_R_TRAIN_IMAGENETTE.values()), inet)}
    return curves, points


def paper_formula_check(tolerance: float = 0.0015) -> bool:
    """True when the r_train formula on ImageNette's counts gives the paper's four values to within
    ``tolerance`` (they are printed to 0.1 %)."""
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
        "attacks": ", ".join(study.cfg.attacks),
        "ratios": ", ".join(f"{100 * r:g} %" for r in sorted(study.cfg.ratios)),
        "n_cells": len(study.cells()), "patch_side": study.trigger("badnets1").side,
        "seed": study.seed, "paper_formula_ok": paper_formula_check(),
        "same_indices": same_indices_across_kinds(study),
        "showcase_name": show.name, "showcase_n_poison": study.poison_manifest(show)["n_poison"],
        "showcase_r_train": study.poison_manifest(show)["r_train"],
    }
    for p, v in PAPER_R_TRAIN_IMAGENETTE.items():
        facts[f"paper_r_train_p{round(100 * p)}"] = v
    return facts
