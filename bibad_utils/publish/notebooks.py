"""The stage notebooks of the study: where they are, how they are named and picked, and what an
executed copy holds (its title, its errors, the cells a stopped run left unexecuted), and whether it
can be read at all (a copy cut short is a :class:`~bibad_utils.files.DamagedFileError`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bibad_utils.base import REPO_ROOT, ConfigError
from bibad_utils.files import DamagedFileError

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
STAGE_PATTERN = re.compile(r"^(\d\d)_(\w+)\.ipynb$")

# Titles of the planned stages, used for placeholder pages until a stage's notebook exists.
STAGE_TITLES = {
    "01_poisoning": "Poisoning the training data",
    "02_finetuning": "Training diffusion models on poisoned data",
    "03_generation": "Generating from the poisoned models",
    "04_insights": "Trojan horses: trigger amplification and the phase transition",
    "05_castle_walls": "Castle walls: poisoned diffusion models help the defender",
    "06_memorization": "Data replication and poisoning",
    "07_explorer": "Explorer: the generations of every cell",
    "08_results": "Results: every claim of the paper against this run",
}


def find_stages(notebooks_dir=NOTEBOOKS_DIR) -> list[Path]:
    """The stage notebooks ``NN_name.ipynb`` of ``notebooks_dir``, in stage order."""
    folder = Path(notebooks_dir)
    return sorted(p for p in folder.glob("*.ipynb") if STAGE_PATTERN.match(p.name))


def _matches(stage: Path, name: str) -> bool:
    number, title = STAGE_PATTERN.match(stage.name).groups()
    return name in (stage.stem, stage.name, number, title, str(int(number)))


def select_stages(stages: list[Path], only=None, start=None) -> list[Path]:
    """Stages picked by ``only`` (names, ``01``-style numbers or full stems) or all from ``start`` on.

    Raises ConfigError for a name that matches no stage."""
    def find(name, param):
        hits = [s for s in stages if _matches(s, str(name))]
        if not hits:
            raise ConfigError(param, name, f"one of {[s.stem for s in stages]}")
        return hits[0]

    if only and start:
        raise ConfigError("--only", only, "either --only or --from, not both")
    if only:
        chosen = {find(name, "--only") for name in only}
        return [s for s in stages if s in chosen]
    if start:
        first = find(start, "--from")
        return stages[stages.index(first):]
    return list(stages)


def notebook_title(path: Path) -> str | None:
    """The first markdown heading of a notebook, or None."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return None


def read_notebook(path: Path) -> dict:
    """An executed notebook as a dict; raises DamagedFileError naming ``path`` when it does not parse as a
    version-4 notebook (a copy cut short by a full disk or a killed writer, or not a notebook at all)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(path, f"not JSON ({type(err).__name__}: {err}); most likely cut short while "
                                     f"written (a full disk, a killed process)") from err
    problem = _structure_problem(nb)
    if problem:
        raise DamagedFileError(path, problem)
    return nb


def _structure_problem(nb) -> str | None:
    """What makes parsed JSON not a version-4 notebook, or None."""
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        return "not a version-4 notebook (no nbformat 4 or no cell list)"
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw") \
                or not isinstance(cell.get("source", ""), (str, list)) \
                or (cell["cell_type"] == "code" and not isinstance(cell.get("outputs", []), list)):
            return f"cell {i} is not a notebook cell"
    return None


def notebook_damage(path: Path) -> str | None:
    """Why ``path`` cannot be read as a notebook (:func:`read_notebook`), or None when it can."""
    try:
        read_notebook(path)
    except DamagedFileError as err:
        return err.problem
    return None


def stand_in_notebook(source: Path, title: str) -> dict:
    """What a page shows in place of an executed copy that cannot be read: the source notebook (not
    executed), or a notebook of just ``title`` when there is none."""
    try:
        return read_notebook(source)
    except (OSError, DamagedFileError):
        return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                "cells": [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": f"# {title}"}]}


def write_notebook(path: Path, nb: dict) -> None:
    """Write ``nb`` through a temporary name renamed into place: a reader (or a full disk) never leaves
    half a notebook at ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def errors_in(nb: dict) -> list[str]:
    """``"ename: evalue"`` of every error output of a notebook dict."""
    return [f"{out.get('ename')}: {out.get('evalue')}"
            for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def pending_cells(nb: dict) -> list[int]:
    """Indices of the code cells (with source) an executed notebook dict did not run to completion: marked
    pending or running by papermill, or without an execution count (a run killed or a kernel that died
    before reaching them)."""
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or not "".join(cell.get("source", "")).strip():
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status in ("pending", "running") or cell.get("execution_count") is None:
            out.append(i)
    return out


DEAD_KERNEL = "DeadKernelError"


def _stopped_cell(code: list[dict]) -> dict | None:
    """The code cell an execution stopped in: the last one papermill started (``start_time`` set: the
    cell that was running when the kernel died, even before it got an execution count), else the last
    one with an execution count, else the first."""
    started = [c for c in code if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    counted = [c for c in code if c.get("execution_count") is not None]
    for candidates in (started, counted):
        if candidates:
            return candidates[-1]
    return code[0] if code else None


def mark_failed_execution(path: Path, what: str) -> bool:
    """Make an executed notebook whose run stopped (a kernel that died, a cell timeout, an interruption)
    say so. The cell that was running (:func:`_stopped_cell`) is marked ``failed`` and, when the notebook
    holds no error output yet (nothing left a traceback), gets one naming ``what``, with
    ``metadata.bibad.failed``; every later code cell is marked ``pending`` again without an execution
    count (papermill marks them ``completed`` when its run ends, whatever stopped it). Returns whether the
    notebook changed (False for one already marked, or one that cannot be read: a damaged copy)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        nb = read_notebook(path)
    except DamagedFileError:
        return False
    before = json.dumps(nb, sort_keys=True)
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    cell = _stopped_cell(code)
    if cell is not None:
        if not errors_in(nb):
            message = (f"the execution stopped in this cell: {what}; the cells below it were not executed, and "
                       f"this notebook is not a complete run")
            cell.setdefault("outputs", []).append({"output_type": "error", "evalue": message, "traceback": [message],
                                                   "ename": DEAD_KERNEL if "died" in what.lower() else "ExecutionStopped"})
            nb.setdefault("metadata", {})["bibad"] = {"failed": what}
        cell.setdefault("metadata", {}).setdefault("papermill", {})["status"] = "failed"
        for later in code[code.index(cell) + 1:]:
            later.setdefault("metadata", {}).setdefault("papermill", {})["status"] = "pending"
            later["execution_count"] = None
    if json.dumps(nb, sort_keys=True) == before:
        return False
    write_notebook(path, nb)
    return True
