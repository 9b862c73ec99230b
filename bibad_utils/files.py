"""Files of the study written whole or not at all, and read back only when whole: JSON and numpy arrays
(never pickles), each saved through a temporary name and renamed into place; a file cut short or
replaced raises :class:`DamagedFileError` naming it, never a half-read state."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from bibad_utils.base import ConfigError


def to_jsonable(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: dict keys as strings (any mapping as a dict: a typed profile section
    hashes as the dict it holds), tuples/sets as lists, numpy scalars as Python
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
    if isinstance(obj, Mapping):
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
    raise ConfigError("artifact parameter", obj, "JSON-like data (numbers, strings, lists, dicts, paths, numpy arrays)")


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stat_signature(path) -> tuple[int, ...]:
    """What changes whenever a file's bytes can have changed: device, inode, size, mtime and ctime (in ns).
    The ctime cannot be set back by ``touch`` or ``os.utime``, so a file rewritten in place, or replaced by
    another one with the same size and mtime, gets a new signature."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


_HASHED: dict[str, tuple[tuple[int, ...], str]] = {}


def verified_sha256(path) -> str:
    """:func:`file_sha256` of ``path``, read once per process while its :func:`stat_signature` stays the
    same (a study reads the same artifact many times; any write through the file system rehashes it)."""
    key = str(Path(path).resolve())
    sig = stat_signature(key)
    known = _HASHED.get(key)
    if known is not None and known[0] == sig:
        return known[1]
    digest = file_sha256(key)
    _HASHED[key] = (sig, digest)
    return digest


CHECKSUMS = "checksums.json"


def files_record(folder, exclude=()) -> dict:
    """relative path -> ``{"bytes", "sha256"}`` of every file under ``folder`` but those named in ``exclude``
    (what a manifest or a ``checksums.json`` records, and :func:`record_problems` checks)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in exclude}


def record_problems(folder, record: dict, when: str, full: bool = True) -> list[str]:
    """What differs between the files under ``folder`` and ``record`` (:func:`files_record`, made when they
    were ``when``, e.g. "built"): a file missing, of another size, or (``full``) of other bytes."""
    problems = []
    for rel, info in record.items():
        path = Path(folder) / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != info.get("bytes"):
            problems.append(f"{rel} has {path.stat().st_size} bytes, {info.get('bytes')} when {when}")
        elif full and verified_sha256(path) != info.get("sha256"):
            problems.append(f"{rel} has other bytes than when {when} (sha256 differs)")
    return problems


def write_checksums(folder) -> Path:
    """Record the size and SHA-256 of every file in ``folder`` in ``folder/checksums.json`` (e.g. a training
    checkpoint, so that a resume reads only the bytes that were written)."""
    return save_json(Path(folder) / CHECKSUMS, files_record(folder, exclude=(CHECKSUMS,)))


def checksum_problems(folder) -> list[str]:
    """What differs between ``folder`` and its ``checksums.json`` ([] when it matches, or when the folder
    has no record: folders written before records existed are checked by structure alone)."""
    record_path = Path(folder) / CHECKSUMS
    if not record_path.is_file():
        return []
    try:
        record = load_json(record_path)
    except (OSError, ValueError) as err:
        return [f"{CHECKSUMS} cannot be read ({err})"]
    return record_problems(folder, record, "written")


def check_file_structure(path) -> str | None:
    """None when ``path`` is structurally whole for its type, else what is wrong: a ``.safetensors``
    file whose header or data are cut short, a ``.npy`` file shorter or longer than its header says, a
    ``.json`` file that does not parse. Reads headers only (and small JSON files)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    return f"{path.name} is cut short ({size} bytes, no safetensors header)"
                n = int.from_bytes(head, "little")
                if n > size - 8:
                    return f"{path.name} is cut short ({size} bytes; its header alone needs {n + 8})"
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end != size:
                return f"{path.name} has {size} bytes where its header describes {8 + n + end} (truncated or replaced)"
        elif path.suffix == ".npy":
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    return None  # a format this check does not parse; np.load will
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f)
                start = f.tell()
            if dtype.hasobject:
                return f"{path.name} holds Python objects (pickles are not read)"
            expected = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if expected != size:
                return f"{path.name} has {size} bytes where its header describes {expected} (truncated or replaced)"
        elif path.suffix == ".json" and size <= 32 * 2 ** 20:
            json.loads(path.read_text())
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as err:
        return f"{path.name} cannot be read ({type(err).__name__}: {err})"
    return None


def _atomic_target(path: Path) -> Path:
    """A temporary name next to ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.part")


def _replace(tmp: Path, path: Path):
    try:
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_json(path, obj) -> Path:
    """Write ``obj`` (made JSON-ready by :func:`to_jsonable`) as indented JSON, atomically (a reader
    sees the old file or the whole new one); returns the path."""
    path = Path(path)
    tmp = _atomic_target(path)
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    _replace(tmp, path)
    return path


def load_json(path):
    return json.loads(Path(path).read_text())


def save_array(path, array) -> Path:
    """``np.save`` without pickling (object arrays are refused), atomically; returns the path written."""
    path = Path(path)
    tmp = _atomic_target(path)
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    _replace(tmp, path)
    return path


def load_array(path, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` without pickling; ``mmap_mode="r"`` maps large arrays instead of reading them. A file
    cut short raises DamagedFileError naming it."""
    path = Path(path)
    problem = check_file_structure(path) if path.is_file() else None
    if problem is not None:
        raise DamagedFileError(path, problem)
    return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)


class DamagedFileError(RuntimeError):
    """A file that is cut short or unreadable; the message names it and what is wrong."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path} is damaged: {problem}; move it aside or delete it and compute it again")

