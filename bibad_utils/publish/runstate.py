"""The state of a run directory shared by the commands that use it: its lock (one ``bibad run`` at a time;
``bibad book`` reads under a shared lock) and its record ``executed/run.json``, written as the run goes
(``running`` with each notebook's state, then ``ok``, ``failed`` or ``interrupted``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from bibad_utils.files import save_json

LOCK_FILE = ".lock"
# A file system that refuses writes: a read-only copy of a finished run is still read (nothing to run).
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunLocked(RuntimeError):
    """Another process holds a conflicting lock on a run directory; the message names it and the remedy."""

    def __init__(self, run_dir: Path, holder: dict | None):
        self.run_dir, self.holder = Path(run_dir), holder
        if holder:
            who = (f"pid {holder.get('pid')} (`{holder.get('command', '?')}`, started "
                   f"{holder.get('started', '?')})")
        else:
            who = "another process (a `bibad book` reading it, or a run that has just started)"
        super().__init__(f"run directory {self.run_dir} is in use by {who}: wait for it to finish or stop it, "
                         f"then try again (a run directory is written by one command at a time, and read "
                         f"while none writes it)")


def lock_holder(path: Path) -> dict | None:
    """The pid, command and start time a running ``bibad run`` wrote into a lock file, or None (empty, not
    readable, or its process is gone: the lock is then held by a reader, which writes nothing)."""
    try:
        info = json.loads(Path(path).read_text())
        os.kill(int(info["pid"]), 0)
    except PermissionError:  # the process exists, under another user
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _open_lock(path: Path) -> int | None:
    """A descriptor of the lock file (created when missing); None where the run directory is read-only and
    has no lock file (nothing can write it, so there is nothing to exclude)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno not in READ_ONLY:
            raise
    try:
        return os.open(path, os.O_RDONLY)  # flock does not need write access
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str | None = None, shared: bool = False) -> Iterator[bool]:
    """Hold the lock of ``run_dir`` (``fcntl.flock`` on ``<run_dir>/.lock``) for the block; yields whether
    a lock is held (False: no run directory, or a read-only one without a lock file).

    Exclusive (a run, which writes): its pid, ``command`` and start time go into the file, for the message
    of whoever is refused. Shared (``shared``, a reader such as the book): several at once, never while a
    run holds it. A conflicting holder raises :class:`RunLocked` at once, without waiting. The kernel drops
    the lock when the process ends, however it ends (a crash, ``kill -9``)."""
    path = Path(run_dir) / LOCK_FILE
    fd = _open_lock(path) if Path(run_dir).is_dir() else None
    if fd is None:
        yield False
        return
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(run_dir, lock_holder(path)) from None
    try:
        if not shared:
            info = {"pid": os.getpid(), "command": command or " ".join(["bibad", *sys.argv[1:]]),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            with contextlib.suppress(OSError):  # a read-only lock file: held all the same
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        yield True
    finally:
        if not shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released: nobody's name stays in it
        os.close(fd)


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so that a run stopped by ``kill`` (or a batch system) records it
    the way it records Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (in the main thread only; elsewhere nothing
    changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunRecord:
    """``executed/run.json`` kept current while a run goes: ``status`` (running, ok, failed, interrupted),
    the pid and start time, each notebook done with its seconds and status, the one ``running`` and those
    still ``pending``; ``interrupted_in`` names the notebook a stopped run was executing.

    Saved atomically at every change. A directory that refuses the write (read-only) is tolerated as
    long as nothing has executed; :meth:`writable` tells the runner before a notebook would run."""

    def __init__(self, path: Path, profile: str, overrides: dict, names: list[str]):
        self.path = Path(path)
        self.data = {"profile": profile, "overrides": overrides, "status": "running", "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "running": None, "notebooks": [],
                     "pending": list(names)}
        self.unsaved: OSError | None = None
        self.save()

    def save(self) -> None:
        try:
            save_json(self.path, self.data)
            self.unsaved = None
        except OSError as err:
            if err.errno not in READ_ONLY and err.errno != errno.ENOSPC:
                raise
            self.unsaved = OSError(err.errno, err.strerror, str(self.path))  # not the temporary name

    def writable(self) -> None:
        """Raise the error of the last failed save (the run directory refuses writes), if any."""
        if self.unsaved is not None:
            raise self.unsaved

    def start(self, name: str) -> None:
        self.data["running"] = name
        self.save()

    def done(self, name: str, seconds: float, status: str) -> None:
        """Record one notebook's end (``ok``, ``up to date``, ``failed``, ``interrupted``)."""
        self.data["notebooks"].append({"name": name, "seconds": round(seconds, 2), "status": status})
        self.data["pending"] = [n for n in self.data["pending"] if n != name]
        self.data["running"] = None
        if status == "interrupted":
            self.data["interrupted_in"] = name
        self.save()

    def end(self, status: str, total_seconds: float) -> None:
        """Record the run's end: ``ok``, ``failed`` or ``interrupted`` (in the notebook still running, if any)."""
        if status == "interrupted" and self.data["running"]:
            self.data["interrupted_in"] = self.data["running"]
        self.data.update(status=status, total_seconds=round(total_seconds, 2), running=None)
        self.save()
