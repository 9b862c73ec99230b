"""Live progress of a notebook run, from the kernel to the terminal, and the choice of torch threads.

The kernel side: long loops (a training, a generation) open a :class:`Task` and update it; the task
writes a small JSON file (stage, label, done/total, rate, ETA, threads, how busy the machine is) to the
path in the environment variable ``BIBAD_PROGRESS``, at most every ``WRITE_EVERY_S`` seconds, by an
atomic rename. Without that variable (a notebook opened in Jupyter) a task costs nothing.

The runner side: ``bibad run`` sets the variable for its kernels and a :class:`Monitor` polls the file.
On a terminal it keeps one updating line; without one (CI, a log file) it prints a plain line every
``interval`` seconds (30 by default), so a log shows the run is alive and how long the current stage has
left.

Threads: :func:`choose_threads` sets torch's thread count, by default to every core of this process, the
same count on every run: a CPU training's float rounding depends on the thread count (a classifier trained
at 1 and at 2 threads ends with different weights), so a count that followed the load would give two runs
of one profile on one machine different numbers. ``BIBAD_THREADS`` (else ``OMP_NUM_THREADS``) fixes another
count; ``BIBAD_THREADS=auto`` trades that for speed on a busy machine: :func:`idle_cores` measures the cores
that no other process uses (from ``/proc/stat`` over a short window, minus this process's own use) and the
count follows them, re-checked while a task runs (two torch threads on a 2-core machine whose other core is
busy run many times slower than one). The progress line says when the machine is busy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from bibad_utils.base import ConfigError
from bibad_utils.files import load_json, save_json

ENV_FILE = "BIBAD_PROGRESS"
ENV_THREADS = "BIBAD_THREADS"
# set by bibad_utils.parallel in each worker: how many other workers of the same run share the machine
# (their cores are this run's, not "other processes" that make the machine busy)
ENV_SIBLINGS = "BIBAD_SIBLING_WORKERS"
WRITE_EVERY_S = 0.5
BUSY_CORES = 0.5  # other processes using at least this many cores make the machine "busy"

# ----------------------------------------------------------------------------------------------
# threads


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; None where there is no such file."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [float(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # user .. steal (guest time is already inside user)
    return total - idle, total


def cpu_sample():
    """A point of (machine CPU times, this process's CPU time, monotonic time) for :func:`idle_since`."""
    return _cpu_times(), time.process_time(), time.monotonic()


def idle_since(before) -> tuple[float, float]:
    """(idle cores, cores used by OTHER processes) between the :func:`cpu_sample` ``before`` and now:
    the machine's busy time minus this process's own CPU time. Where ``/proc/stat`` is missing or no
    time has passed: (available cores, 0)."""
    n = available_cores()
    a, own0, t0 = before
    b, own1, t1 = cpu_sample()
    if a is None or b is None or b[1] <= a[1]:
        return float(n), 0.0
    ncpu = os.cpu_count() or n
    busy_all = ncpu * (b[0] - a[0]) / (b[1] - a[1])  # cores busy on the whole machine
    own = (own1 - own0) / max(t1 - t0, 1e-6)
    others = max(0.0, busy_all - own)
    return min(float(n), max(0.0, n - others)), others


def idle_cores(window: float = 0.3) -> tuple[float, float]:
    """(idle cores, cores used by other processes) measured over the next ``window`` seconds."""
    before = cpu_sample()
    time.sleep(window)
    return idle_since(before)


_BUSY: dict = {"others": 0.0, "threads": None}


def _threads_setting() -> str:
    """What the user set: ``BIBAD_THREADS``, else ``OMP_NUM_THREADS``; "" when neither is set."""
    return os.environ.get(ENV_THREADS, "").strip() or os.environ.get("OMP_NUM_THREADS", "").strip()


def _fixed_threads() -> int | None:
    """The fixed thread count: ``BIBAD_THREADS``, else ``OMP_NUM_THREADS``, else every core of this process
    (:func:`available_cores`); None for ``auto`` (follow the idle cores)."""
    fixed = _threads_setting()
    if fixed == "auto":
        return None
    if not fixed:
        return available_cores()
    try:
        n = int(fixed)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(ENV_THREADS, fixed, "a positive integer or auto")
    return n


def busy_warning(window: float = 0.3) -> str | None:
    """A warning for the start of a run at the default thread count (every core) on a machine that other
    processes keep busy, where threads that wait on each other can make it many times slower; None when the
    count is set (``BIBAD_THREADS`` / ``OMP_NUM_THREADS``), the machine has one core, or it is idle."""
    if _threads_setting():
        return None
    cores = available_cores()
    others = idle_cores(window)[1] if cores > 1 else 0.0
    if others < BUSY_CORES:
        return None
    return (f"note: other processes use {others:.1f} of {cores} cores; at the default {cores} torch threads this run "
            f"can be many times slower. --threads 1 keeps the numbers the same on every run at one thread; "
            f"--threads auto follows the idle cores (fastest, but the last digits of CPU trainings follow the load)")


def _threads_for(idle: float) -> int:
    return max(1, int(idle + 0.25))  # 1.8 idle cores of 2 still take 2 threads


def choose_threads(window: float = 0.3) -> int:
    """Set torch's intra-op threads for the next long computation and return the count.

    ``BIBAD_THREADS`` (an integer), else ``OMP_NUM_THREADS``, fixes the count; unset, it is every core of this
    process, so that the numbers do not depend on the load; ``BIBAD_THREADS=auto``: the number of idle cores
    (:func:`idle_cores` over ``window`` seconds), rounded, at least 1, the load seen kept for the progress
    line (:func:`machine_note`)."""
    import torch

    fixed = _fixed_threads()
    if fixed is not None:  # no measurement needed (a running task still reports the load)
        n = fixed
    else:
        idle, _BUSY["others"] = idle_cores(window)
        n = _threads_for(idle)
    torch.set_num_threads(n)
    _BUSY["threads"] = n
    return n


def _siblings() -> int:
    text = os.environ.get(ENV_SIBLINGS, "").strip()
    return int(text) if text.isdigit() else 0


def machine_note(others: float | None = None) -> str | None:
    """``"busy: other processes use 1.2 of 2 cores"`` when the last measurement saw the machine busy.
    In a worker of :mod:`bibad_utils.parallel` the cores of its sibling workers (at most one each, 1
    thread) are the run's own and are not counted."""
    others = _BUSY["others"] if others is None else others
    outside = max(0.0, others - _siblings())
    if outside >= BUSY_CORES:
        return f"busy: other processes use {outside:.1f} of {available_cores()} cores"
    return None


# ----------------------------------------------------------------------------------------------
# the kernel side


RECHECK_S = 20.0  # how often a running task looks at the load again


class Task:
    """One long loop reported to ``$BIBAD_PROGRESS`` (``path``; a no-op without it), e.g.
    ``with Task("finetune", "badnets1 p=10%", 600) as t: ... t.update(step)``. While it reports (inside a
    ``bibad run``), it looks at the load every RECHECK_S seconds and, when the thread count is auto,
    follows the idle cores: another process starting on a 2-core machine takes the loop to 1 thread."""

    def __init__(self, stage: str, label: str, total: int, unit: str = "step", done: int = 0,
                 path: str | os.PathLike | None = None, clock=time.monotonic):
        target = path if path is not None else os.environ.get(ENV_FILE)
        self.path = Path(target) if target else None
        self.stage, self.label, self.total, self.unit = stage, label, int(total), unit
        self.clock = clock
        self.first = self.done = int(done)
        self.started = clock()
        self._written = None
        self._sample, self._checked = cpu_sample(), clock()

    @property
    def rate(self) -> float | None:
        """Units per second since the task started (None before the first one)."""
        elapsed = self.clock() - self.started
        return None if self.done <= self.first or elapsed <= 0 else (self.done - self.first) / elapsed

    def state(self) -> dict:
        rate = self.rate
        eta = (self.total - self.done) / rate if rate else None
        import torch
        return {"stage": self.stage, "label": self.label, "done": self.done, "total": self.total,
                "unit": self.unit, "rate": rate, "eta_s": eta, "threads": torch.get_num_threads(),
                "busy": machine_note(), "time": time.time(), "pid": os.getpid()}

    def update(self, done: int, force: bool = False) -> None:
        """Record that ``done`` units of ``total`` are finished; writes at most every WRITE_EVERY_S s."""
        self.done = int(done)
        if self.path is None:
            return
        now = self.clock()
        if now - self._checked >= RECHECK_S:
            self._recheck(now)
        if force or self._written is None or now - self._written >= WRITE_EVERY_S or self.done >= self.total:
            self._written = now
            write_state(self.path, self.state())

    def _recheck(self, now: float) -> None:
        import torch

        idle, others = idle_since(self._sample)
        self._sample, self._checked = cpu_sample(), now
        _BUSY["others"] = others
        if _fixed_threads() is None and _threads_for(idle) != torch.get_num_threads():
            torch.set_num_threads(_threads_for(idle))

    def close(self) -> None:
        self.update(self.done, force=True)

    def __enter__(self) -> "Task":
        self.update(self.done, force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Bar:
    """A tqdm bar (``show``) and a live :class:`Task` moved together by increments, for loops that
    report both to a notebook and to ``bibad run``: ``with Bar("classifier", "resnet", 300) as b: ...
    b.update(1)``. ``label`` may change while it runs (:meth:`relabel`)."""

    def __init__(self, stage: str, label: str, total: int, unit: str = "step", show: bool = True):
        from tqdm.auto import tqdm

        self.task = Task(stage, label, total, unit)
        self.bar = tqdm(total=total, desc=f"{stage} {label}".strip(), unit=unit, disable=not show, leave=False)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.task.update(self.task.done + n)

    def relabel(self, label: str) -> None:
        self.task.label = label
        self.bar.set_description(f"{self.task.stage} {label}".strip(), refresh=False)
        self.task.update(self.task.done, force=True)

    def close(self) -> None:
        self.bar.close()
        self.task.close()

    def __enter__(self) -> "Bar":
        self.task.update(self.task.done, force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_state(path: Path, state: dict) -> None:
    """Write ``state`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    with contextlib.suppress(OSError):  # progress is best effort: never fail a computation over it
        save_json(path, state)


def read_state(path: Path) -> dict | None:
    """The JSON last written to ``path`` (a state, a run record), or None (missing or unreadable)."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# the runner side


def clock_text(seconds: float | None) -> str:
    """``75.4`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``, None -> ``"?"``."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_line(notebook: str, elapsed: float, state: dict | None, expected: float | None = None) -> str:
    """One progress line, e.g.
    ``02_finetuning 3:12 | finetune badnets1 p=10% 350/600 | 2.9 step/s | ETA 1:26 | 1 thread``;
    ``expected``: the notebook's time in an earlier run (shown as ``3:12 of ~22:05``)."""
    parts = [f"{notebook} {clock_text(elapsed)}" + (f" of ~{clock_text(expected)}" if expected else "")]
    if state:
        unit, rate, threads = state["unit"], state["rate"], state["threads"]
        parts.append(f"{state['stage']} {state['label']} {state['done']}/{state['total']}".replace("  ", " ").strip())
        parts.append(f"{rate:.2f} {unit}/s" if rate else f"- {unit}/s")
        parts.append(f"ETA {clock_text(state['eta_s'])}")
        if threads:
            parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
        if state["busy"]:
            parts.append(state["busy"])
    return " | ".join(parts)


class Monitor:
    """Shows the progress file of a running notebook on ``out``.

    tty: an updating line (rewritten every ``tick`` s); else a plain line every ``interval`` s. Use as
    a context manager (a background thread polls) or call :meth:`poll` yourself (tests)."""

    def __init__(self, path, notebook: str, out=None, tty: bool | None = None, interval: float = 30.0,
                 tick: float = 0.5, clock=time.monotonic, expected: float | None = None):
        self.path, self.notebook, self.expected = Path(path), notebook, expected
        self.out = out or sys.stdout
        if tty is None:
            isatty = getattr(self.out, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty, self.interval, self.tick, self.clock = tty, float(interval), float(tick), clock
        self.started = clock()
        self.wall_started = time.time()
        self._last_print = self.started
        self._shown = 0  # width of the line on screen (TTY)
        self._stop = threading.Event()
        self._thread = None

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        state = read_state(self.path)
        if state and state["time"] < self.wall_started - 1.0:
            state = None  # left by an earlier notebook
        return format_line(self.notebook, now - self.started, state, self.expected)

    def poll(self, now: float | None = None) -> str | None:
        """Show the current line if it is due; returns what was written (None: nothing)."""
        now = self.clock() if now is None else now
        text = self.line(now)
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns - 1
            text = text[:width]
            self.out.write("\r" + text + " " * max(0, self._shown - len(text)))
            self.out.flush()
            self._shown = len(text)
            return text
        if now - self._last_print >= self.interval:
            self._last_print = now
            print(text, file=self.out, flush=True)
            return text
        return None

    def clear(self) -> None:
        """Remove the updating line (TTY) so the next message starts on a clean line."""
        if self.tty and self._shown:
            self.out.write("\r" + " " * self._shown + "\r")
            self.out.flush()
            self._shown = 0

    def _loop(self):
        while not self._stop.wait(self.tick if self.tty else min(self.tick * 4, self.interval)):
            self.poll()

    def __enter__(self) -> "Monitor":
        self._thread = threading.Thread(target=self._loop, name="bibad-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.clear()


def summary(record: dict, executed: Path, profile: str, book: bool = True) -> str:
    """The end of a run: the time of each notebook, the total, where the executed notebooks are and
    (``book``) the command that builds the book from them."""
    rows = [f"{'notebook':<20} {'time':>8}  status"]
    for nb in record["notebooks"]:
        rows.append(f"{nb['name']:<20} {clock_text(nb['seconds']):>8}  {nb['status']}")
    rows.append(f"{'total':<20} {clock_text(record.get('total_seconds')):>8}")
    rows.append(f"executed notebooks: {executed}")
    if book:
        rows.append(f"the book: `bibad book --profile {profile}` (make book runs it) writes _build/html/index.html")
    return "\n".join(rows)
