"""``bibad run``: execute the stage notebooks of a profile with papermill, in order, skipping those whose
executed copy is up to date, with the kernels' live progress on the terminal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.config import PROFILES_DIR, load_profile, profile_path
from bibad_utils.progress import ENV_FILE, Monitor, summary
from bibad_utils.publish.keys import code_digest, execution_key, side_outputs, stamp, up_to_date
from bibad_utils.publish.notebooks import NOTEBOOKS_DIR, find_stages, mark_failed_execution, select_stages

KERNEL_NAME = "python3"


def _profile_parameter(profile: str) -> str:
    """What the notebooks receive as ``profile``: a shipped name as is, a file as an absolute path
    (the kernel runs in the repository root, not where the command was typed)."""
    path = profile_path(profile)
    return profile if path == PROFILES_DIR / f"{profile}.yaml" else str(path)


def _check_kernel(out):
    """Warn when the ``python3`` kernel would start another interpreter than this one."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
    except NoSuchKernel:
        return
    if argv0 not in ("python", "python3", sys.executable) and Path(argv0).resolve() != Path(sys.executable).resolve():
        print(f"warning: kernel {KERNEL_NAME!r} runs {argv0}, not {sys.executable}; "
              f"register this environment's kernel with `{sys.executable} -m ipykernel install --sys-prefix "
              f"--name {KERNEL_NAME}`", file=out)


# The kernel's own log: ERROR hides its start-up warning about TCP transport without encryption (a
# local kernel's sockets listen on the loopback interface only); a failing cell still shows in full.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
PROGRESS_FILE = ".progress.json"


def run_notebooks(profile: str = "demo", overrides: dict | None = None, notebooks_dir=NOTEBOOKS_DIR,
                  only=None, start=None, log_output: bool = False, out=None, force: bool = False,
                  progress_interval: float = 30.0, tty: bool | None = None) -> int:
    """Execute the selected stage notebooks in order with papermill; returns a process exit code.

    The profile (with ``overrides``) is validated before any notebook starts. Each notebook receives
    ``profile`` and ``overrides`` as parameters and runs in the repository root; its executed copy is
    ``<run_dir>/executed/<name>.ipynb``. The first failure stops the run (exit code 1) and prints the
    path of the executed copy, which holds the traceback. Per-notebook wall times (seconds) are
    written to ``<run_dir>/executed/run.json``.

    A notebook is not executed again when its executed copy is up to date (:func:`up_to_date`: same
    notebook source, resolved profile, package code and key package versions, and its claims/figures
    files unchanged), unless ``force``; once one notebook executes, every later selected one does too,
    since it may read what the earlier one wrote.

    While a notebook runs, its kernel reports long loops (stage, cell, step/total, rate, ETA) to
    ``<run_dir>/executed/.progress.json`` (:mod:`bibad_utils.progress`), which is shown on ``out``: an
    updating line on a terminal (``tty`` None: ``out.isatty()``), else a line every
    ``progress_interval`` seconds. The run ends with the time of each notebook.
    """
    out = out or sys.stdout
    import papermill
    from papermill.exceptions import PapermillExecutionError

    overrides = overrides or {}
    cfg = load_profile(profile, overrides)
    stages = find_stages(notebooks_dir)
    if not stages:
        print(f"no stage notebooks (NN_name.ipynb) in {notebooks_dir}", file=out)
        return 2
    chosen = select_stages(stages, only, start)
    executed = Path(cfg["run_dir"]) / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    _check_kernel(out)
    if log_output:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"profile {cfg['name']}: {cfg['description']}", file=out)
    print(f"{len(chosen)} notebook(s) -> {executed}", file=out, flush=True)
    record = {"profile": cfg["name"], "overrides": overrides, "notebooks": []}
    parameters = {"profile": _profile_parameter(profile), "overrides": overrides}
    started = time.perf_counter()
    status = 0
    run_dir, code = Path(cfg["run_dir"]), code_digest()
    progress_file = executed / PROGRESS_FILE
    earlier = _earlier_times(executed / "run.json")
    previous_env = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = str(progress_file)  # the kernels inherit it
    for i, src in enumerate(chosen, 1):
        dst = executed / src.name
        head = f"[{i}/{len(chosen)}] {src.stem} ..."
        key = execution_key(src, cfg, code)
        if not force and up_to_date(dst, key, run_dir):
            record["notebooks"].append({"name": src.stem, "seconds": 0.0, "status": "up to date"})
            print(f"{head} up to date (--force re-executes it)", file=out, flush=True)
            continue
        force = True  # every later notebook may read what this one writes
        print(f"{head} running", file=out, flush=True)
        progress_file.unlink(missing_ok=True)
        t0 = time.perf_counter()
        wall0 = time.time() - 1.0  # file times have coarse resolution on some file systems
        monitor = Monitor(progress_file, src.stem, out=out, tty=tty, interval=progress_interval,
                          expected=earlier.get(src.stem))
        try:
            with monitor if not log_output else contextlib.nullcontext():
                papermill.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=KERNEL_NAME,
                                           cwd=str(REPO_ROOT), execution_timeout=cfg["cell_timeout"],
                                           progress_bar=False, log_output=log_output,
                                           extra_arguments=KERNEL_ARGUMENTS)
        except Exception as err:
            seconds = time.perf_counter() - t0
            what = f"{err.ename}: {err.evalue}" if isinstance(err, PapermillExecutionError) else repr(err)
            mark_failed_execution(dst, what)
            print(f"{head} FAILED after {seconds:.1f} s ({what})", file=out)
            print(f"the executed notebook with the traceback: {dst}", file=out, flush=True)
            record["notebooks"].append({"name": src.stem, "seconds": round(seconds, 2), "status": "failed"})
            status = 1
            break
        seconds = time.perf_counter() - t0
        stamp(dst, key, side_outputs(run_dir, wall0))
        record["notebooks"].append({"name": src.stem, "seconds": round(seconds, 2), "status": "ok"})
        print(f"{head} ok {seconds:.1f} s", file=out, flush=True)
    if previous_env is None:
        os.environ.pop(ENV_FILE, None)
    else:
        os.environ[ENV_FILE] = previous_env
    progress_file.unlink(missing_ok=True)
    record["total_seconds"] = round(time.perf_counter() - started, 2)
    (executed / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(summary(record, executed, cfg["name"], book=status == 0), file=out)
    if status == 0:
        print(f"done in {record['total_seconds']:.1f} s", file=out)
    return status


def _earlier_times(path: Path) -> dict[str, float]:
    """Seconds of each notebook that executed in the run recorded in ``path`` (an earlier run.json)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {nb["name"]: nb["seconds"] for nb in record.get("notebooks", []) if nb.get("status") == "ok"}
