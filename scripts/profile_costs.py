"""Size a profile's first run on this machine before running it: time its own DM's training step and sampler
and its victim classifier's epoch (random images of the profile's size, nothing read or written), then
estimate the fine-tuning, generation and victim-training time of the whole profile from its grid.

    python scripts/profile_costs.py --profile cifar10 [--set finetune.steps=1200] [--seconds 20]

Measured at 1 torch thread (the runner's workers each use one) and, for the training step, at 2 threads.
The estimate assumes ``--workers`` parallel 1-thread workers for fine-tuning and generation (the runner
uses one per idle core) and one process for the castle walls' victims; it leaves out the judges, CD,
STRIP, FCT, the diffusion classifier and the notebooks' own time, which the printed lines name.

    python scripts/profile_costs.py --profile imagenette-full --gpu-gflops 1979

sizes the same grid for a GPU instead, without timing anything here: the FLOPs of one fine-tuning step and of
one sampled image (counted on the CPU by torch's FLOP counter: matmuls, convolutions, attention) times the
grid's steps and images, at an achieved rate of ``--gpu-gflops`` GFLOP/s. 1979 is what the demo's 1.1 M
parameter DM achieved on an H100 (BENCHMARKS.md, fp32); a larger DM keeps a GPU busier, so the time printed
is an upper estimate of the DM work (pre-training, judges, victims and detectors come on top).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch


def _generation_sets(study, cell) -> list[tuple[int, float]]:
    """(images, w) of every generation set of ``cell``: its target-prompt sets, then its all-class sets."""
    s = study.cfg.sampling
    return ([(s.n_target, w) for w in study.target_guidances(cell)]
            + [(s.n_all, w) for w in study.all_guidances(cell)])


def gpu_sizing(study, model, data, n_params: int, rate: float) -> str:
    """Lines sizing ``study``'s grid (fine-tuning and generation) for a device achieving ``rate`` FLOP/s."""
    from bibad_utils.bench_timing import count_flops, training_step
    from bibad_utils.sampling import guided_eps

    cfg, s = study.cfg, study.cfg.sampling
    batch = int(cfg.finetune.batch_size)
    step_flops = count_flops(training_step(model, *data.batch(np.arange(batch)))[1])
    model.eval()
    xb = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = {w: count_flops(lambda w=w: guided_eps(model, xb, 500, torch.zeros(1, dtype=torch.long), w))
               for w in (1.0, 2.0)}  # per image and denoising step: one forward at w = 1, two otherwise
    cells = study.cells(with_seeds=True)
    ft_flops = len(cells) * cfg.finetune.steps * step_flops
    gen_flops = sum(n * s.steps * eps[1.0 if w == 1 else 2.0]
                    for cell in cells for n, w in _generation_sets(study, cell))
    pre = cfg.pretrain
    pre_flops = 0.0 if pre.shipped else pre.steps * count_flops(
        training_step(model.train(), *data.batch(np.arange(int(pre.batch_size))))[1])
    hours = lambda f: f / rate / 3600  # noqa: E731
    return "\n".join([
        f"profile {study.cfg.name}: DM {n_params / 1e6:.2f} M parameters at {study.image_size} px; "
        f"at {rate / 1e9:.0f} GFLOP/s achieved",
        f"fine-tuning step (batch {batch}, forward + backward): {step_flops / 1e9:.1f} GFLOP; "
        f"{len(cells)} fine-tunings x {cfg.finetune.steps} steps: {ft_flops / 1e15:.3g} PFLOP, {hours(ft_flops):.2f} h",
        f"sampling: {eps[1.0] / 1e9:.2f} GFLOP per image and step at w = 1 (twice at w != 1), {s.steps} DDIM "
        f"steps; the grid's generations: {gen_flops / 1e15:.3g} PFLOP, {hours(gen_flops):.2f} h",
        "pre-training: " + ("shipped, none" if pre.shipped else
                            f"{pre.steps} steps of {pre.batch_size}: {pre_flops / 1e15:.3g} PFLOP, {hours(pre_flops):.2f} h"),
        f"DM work in all: {hours(ft_flops + gen_flops + pre_flops):.1f} h (judges, victims, detectors and notebooks "
        "come on top)",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--seconds", type=float, default=15.0, help="about how long each measurement runs")
    parser.add_argument("--workers", type=int, default=2, help="parallel 1-thread workers of a run")
    parser.add_argument("--gpu-gflops", type=float, default=None, metavar="RATE",
                        help="size the grid for a GPU achieving RATE GFLOP/s instead of timing this CPU")
    args = parser.parse_args(argv)
    if args.gpu_gflops is not None and not args.gpu_gflops > 0:
        parser.error(f"--gpu-gflops: {args.gpu_gflops} is not a rate; give GFLOP/s > 0 (an H100 on the demo DM: 1979)")

    from bibad_utils.bench_timing import RandomImages, time_call, training_step
    from bibad_utils.config import ConfigError, overrides_from_assignments
    from bibad_utils.diffusion import build_model
    from bibad_utils.judges.training import train_classifier
    from bibad_utils.sampling import sample_images
    from bibad_utils.stages import Study

    try:
        study = Study(args.profile, overrides_from_assignments(args.set), progress=False)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg, size = study.cfg, study.image_size
    ft, s = cfg.finetune, cfg.sampling
    data = RandomImages(512, size, len(study.class_names))
    torch.manual_seed(0)
    model = build_model(cfg.model.as_dict(), study.class_names, image_size=size).train()
    n_params = sum(p.numel() for p in model.trainable_parameters())
    if args.gpu_gflops is not None:
        print(gpu_sizing(study, model, data, n_params, args.gpu_gflops * 1e9))
        return 0
    rates = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        step, _ = training_step(model, *data.batch(np.arange(ft.batch_size)))
        rates[threads] = 1.0 / time_call(step, torch.device("cpu"), args.seconds)
    torch.set_num_threads(1)
    model.eval()
    n_sample = min(s.batch_size, 32)
    sample_rate = {}
    for w in sorted({1.0, max(float(v) for v in s.guidance)}):
        start = time.perf_counter()
        sample_images(model, np.arange(n_sample) % len(study.class_names), np.arange(n_sample), steps=s.steps,
                      guidance=w, batch_size=n_sample, device="cpu", progress=False)
        sample_rate[w] = n_sample / (time.perf_counter() - start)
    victim = {k: v for k, v in cfg.judges.items() if k in ("arch", "input_size", "batch_size", "lr")}
    victim.update(cfg.defenses.classifier)
    n_victim = 1000
    start = time.perf_counter()
    train_classifier(np.resize(data.images, (n_victim, size, size, 3)), np.resize(data.labels, n_victim),
                     arch=victim.get("arch", "small_cnn"), input_size=victim.get("input_size"), epochs=1,
                     batch_size=int(victim.get("batch_size", 128)), lr=float(victim.get("lr", 1e-3)), seed=0,
                     num_classes=len(study.class_names), progress=False)
    victim_epoch = (time.perf_counter() - start) * len(study.train_set) / n_victim

    cells = study.cells(with_seeds=True)
    n_ft = len(cells)
    exposure = study.exposure(cells[0])
    ft_total = n_ft * ft.steps / rates[1]
    per_cell_images = {cell: sum(n for n, _ in _generation_sets(study, cell)) for cell in cells}
    gen_total = sum(per_cell_images.values()) / np.mean(list(sample_rate.values()))
    detect = [c for c in study.grid_cells() if c.ratio in (cfg.defenses.detect_ratios or cfg.ratios)]
    victims = len(detect) + (1 if "clean" in cfg.controls else 0)
    victim_total = victims * victim_epoch * int(victim.get("epochs", cfg.judges.epochs))
    w = args.workers
    lines = [
        f"profile {args.profile} on {platform.processor() or platform.machine()} ({torch.get_num_threads()} thread)",
        f"DM: {n_params / 1e6:.2f} M parameters at {size} px; fine-tuning batch {ft.batch_size}: "
        f"{rates[1]:.2f} steps/s at 1 thread, {rates[2]:.2f} at 2 threads",
        f"sampling ({s.steps} DDIM steps, 1 thread): " + ", ".join(f"w = {k:g}: {v:.1f} img/s" for k, v in sample_rate.items()),
        f"victim {victim.get('arch')} at {victim.get('input_size') or size} px: {victim_epoch:.1f} s per epoch "
        f"of the {len(study.train_set)} training images (1 thread)",
        f"grid: {n_ft} fine-tunings of {ft.steps} steps ({exposure:.1f} epochs each): "
        f"{ft_total / 60:.1f} min of one core, {ft_total / 60 / w:.1f} min on {w} workers",
        f"generation: {sum(per_cell_images.values())} images: {gen_total / 60:.1f} min of one core, "
        f"{gen_total / 60 / w:.1f} min on {w} workers",
        f"victims: {victims} x {victim.get('epochs', cfg.judges.epochs)} epochs: {victim_total / 60:.1f} min "
        "(one process)",
        f"estimate without the judges, CD, STRIP, FCT, the diffusion classifier and the notebooks: "
        f"{(ft_total / w + gen_total / w + victim_total) / 60:.0f} min",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
