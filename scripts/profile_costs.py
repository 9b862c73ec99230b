"""Size a profile's first run on this machine before running it: time its own DM's training step and sampler
and its victim classifier's epoch (random images of the profile's size, nothing read or written), then
estimate the fine-tuning, generation and victim-training time of the whole profile from its grid.

    python scripts/profile_costs.py --profile cifar10 [--set finetune.steps=1200] [--seconds 20]

Measured at 1 torch thread (the runner's workers each use one) and, for the training step, at 2 threads.
The estimate assumes ``--workers`` parallel 1-thread workers for fine-tuning and generation (the runner
uses one per idle core) and one process for the castle walls' victims; it leaves out the judges, CD,
STRIP, FCT, the diffusion classifier and the notebooks' own time, which the printed lines name.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch


def _step_rate(model, data, batch: int, seconds: float) -> float:
    from bibad_utils.bench_timing import time_call
    from bibad_utils.training import diffusion_loss

    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    x, y = data.batch(np.arange(batch))
    gen = torch.Generator().manual_seed(0)

    def step():
        diffusion_loss(model, x, y, generator=gen, cond_drop=0.1).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return 1.0 / time_call(step, torch.device("cpu"), seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--seconds", type=float, default=15.0, help="about how long each measurement runs")
    parser.add_argument("--workers", type=int, default=2, help="parallel 1-thread workers of a run")
    args = parser.parse_args(argv)

    from bibad_utils.bench_timing import RandomImages
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
    rates = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates[threads] = _step_rate(model, data, ft.batch_size, args.seconds)
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
    per_cell_images = {}
    for cell in cells:
        per_cell_images[cell] = (s.n_target * len(study.target_guidances(cell))
                                 + s.n_all * len(study.all_guidances(cell)))
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
