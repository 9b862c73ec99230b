"""``bibad run``: execute the stage notebooks of a profile with papermill, in order, skipping those whose
executed copy is up to date, with the kernels' live progress on the terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.config import PROFILES_DIR, profile_path
from bibad_utils.progress import ENV_FILE, Monitor, read_state, summary
from bibad_utils.publish.keys import code_digest, execution_key, side_outputs, stale_reason, stamp
from bibad_utils.publish.notebooks import NOTEBOOKS_DIR, find_stages, mark_failed_execution, select_stages
from bibad_utils.publish.runstate import RunRecord, Terminated, run_lock, sigterm_interrupts
from bibad_utils.typed_config import Profile, load_config

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
# Reasons to execute a notebook that need no comment on the "running" line (the usual ones).
QUIET_REASONS = ("not executed yet", "its source, the profile or the package code changed")


def run_notebooks(profile: str = "demo", overrides: dict | None = None, notebooks_dir=NOTEBOOKS_DIR,
                  only=None, start=None, log_output: bool = False, out=None, force: bool = False,
                  progress_interval: float = 30.0) -> int:
    """Execute the selected stage notebooks in order with papermill; returns a process exit code.

    The profile (with ``overrides``) is validated before any notebook starts. Each notebook receives
    ``profile`` and ``overrides`` as parameters and runs in the repository root; its executed copy is
    ``<run_dir>/executed/<name>.ipynb``. The first failure stops the run (exit code 1) and prints the
    path of the executed copy, which holds the traceback.

    The run holds the run directory's lock (:func:`~bibad_utils.publish.runstate.run_lock`): a second
    command on the same run directory raises RunLocked at once. ``<run_dir>/executed/run.json``
    (:class:`~bibad_utils.publish.runstate.RunRecord`) says ``running`` from the start, each notebook's
    state and wall time as it ends, and finally ``ok``, ``failed`` or, on Ctrl-C or SIGTERM,
    ``interrupted`` with the notebook that was executing (whose copy gets an error saying so); the
    KeyboardInterrupt then propagates.

    A notebook is not executed again when its executed copy is up to date (:func:`stale_reason` None: same
    notebook source, resolved profile, package code and key package versions, its cells as the run left
    them, and its claims/figures files unchanged), unless ``force``; a copy edited by hand or damaged
    runs again, with the reason printed. Once one notebook executes, every later selected one does too,
    since it may read what the earlier one wrote. A read-only run directory with nothing to execute is
    reported up to date (exit 0); one with something to execute raises the OSError of the refused write.

    While a notebook runs, its kernel reports long loops (stage, cell, step/total, rate, ETA) to
    ``<run_dir>/executed/.progress.json`` (:mod:`bibad_utils.progress`), which is shown on ``out``: an
    updating line on a terminal (``out.isatty()``), else a line every
    ``progress_interval`` seconds. The run ends with the time of each notebook.
    """
    out = out or sys.stdout
    overrides = overrides or {}
    cfg = load_config(profile, overrides)
    stages = find_stages(notebooks_dir)
    if not stages:
        print(f"no stage notebooks (NN_name.ipynb) in {notebooks_dir}", file=out)
        return 2
    chosen = select_stages(stages, only, start)
    run_dir = Path(cfg.run_dir)
    executed = run_dir / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, command=f"bibad run --profile {profile}"), sigterm_interrupts():
        _check_kernel(out)
        if log_output:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"profile {cfg.name}: {cfg.description}", file=out)
        print(f"{len(chosen)} notebook(s) -> {executed}", file=out, flush=True)
        earlier = _earlier_times(executed / "run.json")  # read before this run's record replaces it
        record = RunRecord(executed / "run.json", cfg.name, overrides, [s.stem for s in chosen])
        previous_env = os.environ.get(ENV_FILE)
        os.environ[ENV_FILE] = str(executed / PROGRESS_FILE)  # the kernels inherit it
        started = time.perf_counter()
        try:
            status = _execute(chosen, cfg, profile, overrides, record, earlier, out, force, log_output,
                              progress_interval)
        except KeyboardInterrupt:
            record.end("interrupted", time.perf_counter() - started)
            raise
        finally:
            if previous_env is None:
                os.environ.pop(ENV_FILE, None)
            else:
                os.environ[ENV_FILE] = previous_env
            with contextlib.suppress(OSError):
                (executed / PROGRESS_FILE).unlink(missing_ok=True)
        record.end("ok" if status == 0 else "failed", time.perf_counter() - started)
    if record.unsaved is not None:
        if any(nb["status"] != "up to date" for nb in record.data["notebooks"]):
            raise record.unsaved  # notebooks executed, and their record could not be written
        print(f"note: {executed / 'run.json'} not updated ({record.unsaved.strerror}); nothing needed executing",
              file=out)
    print(summary(record.data, executed, cfg.name, book=status == 0), file=out)
    if status == 0:
        print(f"done in {record.data['total_seconds']:.1f} s", file=out)
    return status


def _execute(chosen: list[Path], cfg: Profile, profile: str, overrides: dict, record: RunRecord, earlier: dict,
             out, force: bool, log_output: bool, progress_interval: float) -> int:
    """Execute (or skip, when up to date) each notebook of ``chosen``, recording each in ``record``;
    returns 0, or 1 at the first failure. Ctrl-C or SIGTERM records the running notebook as interrupted,
    marks its executed copy, and propagates."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir = Path(cfg.run_dir)
    executed, code = run_dir / "executed", code_digest()
    progress_file = executed / PROGRESS_FILE
    parameters = {"profile": _profile_parameter(profile), "overrides": overrides}
    for i, src in enumerate(chosen, 1):
        dst = executed / src.name
        head = f"[{i}/{len(chosen)}] {src.stem} ..."
        key = execution_key(src, cfg, code)
        reason = None if force else stale_reason(dst, key, run_dir)
        if not force and reason is None:
            record.done(src.stem, 0.0, "up to date")
            print(f"{head} up to date (--force re-executes it)", file=out, flush=True)
            continue
        force = True  # every later notebook may read what this one writes
        record.writable()  # a read-only run directory stops here, before any kernel
        shown = f" ({reason})" if reason and reason not in QUIET_REASONS else ""
        print(f"{head} running{shown}", file=out, flush=True)
        progress_file.unlink(missing_ok=True)
        record.start(src.stem)
        t0 = time.perf_counter()
        wall0 = time.time() - 1.0  # file times have coarse resolution on some file systems
        monitor = Monitor(progress_file, src.stem, out=out, interval=progress_interval,
                          expected=earlier.get(src.stem))
        try:
            with monitor if not log_output else contextlib.nullcontext():
                papermill.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=KERNEL_NAME,
                                           cwd=str(REPO_ROOT), execution_timeout=cfg.cell_timeout,
                                           progress_bar=False, log_output=log_output,
                                           extra_arguments=KERNEL_ARGUMENTS)
        except KeyboardInterrupt as err:
            what = f"interrupted ({'SIGTERM' if isinstance(err, Terminated) else 'Ctrl-C'})"
            mark_failed_execution(dst, what)
            print(f"{head} INTERRUPTED after {time.perf_counter() - t0:.1f} s", file=out, flush=True)
            record.done(src.stem, time.perf_counter() - t0, "interrupted")
            raise
        except Exception as err:
            seconds = time.perf_counter() - t0
            what = f"{err.ename}: {err.evalue}" if isinstance(err, PapermillExecutionError) else repr(err)
            mark_failed_execution(dst, what)
            print(f"{head} FAILED after {seconds:.1f} s ({what})", file=out)
            print(f"the executed notebook with the traceback: {dst}", file=out, flush=True)
            record.done(src.stem, seconds, "failed")
            return 1
        seconds = time.perf_counter() - t0
        stamp(dst, key, side_outputs(run_dir, wall0))
        record.done(src.stem, seconds, "ok")
        print(f"{head} ok {seconds:.1f} s", file=out, flush=True)
    return 0


def _earlier_times(path: Path) -> dict[str, float]:
    """Seconds of each notebook that executed in the run recorded in ``path`` (an earlier run.json)."""
    record = read_state(path) or {}
    return {nb["name"]: nb["seconds"] for nb in record.get("notebooks", []) if nb.get("status") == "ok"}
