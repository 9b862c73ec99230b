"""Content-addressed artifacts: a result is computed once and reused while its inputs stay the same.

An artifact lives in ``<root>/<stage>/<key>/``; its key hashes the stage, its parameters and the keys
of the artifacts it was computed from, so changing any of them gives a new key (and leaves the old
artifact in place). It is written into ``<root>/<stage>/.tmp-<key>-<pid>-<random>/`` and renamed into place
once complete; a complete artifact is one with a ``manifest.json``. A build that fails leaves nothing
but its ``.work-<key>/`` folder, where a long build keeps checkpoints to resume from.

    store = ArtifactStore("runs/demo/artifacts")
    path = store.cached("poison", params, inputs=[data_key], build_fn=lambda art: ...)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator

import numpy as np

from bibad_utils.config import ConfigError

KEY_LENGTH = 16
MANIFEST = "manifest.json"
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "numpy")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def to_jsonable(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: dict keys as strings, tuples/sets as lists, numpy scalars as Python
    numbers, paths as POSIX strings, arrays and tensors as ``{"array": dtype, "shape", "sha256"}``
    (their bytes hashed, so large arrays cost no space and still change the key)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else repr(value)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if type(obj).__module__ == "torch" and type(obj).__name__ == "Tensor":
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj)
        return {"array": str(data.dtype), "shape": list(data.shape),
                "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    raise ConfigError("artifact parameter", obj,
                      "JSON-like data (numbers, strings, lists, dicts, paths, numpy arrays)")


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


def git_commit(repo: Path = _REPO_ROOT) -> str | None:
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
        """The manifest of a complete artifact; ConfigError naming the path if there is none."""
        path = self.path(stage, key) / MANIFEST
        if not path.is_file():
            raise ConfigError("artifact", f"{stage}/{key}", f"a complete artifact (no {path})")
        return load_json(path)

    def list(self, stage: str) -> list[str]:
        """Keys of the complete artifacts of ``stage``, sorted."""
        _check_stage(stage)
        folder = self.root / stage
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST).is_file())

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
        ``build_fn(artifact)`` only if it is missing."""
        if build_fn is None:
            raise ConfigError("build_fn", build_fn, "a function that writes the artifact's files")
        key = artifact_key(stage, params, inputs)
        if not self.exists(stage, key):
            with self.build(stage, params, inputs, device=device) as art:
                build_fn(art)
        return self.path(stage, key)


# ----------------------------------------------------------------------------------------------
# file helpers


def save_json(path, obj) -> Path:
    """Write ``obj`` (made JSON-ready by :func:`to_jsonable`) as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return path


def load_json(path):
    return json.loads(Path(path).read_text())


def save_array(path, array) -> Path:
    """``np.save`` without pickling (object arrays are refused); returns the path written."""
    path = Path(path)
    np.save(path, np.asarray(array), allow_pickle=False)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def load_array(path, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` without pickling; ``mmap_mode="r"`` maps large arrays instead of reading them."""
    return np.load(Path(path), allow_pickle=False, mmap_mode=mmap_mode)


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> Path:
    """Save a dict of torch tensors as safetensors (contiguous copies; string-only ``metadata``)."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
              metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


def load_tensors(path, device: str = "cpu") -> dict:
    """Load a safetensors file into a dict of torch tensors on ``device``."""
    from safetensors.torch import load_file

    return load_file(str(Path(path)), device=str(device))
