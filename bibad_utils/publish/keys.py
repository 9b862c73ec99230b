"""When an executed notebook is still valid: its execution key (notebook source, resolved profile, package
code and key package versions), the side outputs it wrote (claims, figures) and the completion stamp
``bibad run`` leaves in its metadata; :func:`chapter_problems` says why a chapter is not a complete run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.publish.notebooks import notebook_errors, unexecuted_cells

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


def execution_key(src: Path, cfg: dict, code: str) -> str:
    """Key of one notebook execution: the notebook's source, the resolved profile and :func:`code_digest`."""
    h = hashlib.sha256(Path(src).read_bytes())
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(code.encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_outputs(run_dir: Path, since: float) -> dict:
    """Files under the run's side-output folders modified at or after ``since`` -> their sha256."""
    found = {}
    for name in SIDE_OUTPUT_DIRS:
        for path in sorted((run_dir / name).rglob("*")) if (run_dir / name).is_dir() else []:
            if path.is_file() and path.stat().st_mtime >= since:
                found[path.relative_to(run_dir).as_posix()] = file_digest(path)
    return found


def up_to_date(dst: Path, key: str, run_dir: Path) -> bool:
    """True when ``dst`` is an executed notebook without errors, stamped with ``key``, and every side
    output it recorded is still there unchanged (so executing it again would give the same files)."""
    if not dst.is_file() or notebook_errors(dst):
        return False
    stamp = json.loads(dst.read_text()).get("metadata", {}).get("bibad", {})
    if stamp.get("key") != key:
        return False
    for rel, digest in stamp.get("outputs", {}).items():
        path = run_dir / rel
        if not path.is_file() or file_digest(path) != digest:
            return False
    return True


def stamp(dst: Path, key: str, outputs: dict) -> None:
    nb = json.loads(dst.read_text())
    nb.setdefault("metadata", {})["bibad"] = {"key": key, "outputs": outputs}
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def chapter_problems(done: Path, source: Path, cfg: dict, code: str) -> list[str]:
    """Why the executed notebook ``done`` is not a complete, error-free execution of ``source`` under the
    run's configuration ``cfg`` and package code ``code`` (:func:`code_digest`); [] when it is one."""
    problems = []
    errors = notebook_errors(done)
    if errors:
        problems.append(f"{done} holds error outputs: {errors[0]}")
    pending = unexecuted_cells(done)
    if pending:
        problems.append(f"{done} was not run to the end: {len(pending)} code cell(s) not executed "
                        f"(first: cell {pending[0]}); a run stopped or its kernel died")
    stamp = json.loads(Path(done).read_text()).get("metadata", {}).get("bibad", {})
    if problems:
        return problems
    if "key" not in stamp:
        return [f"{done} has no completion stamp (metadata.bibad.key): it was not finished by `bibad run`"]
    if not Path(source).is_file():
        return [f"{done} has no source notebook {source} to check it against"]
    run_dir = Path(cfg["run_dir"])
    key = execution_key(source, cfg, code)
    if stamp["key"] != key:
        return [f"{done} was executed under another configuration, notebook source or package code "
                f"(execution key {stamp['key']}, this run's is {key}): run `bibad run --profile "
                f"{cfg['name']}` (with the same --set options) to execute it again"]
    if not up_to_date(done, key, run_dir):
        return [f"{done}: the claims/figures files it wrote have changed since (another run or stage "
                f"overwrote them): run `bibad run --profile {cfg['name']}` again"]
    return []
