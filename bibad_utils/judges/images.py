"""Uniform read access to the judges' inputs: datasets, uint8 arrays and float tensors alike."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bibad_utils.base import ConfigError
from bibad_utils.data import to_float


class ImageSource:
    """Uniform read access to a set of images: ``len``, ``get(indices) -> float [-1, 1] NCHW``,
    ``labels`` (int64 numpy or None), ``class_names`` (or None)."""

    def __init__(self, n: int, get: Callable[[np.ndarray], torch.Tensor], labels, class_names=None):
        self.n, self._get, self.labels, self.class_names = n, get, labels, class_names

    def __len__(self) -> int:
        return self.n

    def get(self, indices: np.ndarray) -> torch.Tensor:
        return self._get(np.asarray(indices, dtype=np.int64))

    def subset(self, keep: np.ndarray) -> "ImageSource":
        keep = np.asarray(keep, dtype=np.int64)
        labels = None if self.labels is None else self.labels[keep]
        return ImageSource(len(keep), lambda idx: self._get(keep[idx]), labels, self.class_names)


def as_images(images, labels=None, name: str = "images") -> ImageSource:
    """Dataset (an object with ``batch(indices)``), uint8 ``[N, H, W, 3]`` array or tensor, or float
    [-1, 1] ``[N, 3, H, W]`` tensor -> :class:`ImageSource`. ``labels`` overrides a dataset's labels."""
    if isinstance(images, ImageSource):
        src = images
    elif hasattr(images, "batch"):
        ds = images
        src = ImageSource(len(ds), lambda idx: ds.batch(idx)[0].float().cpu(),
                      np.asarray(ds.labels, dtype=np.int64), ds.class_names)
    elif isinstance(images, torch.Tensor) and torch.is_floating_point(images):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"{name}.shape", tuple(images.shape), "float [N, 3, H, W] in [-1, 1]")
        t = images
        src = ImageSource(len(t), lambda idx: t[torch.from_numpy(idx)].float().cpu(), None)
    else:
        a = images if isinstance(images, (np.ndarray, torch.Tensor)) else np.asarray(images)
        if a.dtype not in (np.uint8, torch.uint8) or a.ndim != 4 or a.shape[-1] != 3:
            raise ConfigError(name, f"{type(images).__name__} {getattr(a, 'dtype', '')} {tuple(a.shape)}",
                              "a dataset with batch(), uint8 [N, H, W, 3] images, or float [N, 3, H, W] in [-1, 1]")
        src = ImageSource(len(a), lambda idx: to_float(a[idx]), None)
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != len(src) or (y.size and not np.issubdtype(y.dtype, np.integer)):
            raise ConfigError("labels", f"{y.dtype} {y.shape}", f"integer class indices [{len(src)}]")
        src = ImageSource(len(src), src.get, y.astype(np.int64), src.class_names)
    return src


def nontarget(src: ImageSource, exclude_class: int | None) -> ImageSource:
    if exclude_class is None:
        return src
    if src.labels is None:
        raise ConfigError("labels", None, "class indices, needed to leave out exclude_class")
    return src.subset(np.flatnonzero(src.labels != exclude_class))
