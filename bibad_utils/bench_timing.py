"""Timing primitives of the benchmarks: a timed call with device sync, the matmul reference rate,
FLOP counting, the demo pixel DM (its configuration, a seeded model, its plain training step) and random
training images."""

from __future__ import annotations

import time

import numpy as np
import torch

from bibad_utils.config import REPO_ROOT, parse_yaml

DEFAULT_PIXEL = {"backend": "pixel", "block_out_channels": [32, 64, 64], "layers_per_block": 1,
                 "attention": [False, False, True], "unshuffle": 2}
DEFAULT_IMAGE_SIZE = 32


def rate_text(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, seconds: float, min_reps: int = 2) -> float:
    """Mean seconds per call of ``fn()`` after one warm-up call, repeating for about ``seconds``."""
    fn()
    sync_device(device)
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < seconds:
        fn()
        reps += 1
        sync_device(device)
    return (time.perf_counter() - start) / reps


def matmul_flops(device: torch.device, dtype=torch.float32, n: int = 2048, seconds: float = 1.0) -> float:
    """Measured FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` (2 n^3 FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    per = time_call(lambda: torch.matmul(a, b, out=out), device, seconds)
    return 2 * n**3 / per


def count_flops(fn) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn()`` runs (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def demo_pixel_config() -> tuple[dict, int, str]:
    """(model section, image size, where it came from): the demo profile's, else the default here."""
    path = REPO_ROOT / "notebooks" / "profiles" / "demo.yaml"
    if path.is_file():
        profile = parse_yaml(path.read_text())
        model = profile.get("model") or {}
        if model.get("backend") == "pixel":
            size = (profile.get("dataset") or {}).get("image_size") or DEFAULT_IMAGE_SIZE
            return dict(model), int(size), "notebooks/profiles/demo.yaml"
    return dict(DEFAULT_PIXEL), DEFAULT_IMAGE_SIZE, "default (no pixel model in demo.yaml)"


def demo_pixel_model(device: torch.device):
    """The demo pixel DM (:func:`demo_pixel_config`, 10 classes) with random weights seeded by 0, on
    ``device``, in train mode; the caller's RNG state is left untouched."""
    from bibad_utils.diffusion import build_model

    cfg, size, _ = demo_pixel_config()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg, [f"class{k}" for k in range(10)], image_size=size)
    return model.to(device).train()


def training_step(model, x, y, denoiser=None, autocast: bool = False):
    """The benchmarks' plain training step of ``model`` on the batch ``(x, y)``: the diffusion loss (10 %
    of the labels dropped; ``denoiser`` in place of the model's own; a bf16 autocast with ``autocast``),
    backward, AdamW at lr 1e-4. Returns ``(step, fwd_bwd)``: ``fwd_bwd`` is the loss and backward alone
    (gradients cleared after it), what :func:`count_flops` counts."""
    from bibad_utils.training import diffusion_loss

    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def backward():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = diffusion_loss(model, x, y, generator=gen, cond_drop=0.1, denoiser=denoiser)
        loss.backward()

    def step():
        backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def fwd_bwd():
        backward()
        opt.zero_grad(set_to_none=True)

    return step, fwd_bwd


class RandomImages:
    """In-memory random uint8 images with the dataset interface (labels, class_names, batch)."""

    def __init__(self, n: int, size: int, num_classes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, num_classes, n).astype(np.int64)
        self.class_names = [f"class{k}" for k in range(num_classes)]

    def __len__(self):
        return len(self.labels)

    def batch(self, indices):
        from bibad_utils.data import to_float

        idx = np.asarray(indices)
        return to_float(self.images[idx]), torch.from_numpy(self.labels[idx])
