"""Shared argument checks, image handling and per-image random streams of the detectors."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from bibad_utils.base import ConfigError

# Independent random streams per use, so that e.g. changing STRIP never shifts CD's colours.
STREAM_CD, STREAM_STRIP, STREAM_FCT_TRANSFORM, STREAM_FCT_FINETUNE, STREAM_DC = range(5)


# --------------------------------------------------------------------------------------------
# Argument checks and image handling
# --------------------------------------------------------------------------------------------


def check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return int(value)


def check_float(name, value, low, high, *, closed_high=False, open_low=False):
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


def check_device(device):
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", device, "a torch device such as 'cpu' or 'cuda'") from err


def check_run(batch_size, seed, device) -> tuple[int, int, torch.device]:
    """(batch_size, seed, device) of a detector's run, checked: an integer >= 1, an integer >= 0, a torch device."""
    return check_int("batch_size", batch_size), check_int("seed", seed, minimum=0), check_device(device)


def check_images(name, images):
    """Validate an image collection; return (N, (C, H, W))."""
    expected = "a float tensor [N, C, H, W] in [-1, 1] or a uint8 array [N, H, W, C]"
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or not images.is_floating_point():
            raise ConfigError(name, f"tensor {tuple(images.shape)} {images.dtype}", expected)
        n, c, h, w = images.shape
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ConfigError(name, f"array {images.shape} {images.dtype}", expected)
        n, h, w, c = images.shape
    else:
        raise ConfigError(name, type(images).__name__, expected)
    if n == 0:
        raise ConfigError(name, "an empty collection", "at least one image")
    return int(n), (int(c), int(h), int(w))


def take_float(images, index, device) -> torch.Tensor:
    """``images[index]`` as float32 [-1, 1] NCHW on ``device``; ``index`` a 1-D int array or slice."""
    if isinstance(images, torch.Tensor):
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=images.device)
        return images[index].to(device=device, dtype=torch.float32)
    batch = torch.from_numpy(np.ascontiguousarray(images[index]))
    return batch.to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def stream_rng(seed, stream, index) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


@contextlib.contextmanager
def eval_mode(*modules):
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


def batch_slices(n, batch_size):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)
