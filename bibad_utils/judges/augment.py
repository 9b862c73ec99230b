"""Training-time augmentation of the judges: a small random translation, an optional flip, and the
photometric corruptions (colour jitter, blur, noise) that let judges trained on real images read a
diffusion model's generations (grain, colour cast, softness)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bibad_utils.base import ConfigError

# Photometric augmentation of the judges (maximum strengths; 0 = off), so that judges trained on
# real images transfer to a diffusion model's generations (grain, colour cast, softness).
PHOTOMETRIC_KEYS = ("color_jitter", "blur", "noise")


def augment_batch(x: torch.Tensor, gen: torch.Generator, crop_pad: int, hflip: bool,
             photometric: dict | None = None) -> torch.Tensor:
    """Random translation by up to ``crop_pad`` px (crop of a replicate-padded image), optional flip,
    then the photometric corruptions of ``photometric`` (see :data:`PHOTOMETRIC_KEYS`), each drawn
    per image with a strength uniform in [0, max]: colour jitter (brightness shift, contrast and
    saturation scaling by up to ``color_jitter``), a blend towards a 3 x 3 binomial blur (weight up to
    ``blur``), additive Gaussian noise (standard deviation up to ``noise``, on the [-1, 1] scale)."""
    n, _, h, w = x.shape
    if crop_pad > 0:
        xp = F.pad(x, (crop_pad,) * 4, mode="replicate")
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]
        x = xp[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    p = photometric or {}
    if not any(p.get(k, 0) for k in PHOTOMETRIC_KEYS):
        return x.contiguous()

    def uniform(scale, symmetric=True):
        u = torch.rand(n, 1, 1, 1, generator=gen)
        return (2 * u - 1) * scale if symmetric else u * scale

    jitter, blur, noise = (float(p.get(k, 0)) for k in PHOTOMETRIC_KEYS)
    if jitter > 0:
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(jitter)) + mean + uniform(jitter)
        gray = x.mean(1, keepdim=True)
        x = gray + (x - gray) * (1 + uniform(jitter))
    if blur > 0:
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        a = uniform(blur, symmetric=False)
        x = x * (1 - a) + smooth * a
    if noise > 0:
        x = x + uniform(noise, symmetric=False) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1).contiguous()


def check_photometric(prefix: str = "judges", **values) -> dict:
    """Photometric strengths (keys of :data:`PHOTOMETRIC_KEYS`) -> floats; a bad one raises a
    ConfigError named ``<prefix>.<key>``."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{prefix}.{key}", value, "a maximum strength in [0, 1] (0: off)")
    return {k: float(v) for k, v in values.items()}
