"""Several cells at once on the CPU: one worker process per usable core, one torch thread each.

Threads share a small DM's training step badly when the machine is busy (on 2 cores with other
processes running, one process with 2 threads ran 10x slower than with 1; on idle cores 2 threads run
1.76x and two 1-thread processes 1.80x the rate of one thread: BENCHMARKS.md), so the cells of a grid
are trained (and their sets generated) by separate processes. Each worker opens the same study from
its resolved configuration and computes its cells into the shared, content-addressed store (artifacts
are written under a temporary name and renamed into place), so the caller afterwards finds every
artifact cached under the very key it would have computed itself. A worker that fails costs nothing
but time: the caller computes what is still missing, one cell after another, as before. The chapter
that trains the DMs also hands the judges to the workers (they need no DM), so that the workers' last
minutes are not idle.

``BIBAD_WORKERS`` fixes the number of workers (``1`` turns this off); otherwise it is the thread count
the study would use (:func:`bibad_utils.progress.choose_threads`: every core, the count fixed by
``BIBAD_THREADS`` / ``OMP_NUM_THREADS``, or with ``BIBAD_THREADS=auto`` the idle cores). On a GPU the cells run in the calling process unless
``BIBAD_WORKERS`` asks for several: then that many worker processes share the one device, each training
its own cell (a small DM leaves a large GPU mostly idle between kernel launches; how many pay has not been
measured here, since no GPU was available to this project's sessions).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

import yaml

from bibad_utils.base import ConfigError
from bibad_utils.judges import PHOTOMETRIC_KEYS
from bibad_utils.judges.profile import wants_ablation
from bibad_utils.progress import ENV_SIBLINGS, ENV_THREADS, choose_threads
from bibad_utils.stages import Cell, Study

ENV_WORKERS = "BIBAD_WORKERS"


def workers_allowed(device) -> bool:
    """Worker processes always on the CPU; on a GPU only when ``BIBAD_WORKERS`` (above 1) asks for them."""
    if device.type == "cpu":
        return True
    fixed = os.environ.get(ENV_WORKERS, "").strip()
    return fixed.isdigit() and int(fixed) > 1


def worker_count(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` independent cells: ``BIBAD_WORKERS`` if set, else the study's thread
    count (:func:`~bibad_utils.progress.choose_threads`); never more than the jobs."""
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


def _work(job: tuple[str, tuple, int]) -> list[str]:
    """One job in a worker (1 thread): open the study from its resolved profile file and compute one
    task: ``("cell", spec, generate)`` (fine-tune a cell, and sample its sets with ``generate``) or
    ``("judge", overrides, what)`` (train one judge, ``classifier`` or a trigger kind's detector, of the
    study with ``overrides``: the judges' ablation trains some without augmentation)."""
    profile_file, task, n_workers = job
    os.environ[ENV_THREADS] = "1"  # read by choose_threads before each training and generation
    os.environ[ENV_SIBLINGS] = str(n_workers - 1)  # the progress line does not call its siblings "busy"

    study = Study(profile_file, progress=False)
    if task[0] == "judge":
        _, overrides, what = task
        judged = study.variant(overrides) if overrides else study
        judged.judges.classifier() if what == "classifier" else judged.judges.detector(what)
        return [f"judge {what}{' (variant)' if overrides else ''}"]
    _, spec, generate = task
    return compute(study, [Cell.parse(spec)], generate)


def judge_tasks(study) -> list[tuple]:
    """The judges a run trains (the clean classifier and one trigger detector per attack of the grid, and
    the same without photometric augmentation where the profile's judges use it: chapter 04's ablation)
    that are not in the store yet, as ``("judge", overrides, what)`` tasks of :func:`_work`."""

    variants = [{}]
    if wants_ablation(study.cfg.judges):
        variants.append({"judges": {k: 0.0 for k in PHOTOMETRIC_KEYS}})
    tasks = []
    for overrides in variants:
        judged = study.variant(overrides) if overrides else study
        for what in ["classifier", *judged.cfg.attacks]:
            if not judged.judges.cached(what):
                tasks.append(("judge", overrides, what))
    return tasks


def _spec(cell) -> str:
    """A cell's command-line spelling (the inverse of ``Cell.parse``)."""
    text = "clean" if cell.kind == "clean" else f"{cell.kind}:{cell.ratio!r}"
    if cell.pool != "random":
        text += f":{cell.pool}"
    return text + (f"@{cell.seed}" if cell.seed else "")


def compute_cells(study, cells, generate: bool = False, train_only=(), judges: bool = False) -> int:
    """Fine-tune ``cells`` (sampling their generation sets too with ``generate``) and ``train_only`` (never
    sampled), and with ``judges`` train the missing judges (:func:`judge_tasks`), in parallel worker
    processes, one task at a time each, the longest first (:func:`worker_count` workers);
    returns the number of workers used (1: nothing was started, the caller computes it all itself). The
    pre-trained model is made first, here, so that no two workers train it."""
    tasks = [("cell", _spec(c), generate) for c in cells]
    tasks += [("cell", _spec(c), False) for c in train_only if c not in cells]
    if not workers_allowed(study.device):
        return 1
    if judges:
        tasks += judge_tasks(study)  # shorter than a fine-tuning: they fill the workers' last minutes
    if len(tasks) < 2:
        return 1
    n = worker_count(len(tasks))
    if n < 2:
        return 1
    study.pretrain_key  # noqa: B018 (installs the shipped base DM, or trains it, once)
    folder = Path(study.run_dir) / ".workers"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as f:
        yaml.safe_dump(study.cfg.as_dict(), f, sort_keys=False)
        profile_file = f.name
    try:
        with multiprocessing.get_context("spawn").Pool(n) as pool:
            # one task per message: a worker that finishes early takes the next task (no static split)
            list(pool.imap_unordered(_work, [(profile_file, task, n) for task in tasks], chunksize=1))
    except Exception as err:  # the caller computes whatever is missing itself
        print(f"note: parallel workers stopped ({type(err).__name__}: {err}); computing the rest one "
              f"cell after another")
    finally:
        Path(profile_file).unlink(missing_ok=True)
    return n


def compute(study: Study, cells: list[Cell] | None = None, generate: bool = True) -> list[str]:
    """Compute (or find cached) the pre-trained model and, for each cell (default: all of the profile,
    every training-seed replicate included), its fine-tuned model and, if ``generate``, its generation
    sets; returns one line per step.

    This is what ``bibad compute`` runs, e.g. under ``accelerate launch`` on several GPUs, or once per
    cell (``--cells badnets1:0.05@1``) as independent jobs sharing one store: artifacts are
    content-addressed, so the notebooks then find them instead of recomputing."""
    done = []
    if study.pretrain_key:
        done.append(f"pretrain {study.pretrain_key}")
    for cell in study.cells(with_seeds=True) if cells is None else cells:
        done.append(f"finetune {cell.name}: {study.model_key(cell)}")
        if generate:
            done.append(f"generate {cell.name}: {study.generation_key(cell)}")
    return done
