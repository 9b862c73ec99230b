"""The CPU speed levers of a first run, each timed against the plain training step with the load average
it ran under: 1 vs 2 torch threads, several 1-thread processes at once (the lever the first run applies:
one fine-tuning per idle core, :mod:`bibad_utils.parallel`), ``channels_last``, a bf16 autocast (fast only
on CPUs with bf16 units, e.g. AMX), ``torch.compile`` of the UNet, the DDIM batch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bibad_utils.bench_timing import RandomImages, demo_pixel_model, time_call, training_step


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


def _process_rate(seconds: float, batch: int, queue) -> None:
    """One worker of :func:`concurrent_rate`: the plain 1-thread training step, its rate put on ``queue``."""
    torch.set_num_threads(1)
    model = demo_pixel_model(torch.device("cpu"))
    step, _ = training_step(model, *RandomImages(batch, model.image_size, 10).batch(np.arange(batch)))
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

    rows = []
    before = torch.get_num_threads()

    def load() -> str:
        try:
            return "load " + Path("/proc/loadavg").read_text().split()[0]
        except OSError:
            return "load n/a"

    def lever_batch(model, memory_format=torch.contiguous_format):
        x, y = RandomImages(batch, model.image_size, 10).batch(np.arange(batch))
        return x.to(device).contiguous(memory_format=memory_format), y.to(device)

    def train_rate(model, memory_format=torch.contiguous_format, denoiser=None, autocast: bool = False) -> float:
        step, _ = training_step(model, *lever_batch(model, memory_format), denoiser=denoiser, autocast=autocast)
        return 1 / time_call(step, device, seconds)

    base = None
    for n in threads:
        torch.set_num_threads(n)
        model = demo_pixel_model(device)
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
    model = demo_pixel_model(device)
    model.denoiser.to(memory_format=torch.channels_last)
    rate = train_rate(model, memory_format=torch.channels_last)
    rows.append((f"lever: training step, batch {batch}, channels_last, {threads[0]} thread(s)",
                 f"{rate:.2f} steps/s ({rate / base:.2f}x); {load()}"))
    if device.type == "cpu":
        model = demo_pixel_model(device)
        rate = train_rate(model, autocast=True)
        rows.append((f"lever: training step, batch {batch}, bf16 autocast, {threads[0]} thread(s)",
                     f"{rate:.2f} steps/s ({rate / base:.2f}x); CPU bf16 units: {cpu_bf16_units()}; {load()}"))
    if compile_unet:
        model = demo_pixel_model(device)
        compiled = torch.compile(model.denoiser)
        start = time.perf_counter()
        training_step(model, *lever_batch(model), denoiser=compiled)[1]()
        first = time.perf_counter() - start
        rate = train_rate(model, denoiser=compiled)
        rows.append((f"lever: training step, batch {batch}, torch.compile, {threads[0]} thread(s)",
                     f"{rate:.2f} steps/s ({rate / base:.2f}x); first step (compile) {first:.0f} s; {load()}"))
    model = demo_pixel_model(device).eval()
    for b in sample_batches:
        labels = np.arange(b) % 10
        start = time.perf_counter()
        sample_images(model, labels, np.arange(b), steps=4, guidance=3.0, batch_size=b, device=device, progress=False)
        per = (time.perf_counter() - start) / 4
        rows.append((f"lever: DDIM step, w = 3, batch {b}, {threads[0]} thread(s)",
                     f"{b / per:.0f} images x steps/s; {load()}"))
    torch.set_num_threads(before)
    return rows
