"""FCT, feature consistency towards transformations (Chen et al., "Effective Backdoor Defense by
Exploiting Sensitivity of Poisoned Samples", NeurIPS 2022): the features of a poisoned image move
more under a transformation than those of a clean one."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.defenses.detector import Detector, option_checker
from bibad_utils.schema import is_int
from bibad_utils.defenses.common import (STREAM_FCT_FINETUNE, STREAM_FCT_TRANSFORM, batch_slices, check_float,
                                          check_images, check_int, check_run, eval_mode, stream_rng, take_float)


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features [N, D] of a classifier for float [-1, 1] NCHW images.

    Works for any module with a ``features(x)`` method (its output is flattened), for torchvision
    ResNets and ResNet-like modules (everything but ``fc``), and for an ``nn.Sequential`` ending in
    a ``Linear`` layer (everything but that layer). Other classifiers need their own ``feature_fn``.
    """
    if callable(getattr(model, "features", None)):
        return model.features(x).flatten(1)
    if all(hasattr(model, name) for name in
           ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
            "avgpool", "fc")):
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer4(model.layer3(model.layer2(model.layer1(h))))
        return torch.flatten(model.avgpool(h), 1)
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1](x).flatten(1)
    raise ConfigError("feature_fn", None,
                      "a callable feature_fn(model, x) for a classifier without .features(x) "
                      "that is neither a ResNet nor a Sequential ending in Linear")


def _supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of L2-normalised features z [B, D] with int labels [B]."""
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -math.inf)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return z.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def centre_cosine_loss(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the class centres of raw features z [B, D] (labels [B]).

    The centre of a class is the mean feature of its images in the batch; the loss averages the
    off-diagonal entries of the centres' cosine-similarity matrix, so minimising it pushes the
    class centres apart (the fine-tuning loss of the reference FCT). Zero with fewer than two
    classes in the batch.
    """
    classes = torch.unique(labels)
    if len(classes) < 2:
        return z.sum() * 0.0
    onehot = (labels[:, None] == classes[None, :]).to(z.dtype)  # [B, k]
    centres = (onehot.T @ z) / onehot.sum(dim=0)[:, None]
    c = F.normalize(centres, dim=1)
    cos = c @ c.T
    k = len(classes)
    return (cos.sum() - cos.diagonal().sum()) / (k * (k - 1))


def _random_affine(x: torch.Tensor, angles_deg: torch.Tensor, shifts: torch.Tensor,
                   fill: float = 0.0, mode: str = "bilinear") -> torch.Tensor:
    """Rotate each image [B, C, H, W] about its centre and shift it (fractions of the side).

    ``angles_deg`` [B]; ``shifts`` [B, 2] as (dx, dy) in units of the image side; the uncovered
    area is filled with ``fill`` (in [-1, 1]: 0 is mid grey, -1 black); ``mode`` the resampling
    (``bilinear`` or ``nearest``).
    """
    a = torch.deg2rad(angles_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps output coordinates (in [-1, 1]) to input ones, hence the inverse shift.
    theta = torch.stack([torch.stack([cos, -sin, -2 * shifts[:, 0]], dim=1),
                         torch.stack([sin, cos, -2 * shifts[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # grid_sample pads with zeros: shift the images so that the padding lands on ``fill``
    moved = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return moved + fill


def reference_transform(x: torch.Tensor, seed: int, start: int, *, max_rotation: float = 180.0,
                        max_translate: float = 0.2, fill: float = -1.0,
                        mode: str = "nearest") -> torch.Tensor:
    """The reference FCT's transformation of images ``x`` [B, C, H, W] (in [-1, 1]) whose positions
    in the scored collection are ``start .. start + B - 1``: a rotation drawn uniformly in
    [-max_rotation, max_rotation] degrees (RandomRotation(180)), a shift of up to ``max_translate``
    of the side along each axis (translate 0.2), black fill (-1), nearest-neighbour resampling.
    Image i's draw depends only on (seed, i)."""
    draws = np.stack([stream_rng(seed, STREAM_FCT_TRANSFORM, i).uniform(-1.0, 1.0, size=3)
                      for i in range(start, start + len(x))])
    draws = torch.from_numpy(draws).float().to(x.device)
    return _random_affine(x, draws[:, 0] * max_rotation, draws[:, 1:] * max_translate, fill=fill, mode=mode)


FCT_OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM, SGD_WEIGHT_DECAY = 0.9, 5e-4


def _check_fct_options(finetune_steps, finetune_lr, finetune_batch_size, temperature,
                       max_rotation, max_translate, finetune_epochs=None, finetune_optimizer="adam"):
    if finetune_optimizer not in FCT_OPTIMIZERS:
        raise ConfigError("finetune_optimizer", finetune_optimizer, " | ".join(FCT_OPTIMIZERS))
    return {
        "finetune_epochs": None if finetune_epochs is None else check_int("finetune_epochs", finetune_epochs, 1),
        "finetune_optimizer": finetune_optimizer,
        "finetune_steps": check_int("finetune_steps", finetune_steps, minimum=0),
        "finetune_lr": check_float("finetune_lr", finetune_lr, 0.0, math.inf, open_low=True),
        "finetune_batch_size": check_int("finetune_batch_size", finetune_batch_size, minimum=2),
        "temperature": check_float("temperature", temperature, 0.0, math.inf, open_low=True),
        "max_rotation": check_float("max_rotation", max_rotation, 0.0, 180.0, closed_high=True),
        "max_translate": check_float("max_translate", max_translate, 0.0, 0.5)}


def _prepare(f, images, train_images, train_labels, feature_fn, batch_size, seed, device):
    """Shared argument checks; returns (n, shape, feature_fn, labels or None, batch_size, seed, device)."""
    n, shape = check_images("images", images)
    if (train_images is None) != (train_labels is None):
        raise ConfigError("train_labels", "given without train_images" if train_images is None
                          else None, "train_images and train_labels both given or both None")
    batch_size, seed, device = check_run(batch_size, seed, device)
    feature_fn = penultimate_features if feature_fn is None else feature_fn
    if not callable(feature_fn):
        raise ConfigError("feature_fn", feature_fn, "a callable feature_fn(model, x) -> [N, D]")
    labels = None
    if train_images is not None:
        m, train_shape = check_images("train_images", train_images)
        if train_shape != shape:
            raise ConfigError("train_images", f"images of shape {train_shape}", f"images of shape {shape}")
        labels = np.asarray(train_labels.cpu() if isinstance(train_labels, torch.Tensor) else train_labels)
        if labels.shape != (m,) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError("train_labels", f"array {labels.shape} {labels.dtype}", f"integer labels of shape ({m},)")
    return n, feature_fn, labels, batch_size, seed, device


def fct_scores(f: nn.Module, images, *, train_images=None, train_labels=None,
               finetune_steps: int = 20, finetune_lr: float = 1e-4,
               finetune_batch_size: int = 128, finetune_epochs: int | None = None,
               finetune_optimizer: str = "adam", max_rotation: float = 180.0,
               max_translate: float = 0.2,
               feature_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
               batch_size: int = 256, seed: int = 0, device="cpu") -> np.ndarray:
    """FCT scores as the reference defines them: ``|| h(x) - h(T(x)) ||^2`` on raw penultimate
    features h, with T :func:`reference_transform` (rotation up to 180 degrees, shift up to 0.2 of
    the side, black fill).

    If ``train_images``/``train_labels`` are given, a COPY of ``f`` is first fine-tuned on
    :func:`centre_cosine_loss` (the off-diagonal cosine similarity of the class centres of its penultimate
    features), as the reference does before scoring: ``finetune_epochs`` passes over the data when set
    (the reference: 10 epochs of SGD, lr 0.01, momentum 0.9, weight decay 5e-4),
    else ``finetune_steps`` random batches; ``finetune_optimizer`` adam | sgd.

    Args:
        f: classifier on ``device``; never modified (a copy is fine-tuned).
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        train_images, train_labels: data for the fine-tuning (same formats; labels int [M]);
            both None skips the fine-tuning.
        finetune_steps, finetune_lr, finetune_batch_size: the fine-tuning.
        max_rotation: degrees, in [0, 180]. max_translate: fraction of the side, in [0, 0.5).
        feature_fn: ``feature_fn(model, x) -> [N, D]``; default ``penultimate_features``.
        batch_size: images passed through the model at once when scoring.
        seed: the transform of image i depends only on (seed, i); the fine-tuning batches on seed.
        device: where the model copy and the scoring run.

    Returns:
        float64 array [N] >= 0; higher = more likely poisoned.
    """
    n, feature_fn, labels, batch_size, seed, device = _prepare(
        f, images, train_images, train_labels, feature_fn, batch_size, seed, device)
    opts = _check_fct_options(finetune_steps, finetune_lr, finetune_batch_size, 1.0, max_rotation,
                              max_translate, finetune_epochs, finetune_optimizer)
    model = f
    if labels is not None and (opts["finetune_steps"] > 0 or opts["finetune_epochs"]):
        model = _finetune(f, train_images, labels, steps=opts["finetune_steps"], lr=opts["finetune_lr"],
                          batch_size=opts["finetune_batch_size"], feature_fn=feature_fn, seed=seed,
                          device=device, loss_fn=lambda z, y: centre_cosine_loss(z, y), normalise=False,
                          epochs=opts["finetune_epochs"], optimizer=opts["finetune_optimizer"])
    scores = np.empty(n, dtype=np.float64)
    with eval_mode(model), torch.no_grad():
        for start, stop in batch_slices(n, batch_size):
            x = take_float(images, slice(start, stop), device)
            moved = reference_transform(x, seed, start, max_rotation=opts["max_rotation"],
                                        max_translate=opts["max_translate"])
            h, h_moved = feature_fn(model, x).float(), feature_fn(model, moved).float()
            scores[start:stop] = (h - h_moved).pow(2).sum(dim=1).double().cpu().numpy()
    return scores


def fct_variant_scores(f: nn.Module, images, *, train_images=None, train_labels=None,
                       finetune_steps: int = 20, finetune_lr: float = 1e-4,
                       finetune_batch_size: int = 128, temperature: float = 0.1,
                       max_rotation: float = 15.0, max_translate: float = 0.1,
                       feature_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                       batch_size: int = 256, seed: int = 0, device="cpu") -> np.ndarray:
    """The project's FCT variant (NOT the reference recipe): small transformations, normalised
    features, a supervised contrastive fine-tuning.

    If ``train_images``/``train_labels`` are given, a COPY of ``f`` is first fine-tuned for
    ``finetune_steps`` Adam steps with a supervised contrastive loss on its L2-normalised
    penultimate features. Then each image x gets a random rotation in [-max_rotation,
    max_rotation] degrees and a shift in [-max_translate, max_translate] of the side along each
    axis with mid-grey fill, T(x), and the score is ``|| z(x) - z(T(x)) ||_2`` with z the
    L2-normalised penultimate features (so scores lie in [0, 2]). Differences from
    :func:`fct_scores`: rotation 15 instead of 180 degrees, shift 0.1 instead of 0.2, grey instead
    of black fill, bilinear resampling, normalised distance instead of the squared raw one, and the
    contrastive loss instead of the class-centre cosine loss.

    Args and returns as :func:`fct_scores`, plus ``temperature`` of the contrastive loss; scores in [0, 2].
    """
    n, feature_fn, labels, batch_size, seed, device = _prepare(
        f, images, train_images, train_labels, feature_fn, batch_size, seed, device)
    opts = _check_fct_options(finetune_steps, finetune_lr, finetune_batch_size, temperature, max_rotation,
                              max_translate)
    model = f
    if labels is not None and opts["finetune_steps"] > 0:
        t = opts["temperature"]
        model = _finetune(f, train_images, labels, steps=opts["finetune_steps"], lr=opts["finetune_lr"],
                          batch_size=opts["finetune_batch_size"], feature_fn=feature_fn, seed=seed,
                          device=device, loss_fn=lambda z, y: _supervised_contrastive_loss(z, y, t),
                          normalise=True)
    scores = np.empty(n, dtype=np.float64)
    with eval_mode(model), torch.no_grad():
        for start, stop in batch_slices(n, batch_size):
            x = take_float(images, slice(start, stop), device)
            moved = reference_transform(x, seed, start, max_rotation=opts["max_rotation"],  # mid-grey, bilinear
                                        max_translate=opts["max_translate"], fill=0.0, mode="bilinear")
            z = F.normalize(feature_fn(model, x).float(), dim=1)
            z_moved = F.normalize(feature_fn(model, moved).float(), dim=1)
            scores[start:stop] = (z - z_moved).norm(dim=1).double().cpu().numpy()
    return scores


def _finetune(f, train_images, labels, *, steps, lr, batch_size, feature_fn, seed, device, loss_fn,
              normalise, epochs: int | None = None, optimizer: str = "adam") -> nn.Module:
    """A copy of ``f`` fine-tuned on ``loss_fn(features, labels)``: ``epochs`` shuffled passes over the data
    in batches when given, else ``steps`` random batches; Adam, or SGD with the reference's momentum and
    weight decay (``optimizer``)."""
    model = copy.deepcopy(f).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = (torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
                 if optimizer == "sgd" else torch.optim.Adam(params, lr=lr))
    rng = stream_rng(seed, STREAM_FCT_FINETUNE, 0)
    m = len(labels)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(device)
    if epochs:
        batches = [np.sort(perm[i:i + batch_size]) for perm in (rng.permutation(m) for _ in range(epochs))
                   for i in range(0, m, batch_size)]
    else:
        batches = [np.sort(rng.choice(m, size=min(batch_size, m), replace=False)) for _ in range(steps)]
    for idx in batches:
        z = feature_fn(model, take_float(train_images, idx, device)).float()
        if normalise:
            z = F.normalize(z, dim=1)
        loss = loss_fn(z, labels_t[torch.from_numpy(idx).to(device)])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    return model


# ------------------------------------------------------------------------------ its registry entries

def _fct_extra(opts: dict, prefix: str) -> None:
    epochs = opts["finetune_epochs"]
    if epochs is not None and not is_int(epochs, 1):
        raise ConfigError(f"{prefix}.finetune_epochs", epochs, "null (finetune_steps random batches) or an integer >= 1")


def _fct_with(fn):
    def run(f, images, ctx, **opts):
        return {"scores": fn(f, images, train_images=ctx.train_images, train_labels=ctx.train_labels,
                             seed=ctx.seed, device=ctx.device, **opts)}
    return run


DETECTORS = (
    Detector(
        "FCT", _fct_with(fct_scores),
        {"finetune_epochs": 10, "finetune_optimizer": "sgd", "finetune_steps": 0, "finetune_lr": 0.01,
         "finetune_batch_size": 128, "max_rotation": 180.0, "max_translate": 0.2, "batch_size": 256},
        "FCT as the reference: squared raw-feature distance under rotation up to 180 degrees and shift "
        "0.2 with black fill, after the reference's class-centre cosine fine-tuning (10 epochs of SGD, lr 0.01)",
        check=option_checker({"batch_size": 1, "finetune_batch_size": 2, "finetune_steps": 0},
                             ("finetune_lr", "max_rotation", "max_translate"),
                             choices={"finetune_optimizer": ("adam", "sgd")}, extra=_fct_extra)),
    Detector(
        "FCT variant", _fct_with(fct_variant_scores),
        {"finetune_steps": 20, "finetune_lr": 1.0e-4, "finetune_batch_size": 128, "temperature": 0.1,
         "max_rotation": 15.0, "max_translate": 0.1, "batch_size": 256},
        "the project's FCT variant: normalised-feature distance under rotation up to 15 degrees and "
        "shift 0.1 with grey fill, after a supervised contrastive fine-tuning",
        check=option_checker({"batch_size": 1, "finetune_batch_size": 2, "finetune_steps": 0},
                             ("finetune_lr", "temperature", "max_rotation", "max_translate"))),
)
