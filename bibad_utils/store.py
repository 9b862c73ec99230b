"""Content-addressed artifacts: a result is computed once and reused while its inputs stay the same.

An artifact lives in ``<root>/<stage>/<key>/``; its key hashes the stage, its parameters and the keys
of the artifacts it was computed from, so changing any of them gives a new key (and leaves the old
artifact in place). It is written into ``<root>/<stage>/.tmp-<key>-<pid>-<random>/`` and renamed into place
once complete; a complete artifact is one with a ``manifest.json``. A build that fails leaves nothing
but its ``.work-<key>/`` folder, where a long build keeps checkpoints to resume from.

The manifest lists every file of the artifact with its size and sha256. Each reuse checks the files
against it (sizes, hashes, and the structure of ``.safetensors``, ``.npy`` and ``.json`` files): a file
truncated, replaced or changed in place after the build raises
:class:`DamagedArtifactError`, naming the stage, the key, the path and the remedy, instead of a
traceback from deep inside a loader.

    store = ArtifactStore("runs/demo/artifacts")
    path = store.cached("poison", params, inputs=[data_key], build_fn=lambda art: ...)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from bibad_utils.base import REPO_ROOT, ConfigError
# the file helpers live in bibad_utils.files; re-exported here, where the stages have always found them
from bibad_utils.files import (check_file_structure, checksum_problems, file_sha256, files_record,  # noqa: F401
                               load_array, load_json, record_problems, save_array, save_json, to_jsonable)

KEY_LENGTH = 16
MANIFEST = "manifest.json"
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "numpy")


def canonical_json(obj: Any) -> str:
    """One canonical text per value: sorted keys, no spaces; equal parameters give equal text."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def artifact_key(stage: str, params: dict, inputs=()) -> str:
    """16 hex characters of the SHA-256 of (stage, params, sorted input keys)."""
    _check_stage(stage)
    payload = {"stage": stage, "params": params, "inputs": sorted(str(k) for k in inputs)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:KEY_LENGTH]


def _check_stage(stage):
    if not isinstance(stage, str) or not stage or stage.startswith(".") or "/" in stage or "\\" in stage:
        raise ConfigError("stage", stage, "a non-empty folder name without '/' that does not start with '.'")


def _remove_stale_tmp(stage_dir: Path, key: str):
    """Remove temporary folders of ``key`` left by processes that died (killed before cleaning up)."""
    for tmp in stage_dir.glob(f".tmp-{key}-*"):
        try:
            pid = int(tmp.name.split("-")[2])
            os.kill(pid, 0)
        except (IndexError, ValueError, OverflowError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


class DamagedArtifactError(RuntimeError):
    """A complete artifact whose files no longer match what was built (truncated, replaced, missing).

    The message names the stage, the key, the folder, what is wrong and the remedy."""

    def __init__(self, stage: str, key: str, path: Path, problems: list[str]):
        self.stage, self.key, self.path, self.problems = stage, key, Path(path), list(problems)
        aside = f"{self.path.parent}/.damaged-{key}"
        super().__init__(
            f"artifact {stage}/{key} at {self.path} is damaged: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            + f". Remedy: move it aside (`mv {self.path} {aside}`) or delete it, then run again: the "
              f"{stage} stage recomputes it from its inputs")


def _set_aside_damaged_work(work: Path, stage: str, key: str) -> list[Path]:
    """Move every folder of a build's ``work`` folder (resumable checkpoints) that holds a damaged file
    (:func:`check_file_structure`, or bytes that differ from the folder's ``checksums.json``,
    :func:`checksum_problems`) out of the way, to ``<stage>/.damaged-<key>-<folder>-<time>``, saying so
    on stderr: the build then resumes from an earlier checkpoint, or starts over, instead of reading a
    checkpoint cut short or changed. Returns the new locations."""
    moved = []
    if not work.is_dir():
        return moved
    found = []
    for path in sorted(work.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(work).parts):
            continue  # a file being written (``.partial`` folders, ``.part`` files) is nobody's input yet
        if path.is_dir():
            found += [(path, p) for p in checksum_problems(path)[:1]]
        elif path.suffix in (".safetensors", ".npy", ".json"):
            problem = check_file_structure(path)
            if problem is not None:
                found.append((path.parent if path.parent != work else path, problem))
    for folder, problem in found:
        if not folder.exists():
            continue  # already moved with its parent
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = work.parent / f".damaged-{key}-{folder.name}-{stamp}"
        n = 1
        while aside.exists():  # e.g. checkpoints/step-N and kept/.../step-N both damaged in one second
            aside, n = work.parent / f".damaged-{key}-{folder.name}-{stamp}-{n}", n + 1
        os.rename(folder, aside)
        moved.append(aside)
        print(f"warning: checkpoint {folder} of {stage}/{key} is damaged ({problem}): moved aside to {aside}; "
              f"the build resumes from an earlier checkpoint or starts over", file=sys.stderr, flush=True)
    return moved


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """The checked-out commit of ``repo``, with ``-dirty`` appended when tracked files differ; None
    outside a git work tree."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions(names=VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where not installed), read without importing them."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Artifact:
    """An artifact under construction: write its files into ``dir``; keep resumable checkpoints in
    ``work_dir``; add entries for the manifest to ``meta``; set ``device`` to record where it ran."""

    stage: str
    key: str
    dir: Path
    work_dir: Path
    params: dict
    inputs: list
    device: str | None = None
    meta: dict = field(default_factory=dict)


class ArtifactStore:
    """Artifacts of one run under ``root`` (usually ``<run_dir>/artifacts``)."""

    def __init__(self, root):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        """Where the artifact ``(stage, key)`` lives once complete."""
        _check_stage(stage)
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        """True when the artifact is complete (has its manifest)."""
        return (self.path(stage, key) / MANIFEST).is_file()

    def load_manifest(self, stage: str, key: str) -> dict:
        """The manifest of a complete artifact; ConfigError naming the path if there is none,
        DamagedArtifactError if it does not parse."""
        path = self.path(stage, key) / MANIFEST
        if not path.is_file():
            raise ConfigError("artifact", f"{stage}/{key}", f"a complete artifact (no {path})")
        try:
            return load_json(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise DamagedArtifactError(stage, key, path.parent, [f"{MANIFEST} does not parse ({err})"]) from None

    def verify(self, stage: str, key: str, full: bool = True) -> list[str]:
        """What is wrong with the complete artifact ``(stage, key)`` ([] when nothing): files listed in
        its manifest that are missing, of another size or (``full``, the default) of other bytes than its
        SHA-256 when built, and files whose structure is cut short (:func:`check_file_structure`; this
        also covers artifacts built before manifests listed their files). Each file is hashed once per
        process while it is not written to (:func:`verified_sha256`): a few seconds per run for the
        largest stores (BENCHMARKS.md)."""
        folder = self.path(stage, key)
        try:
            manifest = self.load_manifest(stage, key)
        except DamagedArtifactError as err:
            return err.problems
        problems = []
        recorded = manifest.get("files")
        if isinstance(recorded, dict):
            problems += record_problems(folder, recorded, "built", full)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".safetensors", ".npy", ".json"):
                rel = path.relative_to(folder).as_posix()
                if any(p.startswith(rel + " ") for p in problems):
                    continue
                problem = check_file_structure(path)
                if problem is not None:
                    problems.append(problem if rel == path.name else f"{rel}: {problem}")
        return problems

    def check(self, stage: str, key: str, full: bool = True) -> Path:
        """The artifact's folder after :meth:`verify`; DamagedArtifactError when anything is wrong."""
        problems = self.verify(stage, key, full=full)
        if problems:
            raise DamagedArtifactError(stage, key, self.path(stage, key), problems)
        return self.path(stage, key)

    def list(self, stage: str) -> list[str]:
        """Keys of the complete artifacts of ``stage``, sorted."""
        _check_stage(stage)
        folder = self.root / stage
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())

    @contextmanager
    def build(self, stage: str, params: dict, inputs=(), device: str | None = None) -> Iterator[Artifact]:
        """Build the artifact ``(stage, params, inputs)``: yields an :class:`Artifact` whose ``dir`` is a
        fresh temporary folder. On normal exit the manifest is written and the folder renamed into
        place (if another process completed the same artifact first, its copy is kept); on an exception
        the temporary folder is removed, ``work_dir`` kept, and the exception re-raised."""
        inputs = sorted(str(k) for k in inputs)
        key = artifact_key(stage, params, inputs)
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(stage_dir, key)
        # unique even within one process, so that two threads building the same key never share it
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-{os.getpid()}-", dir=stage_dir))
        work = stage_dir / f".work-{key}"
        work.mkdir(exist_ok=True)
        _set_aside_damaged_work(work, stage, key)
        art = Artifact(stage=stage, key=key, dir=tmp, work_dir=work, params=to_jsonable(params),
                       inputs=inputs, device=device)
        start = time.perf_counter()
        try:
            yield art
            manifest = {
                "stage": stage,
                "key": key,
                "params": art.params,
                "inputs": inputs,
                "seed": art.params.get("seed") if isinstance(art.params, dict) else None,
                "git_commit": git_commit(),
                "packages": package_versions(),
                "wall_time_s": round(time.perf_counter() - start, 3),
                "device": str(art.device) if art.device is not None else None,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            manifest.update(to_jsonable(art.meta))
            manifest["files"] = files_record(tmp, exclude=(MANIFEST,))
            save_json(tmp / MANIFEST, manifest)
            self._move_into_place(tmp, self.path(stage, key))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _move_into_place(tmp: Path, final: Path):
        if final.exists() and not (final / MANIFEST).is_file():
            # a folder without a manifest is not an artifact (e.g. one whose manifest was deleted by hand)
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / MANIFEST).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise

    def cached(self, stage: str, params: dict, inputs=(), build_fn: Callable[[Artifact], Any] = None,
               device: str | None = None) -> Path:
        """The path of the complete artifact ``(stage, params, inputs)``, building it first with
        ``build_fn(artifact)`` only if it is missing. An existing one is checked first (:meth:`check`):
        a damaged artifact raises DamagedArtifactError rather than being read."""
        if build_fn is None:
            raise ConfigError("build_fn", build_fn, "a function that writes the artifact's files")
        key = artifact_key(stage, params, inputs)
        if self.exists(stage, key):
            return self.check(stage, key)
        with self.build(stage, params, inputs, device=device) as art:
            build_fn(art)
        return self.path(stage, key)
