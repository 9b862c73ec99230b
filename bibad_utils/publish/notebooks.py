"""The stage notebooks of the study: where they are, how they are named and picked, and what an
executed copy holds (its title, its errors, the cells a stopped run left unexecuted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bibad_utils.base import REPO_ROOT
from bibad_utils.base import ConfigError

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


def notebook_errors(path: Path) -> list[str]:
    """``"ename: evalue"`` of every error output in an executed notebook."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [f"{out.get('ename')}: {out.get('evalue')}"
            for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def unexecuted_cells(path: Path) -> list[int]:
    """Indices of the code cells (with source) an executed notebook did not run to completion: marked
    pending or running by papermill, or without an execution count (a run killed or a kernel that died
    before reaching them)."""
    nb = json.loads(Path(path).read_text())
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or not "".join(cell.get("source", "")).strip():
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status in ("pending", "running") or cell.get("execution_count") is None:
            out.append(i)
    return out


DEAD_KERNEL = "DeadKernelError"


def mark_failed_execution(path: Path, what: str) -> bool:
    """Make an executed notebook whose run failed without leaving a traceback (a kernel that died, a
    cell timeout) say so: an error output naming ``what`` on the last cell that started, and
    ``metadata.bibad.failed``. Returns False (and changes nothing) when it already holds an error."""
    path = Path(path)
    if not path.is_file() or notebook_errors(path):
        return False
    nb = json.loads(path.read_text())
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    started = [c for c in code if c.get("execution_count") is not None]
    cell = started[-1] if started else (code[0] if code else None)
    message = (f"the execution stopped in this cell: {what}; the cells below it were not executed, and "
               f"this notebook is not a complete run")
    if cell is not None:
        cell.setdefault("outputs", []).append({"output_type": "error", "ename": DEAD_KERNEL if "died" in what.lower()
                                               else "ExecutionStopped", "evalue": message, "traceback": [message]})
        cell.setdefault("metadata", {}).setdefault("papermill", {})["status"] = "failed"
    nb.setdefault("metadata", {})["bibad"] = {"failed": what}
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True
