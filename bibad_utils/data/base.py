"""What every dataset shares: the :class:`ImageSet`, the conversions between images at rest (``numpy.uint8``
``[N, H, W, 3]``, 0..255) and images handed to models (``torch.float32`` ``[N, 3, H, W]`` in [-1, 1]), the prompt
template and the default data root. Dataset modules import this, never the package's ``__init__``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bibad_utils.base import ConfigError

PROMPT_TEMPLATE = "A photo of a {}"


def to_float(images) -> torch.Tensor:
    """uint8 images ``[N, H, W, 3]`` (or one ``[H, W, 3]``), numpy or tensor -> float32 ``[N, 3, H, W]``
    (or ``[3, H, W]``) in [-1, 1], on the CPU (or the input tensor's device)."""
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        x = torch.as_tensor(arr if arr.flags.writeable else arr.copy())  # a read-only cache: torch warns otherwise
    else:
        x = images
    if x.dtype != torch.uint8:
        raise ConfigError("images.dtype", str(x.dtype), "uint8 (0..255) images in NHWC layout")
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ConfigError("images.shape", tuple(x.shape), "[N, H, W, 3] or [H, W, 3]")
    x = x.movedim(-1, -3).to(torch.float32)
    return (x / 127.5 - 1.0).contiguous()


def to_uint8(images) -> np.ndarray:
    """float images in [-1, 1], ``[N, 3, H, W]`` (or ``[3, H, W]``) -> numpy uint8 ``[N, H, W, 3]``
    (or ``[H, W, 3]``); values are rounded to the nearest level and clamped to 0..255."""
    x = torch.as_tensor(images).detach()
    if not torch.is_floating_point(x):
        raise ConfigError("images.dtype", str(x.dtype), "a floating-point tensor in [-1, 1]")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError("images.shape", tuple(x.shape), "[N, 3, H, W] or [3, H, W]")
    x = ((x.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).contiguous().numpy()


def as_index(indices, n: int) -> np.ndarray:
    """``indices`` (a slice, a boolean mask of length ``n``, integers, negative ones counting from the end, a
    tensor) as the int64 row numbers in ``[0, n)`` they select; ConfigError for a mask of another length or an
    index out of range."""
    if isinstance(indices, slice):
        return np.arange(n)[indices]
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ConfigError("indices", f"boolean mask of shape {idx.shape}", f"a mask of shape ({n},)")
        return np.flatnonzero(idx)
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ConfigError("indices", f"range [{idx.min()}, {idx.max()}]", f"indices in [0, {n})")
    return np.where(idx < 0, idx + n, idx)


@dataclass
class ImageSet:
    """A labelled image dataset held as uint8 NHWC images.

    images: uint8 ``[N, H, W, 3]`` (a ``numpy.memmap`` for cached real datasets); labels: int64 ``[N]``
    in ``[0, len(class_names))``; name: short dataset name; meta: provenance (source, split, seed,
    generator options, ground truth such as ``duplicate_groups``).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.images, np.ndarray):
            self.images = np.asarray(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ConfigError("images", f"{self.images.dtype} array of shape {self.images.shape}", "uint8 [N, H, W, 3]")
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False).reshape(-1)
        if len(self.labels) != len(self.images):
            raise ConfigError("labels", f"{len(self.labels)} labels", f"one per image ({len(self.images)})")
        self.class_names = [str(c) for c in self.class_names]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ConfigError(
                "labels", f"range [{self.labels.min()}, {self.labels.max()}]",
                f"class indices in [0, {len(self.class_names)})",
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def prompts(self) -> list[str]:
        """``"A photo of a {class}"`` for every image, in dataset order."""
        return [self.prompt_for(label) for label in self.labels]

    def prompt_for(self, label: int) -> str:
        """The prompt of class index ``label``."""
        label = int(label)
        if not 0 <= label < len(self.class_names):
            raise ConfigError("label", label, f"a class index in [0, {len(self.class_names)})")
        return PROMPT_TEMPLATE.format(self.class_names[label])

    def images_uint8(self, indices) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` copies of the selected images (indices, a slice or a boolean mask)."""
        return np.array(self.images[as_index(indices, len(self))])

    def batch(self, indices, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 ``[n, 3, H, W]`` in [-1, 1], int64 ``[n]`` labels) of the selected images."""
        idx = as_index(indices, len(self))
        x = to_float(np.ascontiguousarray(self.images[idx])).to(device)
        y = torch.as_tensor(self.labels[idx], dtype=torch.int64, device=device)
        return x, y

    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: number of images of each class."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def subset(self, indices) -> "ImageSet":
        """A new in-memory ImageSet of the selected images; ``meta["subset_indices"]`` records them and
        ``meta["duplicate_groups"]`` (if any) is remapped to the new positions."""
        idx = as_index(indices, len(self))
        meta = dict(self.meta)
        meta["subset_indices"] = idx.tolist()
        if "duplicate_groups" in meta:
            position = {int(old): new for new, old in enumerate(idx)}
            groups = [[position[i] for i in g if i in position] for g in meta["duplicate_groups"]]
            meta["duplicate_groups"] = [g for g in groups if len(g) > 1]
        return ImageSet(np.array(self.images[idx]), self.labels[idx].copy(), list(self.class_names), self.name, meta)


def default_data_root() -> Path:
    """Where real datasets live when no root is given: ``$BIBAD_DATA_ROOT`` or ``<repository>/data``."""
    import os

    env = os.environ.get("BIBAD_DATA_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"
