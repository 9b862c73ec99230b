"""The diffusion classifier (Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier",
ICCV 2023), with the per-element error filter ``p_filter`` of the castle-walls paper."""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bibad_utils.base import ConfigError
from bibad_utils.progress import Task
from bibad_utils.defenses.common import (STREAM_DC, batch_slices, check_float, check_images, check_int, check_run,
                                          eval_mode, take_float)


def filtered_mean(values: torch.Tensor, p_filter: float) -> torch.Tensor:
    """Mean of each row of ``values`` [B, D] after dropping its floor(p_filter * D) largest entries.

    ``p_filter`` in [0, 1); at 0 this is the plain mean. Returns [B], same dtype.
    """
    p_filter = check_float("p_filter", p_filter, 0.0, 1.0)
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
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for pair in stages for v in pair)
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
    n_images = check_int("n_images", n_images)
    n_classes = check_int("n_classes", n_classes)
    n_levels = check_int("n_levels", n_levels)
    alive, evals = n_classes, 0
    for s, keep in _check_adaptive(adaptive, n_levels, n_classes):
        evals += s * alive
        alive = keep
    return n_images * evals


def _level_noise(seed: int, index: int, n_levels: int, shape) -> torch.Tensor:
    """Noise [n_levels, *shape] for image ``index``: the same for every class, by design."""
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, STREAM_DC, index]).generate_state(1, np.uint64)[0]
            >> np.uint64(1)))
    return torch.randn((n_levels, *shape), generator=generator)


def diffusion_classify(model, images, *, n_levels: int | None = None, p_filter: float = 0.0,
                       timesteps: Sequence[int] | None = None, batch_size: int = 64,
                       seed: int = 0, device="cpu", candidate_classes: Sequence[int] | None = None,
                       adaptive: Sequence[tuple[int, int]] | None = None,
                       return_errors: bool = False, report: tuple[str, str] | None = None):
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
        report: ``(stage, label)`` of the live progress line of ``bibad run`` (a no-op outside a run).

    Returns:
        predictions: int64 array [N] of class indices.
        details (if ``return_errors``): ``errors`` float64 [N, n_candidates, S] (NaN where a pruned
        class was not evaluated; columns follow ``classes``, levels follow ``timesteps``),
        ``classes`` int64 [n_candidates], ``timesteps`` int64 [S], ``unet_evals`` (single-sample
        UNet evaluations, equal to ``dc_cost``), ``seconds`` (wall time including encoding).
    """
    started = time.perf_counter()
    n, _ = check_images("images", images)
    n_train_steps = int(model.noise_scheduler.config.num_train_timesteps)
    if timesteps is None:
        if n_levels is None:
            raise ConfigError("n_levels", None, "an integer >= 1 (or explicit timesteps)")
        n_levels = check_int("n_levels", n_levels)
        if n_levels > n_train_steps:
            raise ConfigError("n_levels", n_levels, f"an integer in [1, {n_train_steps}]")
        # the midpoints of n_levels equal strata of [0, T): floor((k + 1/2) * T / n_levels)
        timesteps = np.floor((np.arange(n_levels) + 0.5) * n_train_steps / n_levels).astype(np.int64)
    else:
        timesteps = np.asarray(timesteps)
        if (timesteps.ndim != 1 or len(timesteps) == 0
                or not np.issubdtype(timesteps.dtype, np.integer)
                or timesteps.min() < 0 or timesteps.max() >= n_train_steps):
            raise ConfigError("timesteps", timesteps.tolist(), f"a non-empty list of integers in [0, {n_train_steps})")
        if n_levels is not None and n_levels != len(timesteps):
            raise ConfigError("n_levels", n_levels, f"len(timesteps) = {len(timesteps)}")
        timesteps = timesteps.astype(np.int64)
        n_levels = len(timesteps)
    p_filter = check_float("p_filter", p_filter, 0.0, 1.0)
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
    batch_size, seed, device = check_run(batch_size, seed, device)

    errors = np.full((n, n_cand, n_levels), np.nan, dtype=np.float64)
    level_order = _spread_order(n_levels)
    classes_t = torch.from_numpy(classes).to(device)
    t_all = torch.from_numpy(timesteps).to(device)
    predictions = np.empty(n, dtype=np.int64)
    unet_evals = 0
    images_per_chunk = max(1, batch_size // n_cand)
    live = Task(*(report or ("diffusion classifier", "")), total=n, unit="img")
    modules = [model] if isinstance(model, nn.Module) else [v for v in vars(model).values()
                                                            if isinstance(v, nn.Module)]
    with eval_mode(*modules), torch.no_grad(), live:
        for start, stop in batch_slices(n, images_per_chunk):
            z = model.encode(take_float(images, slice(start, stop), device))
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
                for lo, hi in batch_slices(len(pairs), per_pass):
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
                    means = np.take_along_axis(errors[start:stop][:, :, evaluated].mean(axis=2), alive, axis=1)
                    best = np.argsort(means, axis=1, kind="stable")[:, :keep]
                    alive = np.sort(np.take_along_axis(alive, best, axis=1), axis=1)
            means = np.take_along_axis(np.nanmean(errors[start:stop], axis=2), alive, axis=1)
            winners = np.take_along_axis(alive, means.argmin(axis=1)[:, None], axis=1)[:, 0]
            predictions[start:stop] = classes[winners]
            live.update(stop)
    if not return_errors:
        return predictions
    return predictions, {"errors": errors, "classes": classes, "timesteps": timesteps,
                         "unet_evals": unet_evals, "seconds": time.perf_counter() - started}
