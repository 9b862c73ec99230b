"""STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019):
a trigger survives superimposition with clean images and keeps the prediction confident."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.defenses.detector import Detector, option_checker
from bibad_utils.defenses.common import (STREAM_STRIP, batch_slices, check_float, check_images, check_int, check_run,
                                          eval_mode, stream_rng, take_float)


SUPERIMPOSE = ("sum", "blend")


def superimpose(x01: torch.Tensor, overlays01: torch.Tensor, mode: str = "sum", alpha: float = 0.5) -> torch.Tensor:
    """Superimpose ``overlays01`` on ``x01`` (both in the [0, 1] image domain, same shape).

    ``sum``: clip(x + x_r, 0, 1), the reference's superimposition; on light images most pixels
    saturate at 1 and a dark trigger is washed out. ``blend``: (1 - alpha) * x + alpha * x_r, which
    never saturates and keeps a dark trigger at (1 - alpha) of its contrast (a deviation from the
    reference, for light images).
    """
    if mode == "sum":
        return (x01 + overlays01).clamp(0, 1)
    if mode == "blend":
        return (1 - alpha) * x01 + alpha * overlays01
    raise ConfigError("mode", mode, " | ".join(SUPERIMPOSE))


def strip_scores(f: nn.Module, images, clean_pool, *, n_overlay: int = 100, mode: str = "sum",
                 alpha: float = 0.5, batch_size: int = 512, seed: int = 0,
                 device="cpu") -> np.ndarray:
    """STRIP scores: the negative mean prediction entropy of x superimposed with clean images.

    Each image x is superimposed with ``n_overlay`` images x_r drawn from ``clean_pool``
    (without replacement when the pool is large enough) by :func:`superimpose` in the [0, 1]
    image domain (``mode`` ``sum``: clip(x + x_r, 0, 1) as the reference; ``blend``: the
    non-saturating (1 - alpha) x + alpha x_r), then mapped back to [-1, 1]. A trigger survives the superimposition and keeps
    the prediction confident, so poisoned images have low entropy.

    Args:
        f: classifier on ``device``, float [-1, 1] NCHW -> logits [N, K]; left unchanged.
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        clean_pool: images known to be clean, same formats, same C, H, W.
        n_overlay: superimposed copies per image.
        mode, alpha: the superimposition (:func:`superimpose`); alpha in (0, 1) for ``blend``.
        batch_size: images passed through ``f`` at once.
        seed: the overlays of image i depend only on (seed, i).
        device: where ``f`` runs.

    Returns:
        float64 array [N] in [-ln K, 0] (entropy in nats, negated); higher = more likely poisoned.
    """
    n, shape = check_images("images", images)
    n_pool, pool_shape = check_images("clean_pool", clean_pool)
    if pool_shape != shape:
        raise ConfigError("clean_pool", f"images of shape {pool_shape}", f"images of shape {shape}")
    n_overlay = check_int("n_overlay", n_overlay)
    if mode not in SUPERIMPOSE:
        raise ConfigError("mode", mode, " | ".join(SUPERIMPOSE))
    alpha = check_float("alpha", alpha, 0.0, 1.0, open_low=True)
    batch_size, seed, device = check_run(batch_size, seed, device)

    scores = np.empty(n, dtype=np.float64)
    images_per_pass = max(1, batch_size // n_overlay)
    with eval_mode(f), torch.no_grad():
        for start, stop in batch_slices(n, images_per_pass):
            x01 = (take_float(images, slice(start, stop), device) + 1) / 2
            picks = np.concatenate([
                stream_rng(seed, STREAM_STRIP, i).choice(n_pool, size=n_overlay,
                                                     replace=n_pool < n_overlay)
                for i in range(start, stop)])
            overlays01 = (take_float(clean_pool, picks, device) + 1) / 2
            blended = superimpose(x01.repeat_interleave(n_overlay, dim=0), overlays01, mode, alpha) * 2 - 1
            entropies = []
            for lo, hi in batch_slices(blended.shape[0], batch_size):
                log_p = F.log_softmax(f(blended[lo:hi]).float(), dim=1)
                entropies.append(-(log_p.exp() * log_p).sum(dim=1))
            mean_entropy = torch.cat(entropies).view(stop - start, n_overlay).mean(dim=1)
            scores[start:stop] = -mean_entropy.double().cpu().numpy()
    return scores


# ------------------------------------------------------------------------------ its registry entry

def _strip(f, images, ctx, **opts):
    if ctx.clean_pool is None:
        raise ConfigError("context.clean_pool", None, "clean images to superimpose (STRIP)")
    return {"scores": strip_scores(f, images, ctx.clean_pool, seed=ctx.seed, device=ctx.device, **opts)}


DETECTOR = Detector(
        "STRIP", _strip, {"n_overlay": 100, "mode": "sum", "alpha": 0.5, "batch_size": 512},
        "STRIP: minus the mean entropy under superimposed clean images (mode sum: the reference's "
        "saturating sum; blend: (1 - alpha) x + alpha x_r)",
        check=option_checker({"n_overlay": 1, "batch_size": 1}, ("alpha",), {"mode": ("sum", "blend")}))
