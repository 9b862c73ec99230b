"""The ``bibad`` command: run the stage notebooks of a profile with papermill, then build the book.

    bibad run --profile demo [--only 02_finetuning ...] [--from 03] [--set sampling.n_target=100 ...]
    bibad book --profile demo [--no-strict] [--output DIR]
    bibad readme --profile demo      (a finished run's summary into README.md and results/demo/)
    bibad stages

``run`` validates the profile first, then executes ``notebooks/NN_*.ipynb`` in order into
``<run_dir>/executed/`` and stops at the first failing notebook. ``book`` stages a copy of the book's
sources (``_config.yml``, ``_toc.yml``, ``book/``, ``references.bib``) with the executed notebooks in
place of the sources listed in ``_toc.yml`` under ``notebooks/``, and runs ``jupyter-book build`` on it
with warnings as errors; a stage whose notebook does not exist yet gets a short placeholder page. The
run's teaser figure (``<run_dir>/figures/teaser.png``, drawn by the results chapter) is staged as
``book/_generated/teaser.png`` with ``book/_generated/teaser.md``, which the first page includes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

from bibad_utils.config import (PROFILES_DIR, REPO_ROOT, ConfigError, load_profile, overrides_from_assignments,
                                profile_path)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
STAGE_PATTERN = re.compile(r"^(\d\d)_(\w+)\.ipynb$")
KERNEL_NAME = "python3"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
BOOK_DIRS = ("book",)
VENDOR_DIR = REPO_ROOT / "_vendor"
# npm packages served from the book's own static folder so that pages work offline
VENDOR_PACKAGES = ("mathjax@3.2.2", "requirejs@2.3.8", "@jupyter-widgets/html-manager@1.0.6")
VENDOR_CONFIG_KEYS = ("html_static_path", "mathjax_path", "nb_ipywidgets_js")

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
# Per-build files of the book's first page (written into the staged sources only, never committed).
GENERATED_DIR = "_generated"
TEASER_PNG, TEASER_CAPTION = "teaser.png", "teaser_caption.md"


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


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _side_outputs(run_dir: Path, since: float) -> dict:
    """Files under the run's side-output folders modified at or after ``since`` -> their sha256."""
    found = {}
    for name in SIDE_OUTPUT_DIRS:
        for path in sorted((run_dir / name).rglob("*")) if (run_dir / name).is_dir() else []:
            if path.is_file() and path.stat().st_mtime >= since:
                found[path.relative_to(run_dir).as_posix()] = _file_digest(path)
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
        if not path.is_file() or _file_digest(path) != digest:
            return False
    return True


def _stamp(dst: Path, key: str, outputs: dict) -> None:
    nb = json.loads(dst.read_text())
    nb.setdefault("metadata", {})["bibad"] = {"key": key, "outputs": outputs}
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


# The kernel's own log: ERROR hides its start-up warning about TCP transport without encryption (a
# local kernel's sockets listen on the loopback interface only); a failing cell still shows in full.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
PROGRESS_FILE = ".progress.json"


def run_notebooks(profile: str = "demo", overrides: dict | None = None, notebooks_dir=NOTEBOOKS_DIR,
                  only=None, start=None, log_output: bool = False, out=None, force: bool = False,
                  progress_interval: float = 30.0, tty: bool | None = None) -> int:
    """Execute the selected stage notebooks in order with papermill; returns a process exit code.

    The profile (with ``overrides``) is validated before any notebook starts. Each notebook receives
    ``profile`` and ``overrides`` as parameters and runs in the repository root; its executed copy is
    ``<run_dir>/executed/<name>.ipynb``. The first failure stops the run (exit code 1) and prints the
    path of the executed copy, which holds the traceback. Per-notebook wall times (seconds) are
    written to ``<run_dir>/executed/run.json``.

    A notebook is not executed again when its executed copy is up to date (:func:`up_to_date`: same
    notebook source, resolved profile, package code and key package versions, and its claims/figures
    files unchanged), unless ``force``; once one notebook executes, every later selected one does too,
    since it may read what the earlier one wrote.

    While a notebook runs, its kernel reports long loops (stage, cell, step/total, rate, ETA) to
    ``<run_dir>/executed/.progress.json`` (:mod:`bibad_utils.progress`), which is shown on ``out``: an
    updating line on a terminal (``tty`` None: ``out.isatty()``), else a line every
    ``progress_interval`` seconds. The run ends with the time of each notebook.
    """
    import os

    from bibad_utils.progress import ENV_FILE, Monitor, summary

    out = out or sys.stdout
    import papermill
    from papermill.exceptions import PapermillExecutionError

    overrides = overrides or {}
    cfg = load_profile(profile, overrides)
    stages = find_stages(notebooks_dir)
    if not stages:
        print(f"no stage notebooks (NN_name.ipynb) in {notebooks_dir}", file=out)
        return 2
    chosen = select_stages(stages, only, start)
    executed = Path(cfg["run_dir"]) / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    _check_kernel(out)
    if log_output:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"profile {cfg['name']}: {cfg['description']}", file=out)
    print(f"{len(chosen)} notebook(s) -> {executed}", file=out, flush=True)
    record = {"profile": cfg["name"], "overrides": overrides, "notebooks": []}
    parameters = {"profile": _profile_parameter(profile), "overrides": overrides}
    started = time.perf_counter()
    status = 0
    run_dir, code = Path(cfg["run_dir"]), code_digest()
    progress_file = executed / PROGRESS_FILE
    earlier = _earlier_times(executed / "run.json")
    previous_env = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = str(progress_file)  # the kernels inherit it
    for i, src in enumerate(chosen, 1):
        dst = executed / src.name
        head = f"[{i}/{len(chosen)}] {src.stem} ..."
        key = execution_key(src, cfg, code)
        if not force and up_to_date(dst, key, run_dir):
            record["notebooks"].append({"name": src.stem, "seconds": 0.0, "status": "up to date"})
            print(f"{head} up to date (--force re-executes it)", file=out, flush=True)
            continue
        force = True  # every later notebook may read what this one writes
        print(f"{head} running", file=out, flush=True)
        progress_file.unlink(missing_ok=True)
        t0 = time.perf_counter()
        wall0 = time.time() - 1.0  # file times have coarse resolution on some file systems
        monitor = Monitor(progress_file, src.stem, out=out, tty=tty, interval=progress_interval,
                          expected=earlier.get(src.stem))
        try:
            with monitor if not log_output else contextlib.nullcontext():
                papermill.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name=KERNEL_NAME,
                                           cwd=str(REPO_ROOT), execution_timeout=cfg["cell_timeout"],
                                           progress_bar=False, log_output=log_output,
                                           extra_arguments=KERNEL_ARGUMENTS)
        except Exception as err:
            seconds = time.perf_counter() - t0
            what = f"{err.ename}: {err.evalue}" if isinstance(err, PapermillExecutionError) else repr(err)
            mark_failed_execution(dst, what)
            print(f"{head} FAILED after {seconds:.1f} s ({what})", file=out)
            print(f"the executed notebook with the traceback: {dst}", file=out, flush=True)
            record["notebooks"].append({"name": src.stem, "seconds": round(seconds, 2), "status": "failed"})
            status = 1
            break
        seconds = time.perf_counter() - t0
        _stamp(dst, key, _side_outputs(run_dir, wall0))
        record["notebooks"].append({"name": src.stem, "seconds": round(seconds, 2), "status": "ok"})
        print(f"{head} ok {seconds:.1f} s", file=out, flush=True)
    if previous_env is None:
        os.environ.pop(ENV_FILE, None)
    else:
        os.environ[ENV_FILE] = previous_env
    progress_file.unlink(missing_ok=True)
    record["total_seconds"] = round(time.perf_counter() - started, 2)
    (executed / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(summary(record, executed, cfg["name"], book=status == 0), file=out)
    if status == 0:
        print(f"done in {record['total_seconds']:.1f} s", file=out)
    return status


def _earlier_times(path: Path) -> dict[str, float]:
    """Seconds of each notebook that executed in the run recorded in ``path`` (an earlier run.json)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {nb["name"]: nb["seconds"] for nb in record.get("notebooks", []) if nb.get("status") == "ok"}



# ----------------------------------------------------------------------------------------------
# the book


def toc_files(toc: dict) -> list[str]:
    """Every ``root`` / ``file`` entry of a jupyter-book ``_toc.yml``, in order."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def placeholder_page(stem: str) -> str:
    """Markdown of the page that stands in for a stage whose notebook does not exist yet."""
    title = STAGE_TITLES.get(stem, stem.replace("_", " "))
    return (f"# {title}\n\n"
            f"This stage is not built yet: its notebook `notebooks/{stem}.ipynb` does not exist, so this page\n"
            f"stands in for it until it does.\n")


def teaser_markdown(cfg: dict, caption: str | None) -> str:
    """MyST included by ``book/intro.md``: the run's teaser as a figure with ``caption`` (its path is
    relative to ``book/``, where the include lands), or, with ``caption`` None (the run has no teaser
    yet), one sentence saying so."""
    results = "{doc}`../notebooks/08_results`"
    if caption is None:
        return (f"*The `{cfg['name']}` run has no teaser figure yet: {results} draws it when "
                f"`bibad run --profile {cfg['name']}` reaches that chapter.*\n")
    return (f"```{{figure}} {GENERATED_DIR}/{TEASER_PNG}\n"
            f":name: fig-teaser\n"
            f":alt: Target-prompt generations of a clean and a poisoned diffusion model, and the trigger ratio "
            f"of generations against training\n"
            f":width: 100%\n\n"
            f"{caption.strip()} Every claim with its verdict: {results}.\n"
            f"```\n")


def stage_teaser(cfg: dict, book_dir: Path) -> bool:
    """Copy ``<run_dir>/figures/teaser.png`` into ``book_dir/_generated/`` and write ``teaser.md`` there
    (:func:`teaser_markdown`, caption from ``teaser_caption.md`` beside the PNG). Returns whether the run
    has a teaser."""
    figures = Path(cfg["run_dir"]) / "figures"
    target = Path(book_dir) / GENERATED_DIR
    target.mkdir(parents=True, exist_ok=True)
    png = figures / TEASER_PNG
    caption = None
    if png.is_file():
        shutil.copy2(png, target / TEASER_PNG)
        text = figures / TEASER_CAPTION
        caption = text.read_text() if text.is_file() else f"The teaser of the `{cfg['name']}` run."
    (target / "teaser.md").write_text(teaser_markdown(cfg, caption))
    return caption is not None


def vendor_assets(dest=VENDOR_DIR, out=None) -> bool:
    """Fetch MathJax, require.js and the widget HTML manager with ``npm pack`` into ``dest`` so that the
    book's pages need no network to show maths and widgets. Returns False (after a printed warning)
    when npm is missing or fails; ``dest`` is then left absent."""
    out = out or sys.stdout
    dest = Path(dest)
    npm = shutil.which("npm")
    if npm is None:
        print("warning: npm not found: the book will load MathJax and widget scripts from public CDNs",
              file=out)
        return False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            subprocess.run([npm, "pack", *VENDOR_PACKAGES, "--pack-destination", str(tmp)], cwd=tmp,
                           check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", "") or err
            print(f"warning: npm pack failed ({str(detail).strip()[-300:]}): the book will load MathJax "
                  f"and widget scripts from public CDNs", file=out)
            return False
        unpacked = {}
        for tgz in tmp.glob("*.tgz"):
            target = tmp / tgz.name.removesuffix(".tgz")
            with tarfile.open(tgz) as tar:
                tar.extractall(target, filter="data")
            unpacked[tgz.name] = target / "package"
        mathjax = next(v for k, v in unpacked.items() if k.startswith("mathjax-"))
        requirejs = next(v for k, v in unpacked.items() if k.startswith("requirejs-"))
        manager = next(v for k, v in unpacked.items() if k.startswith("jupyter-widgets-html-manager-"))
        staging = Path(tempfile.mkdtemp(prefix=".vendor-", dir=dest.parent))
        try:
            (staging / "mathjax").mkdir()
            shutil.copy2(mathjax / "es5" / "tex-mml-chtml.js", staging / "mathjax")
            shutil.copytree(mathjax / "es5" / "output" / "chtml" / "fonts" / "woff-v2",
                            staging / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2")
            shutil.copy2(requirejs / "require.js", staging / "require.js")
            (staging / "html-manager").mkdir()
            for f in (manager / "dist").iterdir():
                if f.name == "embed-amd.js" or f.suffix in (".woff", ".woff2", ".ttf", ".eot", ".svg"):
                    shutil.copy2(f, staging / "html-manager")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"vendored {', '.join(VENDOR_PACKAGES)} into {dest}", file=out)
    return True


# Cell tags of papermill's parameter cells: on a page they are folded behind a "show" toggle, since
# readers want the results first; the injected values stay one click away.
PARAMETER_TAGS = ("parameters", "injected-parameters")
FOLD_TAG = "hide-cell"


# A tqdm bar as text: "desc:  40%|####      | 48/120 [00:03<00:04, 15.2it/s]"
PROGRESS_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+\s*\[")


def _is_progress_output(output: dict) -> bool:
    """A progress bar left in an executed notebook: a widget display whose text is a tqdm bar (the
    widget's state is not saved, so a page would show its frozen first frame), or tqdm's stderr text."""
    if output.get("output_type") == "display_data":
        data = output.get("data", {})
        text = "".join(data.get("text/plain", ""))
        return "application/vnd.jupyter.widget-view+json" in data and bool(PROGRESS_TEXT.search(text))
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        return bool(PROGRESS_TEXT.search("".join(output.get("text", ""))))
    return False


def notebook_for_book(notebook: Path, dst: Path) -> int:
    """Copy an executed notebook to ``dst`` for the book: its papermill parameter cells tagged
    ``hide-cell`` (folded on the page) and its progress-bar outputs dropped (they belong in the log
    of a run, not on a page). Returns the number of cells tagged."""
    nb = json.loads(Path(notebook).read_text())
    tagged = 0
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in tags for t in PARAMETER_TAGS) and FOLD_TAG not in tags:
            tags.append(FOLD_TAG)
            tagged += 1
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not _is_progress_output(o)]
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return tagged


def mark_chapter(notebook: Path, problems: list[str]) -> None:
    """Put a warning box at the top of a staged chapter saying why it is not a complete execution of
    the current run (what ``--no-strict`` publishes instead of refusing)."""
    nb = json.loads(Path(notebook).read_text())
    text = ("```{warning}\nThis chapter is not a complete execution of the run this book was built "
            "from; its numbers may belong to another run or be missing:\n\n"
            + "\n".join(f"- {p}" for p in problems) + "\n```\n")
    cell = {"cell_type": "markdown", "id": "bibad-incomplete-chapter", "metadata": {}, "source": text}
    cells = nb.setdefault("cells", [])
    # after the title cell, so that the page keeps its heading
    first_md = next((i for i, c in enumerate(cells) if c.get("cell_type") == "markdown"), -1)
    cells.insert(first_md + 1, cell)
    Path(notebook).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def stage_book_sources(cfg: dict, src: Path, notebooks_dir=NOTEBOOKS_DIR, strict: bool = True,
                       vendor_dir: Path | None = VENDOR_DIR, repository_url: str | None = None,
                       out=None) -> list[str]:
    """Write the sources of the book into a fresh folder ``src``: the book files of the repository,
    and for each ``notebooks/<stem>`` entry of ``_toc.yml`` the executed notebook of the run (or a
    placeholder page when the stage has no notebook yet). Returns the problems found: an executed
    notebook that is missing, holds error outputs, was not run to the end, has no completion stamp or
    was executed under another configuration or code (:func:`chapter_problems`). In strict mode a
    problem raises ConfigError; otherwise each such chapter gets a warning box at its top.
    ``vendor_dir`` None (or missing) switches the book to public CDNs for MathJax and widgets."""
    out = out or sys.stdout
    src = Path(src)
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in BOOK_DIRS:
        shutil.copytree(REPO_ROOT / name, src / name)
    stage_teaser(cfg, src / "book")

    executed = Path(cfg["run_dir"]) / "executed"
    problems = []
    code = None
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    for entry in toc_files(toc):
        entry_path = Path(entry)
        if entry_path.parts[0] != "notebooks":
            continue
        stem = entry_path.with_suffix("").name if entry_path.suffix == ".ipynb" else entry_path.name
        dst = src / "notebooks" / f"{stem}.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        done, source = executed / f"{stem}.ipynb", Path(notebooks_dir) / f"{stem}.ipynb"
        if done.is_file():
            if code is None:
                code = code_digest()
            found = chapter_problems(done, source, cfg, code)
            problems += found
            notebook_for_book(done, dst)
            if found:
                mark_chapter(dst, found)
        elif source.is_file():
            problems.append(f"{stem} has not been executed for profile {cfg['name']} (no {done}): "
                            f"run `bibad run --profile {cfg['name']}` first")
            shutil.copy2(source, dst)
        else:
            dst.with_suffix(".md").write_text(placeholder_page(stem))

    config = yaml.safe_load((src / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    if vendor_dir is not None and Path(vendor_dir).is_dir():
        shutil.copytree(vendor_dir, src / "_vendor")
    else:
        for key in VENDOR_CONFIG_KEYS:
            if key == "html_static_path":  # keep the book's own static files, drop the vendored ones
                kept = [p for p in sphinx_config.get(key, []) if p != "_vendor"]
                sphinx_config[key] = kept
                if not kept:
                    sphinx_config.pop(key)
            else:
                sphinx_config.pop(key, None)
        print("warning: no _vendor folder: pages load MathJax and widget scripts from public CDNs "
              "(they need a network to show maths and widgets)", file=out)
    if repository_url:
        config.setdefault("repository", {})["url"] = repository_url
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    for problem in problems:
        print(("error: " if strict else "warning: ") + problem, file=out)
    if strict and problems:
        raise ConfigError("book", cfg["name"], "complete executions of this run, without errors, for every "
                          f"stage notebook ({len(problems)} problem(s) above); or pass --no-strict to "
                          f"publish them marked as such")
    return problems


def build_book(profile: str = "demo", overrides: dict | None = None, output=REPO_ROOT, strict: bool = True,
               notebooks_dir=NOTEBOOKS_DIR, vendor: bool = True, repository_url: str | None = None,
               out=None) -> int:
    """Build the HTML book of a profile's run into ``<output>/_build/html``; returns an exit code.

    Strict (the default) fails on any Sphinx warning (``-W -n --keep-going``) and on executed notebooks
    that are missing or hold errors. ``vendor`` fetches the offline scripts into ``_vendor/`` when that
    folder is missing."""
    out = out or sys.stdout
    cfg = load_profile(profile, overrides or {})
    output = Path(output).resolve()
    src = output / "_build" / ".book-src"
    vendor_dir = VENDOR_DIR
    if vendor and not VENDOR_DIR.is_dir() and not vendor_assets(VENDOR_DIR, out=out):
        vendor_dir = None
    if not vendor:
        vendor_dir = VENDOR_DIR if VENDOR_DIR.is_dir() else None
    t0 = time.perf_counter()
    try:
        stage_book_sources(cfg, src, notebooks_dir, strict, vendor_dir, repository_url, out=out)
    except ConfigError as err:
        print(f"book not built: {err}", file=out)
        return 1
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(src), "--path-output", str(output), "--builder", "html", "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print(f"building the book of {cfg['name']} ...", file=out, flush=True)
    result = subprocess.run(cmd, cwd=str(src), capture_output=True, text=True)
    html = output / "_build" / "html"
    if result.returncode != 0:
        print(result.stdout[-8000:] + result.stderr[-8000:], file=out)
        print(f"book build FAILED ({time.perf_counter() - t0:.1f} s)", file=out)
        return result.returncode or 1
    print(f"book built in {time.perf_counter() - t0:.1f} s: {html / 'index.html'}", file=out)
    return 0


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bibad", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--profile", default="demo", help="a profile name in notebooks/profiles or a YAML path")
        p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY.SUB=VALUE",
                       help="override one parameter (value read as YAML); repeatable")
        p.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)

    run = sub.add_parser("run", help="execute the stage notebooks of a profile with papermill")
    common(run)
    run.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (e.g. 02 or finetuning)")
    run.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and every later one")
    run.add_argument("--log-output", action="store_true", help="stream the notebooks' outputs while they run")
    run.add_argument("--force", action="store_true",
                     help="execute every selected notebook, even those whose executed copy is up to date")
    run.add_argument("--retrain-base", action="store_true",
                     help="pre-train the clean base DM here instead of using the one shipped with the package "
                          "(same as --set pretrain.shipped=false)")
    run.add_argument("--threads", default=None, metavar="N|auto",
                     help="torch threads of the kernels (default: auto, the idle cores at the start of each "
                          "training or generation, unless OMP_NUM_THREADS is set)")
    run.add_argument("--progress-interval", type=float, default=30.0, metavar="S",
                     help="without a terminal, print a progress line every S seconds (default 30)")

    book = sub.add_parser("book", help="build the HTML book from a profile's executed notebooks")
    common(book)
    book.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                      help="fail on Sphinx warnings and on missing or failed notebooks (default: on)")
    book.add_argument("--output", default=str(REPO_ROOT), help="the HTML goes to OUTPUT/_build/html")
    book.add_argument("--repository-url", default=None, help="the repository the book links to")
    book.add_argument("--no-vendor", dest="vendor", action="store_false",
                      help="do not fetch the offline MathJax/widget scripts when _vendor/ is missing")

    comp = sub.add_parser("compute", help="train and generate a profile's cells outside the notebooks "
                          "(e.g. under accelerate launch); the notebooks reuse the cached artifacts")
    common(comp)
    comp.add_argument("--cells", nargs="+", metavar="CELL",
                      help="clean | KIND:P | KIND:P:duplicate (default: every cell of the profile)")
    comp.add_argument("--no-generate", dest="generate", action="store_false", help="train only")

    readme = sub.add_parser("readme", help="copy a finished run's teaser and claims table to results/PROFILE/ "
                            "and update the README's results summary")
    common(readme)

    stages = sub.add_parser("stages", help="list the stage notebooks")
    stages.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "stages":
        stages = find_stages(args.notebooks_dir)
        present = {s.stem for s in stages}
        for stem in sorted(present | set(STAGE_TITLES)):
            title = notebook_title(Path(args.notebooks_dir) / f"{stem}.ipynb") if stem in present else None
            state = "" if stem in present else "  (not built yet)"
            print(f"{stem:<18} {title or STAGE_TITLES.get(stem, '')}{state}")
        return 0
    try:
        overrides = overrides_from_assignments(args.assignments)
        if args.command == "compute":
            from bibad_utils.stages import Cell, Study, compute
            study = Study(args.profile, overrides)
            cells = [Cell.parse(c) for c in args.cells] if args.cells else None
            for line in compute(study, cells, args.generate):
                print(line)
            return 0
        if args.command == "readme":
            from bibad_utils.experiments.summary import readme_results
            cfg = load_profile(args.profile, overrides)
            print(f"wrote {readme_results(cfg['run_dir'], cfg['name'], REPO_ROOT)} and README.md")
            return 0
        if args.command == "run":
            if args.retrain_base:
                overrides.setdefault("pretrain", {})["shipped"] = False
            if args.threads is not None:
                import os
                from bibad_utils.progress import ENV_THREADS
                if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) > 0):
                    raise ConfigError("--threads", args.threads, "a positive integer or auto")
                os.environ[ENV_THREADS] = args.threads
            return run_notebooks(args.profile, overrides, args.notebooks_dir, args.only, args.start,
                                 args.log_output, force=args.force, progress_interval=args.progress_interval)
        return build_book(args.profile, overrides, args.output, args.strict, args.notebooks_dir, args.vendor,
                          args.repository_url)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
