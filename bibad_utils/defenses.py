"""Castle walls: backdoor detectors (CD, STRIP, FCT) and the diffusion classifier.

Every detector returns one score per image where a HIGHER score means MORE LIKELY POISONED, so
the scores feed an AUROC directly. Images are given either as float32 tensors in [-1, 1], NCHW,
or as uint8 arrays, NHWC (as stored at rest; ``numpy.memmap`` works); they are converted one batch
at a time. A classifier ``f`` is an ``nn.Module`` mapping float [-1, 1] NCHW images to logits
``[N, K]``; it must already live on ``device`` and is never modified (FCT fine-tunes a copy).

Randomness is drawn per image from ``numpy.random.default_rng([seed, stream, index])``, with
``index`` the image's position in ``images``: a score does not depend on ``batch_size`` or on which
other images are scored with it.

References (one line each):
- CD: Huang et al., "Distilling Cognitive Backdoor Patterns within an Image", ICLR 2023.
- STRIP: Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019.
- FCT: Chen et al., "Effective Backdoor Defense by Exploiting Sensitivity of Poisoned Samples",
  NeurIPS 2022 (feature consistency towards transformations).
- Diffusion classifier: Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier",
  ICCV 2023.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bibad_utils.config import ConfigError

# Independent random streams per use, so that e.g. changing STRIP never shifts CD's colours.
_STREAM_CD, _STREAM_STRIP, _STREAM_FCT_TRANSFORM, _STREAM_FCT_FINETUNE, _STREAM_DC = range(5)


# --------------------------------------------------------------------------------------------
# Argument checks and image handling
# --------------------------------------------------------------------------------------------


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return int(value)


def _check_float(name, value, low, high, *, closed_high=False, open_low=False):
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if open_low else value >= low)
        ok = ok and (value <= high if closed_high else value < high)
    if not ok:
        left = "(" if open_low else "["
        right = "]" if closed_high else ")"
        raise ConfigError(name, value, f"a number in {left}{low}, {high}{right}")
    return value


def _check_device(device):
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", device, "a torch device such as 'cpu' or 'cuda'") from err


def _check_images(name, images):
    """Validate an image collection; return (N, (C, H, W))."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or not images.is_floating_point():
            raise ConfigError(name, f"tensor {tuple(images.shape)} {images.dtype}",
                              "a float tensor [N, C, H, W] in [-1, 1] or a uint8 array [N, H, W, C]")
        n, c, h, w = images.shape
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ConfigError(name, f"array {images.shape} {images.dtype}",
                              "a float tensor [N, C, H, W] in [-1, 1] or a uint8 array [N, H, W, C]")
        n, h, w, c = images.shape
    else:
        raise ConfigError(name, type(images).__name__,
                          "a float tensor [N, C, H, W] in [-1, 1] or a uint8 array [N, H, W, C]")
    if n == 0:
        raise ConfigError(name, "an empty collection", "at least one image")
    return int(n), (int(c), int(h), int(w))


def _take_float(images, index, device) -> torch.Tensor:
    """``images[index]`` as float32 [-1, 1] NCHW on ``device``; ``index`` a 1-D int array or slice."""
    if isinstance(images, torch.Tensor):
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=images.device)
        return images[index].to(device=device, dtype=torch.float32)
    batch = torch.from_numpy(np.ascontiguousarray(images[index]))
    return batch.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _rng(seed, stream, index) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


@contextlib.contextmanager
def _eval_mode(*modules):
    """Put modules in eval mode (BatchNorm statistics, no dropout) and restore each flag after."""
    flags = [(m, [sub.training for sub in m.modules()]) for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, states in flags:
            for sub, state in zip(m.modules(), states):
                sub.train(state)


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


# --------------------------------------------------------------------------------------------
# Cognitive Distillation
# --------------------------------------------------------------------------------------------


def _total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Squared-difference total variation of masks [B, 1, H, W] per image, divided by H*W -> [B]."""
    h, w = mask.shape[-2:]
    dh = (mask[..., 1:, :] - mask[..., :-1, :]).pow(2).sum(dim=(1, 2, 3))
    dw = (mask[..., :, 1:] - mask[..., :, :-1]).pow(2).sum(dim=(1, 2, 3))
    return (dh + dw) / (h * w)


def _check_cd_options(steps, lr, betas, gamma, beta):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ConfigError("betas", betas, "two numbers in [0, 1)")
    return {"steps": _check_int("steps", steps),
            "lr": _check_float("lr", lr, 0.0, math.inf, open_low=True),
            "betas": tuple(_check_float("betas", b, 0.0, 1.0) for b in betas),
            "gamma": _check_float("gamma", gamma, 0.0, math.inf),
            "beta": _check_float("beta", beta, 0.0, math.inf)}


def cd_scores(f: nn.Module, images, *, steps: int = 100, lr: float = 0.1,
              betas: tuple[float, float] = (0.1, 0.1), gamma: float = 0.01, beta: float = 1.0,
              batch_size: int = 128, seed: int = 0, device="cpu", return_masks: bool = False):
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
        batch_size: images optimised together.
        seed: the random colours of image i depend only on (seed, i).
        device: where the optimisation runs.
        return_masks: also return the masks.

    Returns:
        scores: float64 array [N], in [-H*W, 0]; higher = more likely poisoned.
        masks (if ``return_masks``): float32 array [N, H, W] in [0, 1].
    """
    n, (c, h, w) = _check_images("images", images)
    steps, lr, betas, gamma, beta = _check_cd_options(steps, lr, betas, gamma, beta).values()
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, minimum=0)
    device = _check_device(device)

    scores = np.empty(n, dtype=np.float64)
    masks = np.empty((n, h, w), dtype=np.float32) if return_masks else None
    with _eval_mode(f):
        for start, stop in _batches(n, batch_size):
            x = _take_float(images, slice(start, stop), device)
            colours = np.stack([_rng(seed, _STREAM_CD, i).uniform(-1.0, 1.0, size=(steps, c))
                                for i in range(start, stop)])
            colours = torch.from_numpy(colours).float().to(device)  # [B, steps, C]
            with torch.no_grad():
                target = f(x)
            n_classes = target.shape[1]
            theta = torch.ones(x.shape[0], 1, h, w, device=device, requires_grad=True)
            optimiser = torch.optim.Adam([theta], lr=lr, betas=betas)
            for step in range(steps):
                mask = (torch.tanh(theta) + 1) / 2
                u = colours[:, step, :, None, None]
                logits = f(x * mask + (1 - mask) * u)
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


# --------------------------------------------------------------------------------------------
# STRIP
# --------------------------------------------------------------------------------------------


def strip_scores(f: nn.Module, images, clean_pool, *, n_overlay: int = 100,
                 batch_size: int = 512, seed: int = 0, device="cpu") -> np.ndarray:
    """STRIP scores: the negative mean prediction entropy of x superimposed with clean images.

    Each image x is superimposed with ``n_overlay`` images x_r drawn from ``clean_pool``
    (without replacement when the pool is large enough) as clip(x + x_r, 0, 1) in the [0, 1]
    image domain, then mapped back to [-1, 1]. A trigger survives the superimposition and keeps
    the prediction confident, so poisoned images have low entropy.

    Args:
        f: classifier on ``device``, float [-1, 1] NCHW -> logits [N, K]; left unchanged.
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        clean_pool: images known to be clean, same formats, same C, H, W.
        n_overlay: superimposed copies per image.
        batch_size: images passed through ``f`` at once.
        seed: the overlays of image i depend only on (seed, i).
        device: where ``f`` runs.

    Returns:
        float64 array [N] in [-ln K, 0] (entropy in nats, negated); higher = more likely poisoned.
    """
    n, shape = _check_images("images", images)
    n_pool, pool_shape = _check_images("clean_pool", clean_pool)
    if pool_shape != shape:
        raise ConfigError("clean_pool", f"images of shape {pool_shape}", f"images of shape {shape}")
    n_overlay = _check_int("n_overlay", n_overlay)
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, minimum=0)
    device = _check_device(device)

    scores = np.empty(n, dtype=np.float64)
    images_per_pass = max(1, batch_size // n_overlay)
    with _eval_mode(f), torch.no_grad():
        for start, stop in _batches(n, images_per_pass):
            x01 = (_take_float(images, slice(start, stop), device) + 1) / 2
            picks = np.concatenate([
                _rng(seed, _STREAM_STRIP, i).choice(n_pool, size=n_overlay,
                                                     replace=n_pool < n_overlay)
                for i in range(start, stop)])
            overlays01 = (_take_float(clean_pool, picks, device) + 1) / 2
            blended = (x01.repeat_interleave(n_overlay, dim=0) + overlays01).clamp(0, 1) * 2 - 1
            entropies = []
            for lo, hi in _batches(blended.shape[0], batch_size):
                log_p = F.log_softmax(f(blended[lo:hi]).float(), dim=1)
                entropies.append(-(log_p.exp() * log_p).sum(dim=1))
            mean_entropy = torch.cat(entropies).view(stop - start, n_overlay).mean(dim=1)
            scores[start:stop] = -mean_entropy.double().cpu().numpy()
    return scores


# --------------------------------------------------------------------------------------------
# FCT
# --------------------------------------------------------------------------------------------


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


def _supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor,
                                 temperature: float) -> torch.Tensor:
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


def _random_affine(x: torch.Tensor, angles_deg: torch.Tensor,
                   shifts: torch.Tensor) -> torch.Tensor:
    """Rotate each image [B, C, H, W] about its centre and shift it (fractions of the side).

    ``angles_deg`` [B]; ``shifts`` [B, 2] as (dx, dy) in units of the image side; the uncovered
    area is filled with 0 (mid grey in [-1, 1]).
    """
    a = torch.deg2rad(angles_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps output coordinates (in [-1, 1]) to input ones, hence the inverse shift.
    theta = torch.stack([torch.stack([cos, -sin, -2 * shifts[:, 0]], dim=1),
                         torch.stack([sin, cos, -2 * shifts[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _check_fct_options(finetune_steps, finetune_lr, finetune_batch_size, temperature,
                       max_rotation, max_translate):
    return {
        "finetune_steps": _check_int("finetune_steps", finetune_steps, minimum=0),
        "finetune_lr": _check_float("finetune_lr", finetune_lr, 0.0, math.inf,
                                    open_low=True),
        "finetune_batch_size": _check_int("finetune_batch_size", finetune_batch_size,
                                          minimum=2),
        "temperature": _check_float("temperature", temperature, 0.0, math.inf,
                                    open_low=True),
        "max_rotation": _check_float("max_rotation", max_rotation, 0.0, 180.0,
                                     closed_high=True),
        "max_translate": _check_float("max_translate", max_translate, 0.0, 0.5)}


def fct_scores(f: nn.Module, images, *, train_images=None, train_labels=None,
               finetune_steps: int = 20, finetune_lr: float = 1e-4,
               finetune_batch_size: int = 128, temperature: float = 0.1,
               max_rotation: float = 15.0, max_translate: float = 0.1,
               feature_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
               batch_size: int = 256, seed: int = 0, device="cpu") -> np.ndarray:
    """FCT scores: how far the penultimate features move under a small rotation and translation.

    If ``train_images``/``train_labels`` are given, a COPY of ``f`` is first fine-tuned for
    ``finetune_steps`` Adam steps with a supervised contrastive loss on its L2-normalised
    penultimate features, which pulls each class's features to a compact, separated centre.
    Then each image x gets a random rotation in [-max_rotation, max_rotation] degrees and a
    shift in [-max_translate, max_translate] of the side along each axis, T(x), and the score is
    ``|| z(x) - z(T(x)) ||_2`` with z the L2-normalised penultimate features (so scores lie in
    [0, 2]). Clean content is stable under small transformations; a trigger is displaced or cut,
    and the features of a poisoned image jump from the target's centre towards its true class.

    Args:
        f: classifier on ``device``; never modified (a copy is fine-tuned).
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        train_images, train_labels: data for the fine-tuning (same formats; labels int [M]);
            both None skips the fine-tuning.
        finetune_steps, finetune_lr, finetune_batch_size, temperature: the fine-tuning.
        max_rotation: degrees, in [0, 180]. max_translate: fraction of the side, in [0, 0.5).
        feature_fn: ``feature_fn(model, x) -> [N, D]``; default ``penultimate_features``.
        batch_size: images passed through the model at once when scoring.
        seed: the transform of image i depends only on (seed, i); the fine-tuning batches on seed.
        device: where the model copy and the scoring run.

    Returns:
        float64 array [N] in [0, 2]; higher = more likely poisoned.
    """
    n, shape = _check_images("images", images)
    if (train_images is None) != (train_labels is None):
        raise ConfigError("train_labels", "given without train_images" if train_images is None
                          else None, "train_images and train_labels both given or both None")
    (finetune_steps, finetune_lr, finetune_batch_size, temperature, max_rotation,
     max_translate) = _check_fct_options(finetune_steps, finetune_lr, finetune_batch_size,
                                         temperature, max_rotation, max_translate).values()
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, minimum=0)
    device = _check_device(device)
    feature_fn = penultimate_features if feature_fn is None else feature_fn
    if not callable(feature_fn):
        raise ConfigError("feature_fn", feature_fn, "a callable feature_fn(model, x) -> [N, D]")

    model = f
    if train_images is not None and finetune_steps > 0:
        m, train_shape = _check_images("train_images", train_images)
        if train_shape != shape:
            raise ConfigError("train_images", f"images of shape {train_shape}",
                              f"images of shape {shape}")
        labels = np.asarray(train_labels.cpu() if isinstance(train_labels, torch.Tensor)
                            else train_labels)
        if labels.shape != (m,) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError("train_labels", f"array {labels.shape} {labels.dtype}",
                              f"integer labels of shape ({m},)")
        model = _finetune_feature_centres(
            f, train_images, labels, steps=finetune_steps, lr=finetune_lr,
            batch_size=finetune_batch_size, temperature=temperature, feature_fn=feature_fn,
            seed=seed, device=device)

    scores = np.empty(n, dtype=np.float64)
    with _eval_mode(model), torch.no_grad():
        for start, stop in _batches(n, batch_size):
            x = _take_float(images, slice(start, stop), device)
            draws = np.stack([_rng(seed, _STREAM_FCT_TRANSFORM, i).uniform(-1.0, 1.0, size=3)
                              for i in range(start, stop)])
            draws = torch.from_numpy(draws).float().to(device)
            moved = _random_affine(x, draws[:, 0] * max_rotation, draws[:, 1:] * max_translate)
            z = F.normalize(feature_fn(model, x).float(), dim=1)
            z_moved = F.normalize(feature_fn(model, moved).float(), dim=1)
            scores[start:stop] = (z - z_moved).norm(dim=1).double().cpu().numpy()
    return scores


def _finetune_feature_centres(f, train_images, labels, *, steps, lr, batch_size, temperature,
                              feature_fn, seed, device) -> nn.Module:
    """A fine-tuned copy of ``f`` whose penultimate features cluster by class."""
    model = copy.deepcopy(f).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    rng = _rng(seed, _STREAM_FCT_FINETUNE, 0)
    m = len(labels)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(device)
    for _ in range(steps):
        idx = np.sort(rng.choice(m, size=min(batch_size, m), replace=False))
        z = F.normalize(feature_fn(model, _take_float(train_images, idx, device)).float(), dim=1)
        loss = _supervised_contrastive_loss(z, labels_t[torch.from_numpy(idx).to(device)],
                                            temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Diffusion classifier
# --------------------------------------------------------------------------------------------


def filtered_mean(values: torch.Tensor, p_filter: float) -> torch.Tensor:
    """Mean of each row of ``values`` [B, D] after dropping its floor(p_filter * D) largest entries.

    ``p_filter`` in [0, 1); at 0 this is the plain mean. Returns [B], same dtype.
    """
    p_filter = _check_float("p_filter", p_filter, 0.0, 1.0)
    d = values.shape[-1]
    n_drop = int(math.floor(p_filter * d))
    if n_drop == 0:
        return values.mean(dim=-1)
    return torch.topk(values, d - n_drop, dim=-1, largest=False).values.mean(dim=-1)


def _spread_order(n: int) -> list[int]:
    """A permutation of range(n) whose every prefix is spread evenly over the range.

    Level positions are visited in van der Corput order (0, 1/2, 1/4, 3/4, ...), so the first
    stage of the adaptive classifier sees low, middle and high noise levels alike.
    """
    order, seen, j = [], set(), 0
    while len(order) < n:
        k, r, denom = j, 0.0, 1.0
        while k:
            denom *= 2
            k, bit = divmod(k, 2)
            r += bit / denom
        pos = int(r * n)
        if pos not in seen:
            seen.add(pos)
            order.append(pos)
        j += 1
    return order


def _check_adaptive_shape(name, adaptive, n_levels, n_classes=None):
    """Validate adaptive stages [(n_levels_i, keep_k_i), ...]; return them as int pairs or None."""
    if adaptive is None:
        return None
    most = "" if n_classes is None else f" <= {n_classes}"
    allowed = (f"None or a non-empty list of (n_levels, keep_k) pairs, n_levels >= 1 summing to "
               f"at most {n_levels}, 1 <= keep_k{most}, keep_k non-increasing")
    try:
        stages = [(a, b) for a, b in adaptive]
    except (TypeError, ValueError) as err:
        raise ConfigError(name, adaptive, allowed) from err
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
               for pair in stages for v in pair)
    if (not ints or not stages or any(s < 1 for s, _ in stages)
            or sum(s for s, _ in stages) > n_levels or any(k < 1 for _, k in stages)
            or (n_classes is not None and any(k > n_classes for _, k in stages))
            or [k for _, k in stages] != sorted((k for _, k in stages), reverse=True)):
        raise ConfigError(name, adaptive, allowed)
    return [(int(a), int(b)) for a, b in stages]


def _check_adaptive(adaptive, n_levels, n_classes):
    """The evaluation stages [(levels, classes kept after them), ...] covering the schedule."""
    stages = _check_adaptive_shape("adaptive", adaptive, n_levels, n_classes)
    if stages is None:
        return [(n_levels, n_classes)]
    used = sum(s for s, _ in stages)
    if used < n_levels and stages[-1][1] > 1:
        stages.append((n_levels - used, stages[-1][1]))
    return stages


def dc_cost(n_images: int, n_classes: int, n_levels: int, adaptive=None) -> int:
    """Number of single-sample UNet evaluations ``diffusion_classify`` makes.

    Exhaustive: n_images * n_classes * n_levels. With ``adaptive`` stages [(s_1, k_1), ...], stage i
    evaluates s_i levels for the classes surviving stage i-1 (all classes in stage 1); the levels
    left after the last stage are evaluated for its k survivors unless only one survives.
    """
    n_images = _check_int("n_images", n_images)
    n_classes = _check_int("n_classes", n_classes)
    n_levels = _check_int("n_levels", n_levels)
    alive, evals = n_classes, 0
    for s, keep in _check_adaptive(adaptive, n_levels, n_classes):
        evals += s * alive
        alive = keep
    return n_images * evals


def _level_noise(seed: int, index: int, n_levels: int, shape) -> torch.Tensor:
    """Noise [n_levels, *shape] for image ``index``: the same for every class, by design."""
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, _STREAM_DC, index]).generate_state(1, np.uint64)[0]
            >> np.uint64(1)))
    return torch.randn((n_levels, *shape), generator=generator)


def _default_timesteps(n_levels: int, n_train_steps: int) -> np.ndarray:
    """The midpoints of ``n_levels`` equal strata of [0, T): floor((k + 1/2) * T / n_levels)."""
    return np.floor((np.arange(n_levels) + 0.5) * n_train_steps / n_levels).astype(np.int64)


def _torch_modules(model):
    if isinstance(model, nn.Module):
        return [model]
    return [v for v in vars(model).values() if isinstance(v, nn.Module)]


def diffusion_classify(model, images, *, n_levels: int | None = None, p_filter: float = 0.0,
                       timesteps: Sequence[int] | None = None, batch_size: int = 64,
                       seed: int = 0, device="cpu", candidate_classes: Sequence[int] | None = None,
                       adaptive: Sequence[tuple[int, int]] | None = None,
                       return_errors: bool = False):
    """Classify images by the class whose conditional noise prediction fits best.

    For image x with encoding z = model.encode(x), noise levels t_1..t_S and noise eps_1..eps_S
    (drawn once per image and level, SHARED by all classes), the error of class c is
    ``mean_s  filtered_mean((eps_s - model.eps(x_t_s, t_s, c))^2, p_filter)``, with
    x_t_s = noise_scheduler.add_noise(z, eps_s, t_s); the prediction is the argmin over classes.
    ``p_filter`` drops the largest fraction of per-element squared errors before averaging, where a
    local trigger concentrates. One forward pass holds every surviving class of an (image, level)
    pair: x_t is repeated along the batch with one label per class (max(1, batch_size // k)
    pairs of k classes per pass).

    Adaptive pruning (Li et al.): ``adaptive=[(s_1, k_1), (s_2, k_2), ...]`` evaluates s_1 levels
    for all classes and keeps the k_1 with the lowest mean error, then s_2 further levels for those,
    and so on; the levels left after the last stage are evaluated for its survivors (unless one
    survives). Levels are taken in an order spread over [0, T) so every stage sees all noise scales.

    Args:
        model: diffusion model with ``eps(x_t, t, labels)``, ``encode(images)``, ``noise_scheduler``
            (a diffusers DDPMScheduler), ``num_classes``; it must live on ``device``.
        images: float tensor [N, C, H, W] in [-1, 1] or uint8 array [N, H, W, C].
        n_levels: S, the number of noise levels; by default the midpoints of S equal strata of
            [0, T). May be omitted when ``timesteps`` is given.
        p_filter: fraction in [0, 1) of the largest per-element squared errors dropped.
        timesteps: explicit integer timesteps in [0, T) (length S).
        batch_size: target number of samples per UNet forward pass.
        seed: the noise of image i depends only on (seed, i).
        device: where the model runs.
        candidate_classes: class indices to choose from (default all ``model.num_classes``).
        adaptive: pruning stages as above; None evaluates every class at every level.
        return_errors: also return a details dict.

    Returns:
        predictions: int64 array [N] of class indices.
        details (if ``return_errors``): ``errors`` float64 [N, n_candidates, S] (NaN where a pruned
        class was not evaluated; columns follow ``classes``, levels follow ``timesteps``),
        ``classes`` int64 [n_candidates], ``timesteps`` int64 [S], ``unet_evals`` (single-sample
        UNet evaluations, equal to ``dc_cost``), ``seconds`` (wall time including encoding).
    """
    started = time.perf_counter()
    n, _ = _check_images("images", images)
    n_train_steps = int(model.noise_scheduler.config.num_train_timesteps)
    if timesteps is None:
        if n_levels is None:
            raise ConfigError("n_levels", None, "an integer >= 1 (or explicit timesteps)")
        n_levels = _check_int("n_levels", n_levels)
        if n_levels > n_train_steps:
            raise ConfigError("n_levels", n_levels, f"an integer in [1, {n_train_steps}]")
        timesteps = _default_timesteps(n_levels, n_train_steps)
    else:
        timesteps = np.asarray(timesteps)
        if (timesteps.ndim != 1 or len(timesteps) == 0
                or not np.issubdtype(timesteps.dtype, np.integer)
                or timesteps.min() < 0 or timesteps.max() >= n_train_steps):
            raise ConfigError("timesteps", timesteps.tolist(),
                              f"a non-empty list of integers in [0, {n_train_steps})")
        if n_levels is not None and n_levels != len(timesteps):
            raise ConfigError("n_levels", n_levels, f"len(timesteps) = {len(timesteps)}")
        timesteps = timesteps.astype(np.int64)
        n_levels = len(timesteps)
    p_filter = _check_float("p_filter", p_filter, 0.0, 1.0)
    _check_adaptive_shape("adaptive", adaptive, n_levels)
    if candidate_classes is None:
        classes = np.arange(int(model.num_classes), dtype=np.int64)
    else:
        classes = np.asarray(candidate_classes)
        if (classes.ndim != 1 or len(classes) == 0 or not np.issubdtype(classes.dtype, np.integer)
                or classes.min() < 0 or classes.max() >= model.num_classes
                or len(np.unique(classes)) != len(classes)):
            raise ConfigError("candidate_classes", classes.tolist(),
                              f"distinct class indices in [0, {model.num_classes})")
        classes = classes.astype(np.int64)
    n_cand = len(classes)
    stages = _check_adaptive(adaptive, n_levels, n_cand)
    batch_size = _check_int("batch_size", batch_size)
    seed = _check_int("seed", seed, minimum=0)
    device = _check_device(device)

    errors = np.full((n, n_cand, n_levels), np.nan, dtype=np.float64)
    level_order = _spread_order(n_levels)
    classes_t = torch.from_numpy(classes).to(device)
    t_all = torch.from_numpy(timesteps).to(device)
    predictions = np.empty(n, dtype=np.int64)
    unet_evals = 0
    images_per_chunk = max(1, batch_size // n_cand)
    with _eval_mode(*_torch_modules(model)), torch.no_grad():
        for start, stop in _batches(n, images_per_chunk):
            z = model.encode(_take_float(images, slice(start, stop), device))
            noise = torch.stack([_level_noise(seed, i, n_levels, z.shape[1:])
                                 for i in range(start, stop)]).to(device=device, dtype=z.dtype)
            alive = np.tile(np.arange(n_cand), (stop - start, 1))  # [n_chunk, k] column indices
            done = 0
            for n_stage, keep in stages:
                levels = level_order[done:done + n_stage]
                done += n_stage
                k = alive.shape[1]
                pairs = [(b, lv) for b in range(stop - start) for lv in levels]
                per_pass = max(1, batch_size // k)
                for lo, hi in _batches(len(pairs), per_pass):
                    chunk = pairs[lo:hi]
                    b_idx = torch.tensor([b for b, _ in chunk], device=device)
                    l_idx = torch.tensor([lv for _, lv in chunk], device=device)
                    eps = noise[b_idx, l_idx]
                    t = t_all[l_idx]
                    x_t = model.noise_scheduler.add_noise(z[b_idx], eps, t)
                    cols = torch.from_numpy(alive[[b for b, _ in chunk]]).to(device)  # [P, k]
                    eps_hat = model.eps(x_t.repeat_interleave(k, dim=0),
                                        t.repeat_interleave(k), classes_t[cols.reshape(-1)])
                    unet_evals += len(chunk) * k
                    sq = (eps.repeat_interleave(k, dim=0).float() - eps_hat.float()).pow(2)
                    err = filtered_mean(sq.flatten(1), p_filter).view(len(chunk), k)
                    err = err.double().cpu().numpy()
                    for row, (b, lv) in enumerate(chunk):
                        errors[start + b, alive[b], lv] = err[row]
                if keep < k:
                    evaluated = level_order[:done]
                    means = np.take_along_axis(errors[start:stop][:, :, evaluated].mean(axis=2),
                                               alive, axis=1)
                    best = np.argsort(means, axis=1, kind="stable")[:, :keep]
                    alive = np.sort(np.take_along_axis(alive, best, axis=1), axis=1)
            means = np.take_along_axis(np.nanmean(errors[start:stop], axis=2), alive, axis=1)
            winners = np.take_along_axis(alive, means.argmin(axis=1)[:, None], axis=1)[:, 0]
            predictions[start:stop] = classes[winners]
    if not return_errors:
        return predictions
    return predictions, {"errors": errors, "classes": classes, "timesteps": timesteps,
                         "unet_evals": unet_evals, "seconds": time.perf_counter() - started}

