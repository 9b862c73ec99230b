"""The CPU speed levers of a first run, each timed against the plain training step with the load average
it ran under: 1 vs 2 torch threads, several 1-thread processes at once (the lever the first run applies:
one fine-tuning per idle core, :mod:`bibad_utils.parallel`), ``channels_last``, a bf16 autocast (fast only
on CPUs with bf16 units, e.g. AMX), ``torch.compile`` of the UNet, the DDIM batch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bibad_utils.bench_timing import RandomImages, demo_pixel_config, sync_device, time_call


def cpu_bf16_units() -> str:
    """The CPU's bfloat16 instructions as ``/proc/cpuinfo`` lists them (``amx_bf16``, ``avx512_bf16``),
    or "none": without them a bf16 autocast on the CPU is emulated and slower than fp32."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(found) or "none"


def _lever_model(device: torch.device):
    from bibad_utils.diffusion import build_model

    cfg, size, _ = demo_pixel_config()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(cfg, [f"class{k}" for k in range(10)], image_size=size)
    return model.to(device).train(), size


def _process_rate(seconds: float, batch: int, queue) -> None:
    """One worker of :func:`concurrent_rate`: the plain 1-thread training step, its rate put on ``queue``."""
    torch.set_num_threads(1)
    from bibad_utils.training import diffusion_loss

    model, _ = _lever_model(torch.device("cpu"))
    x, y = RandomImages(batch, model.image_size, 10).batch(np.arange(batch))
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step():
        diffusion_loss(model, x, y, generator=gen, cond_drop=0.1).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    queue.put(1 / time_call(step, torch.device("cpu"), seconds))


def concurrent_rate(n: int, seconds: float, batch: int = 64) -> list[float]:
    """Training steps/s of each of ``n`` processes running the plain step at once, one thread each
    (what chapter 02 does with one fine-tuning per idle core); their sum is the machine's rate."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_rate, args=(seconds, batch, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return rates


def bench_levers(device: torch.device, seconds: float, batch: int = 64, threads=(1, 2), compile_unet: bool = True,
                 sample_batches=(50, 100, 200)) -> list[tuple[str, str]]:
    """The speed levers of a CPU training run, each against the plain step (eager, contiguous, 1 thread):
    torch threads, ``channels_last`` weights and inputs, ``torch.compile`` of the UNet (its compile time
    reported apart, since a first run pays it once per process and shape), and the DDIM batch size.
    The load average next to each row says how busy the machine was."""
    from bibad_utils.sampling import sample_images
    from bibad_utils.training import diffusion_loss

    rows = []
    before = torch.get_num_threads()

    def load() -> str:
        try:
            return "load " + Path("/proc/loadavg").read_text().split()[0]
        except OSError:
            return "load n/a"

    def train_rate(model, memory_format=None, denoiser=None, autocast: bool = False) -> float:
        data = RandomImages(batch, model.image_size, 10)
        x, y = data.batch(np.arange(batch))
        x, y = x.to(device), y.to(device)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = diffusion_loss(model, x, y, generator=gen, cond_drop=0.1, denoiser=denoiser)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return 1 / time_call(step, device, seconds)

    base = None
    for n in threads:
        torch.set_num_threads(n)
        model, _ = _lever_model(device)
        rate = train_rate(model)
        base = rate if base is None else base
        rows.append((f"lever: training step, batch {batch}, eager, {n} thread(s)",
                     f"{rate:.2f} steps/s ({rate / base:.2f}x); {load()}"))
    if device.type == "cpu" and max(threads) > 1:
        n = max(threads)
        rates = concurrent_rate(n, seconds, batch)
        rows.append((f"lever: training step, batch {batch}, {n} processes x 1 thread (applied)",
                     f"{sum(rates):.2f} steps/s in all ({sum(rates) / base:.2f}x; each "
                     f"{', '.join(f'{r:.2f}' for r in rates)}); {load()}"))
    torch.set_num_threads(threads[0])
    model, _ = _lever_model(device)
    model.denoiser.to(memory_format=torch.channels_last)
    rate = train_rate(model, memory_format=torch.channels_last)
    rows.append((f"lever: training step, batch {batch}, channels_last, {threads[0]} thread(s)",
                 f"{rate:.2f} steps/s ({rate / base:.2f}x); {load()}"))
    if device.type == "cpu":
        model, _ = _lever_model(device)
        rate = train_rate(model, autocast=True)
        rows.append((f"lever: training step, batch {batch}, bf16 autocast, {threads[0]} thread(s)",
                     f"{rate:.2f} steps/s ({rate / base:.2f}x); CPU bf16 units: {cpu_bf16_units()}; {load()}"))
    if compile_unet:
        model, _ = _lever_model(device)
        compiled = torch.compile(model.denoiser)
        start = time.perf_counter()
        data = RandomImages(batch, model.image_size, 10)
        x, y = data.batch(np.arange(batch))
        diffusion_loss(model, x.to(device), y.to(device), generator=torch.Generator().manual_seed(0),
                       cond_drop=0.1, denoiser=compiled).backward()
        first = time.perf_counter() - start
        rate = train_rate(model, denoiser=compiled)
        rows.append((f"lever: training step, batch {batch}, torch.compile, {threads[0]} thread(s)",
                     f"{rate:.2f} steps/s ({rate / base:.2f}x); first step (compile) {first:.0f} s; {load()}"))
    model, _ = _lever_model(device)
    model.eval()
    for b in sample_batches:
        labels = np.arange(b) % 10
        start = time.perf_counter()
        sample_images(model, labels, np.arange(b), steps=4, guidance=3.0, batch_size=b, device=device, progress=False)
        per = (time.perf_counter() - start) / 4
        rows.append((f"lever: DDIM step, w = 3, batch {b}, {threads[0]} thread(s)",
                     f"{b / per:.0f} images x steps/s; {load()}"))
    torch.set_num_threads(before)
    return rows
