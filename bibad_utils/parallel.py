"""Several cells at once on the CPU: one worker process per usable core, one torch thread each.

A small DM's training step does not scale across CPU threads (on 2 cores, one process with 2 threads
runs about as fast as one with 1 thread; BENCHMARKS.md, "CPU speed levers"), so the cells of a grid
are trained (and their sets generated) by separate processes. Each worker opens the same study from
its resolved configuration and computes its cells into the shared, content-addressed store (artifacts
are written under a temporary name and renamed into place), so the caller afterwards finds every
artifact cached under the very key it would have computed itself. A worker that fails costs nothing
but time: the caller computes what is still missing, one cell after another, as before.

``BIBAD_WORKERS`` fixes the number of workers (``1`` turns this off); otherwise it is the thread count
the study would use (:func:`bibad_utils.progress.choose_threads`: the idle cores, or the count fixed
by ``BIBAD_THREADS`` / ``OMP_NUM_THREADS``). On a GPU the cells run in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

import yaml

from bibad_utils.base import ConfigError
from bibad_utils.progress import ENV_THREADS, choose_threads

ENV_WORKERS = "BIBAD_WORKERS"


def worker_count(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` independent cells: ``BIBAD_WORKERS`` if set, else the thread
    count the machine allows now; never more than the jobs."""
    fixed = os.environ.get(ENV_WORKERS, "").strip()
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise ConfigError(ENV_WORKERS, fixed, "a positive integer (1: no worker processes)")
        n = int(fixed)
    else:
        import torch

        before = torch.get_num_threads()
        n = choose_threads()
        torch.set_num_threads(before)
    return max(1, min(n, n_jobs))


def _work(job: tuple[str, list[tuple[str, bool]]]) -> list[str]:
    """One worker: open the study from its resolved profile file and compute its cells (1 thread),
    each ``(spec, generate)``."""
    profile_file, specs = job
    os.environ[ENV_THREADS] = "1"  # read by choose_threads before each training and generation
    from bibad_utils.stages import Cell, Study, compute

    study = Study(profile_file, progress=False)
    return [line for spec, generate in specs for line in compute(study, [Cell.parse(spec)], generate)]


def _spec(cell) -> str:
    """A cell's command-line spelling (the inverse of ``Cell.parse``)."""
    text = "clean" if cell.kind == "clean" else f"{cell.kind}:{cell.ratio!r}"
    if cell.pool != "random":
        text += f":{cell.pool}"
    return text + (f"@{cell.seed}" if cell.seed else "")


def compute_cells(study, cells, generate: bool = False, train_only=(), workers: int | None = None) -> int:
    """Fine-tune ``cells`` (sampling their generation sets too with ``generate``) and ``train_only`` (never
    sampled) in parallel worker processes, round-robin over ``workers`` (default :func:`worker_count`);
    returns the number of workers used (1: nothing was started, the caller computes the cells itself).
    The pre-trained model is made first, here, so that no two workers train it."""
    jobs = [(c, generate) for c in cells] + [(c, False) for c in train_only if c not in cells]
    if study.device.type != "cpu" or len(jobs) < 2:
        return 1
    n = worker_count(len(jobs)) if workers is None else max(1, min(int(workers), len(jobs)))
    if n < 2:
        return 1
    study.pretrain_key  # noqa: B018 (installs the shipped base DM, or trains it, once)
    folder = Path(study.run_dir) / ".workers"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as f:
        yaml.safe_dump(study.cfg, f, sort_keys=False)
        profile_file = f.name
    specs = [(_spec(c), g) for c, g in jobs]
    try:
        with multiprocessing.get_context("spawn").Pool(n) as pool:
            pool.map(_work, [(profile_file, specs[i::n]) for i in range(n)])
    except Exception as err:  # the caller computes whatever is missing itself
        print(f"note: parallel workers stopped ({type(err).__name__}: {err}); computing the rest one "
              f"cell after another")
    finally:
        Path(profile_file).unlink(missing_ok=True)
    return n
