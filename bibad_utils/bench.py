"""Speed of this machine for the study's workloads, written as a markdown section.

``python -m bibad_utils.bench [--device cpu|cuda] [--out BENCHMARKS.md] [--seconds 2]`` measures:

- the fp32 matmul rate (a loop of square matmuls; bf16 too on a GPU): the reference for "achieved";
- a training step of the demo pixel DM (the ``model`` section of ``notebooks/profiles/demo.yaml``, at its
  dataset's image size; batch 64): the raw step (loss, backward, AdamW) with its FLOPs counted by
  ``torch.utils.flop_counter.FlopCounterMode``, and the whole :func:`train_diffusion` loop (batching,
  EMA, checkpoint) per step;
- DDIM sampling images/s for 50 steps at w = 1 and w > 1, and one guided noise prediction as one
  forward of 2B samples versus two forwards of B;
- on the CPU (``--levers``, the default), the speed levers of a first run against the plain step: 1 vs 2
  torch threads, ``channels_last``, ``torch.compile`` (``--compile``: minutes of compiling) and the
  DDIM batch size, each with the load average it ran under;
- on a GPU, a Stable Diffusion v1.4-sized training step (UNet from the v1.4 configuration with random
  weights, VAE encoding at 512 px, bf16 autocast, batch 8, 64 x 64 latents): nothing is downloaded.

Each measurement repeats for about ``--seconds`` after one warm-up. The section for this device and
machine replaces an earlier one in the output file; other sections are kept.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bibad_utils.bench_levers import bench_levers
from bibad_utils.bench_timing import (RandomImages, count_flops, demo_pixel_config, demo_pixel_model, matmul_flops,
                                      rate_text, sync_device, time_call, training_step)
from bibad_utils.base import REPO_ROOT


# Stable Diffusion v1.4's UNet and VAE configurations (the published model's config.json values that
# differ from the diffusers defaults), so an SD-sized step needs no download.
SD14_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
SD14_VAE = dict(sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)


def bench_pixel(device: torch.device, seconds: float, batch: int, sample_batch: int, sample_steps: int,
                guidance: float) -> tuple[list[tuple[str, str]], float]:
    """Rows of pixel-DM measurements, and the achieved FLOP/s of its raw training step."""
    from bibad_utils.sampling import guided_eps, sample_images
    from bibad_utils.training import train_diffusion

    model = demo_pixel_model(device)
    size = model.image_size
    source = demo_pixel_config()[2]
    data = RandomImages(max(batch * 4, 256), size, 10)
    n_params = sum(p.numel() for p in model.trainable_parameters())
    c = model.config
    desc = (f"{source}: channels {c['block_out_channels']}, attention {c['attention']}, "
            f"unshuffle {c['unshuffle']}, {size} px, {n_params / 1e6:.2f} M parameters")
    rows = [("pixel DM", desc)]

    x, y = data.batch(np.arange(batch))
    step, fwd_bwd = training_step(model, x.to(device), y.to(device))
    per = time_call(step, device, seconds)
    flops = count_flops(fwd_bwd)
    rows.append((f"training step, raw (loss + backward + AdamW), batch {batch}",
                 f"{1 / per:.2f} steps/s, {batch / per:.1f} images/s"))
    rows.append(("FLOPs per training step (forward + backward)",
                 f"{flops / 1e9:.2f} GFLOP; achieved {rate_text(flops / per)}"))

    loop_steps = max(3, min(50, int(seconds / per)))
    with tempfile.TemporaryDirectory() as work:
        result = train_diffusion(model, data, steps=loop_steps, batch_size=batch, lr=1e-4,
                                 checkpoint_every=loop_steps, work_dir=work, seed=0, device=device,
                                 progress=False, log_every=loop_steps)
    per_loop = result.wall_time_s / loop_steps
    rows.append((f"train_diffusion loop ({loop_steps} steps, batching, EMA and one checkpoint included)",
                 f"{1 / per_loop:.2f} steps/s, {batch / per_loop:.1f} images/s"))

    model.eval()
    labels = np.arange(sample_batch) % model.num_classes
    seeds = np.arange(sample_batch)
    for w in (1.0, guidance):
        start = time.perf_counter()
        sample_images(model, labels, seeds, steps=sample_steps, guidance=w, batch_size=sample_batch,
                      device=device, progress=False)
        sync_device(device)
        spent = (time.perf_counter() - start) * 50 / sample_steps
        how = "" if sample_steps == 50 else f" (timed over {sample_steps} steps, scaled to 50)"
        rows.append((f"DDIM 50 steps, w = {w:g}, batch {sample_batch}{how}", f"{sample_batch / spent:.1f} images/s"))

    gen = torch.Generator().manual_seed(0)
    xb = torch.randn(sample_batch, *model.latent_shape, generator=gen).to(device)
    yb = torch.as_tensor(labels, device=device)
    with torch.no_grad():
        one = time_call(lambda: guided_eps(model, xb, 500, yb, guidance, batched=True), device, seconds / 2)
        two = time_call(lambda: guided_eps(model, xb, 500, yb, guidance, batched=False), device, seconds / 2)
    rows.append((f"guided eps, batch {sample_batch}: one forward of 2B vs two forwards of B",
                 f"{one * 1e3:.1f} ms vs {two * 1e3:.1f} ms ({two / one:.2f}x)"))
    return rows, flops / per


def bench_dc(device: torch.device, n_images: int = 8, n_levels: int = 10, adaptive=((2, 3),),
             batch_size: int = 256) -> list[tuple[str, str]]:
    """Cost per image of the diffusion classifier on the demo pixel DM (random weights: timing only),
    all classes exhaustively vs adaptive class pruning. The accuracy change of pruning is measured on
    the trained DM by the castle-walls stage (its ``castle_dc_bench`` artifact); see :func:`demo_dc_rows`."""
    from bibad_utils.defenses import diffusion_classify

    model = demo_pixel_model(device).eval()
    x = RandomImages(n_images, model.image_size, 10, seed=1).batch(np.arange(n_images))[0]
    rows, base = [], None
    for name, stages in (("exhaustive", None), ("adaptive " + str([list(s) for s in adaptive]), list(adaptive))):
        diffusion_classify(model, x[:2], n_levels=n_levels, adaptive=stages, batch_size=batch_size, device=device)
        sync_device(device)  # warm-up above, then the timed call
        _, det = diffusion_classify(model, x, n_levels=n_levels, adaptive=stages, batch_size=batch_size,
                                    device=device, return_errors=True)
        per_image = det["seconds"] / n_images
        base = per_image if base is None else base
        speed = "" if per_image == base else f"; {base / per_image:.2f}x faster"
        rows.append((f"diffusion classifier, {name}: 10 classes x {n_levels} levels, {n_images} images",
                     f"{det['unet_evals'] / n_images:.0f} UNet evals/image, {per_image * 1e3:.0f} ms/image{speed}"))
    return rows


def demo_dc_rows(run_dir: Path = REPO_ROOT / "runs" / "demo") -> list[tuple[str, str]]:
    """The castle-walls stage's measurement on the TRAINED demo DM (accuracy and agreement of adaptive
    pruning with the exhaustive classifier), when a demo run has produced it (the newest such
    artifact); else no rows."""
    import json

    rows = []
    found = sorted((run_dir / "artifacts" / "castle_dc_bench").glob("*/benchmark.json"),
                   key=lambda p: p.stat().st_mtime)
    for path in found[-1:]:  # the newest: older ones belong to earlier settings of the profile
        for r in json.loads(path.read_text()):
            mode = r["mode"] if r["mode"] == "exhaustive" else f"{r['mode']} {r['stages']}"
            rows.append((f"demo run, trained DM ({r['cell']}), {mode}, {r['n_images']} clean test images, "
                         f"{r['device']} {r['threads']} thread(s)",
                         f"{r['unet_evals_per_image']:.0f} UNet evals/image, {r['seconds_per_image'] * 1e3:.0f} ms/image; "
                         f"accuracy {r['accuracy']:.2f}, agreement with exhaustive {r['agreement']:.2f}"))
    return rows


def bench_sd(device: torch.device, seconds: float, batch: int = 8) -> tuple[list[tuple[str, str]], float]:
    """Rows of SD-sized measurements (CUDA only), and the achieved FLOP/s of its training step."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD14_UNET).to(device)
        vae = AutoencoderKL(**SD14_VAE).to(device, torch.bfloat16).requires_grad_(False).eval()
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, 512, 512, generator=g) * 2 - 1).to(device)
    context = torch.randn(batch, 77, 768, generator=g).to(device)

    def fwd_bwd():
        with torch.no_grad():
            z = vae.encode(images.to(torch.bfloat16)).latent_dist.sample().float() * 0.18215
        noise = torch.randn_like(z)
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=context).sample
        torch.nn.functional.mse_loss(pred.float(), noise).backward()

    def step():
        fwd_bwd()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats(device)
    per = time_call(step, device, seconds)
    flops = count_flops(fwd_bwd)
    opt.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    n_params = sum(p.numel() for p in unet.parameters())
    rows = [
        ("SD v1.4-sized training step (random weights)",
         f"UNet {n_params / 1e6:.0f} M parameters (fp32 master, bf16 autocast), VAE encode at 512 px (bf16), "
         f"batch {batch}, 64 x 64 latents, AdamW"),
        ("SD training step", f"{1 / per:.2f} steps/s, {batch / per:.1f} images/s, peak memory {peak:.1f} GiB"),
        ("SD FLOPs per training step", f"{flops / 1e12:.2f} TFLOP; achieved {rate_text(flops / per)}"),
    ]
    context2 = torch.randn(2 * batch, 77, 768, generator=g).to(device)
    z2 = torch.randn(2 * batch, 4, 64, 64, generator=g).to(device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        fwd = time_call(lambda: unet(z2, 500, encoder_hidden_states=context2), device, seconds / 2)
    rows.append((f"SD UNet forward, guided batch 2 x {batch} (bf16)",
                 f"{fwd * 1e3:.1f} ms: about {batch / (fwd * 50):.1f} images/s for 50 DDIM steps before "
                 f"VAE decoding"))
    del unet, vae, opt
    torch.cuda.empty_cache()
    return rows, flops / per


def machine_description(device: torch.device) -> tuple[str, str]:
    """(short key naming this device and machine, one line of details)."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        if found:
            cpu = found.group(1).strip()
    except OSError:
        pass
    import diffusers

    details = (f"CPU {cpu}; torch threads {torch.get_num_threads()}; torch {torch.__version__}; "
               f"diffusers {diffusers.__version__}; Python {platform.python_version()}")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        return f"cuda: {gpu}", f"GPU {gpu}; " + details
    return f"cpu: {cpu}, {torch.get_num_threads()} thread(s)", details


def run(device: torch.device, seconds: float, batch: int, sample_batch: int, sample_steps: int,
        guidance: float, levers: bool = False, compile_unet: bool = False) -> tuple[str, str]:
    """All measurements for ``device`` -> (section key, markdown section body)."""
    key, details = machine_description(device)
    rows = []
    n = 2048
    fp32 = matmul_flops(device, torch.float32, n, seconds / 2)
    rows.append((f"fp32 matmul {n} x {n}", rate_text(fp32)))
    if device.type == "cuda":
        bf16 = matmul_flops(device, torch.bfloat16, 8192, seconds / 2)
        rows.append(("bf16 matmul 8192 x 8192", rate_text(bf16)))
    pixel_rows, achieved = bench_pixel(device, seconds, batch, sample_batch, sample_steps, guidance)
    rows += pixel_rows
    rows.append(("pixel training step: achieved / fp32 matmul", f"{100 * achieved / fp32:.0f} %"))
    rows += bench_dc(device)
    rows += demo_dc_rows()
    if levers and device.type == "cpu":
        from bibad_utils.progress import available_cores
        threads = tuple(range(1, min(2, available_cores()) + 1))
        rows += bench_levers(device, seconds, batch, threads=threads, compile_unet=compile_unet)
    if device.type == "cuda":
        sd_rows, sd_achieved = bench_sd(device, seconds)
        rows += sd_rows
        rows.append(("SD training step: achieved / bf16 matmul", f"{100 * sd_achieved / bf16:.0f} %"))
    today = datetime.date.today().isoformat()
    lines = [f"### {key}", "", f"{details}; measured {today} (about {seconds:g} s per measurement).", "",
             "| measurement | result |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return key, "\n".join(lines) + "\n"


def update_markdown(path: Path, key: str, body: str) -> None:
    """Replace the section marked with ``key`` in ``path`` (or append it); other content is kept."""
    from bibad_utils.report import replace_marked_section

    replace_marked_section(path, f"bench: {key}", body, default_header=(
        "# Benchmarks\n\nWritten by `python -m bibad_utils.bench`; one section per device and machine.\n"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bibad_utils.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"), help="markdown file to update")
    parser.add_argument("--seconds", type=float, default=2.0, help="about how long each measurement runs")
    parser.add_argument("--batch", type=int, default=64, help="training batch of the pixel DM")
    parser.add_argument("--sample-batch", type=int, default=None, help="sampling batch (CPU 32, GPU 256)")
    parser.add_argument("--sample-steps", type=int, default=None,
                        help="DDIM steps actually timed, scaled to 50 (CPU 5, GPU 50)")
    parser.add_argument("--guidance", type=float, default=5.0, help="the w > 1 of the sampling measurement")
    parser.add_argument("--levers", action=argparse.BooleanOptionalAction, default=True,
                        help="on the CPU, also time the speed levers (threads, channels_last, sampling batch)")
    parser.add_argument("--compile", action="store_true",
                        help="with --levers, also time torch.compile of the UNet (minutes of compiling)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda on a machine without CUDA")
    cuda = device.type == "cuda"
    sample_batch = args.sample_batch or (256 if cuda else 32)
    sample_steps = args.sample_steps or (50 if cuda else 5)
    key, body = run(device, args.seconds, args.batch, sample_batch, sample_steps, args.guidance,
                    levers=args.levers, compile_unet=args.compile)
    update_markdown(Path(args.out), key, body)
    print(body)


if __name__ == "__main__":
    main()
