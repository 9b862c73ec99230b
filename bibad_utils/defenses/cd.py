"""Cognitive Distillation (Huang et al., "Distilling Cognitive Backdoor Patterns within an Image",
ICLR 2023): a backdoor trigger alone keeps a backdoored classifier's logits, so a poisoned image
distils to a small mask."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.defenses.detector import Detector, option_checker
from bibad_utils.schema import is_number
from bibad_utils.defenses.common import (STREAM_CD, batch_slices, check_device, check_float, check_images,
                                          check_int, check_run, eval_mode, stream_rng, take_float)


def _total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Squared-difference total variation of masks [B, 1, H, W] per image, divided by H*W -> [B]."""
    h, w = mask.shape[-2:]
    dh = (mask[..., 1:, :] - mask[..., :-1, :]).pow(2).sum(dim=(1, 2, 3))
    dw = (mask[..., :, 1:] - mask[..., :, :-1]).pow(2).sum(dim=(1, 2, 3))
    return (dh + dw) / (h * w)


def _check_cd_options(steps, lr, betas, gamma, beta):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ConfigError("betas", betas, "two numbers in [0, 1)")
    return {"steps": check_int("steps", steps),
            "lr": check_float("lr", lr, 0.0, math.inf, open_low=True),
            "betas": tuple(check_float("betas", b, 0.0, 1.0) for b in betas),
            "gamma": check_float("gamma", gamma, 0.0, math.inf),
            "beta": check_float("beta", beta, 0.0, math.inf)}


def cd_scores(f: nn.Module, images, *, steps: int = 100, lr: float = 0.1,
              betas: tuple[float, float] = (0.1, 0.1), gamma: float = 0.01, beta: float = 1.0,
              logit_scale: float = 1.0, batch_size: int = 128, seed: int = 0, device="cpu",
              return_masks: bool = False):
    """Cognitive Distillation scores: the negative L1 norm of each image's distilled mask.

    For each image x a one-channel mask m = (tanh(theta) + 1) / 2 in [0, 1]^{H x W} (theta
    initialised to 1, so m starts near 0.88) is optimised by ``steps`` Adam steps on
    ``|f(x*m + (1-m)*u) - f(x)|_1 / K + gamma * |m|_1 + beta * TV(m)``, where f gives logits over
    K classes, u is a uniform random colour in [-1, 1]^C drawn per image and per step, |m|_1 sums
    the H*W mask values and TV(m) is the sum of squared neighbour differences divided by H*W.
    A backdoor trigger alone keeps the logits, so poisoned images distil to small masks.
    The batch is optimised together (per-image losses summed; Adam's update is per parameter,
    so images do not interact).

    Args:
        f: classifier on ``device``, float [-1, 1] NCHW -> logits [N, K]; left unchanged (its
            train/eval flags are restored and no gradient is written into its parameters).
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        steps, lr, betas: Adam schedule for theta.
        gamma: weight of the mask L1 norm; beta: weight of the total variation.
        logit_scale: factor on both logits of the mismatch term (1: the reference). The trade-off
            between the mismatch and the mask's price was set for classifiers with strong logits;
            a victim whose logits are c times weaker is matched by ``logit_scale`` = c (the same
            as dividing gamma and beta by c). :func:`logit_calibration` measures c.
        batch_size: images optimised together.
        seed: the random colours of image i depend only on (seed, i).
        device: where the optimisation runs.
        return_masks: also return the masks.

    Returns:
        scores: float64 array [N], in [-H*W, 0]; higher = more likely poisoned.
        masks (if ``return_masks``): float32 array [N, H, W] in [0, 1].
    """
    n, (c, h, w) = check_images("images", images)
    steps, lr, betas, gamma, beta = _check_cd_options(steps, lr, betas, gamma, beta).values()
    logit_scale = check_float("logit_scale", logit_scale, 0.0, math.inf, open_low=True)
    batch_size, seed, device = check_run(batch_size, seed, device)

    scores = np.empty(n, dtype=np.float64)
    masks = np.empty((n, h, w), dtype=np.float32) if return_masks else None
    with eval_mode(f):
        for start, stop in batch_slices(n, batch_size):
            x = take_float(images, slice(start, stop), device)
            colours = np.stack([stream_rng(seed, STREAM_CD, i).uniform(-1.0, 1.0, size=(steps, c))
                                for i in range(start, stop)])
            colours = torch.from_numpy(colours).float().to(device)  # [B, steps, C]
            with torch.no_grad():
                target = f(x) * logit_scale
            n_classes = target.shape[1]
            theta = torch.ones(x.shape[0], 1, h, w, device=device, requires_grad=True)
            optimiser = torch.optim.Adam([theta], lr=lr, betas=betas)
            for step in range(steps):
                mask = (torch.tanh(theta) + 1) / 2
                u = colours[:, step, :, None, None]
                logits = f(x * mask + (1 - mask) * u) * logit_scale
                per_image = ((logits - target).abs().sum(dim=1) / n_classes
                             + gamma * mask.abs().sum(dim=(1, 2, 3))
                             + beta * _total_variation(mask))
                # Gradient for theta only: the caller's parameters never receive a .grad.
                (theta.grad,) = torch.autograd.grad(per_image.sum(), [theta])
                optimiser.step()
            with torch.no_grad():
                mask = (torch.tanh(theta) + 1) / 2
            scores[start:stop] = -mask.sum(dim=(1, 2, 3)).double().cpu().numpy()
            if return_masks:
                masks[start:stop] = mask[:, 0].cpu().numpy()
    return (scores, masks) if return_masks else scores


def mean_max_logit(f: nn.Module, images, *, batch_size: int = 256, device="cpu") -> float:
    """The mean over ``images`` of ``f``'s largest logit: the scale of its logits."""
    n, _ = check_images("images", images)
    total = 0.0
    with eval_mode(f), torch.no_grad():
        for start, stop in batch_slices(n, check_int("batch_size", batch_size)):
            total += f(take_float(images, slice(start, stop), check_device(device))).max(dim=1).values.sum().item()
    return total / n


def logit_calibration(f: nn.Module, images, reference: float, **kwargs) -> float:
    """``logit_scale`` that brings ``f``'s mean largest logit on ``images`` to ``reference``
    (:func:`mean_max_logit`); ``kwargs`` go to it."""
    reference = check_float("reference", reference, 0.0, math.inf, open_low=True)
    return reference / max(mean_max_logit(f, images, **kwargs), 1e-6)


# How CD's logit scale is fixed: ``clean_heldout`` measures it once per classifier on clean images the
# classifier did not train on (never on a scored set), ``none`` keeps the logits (scale 1, the reference).
CALIBRATIONS = ("clean_heldout", "none")


def check_calibration(calibration, reference, prefix: str = "") -> None:
    """ConfigError unless (``calibration``, ``reference``) is ``("clean_heldout", a number > 0)`` or
    ``("none", None)``; ``prefix`` (e.g. ``"defenses.cd."``) starts the names in the error."""
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"{prefix}logit_calibration", calibration, " | ".join(CALIBRATIONS))
    if calibration == "none" and reference is not None:
        raise ConfigError(f"{prefix}logit_reference", reference, "null with logit_calibration none")
    if calibration == "clean_heldout" and (not is_number(reference) or reference <= 0):
        raise ConfigError(f"{prefix}logit_reference", reference, "a number > 0 with logit_calibration clean_heldout")


# ------------------------------------------------------------------------------ its registry entry

def _cd_extra(opts: dict, prefix: str) -> None:
    check_calibration(opts["logit_calibration"], opts["logit_reference"], f"{prefix}.")
    betas = opts["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{prefix}.betas", betas, "two numbers in [0, 1)")


def _cd(f, images, ctx, *, logit_calibration="none", logit_reference=None, **opts):
    # One logit scale per classifier, fixed before any set is scored and the same for every set: ``none``
    # -> 1.0; ``clean_heldout`` -> logit_reference / f's mean largest logit on clean images it did not
    # train on (ctx.heldout_max_logit when the caller measured it once, else measured on ctx.heldout). The
    # scored images never enter, so a set's CD scores do not depend on what else is scored with it.
    check_calibration(logit_calibration, logit_reference, "CD.")
    scale, measured = 1.0, ctx.heldout_max_logit
    if logit_calibration == "clean_heldout":
        if measured is None and (ctx.heldout is None or ctx.heldout is images):
            raise ConfigError("context.heldout", None if ctx.heldout is None else "the scored images",
                              "clean images the classifier did not train on, apart from the scored set, or "
                              "context.heldout_max_logit (CD.logit_calibration: clean_heldout)")
        if measured is None:
            measured = mean_max_logit(f, ctx.heldout, device=ctx.device)
        elif not is_number(measured):
            raise ConfigError("heldout_max_logit", measured, "a finite number (a mean largest logit)")
        scale = float(logit_reference) / max(float(measured), 1e-6)
    scores, masks = cd_scores(f, images, seed=ctx.seed, device=ctx.device, return_masks=True,
                              logit_scale=scale, **{k: tuple(v) if k == "betas" else v for k, v in opts.items()})
    return {"scores": scores, "masks": masks, "logit_scale": np.float64(scale)}


DETECTOR = Detector(
        "CD", _cd,
        {"steps": 100, "lr": 0.1, "betas": [0.1, 0.1], "gamma": 0.01, "beta": 1.0, "batch_size": 128,
         "logit_calibration": "none", "logit_reference": None},
        "Cognitive Distillation: minus the L1 norm of the distilled mask; logit_calibration clean_heldout "
        "rescales a weak victim's logits so that its mean largest logit on clean held-out images is "
        "logit_reference (one scale per classifier, for every scored set); none keeps them",
        ("masks", "logit_scale"),
        option_checker({"steps": 1, "batch_size": 1}, ("lr", "gamma", "beta"),
                       {"logit_calibration": CALIBRATIONS}, extra=_cd_extra))
