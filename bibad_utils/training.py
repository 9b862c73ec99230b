"""Training of a :class:`~bibad_utils.diffusion.DiffusionModel`: epsilon-prediction loss, AdamW, EMA,
classifier-free label dropping, safetensors checkpoints and exact resume.

One process on the CPU or a GPU by default; several GPUs through ``accelerate launch`` (data parallel:
each process takes its share of every global batch).

Every random choice of step ``s`` (which images form the batch, their timesteps, noise, dropped labels,
VAE posterior samples, dropout) is a pure function of ``(seed, s)``. A checkpoint therefore needs no
RNG state, and a run that is killed and started again ends, on the CPU, with exactly the weights of an
uninterrupted run. On a GPU it ends equal up to the rounding of non-deterministic kernels (atomic adds
in embedding and convolution backward passes), as two uninterrupted GPU runs do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bibad_utils.base import ConfigError
from bibad_utils.checkpoints import (CHECKPOINT_DIR, KEPT_DIR, cpu_copy, kept_steps, latest_checkpoint,
                                     save_checkpoint, unflatten_optimizer)
from bibad_utils.progress import Task
from bibad_utils.schema import Field, Section, is_int, is_number as is_num, signature_defaults


def derive_seed(*parts) -> int:
    """A seed in [0, 2^63) determined by ``parts`` (ints and strings), e.g. ``derive_seed(0, "noise", 12)``.

    Different parts give unrelated seeds (SHA-256), so streams derived for different purposes never
    overlap the way ``seed + step`` would."""
    text = json.dumps([p if isinstance(p, str) else int(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Dataset indices int64 ``[batch_size]`` of global batch ``step`` (0-based).

    The data is read in epochs: epoch ``e`` is a permutation of ``range(n)`` seeded by ``(seed, e)``,
    and batch ``step`` covers positions ``[step * batch_size, (step + 1) * batch_size)`` of the
    concatenated epochs; so every image is seen once per epoch, and a batch depends on nothing else."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs = pos // n
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng(derive_seed(seed, "epoch", int(e))).permutation(n)
        mask = epochs == e
        out[mask] = perm[pos[mask] % n]
    return out


def diffusion_loss(model, images: torch.Tensor, labels: torch.Tensor, *, generator: torch.Generator,
                   cond_drop: float = 0.0, denoiser=None) -> torch.Tensor:
    """Mean squared error between the model's predicted noise and the true noise (scalar tensor).

    images: float ``[N, 3, H, W]`` in [-1, 1] on the model's device; labels: int64 ``[N]`` class indices.
    generator: a CPU generator drawing (in this order) the VAE posterior sample, the timesteps (uniform
    in ``[0, T)``), the noise and the dropped labels (each replaced by ``model.null_class`` with
    probability ``cond_drop``, which trains the unconditional model of classifier-free guidance).
    """
    device = images.device
    z0 = model.encode(images, generator=generator)
    n = z0.shape[0]
    num_t = model.noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, num_t, (n,), generator=generator).to(device)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    if cond_drop > 0:
        drop = (torch.rand(n, generator=generator) < cond_drop).to(device)
        labels = torch.where(drop, torch.full_like(labels, model.null_class), labels)
    x_t = model.noise_scheduler.add_noise(z0, noise, t)
    pred = model.eps(x_t, t, labels, denoiser=denoiser)
    return F.mse_loss(pred.float(), noise.float())


@dataclass
class TrainResult:
    """What :func:`train_diffusion` returns.

    ema_state: the EMA weights (keys of ``model.state_dict_to_save()``, float32): what sampling should
    use (``model.load_trainable_state(result.ema_state)``); loss_log: ``(step, mean loss over the
    steps since the previous entry)``; steps: optimiser steps done in total; wall_time_s: seconds of
    training over all (resumed) runs; images_seen: training images consumed (steps x global batch);
    completed: False when ``stop_after`` ended the run early; resumed_from: its first step (0: fresh)."""

    ema_state: dict[str, torch.Tensor]
    loss_log: list[tuple[int, float]]
    steps: int
    wall_time_s: float
    images_seen: int
    completed: bool = True
    resumed_from: int = 0
    hparams: dict = field(default_factory=dict)


def _check_args(steps, batch_size, lr, weight_decay, ema_decay, cond_drop, checkpoint_every, seed,
                warmup_steps, grad_clip, stop_after, log_every, n_data):
    checks = [
        ("steps", steps, is_int(steps, 0), "an integer >= 0"),
        ("batch_size", batch_size, is_int(batch_size, 1), "a positive integer"),
        ("lr", lr, is_num(lr) and lr > 0, "a number > 0"),
        ("weight_decay", weight_decay, is_num(weight_decay) and weight_decay >= 0, "a number >= 0"),
        ("ema_decay", ema_decay, ema_decay is None or (is_num(ema_decay) and 0 <= ema_decay < 1),
         "null (no EMA) or a number in [0, 1)"),
        ("cond_drop", cond_drop, is_num(cond_drop) and 0 <= cond_drop < 1, "a number in [0, 1)"),
        ("checkpoint_every", checkpoint_every, is_int(checkpoint_every, 1), "a positive integer"),
        ("seed", seed, is_int(seed, 0), "an integer >= 0"),
        ("warmup_steps", warmup_steps, is_int(warmup_steps, 0), "an integer >= 0"),
        ("grad_clip", grad_clip, grad_clip is None or (is_num(grad_clip) and grad_clip > 0),
         "null (no clipping) or a number > 0"),
        ("stop_after", stop_after, stop_after is None or is_int(stop_after, 0), "null or an integer >= 0"),
        ("log_every", log_every, is_int(log_every, 1), "a positive integer"),
        ("dataset", f"{n_data} images", n_data > 0, "a non-empty dataset"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(name, value, allowed)


def _training_fields(min_steps: int, shipped: bool) -> dict[str, Field]:
    fields = {
        "steps": Field("int", low=min_steps),
        "batch_size": Field("int", low=1),
        "lr": Field("number", low=0, low_open=True),
        "weight_decay": Field("number", low=0),
        "ema_decay": Field("number", low=0, high=1, high_open=True, nullable=True),
        "cond_drop": Field("number", low=0, high=1, high_open=True),
        "checkpoint_every": Field("int", low=1, nullable=True, default=None,
                                  doc="null: every steps // 5 (stages.Study)"),
        "warmup_steps": Field("int", low=0),
        "grad_clip": Field("number", low=0, low_open=True, nullable=True),
    }
    fields["keep_checkpoints"] = Field("int", low=0, doc="EMA weights of this many checkpoints kept (kept_steps)")
    if shipped:  # where the weights come from (bibad_utils.shipped_base), not how they are trained
        fields["shipped"] = Field("bool", default=False)
        fields["data"] = Field("choice", choices=("subset", "all"), default="subset",  # not train_diffusion's
                               doc="all: the dataset's whole training split, not its n_per_class subset")
    return signature_defaults(train_diffusion, fields)


def _active(values: dict) -> bool:
    return values.get("steps", 0) != 0


# ----------------------------------------------------------------------------------------------
# the loop


def train_diffusion(model, dataset, *, steps: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                    ema_decay: float | None = 0.999, cond_drop: float = 0.1, checkpoint_every: int, work_dir,
                    seed: int, init_state: dict | None = None, warmup_steps: int = 0,
                    grad_clip: float | None = 1.0, stop_after: int | None = None, device="cpu",
                    progress: bool = True, log_every: int = 10, report: tuple[str, str] | None = None,
                    keep_checkpoints: int = 0, keep_dir=None) -> TrainResult:
    """Train ``model``'s denoiser for ``steps`` optimiser steps of global batch ``batch_size``.

    dataset: has ``__len__`` and ``batch(indices) -> (float [-1, 1] [n, 3, H, W], int64 [n])``.
    lr: AdamW learning rate, constant after a linear warm-up of ``warmup_steps``. ema_decay: EMA of the
    weights with decay ``min(ema_decay, (1 + s) / (10 + s))`` at step ``s`` (the warm-up lets short
    runs move away from the initial weights; null: no EMA, ``ema_state`` is the final weights).
    cond_drop: probability of replacing a label by ``model.null_class``. checkpoint_every: write a
    checkpoint into ``<work_dir>/checkpoints`` every this many steps and at the end; a later call with
    the same ``work_dir`` resumes from the newest one (init_state is then ignored). init_state: weights
    (``state_dict_to_save`` keys) to start from, e.g. a pre-trained clean model. stop_after: return after
    this many steps without checkpointing them, exactly as if the process had been killed there.
    device: ``"cpu"`` or ``"cuda"`` (under ``accelerate launch`` each process uses its own GPU).
    Mixed precision follows ``model.mixed_precision``; accelerate keeps one device and one precision per
    process, so all calls in a process must agree on both. On return the model holds the last (not the
    EMA) weights, on ``device``, in train mode. report: ``(stage, label)`` of the run for the live
    progress file of ``bibad run`` (:class:`bibad_utils.progress.Task`; a no-op outside a run).
    keep_checkpoints: the EMA weights of this many checkpoints (:func:`kept_steps`) end, once the run is
    complete, in ``<keep_dir>/checkpoints/step-XXXXXXXX/`` (``ema.safetensors``, ``state.json``).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    _check_args(steps, batch_size, lr, weight_decay, ema_decay, cond_drop, checkpoint_every, seed,
                warmup_steps, grad_clip, stop_after, log_every, len(dataset))
    if not is_int(keep_checkpoints, 0) or (keep_checkpoints and keep_dir is None):
        raise ConfigError("keep_checkpoints", keep_checkpoints, "an integer >= 0 (above 0 only with a keep_dir)")
    kept = kept_steps(steps, checkpoint_every, keep_checkpoints)
    device = torch.device(device)
    if device.type == "cpu" and model.mixed_precision == "fp16":
        raise ConfigError("model.mixed_precision", "fp16", "no or bf16 when training on the CPU")
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=model.mixed_precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    if batch_size % world:
        raise ConfigError("batch_size", batch_size, f"a multiple of the number of processes ({world})")
    work_dir = Path(work_dir)
    hparams = {"seed": seed, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
               "ema_decay": ema_decay, "cond_drop": cond_drop, "warmup_steps": warmup_steps,
               "grad_clip": grad_clip, "num_processes": world}

    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr, weight_decay=weight_decay)
    state = {"step": 0, "loss_log": [], "window": [0.0, 0], "wall_time_s": 0.0, "hparams": hparams}
    ckpt = latest_checkpoint(work_dir)
    if ckpt is not None:
        saved = json.loads((ckpt / "state.json").read_text())
        if saved["hparams"] != hparams:
            diff = sorted(k for k in hparams if saved["hparams"].get(k) != hparams[k])
            raise ConfigError("work_dir", str(work_dir),
                              f"a folder of checkpoints written with the same settings (these differ: {diff})")
        if saved["step"] > steps:
            raise ConfigError("steps", steps, f">= the checkpoint's step {saved['step']} in {ckpt}")
        state = saved
        model.load_trainable_state(load_file(str(ckpt / "model.safetensors")))
        optimizer.load_state_dict(unflatten_optimizer(ckpt / "optimizer.safetensors"))
        ema = load_file(str(ckpt / "ema.safetensors"), device=str(accelerator.device))
    else:
        if init_state is not None:
            model.load_trainable_state(init_state)
        ema = {k: v.detach().float().clone() for k, v in model.state_dict_to_save().items()}
    resumed_from = state["step"]

    denoiser, optimizer = accelerator.prepare(model.denoiser, optimizer)
    if ckpt is not None and accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    params = model.trainable_parameters()
    live = model.state_dict_to_save()  # detached views sharing storage with the parameters
    float_keys = [k for k in ema if ema[k].is_floating_point()]
    other_keys = [k for k in ema if not ema[k].is_floating_point()]
    cuda = accelerator.device.type == "cuda"

    def write_checkpoint(step_now):
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if accelerator.scaler is not None:
                state["scaler"] = accelerator.scaler.state_dict()
            save_checkpoint(work_dir, step_now, model, ema, optimizer, state)
            if step_now in kept:  # its EMA weights, with the training seconds and images up to it
                (folder := work_dir / KEPT_DIR / f"step-{step_now:08d}").mkdir(parents=True, exist_ok=True)
                save_file(cpu_copy(ema), str(folder / "ema.safetensors"))
                meta = {"step": step_now, "wall_time_s": state["wall_time_s"], "images_seen": step_now * batch_size}
                (folder / "state.json").write_text(json.dumps(meta) + "\n")
        accelerator.wait_for_everyone()

    model.train()
    step = state["step"]
    last = steps if stop_after is None else min(steps, stop_after)
    bar = tqdm(total=steps, initial=step, desc="train", unit="step",
               disable=not (progress and accelerator.is_main_process))
    live_task = Task(*(report or ("train", "")), total=steps, done=step) if accelerator.is_main_process else None
    started = time.perf_counter()
    while step < last:
        idx = batch_indices(seed, step, batch_size, len(dataset))[rank::world]
        images, labels = dataset.batch(idx)
        images = images.to(accelerator.device, non_blocking=True)
        labels = labels.to(accelerator.device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
        generator = torch.Generator().manual_seed(derive_seed(seed, "noise", step, rank))
        # Dropout draws from the global RNG: reseed it per step inside fork_rng, so the step stays a pure
        # function of (seed, step) and the caller's RNG state is left untouched.
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            dropout_seed = derive_seed(seed, "dropout", step, rank)
            torch.default_generator.manual_seed(dropout_seed)
            if cuda:
                torch.cuda.manual_seed(dropout_seed)
            with accelerator.autocast():
                loss = diffusion_loss(model, images, labels, generator=generator, cond_drop=cond_drop,
                                      denoiser=denoiser)
            accelerator.backward(loss)
            if grad_clip is not None:
                accelerator.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1

        with torch.no_grad():
            if ema_decay is None:
                for k in float_keys:
                    ema[k].copy_(live[k])
            else:
                decay = min(ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_([ema[k] for k in float_keys], [live[k].float() for k in float_keys], 1.0 - decay)
            for k in other_keys:
                ema[k].copy_(live[k])

        state["window"][0] += accelerator.reduce(loss.detach(), reduction="mean").item()
        state["window"][1] += 1
        if step % log_every == 0 or step == steps:
            mean = state["window"][0] / state["window"][1]
            state["loss_log"].append([step, mean])
            state["window"] = [0.0, 0]
            bar.set_postfix(loss=f"{mean:.4f}")
        bar.update(1)
        if live_task is not None:
            live_task.update(step)
        state["step"] = step
        if step % checkpoint_every == 0 or step == steps:
            state["wall_time_s"] += time.perf_counter() - started
            started = time.perf_counter()
            write_checkpoint(step)
    bar.close()
    if live_task is not None:
        live_task.close()
    wall = state["wall_time_s"] + (time.perf_counter() - started)
    accelerator.unwrap_model(denoiser, keep_fp32_wrapper=False)
    if kept and step == steps and accelerator.is_main_process:
        shutil.copytree(work_dir / KEPT_DIR, Path(keep_dir) / CHECKPOINT_DIR, dirs_exist_ok=True)
    accelerator.free_memory()
    return TrainResult(
        ema_state=ema,
        loss_log=[(int(s), float(v)) for s, v in state["loss_log"]],
        steps=step,
        wall_time_s=wall,
        images_seen=step * batch_size,
        completed=step == steps,
        resumed_from=resumed_from,
        hparams=hparams,
    )


# The profile's ``pretrain`` (steps 0: no pre-training) and ``finetune`` sections: keyword arguments of
# train_diffusion, whose signature holds their defaults (read once, here); left as written in the profile
# (they are part of the models' artifact keys).
PRETRAIN = Section("pretrain", _training_fields(0, True), fill=False, active=_active)
FINETUNE = Section("finetune", _training_fields(1, False), fill=False, active=_active)
