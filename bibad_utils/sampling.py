"""Sampling: DDIM (Song et al. 2021) with classifier-free guidance (Ho & Salimans 2022), seeded per image.

Guidance follows the Stable Diffusion convention ``eps = eps_u + w (eps_c - eps_u)``: ``w = 1`` is the
plain conditional model (one forward pass), ``w = 0`` the unconditional one, ``w > 1`` extrapolates away
from the unconditional prediction. The conditional and unconditional passes run as ONE batched forward
of ``2B`` samples.

Each image owns a seed: its initial noise and its DDIM ``eta`` noise come from a generator seeded by it
alone, so any subset of a generation regenerates the same pixels whatever the batch composition.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from bibad_utils.base import ConfigError
from bibad_utils.data import to_uint8
from bibad_utils.progress import Task
from bibad_utils.schema import Field, Section, is_int, is_number
from bibad_utils.training import derive_seed


def _check_guidance(values: dict, prefix: str, profile: dict) -> None:
    guidance = values["guidance"]
    for i, w in enumerate(guidance):
        if not is_number(w) or w <= 0:
            raise ConfigError(f"{prefix}.guidance[{i}]", w, "a guidance scale w > 0 (1 = plain conditional)")
    if len(set(guidance)) != len(guidance):
        raise ConfigError(f"{prefix}.guidance", guidance, "distinct guidance scales")
    castle = values.get("castle_guidance") or []
    for i, w in enumerate(castle):
        if not is_number(w) or w <= 0:
            raise ConfigError(f"{prefix}.castle_guidance[{i}]", w, "a guidance scale w > 0")
    main = values.get("guidance_all") or guidance[0]
    if len(set(castle)) != len(castle) or any(float(w) == float(main) for w in castle):
        raise ConfigError(f"{prefix}.castle_guidance", castle,
                          f"distinct guidance scales other than the all-class set's own w = {main:g}")


# The profile's ``sampling`` section (the settings of Study.generation_key), left as written in the profile.
SAMPLING = Section("sampling", {
    "steps": Field("int", low=1, doc="DDIM steps"),
    "eta": Field("number", low=0, high=1, doc="DDIM eta (0: deterministic)"),
    "guidance": Field("value", test=lambda v: isinstance(v, list) and len(v) > 0,
                      allowed="a non-empty list of guidance scales w > 0", doc="w of the target-prompt sets"),
    "guidance_all": Field("number", low=0, low_open=True, nullable=True, default=None,
                          doc="w of the all-class set (null: the first of guidance)"),
    "castle_guidance": Field("value", nullable=True, default=None,
                             test=lambda v: v is None or isinstance(v, list),
                             allowed="null or a list of guidance scales w > 0",
                             doc="further w of the all-class sets of the poisoned DMs (chapter 05 judges its "
                                 "claims at each of them too; null: none)"),
    "n_target": Field("int", low=1, doc="target-prompt images per w"),
    "n_all": Field("int", low=1, doc="all-class images"),
    "batch_size": Field("int", low=1, doc="images per sampling batch"),
}, check=_check_guidance, fill=False)


def ddim_scheduler(model, steps: int):
    """A diffusers ``DDIMScheduler`` sharing ``model.noise_scheduler``'s betas, set to ``steps`` steps.

    ``set_alpha_to_one=False`` and ``steps_offset=1`` as Stable Diffusion samples. ``clip_sample``
    follows ``model.clip_sample``: pixel models clip their x0 estimate to [-1, 1], the range of the data
    (as the reference DDPM sampler does), which keeps an under-trained model's samples from drifting
    out of range; latent spaces are unbounded, so latent models never clip.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(model.noise_scheduler.config, clip_sample=model.clip_sample,
                                      clip_sample_range=1.0, set_alpha_to_one=False, steps_offset=1,
                                      prediction_type="epsilon", thresholding=False,
                                      timestep_spacing="leading")
    sched.set_timesteps(steps)
    return sched


def guided_eps(model, x: torch.Tensor, t, labels: torch.Tensor, guidance: float, *,
               batched: bool = True) -> torch.Tensor:
    """Classifier-free guided noise prediction ``eps_u + w (eps_c - eps_u)``, float32 shaped like ``x``.

    x: ``[B, *model.latent_shape]``; t: a timestep (int or 0-d tensor); labels: int64 ``[B]``; guidance:
    w >= 0. ``w == 1`` runs only the conditional pass and ``w == 0`` only the unconditional one;
    otherwise both run, as one forward of ``2B`` samples (``batched=True``) or as two forwards.
    """
    labels = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    if guidance == 1:
        return model.eps(x, t, labels)
    null = torch.full_like(labels, model.null_class)
    if guidance == 0:
        return model.eps(x, t, null)
    if batched:
        eps_u, eps_c = model.eps(torch.cat([x, x]), t, torch.cat([null, labels])).chunk(2)
    else:
        eps_u, eps_c = model.eps(x, t, null), model.eps(x, t, labels)
    return eps_u + guidance * (eps_c - eps_u)


def _autocast(model, device: torch.device):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(model.mixed_precision)
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def _padded(samples: list[torch.Tensor], pad: int) -> torch.Tensor:
    """Stack ``samples`` and append ``pad`` zero samples."""
    x = torch.stack(samples)
    return torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x


@torch.no_grad()
def sample_images(model, labels, seeds, *, steps: int = 50, eta: float = 0.0, guidance: float = 1.0,
                  batch_size: int = 100, device="cpu", progress: bool = True,
                  report: tuple[str, str] | None = None) -> np.ndarray:
    """Generate one image per (label, seed) with DDIM; returns uint8 ``[N, H, W, 3]`` (NHWC, 0..255).

    labels: int ``[N]`` in ``[0, num_classes]`` (``null_class``: unconditional); seeds: int ``[N]``,
    each >= 0, seeding that image's own noise; steps: DDIM steps; eta: 0 deterministic DDIM, 1 DDPM-like;
    guidance: w >= 0 (see :func:`guided_eps`); batch_size: images per forward (2x that with guidance).
    The model runs in eval mode on ``device``; latent models are decoded by their VAE. report:
    ``(stage, label)`` for the live progress file of ``bibad run`` (counted in images).

    Every forward pass has the same shape: the last batch is padded to ``batch_size`` (with zero noise and
    the null label, then dropped). Kernels are chosen by shape and round differently for different
    batch sizes, so this is what makes an image's pixels depend only on its (label, seed), the settings
    and ``batch_size``, never on which other images share its batch: regenerating any subset with the
    same ``batch_size`` gives identical pixels.
    """
    from tqdm.auto import tqdm


    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    seeds = np.asarray(seeds).reshape(-1)
    if len(seeds) != len(labels):
        raise ConfigError("seeds", f"{len(seeds)} seeds", f"one seed per label ({len(labels)})")
    if len(labels) and (labels.min() < 0 or labels.max() > model.null_class):
        raise ConfigError("labels", f"range [{labels.min()}, {labels.max()}]",
                          f"class indices in [0, {model.null_class}] ({model.null_class}: unconditional)")
    if len(seeds) and (not np.issubdtype(seeds.dtype, np.integer) or seeds.min() < 0):
        raise ConfigError("seeds", seeds[:4].tolist(), "integers >= 0")
    checks = (("steps", steps, is_int(steps, 1), "a positive integer"),
              ("batch_size", batch_size, is_int(batch_size, 1), "a positive integer"),
              ("eta", eta, is_number(eta) and eta >= 0, "a number >= 0"),
              ("guidance", guidance, is_number(guidance) and guidance >= 0, "a guidance scale w >= 0"))
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(name, value, allowed)

    device = torch.device(device)
    model.to(device)
    model.eval()
    sched = ddim_scheduler(model, steps)
    shape = tuple(model.latent_shape)
    side = model.image_size
    out = np.empty((len(labels), side, side, 3), dtype=np.uint8)
    starts = range(0, len(labels), batch_size)
    bar = tqdm(total=len(labels), desc=f"sample w={guidance:g}", unit="img", disable=not progress)
    live_task = Task(*(report or ("sample", f"w={guidance:g}")), total=len(labels), unit="img")
    for start in starts:
        sl = slice(start, start + batch_size)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
        pad = batch_size - len(gens)
        x = _padded([torch.randn(shape, generator=g) for g in gens], pad).to(device)
        y = torch.as_tensor(np.concatenate([labels[sl], np.full(pad, model.null_class)]), device=device)
        with _autocast(model, device):
            for i, t in enumerate(sched.timesteps):
                live_task.update(start + len(gens) * i // len(sched.timesteps))
                eps = guided_eps(model, x, t, y, guidance).float()
                noise = None
                if eta > 0:
                    noise = _padded([torch.randn(shape, generator=g) for g in gens], pad).to(device)
                x = sched.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
            images = model.decode(x)[: len(gens)]
        out[sl] = to_uint8(images)
        bar.update(len(gens))
        live_task.update(start + len(gens))
    bar.close()
    live_task.close()
    return out


def class_mix(class_counts, n: int) -> np.ndarray:
    """int64 labels ``[n]``, sorted by class, whose class counts follow ``class_counts`` proportionally
    (largest remainders, ties to the lower class index): ``n == sum(class_counts)`` reproduces them."""
    counts = np.asarray(class_counts, dtype=np.int64).reshape(-1)
    if len(counts) == 0 or counts.min() < 0 or counts.sum() == 0:
        raise ConfigError("class_counts", counts.tolist(), "non-negative counts with a positive sum")
    quota = counts * n / counts.sum()
    alloc = np.floor(quota).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -(quota - alloc)))
    alloc[order[: n - alloc.sum()]] += 1
    return np.repeat(np.arange(len(counts), dtype=np.int64), alloc)


def set_seeds(seed: int, set_name: str, n: int) -> np.ndarray:
    """Per-image seeds int64 ``[n]`` of a generation set: image ``i`` gets ``derive_seed(seed, set_name, i)``.

    They do not depend on the guidance scale, so the sets of different w start from the same noise."""
    return np.array([derive_seed(seed, set_name, i) for i in range(n)], dtype=np.int64)
