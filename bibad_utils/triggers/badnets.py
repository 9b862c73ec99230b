"""BadNets-1: an opaque black-and-white patch in the bottom-right corner."""

from __future__ import annotations

import math

import numpy as np
import torch

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int
from bibad_utils.triggers.base import Trigger, TriggerKind, TriggerOption


def badnets1_side(image_size: int) -> int:
    """Side in pixels of the BadNets-1 patch: ``max(5, image_size // 10)``.

    The paper states both s = image_side // 10 and "5 px at 32 px"; the two agree from 50 px up, and
    below that the 5-pixel minimum keeps the diagonal band drawable (512 px -> 51, 32 px -> 5).
    """
    return max(5, int(image_size) // 10)


def badnets1_patch(side: int) -> np.ndarray:
    """bool ``[side, side]``: True where the BadNets-1 patch is white.

    Pixel (row x, column y) is white iff ``y - (side - 1 - x)`` lies in
    ``[-ceil(side / 4), floor(side / 4) - 1]``: a band along the anti-diagonal; the rest is black.
    """
    if side < 1:
        raise ConfigError("size", side, "a patch side >= 1 pixel")
    x, y = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    d = y - (side - 1 - x)
    return (d >= -math.ceil(side / 4)) & (d <= side // 4 - 1)


class BadNetsPatch(Trigger):
    """BadNets-1: an opaque black patch with a white anti-diagonal band in the bottom-right corner."""

    kind = "badnets1"

    def __init__(self, image_size, seed=0, size=None):
        super().__init__(image_size, seed, {"size": size})
        side = badnets1_side(image_size) if size is None else size
        if not (is_int(side) and 1 <= side <= self.image_size):
            raise ConfigError("triggers.badnets1.size", size, f"a patch side in [1, {self.image_size}] pixels")
        self.side = int(side)
        self.patch = torch.from_numpy(badnets1_patch(self.side)).float() * 2 - 1

    def apply(self, x):
        x = self._check(x)
        out = x.clone()
        out[..., -self.side:, -self.side:] = self.patch.to(device=x.device, dtype=x.dtype)
        return out

    def describe(self):
        return {**super().describe(), "side": self.side, "corner": "bottom-right",
                "white_mask": badnets1_patch(self.side).astype(int).tolist()}

    def view(self) -> dict:
        return {"style": "mask", "data": badnets1_patch(self.side),
                "title": f"BadNets-1\n{self.side}x{self.side} px patch, bottom-right corner"}


KIND = TriggerKind("badnets1", BadNetsPatch, (
    TriggerOption("size", None, lambda v, s: v is None or (is_int(v) and 1 <= v <= s),
                  lambda s: f"a patch side in [1, {s}] pixels, or null for max(5, image_size // 10)"),
), "an opaque black-and-white patch in the bottom-right corner")
