"""WaNet: resample the image along a fixed smooth warp field, and the warp helpers its detector shares."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int, is_number
from bibad_utils.triggers.base import Trigger, TriggerKind, TriggerOption, array_digest


def warp_offsets(n: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random control-point fields of a warp: float64 ``[n, 2, grid, grid]``, uniform in [-1, 1),
    drawn from ``generator`` (the WaNet trigger draws one from a generator seeded with its seed)."""
    return torch.rand(n, 2, int(grid), int(grid), generator=generator, dtype=torch.float64) * 2 - 1


def _identity_grid(image_size: int) -> torch.Tensor:
    line = torch.linspace(-1, 1, image_size, dtype=torch.float64)
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xx, yy], dim=-1)[None]


def warp_grids(offsets: torch.Tensor, image_size: int, strength: float) -> torch.Tensor:
    """Sampling grids of :class:`WarpTrigger` warps from control-point fields ``offsets`` (float64
    ``[N, 2, g, g]``, :func:`warp_offsets`): each field normalised to mean absolute value 1, upsampled
    bicubically to ``image_size``, scaled by ``strength / image_size`` and added to the identity grid in
    [-1, 1] coordinates (clamped there). Returns float32 ``[N, S, S, 2]`` for :func:`apply_warp`."""
    offsets = torch.cat([o / o.abs().mean() for o in offsets.split(1)])
    field = F.interpolate(offsets, size=(image_size, image_size), mode="bicubic",
                          align_corners=True).permute(0, 2, 3, 1)
    return (_identity_grid(image_size) + float(strength) * field / image_size).clamp(-1, 1).float()


def random_warp_grids(n: int, image_size: int, grid: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` warps drawn at random like the WaNet trigger's field (same ``grid`` and ``strength``, other
    offsets): float32 sampling grids ``[n, S, S, 2]`` for :func:`apply_warp`. WaNet's "noise mode" trains
    on images warped this way, labelled clean, so that a detector learns the trigger's field, not any warp."""
    return warp_grids(warp_offsets(n, grid, generator), image_size, strength)


def apply_warp(x: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Resample float images ``x`` ``[N, C, S, S]`` along sampling grids ``[1 or N, S, S, 2]`` (bilinear,
    border padding, as :class:`WarpTrigger`); returns a new tensor of ``x``'s shape, dtype and device."""
    grids = grids.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grids, mode="bilinear", padding_mode="border", align_corners=True)


class WarpTrigger(Trigger):
    """WaNet: resample the image along a fixed smooth warp field (Nguyen & Tran, ICLR 2021).

    A ``grid x grid`` field of uniform random 2-D offsets (seeded, drawn once) is normalised to mean
    absolute value 1, upsampled bicubically to the image size and added, scaled by ``strength / S``, to
    the identity sampling grid in [-1, 1] coordinates (clamped there), so the mean displacement is
    ``strength / 2`` pixels at any size S; images are resampled bilinearly with ``grid_sample``.
    """

    kind = "wanet"

    def __init__(self, image_size, seed=0, grid=4, strength=0.5):
        super().__init__(image_size, seed, {"grid": grid, "strength": strength})
        if not is_int(grid) or not 2 <= grid <= self.image_size:
            raise ConfigError("triggers.wanet.grid", grid, f"an integer in [2, {self.image_size}]")
        if not is_number(strength) or not strength > 0:
            raise ConfigError("triggers.wanet.strength", strength, "a number > 0")
        gen = torch.Generator().manual_seed(self.seed)
        self.grid = warp_grids(warp_offsets(1, int(grid), gen), self.image_size, strength)
        self.displacement_px = ((self.grid.double() - _identity_grid(self.image_size)) * (self.image_size - 1) / 2)[0]

    def apply(self, x):
        x = self._check(x)
        batch = x if x.ndim == 4 else x[None]
        return apply_warp(batch, self.grid) if x.ndim == 4 else apply_warp(batch, self.grid)[0]

    def describe(self):
        disp = self.displacement_px.norm(dim=-1)
        return {**super().describe(), "mean_displacement_px": round(float(disp.mean()), 4),
                "max_displacement_px": round(float(disp.max()), 4),
                "field_sha256_16": array_digest(self.grid.numpy())}

    def view(self) -> dict:
        disp = self.displacement_px.numpy()
        mean = float(np.hypot(disp[..., 0], disp[..., 1]).mean())
        return {"style": "field", "data": disp, "title": f"WaNet\nwarp field, mean shift {mean:.2f} px"}


KIND = TriggerKind("wanet", WarpTrigger, (
    TriggerOption("grid", 4, lambda v, s: is_int(v) and 2 <= v <= s,
                  lambda s: f"an integer in [2, {s}] (control points per side of the warp field)"),
    TriggerOption("strength", 0.5, lambda v, s: is_number(v) and v > 0,
                  lambda s: "a number > 0 (twice the mean displacement in pixels)"),
), "a fixed smooth warp of the whole image")
