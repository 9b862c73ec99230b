"""The trigger interface shared by every kind: :class:`Trigger` (applied to float images in [-1, 1]), the
description of a kind for the registry (:class:`TriggerKind`, :class:`TriggerOption`). It imports nothing of
the registry, so a new kind's module imports from here without a circle."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bibad_utils.base import ConfigError


def array_digest(array) -> str:
    """The first 16 hex digits of the SHA-256 of an array's bytes (a short fingerprint for manifests)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


class Trigger:
    """A backdoor trigger for square images of side ``image_size``.

    ``apply(x)``: float images in [-1, 1], ``[C, H, W]`` or ``[N, C, H, W]`` with H = W = image_size, on
    any device -> the triggered images, a new tensor of the same shape, dtype and device.
    """

    kind: str = ""

    def __init__(self, image_size: int, seed: int, options: dict):
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.options = dict(options)

    def _check(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if not torch.is_floating_point(x):
            raise ConfigError("x.dtype", str(x.dtype), "float images in [-1, 1]")
        if x.ndim not in (3, 4) or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ConfigError("x.shape", tuple(x.shape),
                              f"[C, {self.image_size}, {self.image_size}] or [N, C, {self.image_size}, "
                              f"{self.image_size}] (the trigger was built for {self.image_size} px)")
        return x

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-ready description for manifests: kind, image_size, seed, options and derived values."""
        return {"kind": self.kind, "image_size": self.image_size, "seed": self.seed, "options": self.options}

    def view(self) -> dict:
        """What chapter 01 draws for this kind: ``{"style", "data", "title"}``. The default, for any kind, is
        what the trigger does to a mid-grey image (``style`` "image", uint8 ``[S, S, 3]``); the built-in kinds
        draw their patch, pattern or warp field instead."""
        grey = torch.zeros(3, self.image_size, self.image_size)
        out = ((self.apply(grey).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return {"style": "image", "data": out, "title": f"{self.kind}\nthe trigger on a grey image"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


@dataclass(frozen=True)
class TriggerOption:
    """One option of a trigger kind: ``check(value, image_size)`` says whether a value is allowed and
    ``allowed(image_size)`` says in words what is. ``derived`` options are not set by hand: the profile
    check computes them (e.g. the pattern file's sha256, so that artifact keys follow its content)."""

    name: str
    default: Any
    check: Callable[[Any, int], bool]
    allowed: Callable[[int], str]
    derived: bool = False


@dataclass(frozen=True)
class TriggerKind:
    """A trigger kind: ``builder(image_size, seed, **options)`` returns its :class:`Trigger`; ``derive``
    (optional) ``(options, image_size, param) -> options`` fills the derived options after the checks
    (e.g. a pattern file's sha256)."""

    name: str
    builder: Callable[..., Trigger]
    options: tuple[TriggerOption, ...]
    summary: str
    derive: Callable[[dict, int, str], dict] | None = None

    def option(self, name: str) -> TriggerOption | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def settable(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options if not o.derived)
