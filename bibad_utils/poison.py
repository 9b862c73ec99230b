"""Seeded BadNets-style training-set poisoning, its controls, and the trigger ratio r_train.

A fraction p of the WHOLE training set, n = int(N p) images, is drawn uniformly without replacement from
the non-target classes; those images get the trigger and the target label, replacing their clean
versions (N is unchanged). The controls are ``clean`` (nothing changes) and ``relabel`` (the same draw
relabelled to the target, no trigger).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bibad_utils.base import ConfigError
from bibad_utils.cells import CONTROLS
from bibad_utils.data import PROMPT_TEMPLATE, ImageSet, as_index, to_float, to_uint8
from bibad_utils.triggers import TRIGGERS, make_trigger
from bibad_utils.triggers.base import Trigger


def poison_kinds() -> tuple[str, ...]:
    """What a training set may be made of: the two controls and every registered trigger kind (read from
    :data:`bibad_utils.triggers.TRIGGERS` at each call, so that a kind registered later is accepted)."""
    return (*CONTROLS, *TRIGGERS)


def r_train(n_poison: int, n_target_clean: int) -> float:
    """Fraction of triggered images among the training images that carry the target prompt:
    ``n_poison / (n_target_clean + n_poison)`` (0 when both are 0)."""
    if n_poison < 0 or n_target_clean < 0:
        raise ConfigError("n_poison, n_target_clean", (n_poison, n_target_clean), "counts >= 0")
    total = n_poison + n_target_clean
    return 0.0 if total == 0 else n_poison / total


def n_poison_for(n_images: int, ratio: float) -> int:
    """``int(N * ratio)``, robust to float error (``int(100 * 0.29)`` would give 28)."""
    return int(math.floor(n_images * ratio + 1e-9))


def choose_poison_indices(labels, target: int, ratio: float, seed: int, pool=None,
                          num_classes: int | None = None) -> np.ndarray:
    """Sorted int64 indices of the ``int(N * ratio)`` images to poison, N = len(labels).

    They are drawn uniformly without replacement with ``np.random.default_rng(seed)`` from the images
    whose label is not ``target``, or, if ``pool`` (candidate indices, e.g. duplicated images) is given,
    from the non-target members of the pool. num_classes: for the range check of ``target`` (default
    max(labels) + 1).
    """
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    num_classes = (int(labels.max()) + 1 if len(labels) else 0) if num_classes is None else num_classes
    n_classes = int(num_classes)
    if not isinstance(ratio, (int, float, np.floating)) or not 0 <= ratio < 1:
        raise ConfigError("ratio", ratio, "a number in [0, 1)")
    if not isinstance(target, (int, np.integer)) or not 0 <= target < n_classes:
        raise ConfigError("target", target, f"a class index in [0, {n_classes})")
    if pool is None:
        candidates = np.flatnonzero(labels != target)
    else:
        pool = np.unique(np.asarray(pool, dtype=np.int64).reshape(-1))
        if pool.size and (pool.min() < 0 or pool.max() >= len(labels)):
            raise ConfigError("pool", f"indices in [{pool.min()}, {pool.max()}]", f"indices in [0, {len(labels)})")
        candidates = pool[labels[pool] != target]
    n = n_poison_for(len(labels), ratio)
    if n > len(candidates):
        raise ConfigError("ratio", ratio, f"at most {len(candidates) / max(len(labels), 1):.4f}: int(N * ratio) = "
                                          f"{n} exceeds the {len(candidates)} non-target candidates")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64)


class PoisonedSet:
    """A poisoned view of an :class:`~bibad_utils.data.ImageSet`; the source is never written.

    Rows in ``indices`` are relabelled to ``target`` and (unless ``trigger`` is None) triggered on the
    fly. Offers the ImageSet reading API: ``labels``, ``class_names``, ``prompts``, ``__len__``,
    ``batch(indices)``, ``images_uint8(indices)``, plus ``materialize()`` and ``manifest()``.
    """

    def __init__(self, base: ImageSet, indices, target: int, kind: str, ratio: float, seed: int,
                 trigger: Trigger | None = None, pool=None):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.target = int(target)
        self.kind = kind
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.trigger = trigger
        self.pool_size = None if pool is None else int(len(np.unique(pool)))
        self.is_poisoned = np.zeros(len(base), dtype=bool)
        self.is_poisoned[self.indices] = True
        self.labels = base.labels.copy()
        self.labels[self.indices] = self.target

    def __len__(self) -> int:
        return len(self.base)

    @property
    def class_names(self) -> list[str]:
        return self.base.class_names

    @property
    def n_poison(self) -> int:
        return int(len(self.indices))

    @property
    def prompts(self) -> list[str]:
        """``"A photo of a {class}"`` of every image's (poisoned) label."""
        return [PROMPT_TEMPLATE.format(self.class_names[y]) for y in self.labels]

    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: images per (poisoned) label."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def batch(self, indices, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 ``[n, 3, H, W]`` in [-1, 1], int64 ``[n]`` poisoned labels); poisoned rows carry the
        trigger."""
        rows = as_index(indices, len(self))
        x, _ = self.base.batch(rows, device=device)
        hit = self.is_poisoned[rows]
        if self.trigger is not None and hit.any():
            mask = torch.from_numpy(hit).to(device)
            x[mask] = self.trigger.apply(x[mask])
        return x, torch.as_tensor(self.labels[rows], dtype=torch.int64, device=device)

    def images_uint8(self, indices) -> np.ndarray:
        """uint8 ``[n, H, W, 3]``: the images as training sees them (clean rows bit-exact)."""
        rows = as_index(indices, len(self))
        out = self.base.images_uint8(rows)
        hit = np.flatnonzero(self.is_poisoned[rows])
        if self.trigger is not None and hit.size:
            out[hit] = to_uint8(self.trigger.apply(to_float(out[hit])))
        return out

    def materialize(self, chunk: int = 256) -> ImageSet:
        """A new in-memory ImageSet holding the poisoned images and labels; ``meta["poison"]`` is the
        manifest."""
        images = np.array(self.base.images)
        for start in range(0, len(self.indices), chunk):
            rows = self.indices[start:start + chunk]
            images[rows] = self.images_uint8(rows)
        meta = {**self.base.meta, "poison": self.manifest()}
        return ImageSet(images, self.labels.copy(), list(self.class_names), self.base.name, meta)

    def manifest(self) -> dict:
        """JSON-ready record: kind, ratio, target, seed, n_poison, indices, class counts before and after,
        trigger description and r_train."""
        before = self.base.class_counts()
        return {
            "dataset": self.base.name,
            "n_images": len(self),
            "kind": self.kind,
            "ratio": self.ratio,
            "target": self.target,
            "target_name": self.class_names[self.target],
            "seed": self.seed,
            "n_poison": self.n_poison,
            "indices": self.indices.tolist(),
            "pool_size": self.pool_size,
            "counts_before": before.tolist(),
            "counts_after": self.class_counts().tolist(),
            "source_labels_of_poisoned": np.bincount(self.base.labels[self.indices],
                                                     minlength=len(self.class_names)).tolist(),
            "trigger": None if self.trigger is None else self.trigger.describe(),
            # what the images were read from, for a real dataset (None for generated data)
            "dataset_fingerprint": self.base.meta.get("fingerprint"),
            "r_train": r_train(self.n_poison, int(before[self.target])),
        }

    def __repr__(self) -> str:
        return (f"PoisonedSet({self.base.name}, kind={self.kind}, ratio={self.ratio}, target={self.target}, "
                f"n_poison={self.n_poison})")


def poison_dataset(dataset: ImageSet, kind: str, ratio: float, target: int, seed: int,
                   trigger: Trigger | None = None, pool=None) -> PoisonedSet:
    """Poison ``dataset`` (see :func:`choose_poison_indices`) with ``kind``:

    ``clean``: no change (ratio ignored, recorded as 0); ``relabel``: the drawn images get the target
    label, no trigger; ``badnets1`` | ``badnets2`` | ``wanet``: relabel and apply ``trigger`` (default
    ``make_trigger(kind, dataset.image_size, seed=seed)``; a given trigger must be of the same kind).
    pool: candidate indices (duplicate poisoning).
    """
    if kind not in poison_kinds():
        raise ConfigError("kind", kind, " | ".join(poison_kinds()))
    n_classes = len(dataset.class_names)
    if not isinstance(target, (int, np.integer)) or not 0 <= target < n_classes:
        raise ConfigError("target", target, f"a class index in [0, {n_classes})")
    if kind == "clean":
        return PoisonedSet(dataset, np.zeros(0, np.int64), target, kind, 0.0, seed)
    indices = choose_poison_indices(dataset.labels, target, ratio, seed, pool=pool, num_classes=n_classes)
    if kind == "relabel":
        if trigger is not None:
            raise ConfigError("trigger", trigger.kind, "None for the relabel control")
        return PoisonedSet(dataset, indices, target, kind, ratio, seed, pool=pool)
    trigger = make_trigger(kind, dataset.image_size, seed=seed) if trigger is None else trigger
    if trigger.kind != kind or trigger.image_size != dataset.image_size:
        raise ConfigError("trigger", f"{trigger.kind} at {trigger.image_size} px",
                          f"a {kind} trigger for {dataset.image_size} px images")
    return PoisonedSet(dataset, indices, target, kind, ratio, seed, trigger=trigger, pool=pool)
