"""When an executed notebook is still valid: its execution key (notebook source, resolved profile, package
code and key package versions), the side outputs it wrote (claims, figures) and the completion stamp
``bibad run`` leaves in its metadata, with a digest of each cell (an executed copy edited by hand is no
longer a run's output); :func:`chapter_problems` says why a chapter is not a complete run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.files import DamagedFileError, file_sha256
from bibad_utils.publish.notebooks import errors_in, pending_cells, read_notebook, write_notebook
from bibad_utils.typed_config import Profile

# What a stage notebook leaves in the run folder besides its executed copy (read by later stages).
SIDE_OUTPUT_DIRS = ("claims", "figures")
KEY_PACKAGES = ("torch", "diffusers", "transformers", "numpy", "scikit-learn", "papermill")


def code_digest(package_dir: Path = REPO_ROOT / "bibad_utils") -> str:
    """sha256 over the package's Python sources (paths and contents) and the versions of the key
    packages: what an executed notebook's results depend on besides its own source and the profile."""
    from importlib import metadata

    h = hashlib.sha256()
    for path in sorted(Path(package_dir).rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name in KEY_PACKAGES:
        try:
            h.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} absent".encode())
    return h.hexdigest()


def execution_key(src: Path, cfg: Profile, code: str) -> str:
    """Key of one notebook execution: the notebook's source, the resolved profile and :func:`code_digest`."""
    h = hashlib.sha256(Path(src).read_bytes())
    h.update(json.dumps(cfg.as_dict(), sort_keys=True, default=str).encode())
    h.update(code.encode())
    return h.hexdigest()[:16]


def side_outputs(run_dir: Path, since: float) -> dict:
    """Files under the run's side-output folders modified at or after ``since`` -> their sha256."""
    found = {}
    for name in SIDE_OUTPUT_DIRS:
        for path in sorted((run_dir / name).rglob("*")) if (run_dir / name).is_dir() else []:
            if path.is_file() and path.stat().st_mtime >= since:
                found[path.relative_to(run_dir).as_posix()] = file_sha256(path)
    return found


def _joined(value):
    """Text stored as one string or as a list of lines (as nbformat writes it): the same text."""
    return "".join(value) if isinstance(value, list) else value


def _shown_output(output: dict) -> dict:
    """What an output shows: its type, name, text, data and their metadata, error fields; not its
    execution count (a re-run in another kernel order changes it, not the result)."""
    shown = {k: v for k, v in output.items() if k not in ("execution_count", "transient")}
    if "text" in shown:
        shown["text"] = _joined(shown["text"])
    if isinstance(shown.get("data"), dict):
        shown["data"] = {mime: v if mime.endswith("json") else _joined(v) for mime, v in shown["data"].items()}
    return shown


def cell_digest(cell: dict) -> str:
    """sha256 of what a cell says: its type, source, attachments and outputs (:func:`_shown_output`).
    Left out, as they change with no change of content: the cell's metadata (papermill's timings and
    statuses, tags, collapsed/scrolled), its id and execution count, and how text is split into lines."""
    body = {"cell_type": cell.get("cell_type"), "source": _joined(cell.get("source", "")),
            "attachments": cell.get("attachments"),
            "outputs": [_shown_output(o) for o in cell.get("outputs", [])]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def cell_digests(nb: dict) -> list[str]:
    return [cell_digest(c) for c in nb.get("cells", [])]


def overall_digest(digests: list[str]) -> str:
    """One digest of a notebook's cell digests, in order (a cell added, removed or moved changes it)."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def edited_cells(nb: dict) -> str | None:
    """Why a stamped executed notebook is not what `bibad run` left (a cell's source or outputs edited,
    cells added or removed, the digests themselves missing), naming the cells by index; None when every
    cell matches the digests its stamp recorded."""
    stamp = nb.get("metadata", {}).get("bibad", {})
    stored, now = stamp.get("cell_digests"), cell_digests(nb)
    if not isinstance(stored, list) or "digest" not in stamp:
        return "its stamp holds no cell digests (metadata.bibad.cell_digests), so its content cannot be checked"
    if stored == now and stamp["digest"] == overall_digest(now):
        return None
    if len(stored) != len(now):
        return f"cells were added or removed after it was executed ({len(stored)} cells then, {len(now)} now)"
    changed = [i for i, (a, b) in enumerate(zip(stored, now)) if a != b]
    if not changed:
        return "its recorded digest (metadata.bibad.digest) was edited"
    cells = nb["cells"]
    named = ", ".join(f"{i} ({cells[i].get('cell_type')})" for i in changed[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    return (f"cell{'s' if len(changed) > 1 else ''} {named}{more} changed after it was executed (source or "
            f"outputs differ from what `bibad run` recorded)")


def stale_reason(dst: Path, key: str, run_dir: Path) -> str | None:
    """Why the executed notebook ``dst`` must be executed again for ``key``, or None when it is up to date:
    it is missing or damaged, holds errors, is stamped with another key, was edited after it ran
    (:func:`edited_cells`), or a side output it recorded has changed or is gone."""
    dst = Path(dst)
    if not dst.is_file():
        return "not executed yet"
    try:
        nb = read_notebook(dst)
    except DamagedFileError as err:
        return f"its executed copy is damaged: {err.problem}"
    if errors_in(nb):
        return "its executed copy holds errors"
    stamp = nb.get("metadata", {}).get("bibad", {})
    if "key" not in stamp:
        return "its executed copy was not finished"
    if stamp["key"] != key:
        return "its source, the profile or the package code changed"
    edited = edited_cells(nb)
    if edited:
        return f"its executed copy was edited: {edited}"
    for rel, digest in stamp.get("outputs", {}).items():
        path = Path(run_dir) / rel
        if not path.is_file() or file_sha256(path) != digest:
            return f"{rel}, which it wrote, has changed or is gone"
    return None


def stamp(dst: Path, key: str, outputs: dict) -> None:
    """Stamp a finished executed notebook: its execution ``key``, the side ``outputs`` it wrote (path ->
    sha256) and the digest of each cell (:func:`cell_digest`) with their :func:`overall_digest`."""
    nb = read_notebook(dst)
    digests = cell_digests(nb)
    nb.setdefault("metadata", {})["bibad"] = {"key": key, "outputs": outputs, "cell_digests": digests,
                                              "digest": overall_digest(digests)}
    write_notebook(dst, nb)


def chapter_problems(done: Path, source: Path, cfg: Profile, code: str) -> list[str]:
    """Why the executed notebook ``done`` is not a complete, error-free execution of ``source`` under the
    run's configuration ``cfg`` and package code ``code`` (:func:`code_digest`); [] when it is one."""
    try:
        nb = read_notebook(done)
    except DamagedFileError as err:
        return [f"{done} is damaged: {err.problem}: run `bibad run --profile {cfg.name}` to execute it "
                f"again (it replaces the damaged copy)"]
    problems = []
    errors = errors_in(nb)
    if errors:
        problems.append(f"{done} holds error outputs: {errors[0]}")
    pending = pending_cells(nb)
    if pending:
        problems.append(f"{done} was not run to the end: {len(pending)} code cell(s) not executed "
                        f"(first: cell {pending[0]}); a run stopped or its kernel died")
    if problems:
        return problems
    stamp = nb.get("metadata", {}).get("bibad", {})
    if "key" not in stamp:
        return [f"{done} has no completion stamp (metadata.bibad.key): it was not finished by `bibad run`"]
    edited = edited_cells(nb)
    if edited:
        return [f"{done} is not what `bibad run` left: {edited}; run `bibad run --profile {cfg.name}` to "
                f"execute it again"]
    if not Path(source).is_file():
        return [f"{done} has no source notebook {source} to check it against"]
    run_dir = Path(cfg.run_dir)
    key = execution_key(source, cfg, code)
    if stamp["key"] != key:
        return [f"{done} was executed under another configuration, notebook source or package code "
                f"(execution key {stamp['key']}, this run's is {key}): run `bibad run --profile "
                f"{cfg.name}` (with the same --set options) to execute it again"]
    if stale_reason(done, key, run_dir) is not None:
        return [f"{done}: the claims/figures files it wrote have changed since (another run or stage "
                f"overwrote them): run `bibad run --profile {cfg.name}` again"]
    return []
