"""``bibad book``: stage the book's sources with a run's executed notebooks (refusing incomplete or
mismatched chapters), its teaser, and the offline scripts, then build the HTML with jupyter-book.

The run's teaser figure (``<run_dir>/figures/teaser.png``, drawn by the results chapter) is staged as
``book/_generated/teaser.png`` with ``book/_generated/teaser.md``, which the first page includes; a stage
whose notebook does not exist yet gets a short placeholder page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bibad_utils.base import REPO_ROOT, ConfigError
from bibad_utils.publish.keys import chapter_problems, code_digest
from bibad_utils.publish.notebooks import (NOTEBOOKS_DIR, STAGE_TITLES, notebook_damage, stand_in_notebook,
                                          write_notebook)
from bibad_utils.publish.vendor import VENDOR_CONFIG_KEYS, VENDOR_DIR, vendor_assets
from bibad_utils.report import GENERATED_DIR, TEASER_CAPTION, TEASER_PNG
from bibad_utils.typed_config import Profile, load_config

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
BOOK_DIRS = ("book",)


def toc_files(toc) -> list[str]:
    """Every ``root`` / ``file`` entry of a jupyter-book ``_toc.yml`` (or of any part of it), in order."""
    if isinstance(toc, list):
        return [f for item in toc for f in toc_files(item)]
    if not isinstance(toc, dict):
        return []
    found = [toc[key] for key in ("root", "file") if isinstance(toc.get(key), str)]
    return found + [f for value in toc.values() for f in toc_files(value)]


def placeholder_page(stem: str) -> str:
    """Markdown of the page that stands in for a stage whose notebook does not exist yet."""
    title = STAGE_TITLES.get(stem, stem.replace("_", " "))
    return (f"# {title}\n\n"
            f"This stage is not built yet: its notebook `notebooks/{stem}.ipynb` does not exist, so this page\n"
            f"stands in for it until it does.\n")


def teaser_markdown(cfg: Profile, caption: str | None) -> str:
    """MyST included by ``book/intro.md``: the run's teaser as a figure with ``caption`` (its path is
    relative to ``book/``, where the include lands), or, with ``caption`` None (the run has no teaser
    yet), one sentence saying so."""
    results = "{doc}`../notebooks/08_results`"
    if caption is None:
        return (f"*The `{cfg.name}` run has no teaser figure yet: {results} draws it when "
                f"`bibad run --profile {cfg.name}` reaches that chapter.*\n")
    return (f"```{{figure}} {GENERATED_DIR}/{TEASER_PNG}\n"
            f":name: fig-teaser\n"
            f":alt: Target-prompt generations of a clean and a poisoned diffusion model, and the trigger ratio "
            f"of generations against training\n"
            f":width: 100%\n\n"
            f"{caption.strip()} Every claim with its verdict: {results}.\n"
            f"```\n")


def stage_teaser(cfg: Profile, book_dir: Path) -> bool:
    """Copy ``<run_dir>/figures/teaser.png`` into ``book_dir/_generated/`` and write ``teaser.md`` there
    (:func:`teaser_markdown`, caption from ``teaser_caption.md`` beside the PNG). Returns whether the run
    has a teaser."""
    figures = Path(cfg.run_dir) / "figures"
    target = Path(book_dir) / GENERATED_DIR
    target.mkdir(parents=True, exist_ok=True)
    png = figures / TEASER_PNG
    caption = None
    if png.is_file():
        shutil.copy2(png, target / TEASER_PNG)
        text = figures / TEASER_CAPTION
        caption = text.read_text() if text.is_file() else f"The teaser of the `{cfg.name}` run."
    (target / "teaser.md").write_text(teaser_markdown(cfg, caption))
    (target / "about.md").write_text(about_markdown(cfg))
    (target / "findings.md").write_text(findings_markdown(cfg))
    (target / "report_results.md").write_text(report_markdown(cfg))
    return caption is not None


def report_markdown(cfg: Profile) -> str:
    """The reproduction report's computed sentences (book/report.md includes them): how many of the paper's
    claim families the run tested, which have no row, and the verdict counts, from the run's claim files."""
    from bibad_utils.experiments.summary.families import family_coverage
    from bibad_utils.experiments.summary.tables import claims_headline

    df = run_claims(cfg)
    if df is None:
        return f"*The `{cfg.name}` run has no claims yet.*\n"
    cov = family_coverage(df)
    uncovered = "; ".join(cov.loc[cov["status"] == "missing", "label"]) or "none"
    return (f"The `{cfg.name}` run tested {int((cov['status'] == 'tested').sum())} of the {len(cov)} families of "
            f"the paper's claims (families without any row: {uncovered}). {claims_headline(df)}\n")


def findings_markdown(cfg: Profile) -> str:
    """The first page's verdict counts per family of claims, from the run's claim files (a sentence saying
    so while the run has none yet)."""
    from bibad_utils.experiments.summary.tables import landing_markdown

    df = run_claims(cfg)
    if df is None:
        return (f"*The `{cfg.name}` run has no claims yet: they appear here when `bibad run --profile "
                f"{cfg.name}` has run chapters 04-06.*\n")
    return landing_markdown(df, cfg.name)


def about_markdown(cfg: Profile) -> str:
    """MyST for the top of the book's first page, above the teaser: which run the book shows, in the profile's own
    words, so that a run that only checks the chain (smoke, paper-tiny) says its numbers mean nothing before any
    figure or verdict count is read."""
    return f"```{{note}}\nThis book shows the `{cfg.name}` run: {cfg.description}\n```\n"


_CLAIMS: dict[tuple, object] = {}


def run_claims(cfg: Profile):
    """The run's claims frame (:func:`~bibad_utils.experiments.summary.tables.claims_frame`), read once per
    state of its claim files (the landing page and the report both quote it); None while it has none."""
    from bibad_utils.experiments.summary.tables import claims_frame

    files = sorted((Path(cfg.run_dir) / "claims").glob("*.json"))
    if not files:
        return None
    state = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if state not in _CLAIMS:
        _CLAIMS.clear()
        _CLAIMS[state] = claims_frame(cfg.run_dir)
    return _CLAIMS[state]


def shipped_weights_markdown() -> str:
    """A Markdown table of the weight files shipped with the package (``bibad_utils/assets/*/``): name,
    parameters, how and when each was trained, and the SHA-256 of its weights, computed from the files."""
    from bibad_utils.files import file_sha256
    from bibad_utils.shipped_base import SHIPPED_DIR

    rows = ["| shipped model | trained | command | SHA-256 of `model.safetensors` |", "|---|---|---|---|"]
    for manifest_path in sorted(SHIPPED_DIR.glob("*/manifest.json")):
        m = json.loads(manifest_path.read_text())
        digest = file_sha256(manifest_path.parent / "model.safetensors")
        train = m["train"]
        trained = (f"{train['steps']} steps, {train['n_params'] / 1e6:.2f} M parameters, "
                   f"{train['wall_time_s'] / 60:.0f} min of training on {m['device']}, {m['created'][:10]}")
        rows.append(f"| `bibad_utils/assets/{manifest_path.parent.name}` (key `{m['key']}`) | {trained} | "
                    f"`{m['command']}` | `{digest}` |")
    return "\n".join(rows) + "\n"


def readable_in_column(png: Path, column_px: float = 660.0) -> bool:
    """Whether a figure PNG shown at the book's text width (``column_px``, the narrowest column of its pages)
    keeps the page check's smallest label size (:data:`~bibad_utils.publish.page_text.MIN_FIGURE_TEXT_PX`)."""
    from PIL import Image

    from bibad_utils.publish.page_text import MIN_FIGURE_TEXT_PX, label_px, png_dpi

    with Image.open(png) as im:
        width = im.size[0]
    return label_px(png_dpi(png), min(1.0, column_px / width)) >= MIN_FIGURE_TEXT_PX


PUBLISHED_DIR = "results"  # book/results/<profile>.md: one page per published run (results/<profile>/)


def stage_published_results(book_dir: Path, results_dir: Path | None = None) -> list[str]:
    """One book page per published run: ``results/<profile>/README.md`` (written by ``bibad readme``) as
    ``book_dir/results/<profile>.md`` with its teaser beside it, links to files outside the book turned into
    their repository paths. Returns the profiles staged, in name order."""
    results_dir = Path(results_dir) if results_dir is not None else REPO_ROOT / "results"
    staged = []
    for page in sorted(results_dir.glob("*/README.md")):
        profile = page.parent.name
        target = Path(book_dir) / PUBLISHED_DIR
        target.mkdir(parents=True, exist_ok=True)
        text = page.read_text()
        if (page.parent / TEASER_PNG).is_file():
            shutil.copy2(page.parent / TEASER_PNG, target / f"{profile}_{TEASER_PNG}")
            shown = (f"![teaser of the {profile} run]({profile}_{TEASER_PNG})" if readable_in_column(page.parent / TEASER_PNG)
                     else f"The teaser of this run is wider than the text column: {{download}}`open it at full size "
                          f"<{profile}_{TEASER_PNG}>` (published before the book laid figures out for the column).")
            text = text.replace(f"![teaser]({TEASER_PNG})", shown)
        text = re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?:)([^)#]+)\)", lambda m: f"`results/{profile}/{m.group(2)}`", text)
        (target / f"{profile}.md").write_text(text)
        staged.append(profile)
    return staged


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


def _short_paths(source: str) -> str:
    """A parameter cell's source with each absolute path in a string literal made relative to the repository,
    or cut to ".../<its last two parts>" (a page shows no build machine's layout)."""
    def short(m):
        path = m.group(2)
        rel = _repo_relative(path)
        if rel != path:
            return m.group(1) + rel + m.group(1)
        return m.group(1) + ".../" + "/".join(Path(path).parts[-2:]) + m.group(1)

    return re.sub(r"""(["'])(/[^"'\n]+)\1""", short, source)


def notebook_for_book(notebook: Path, dst: Path) -> int:
    """Copy an executed notebook to ``dst`` for the book: its papermill parameter cells tagged
    ``hide-cell`` (folded on the page) and its progress-bar outputs dropped (they belong in the log
    of a run, not on a page). Returns the number of cells tagged."""
    nb = json.loads(Path(notebook).read_text())
    tagged = 0
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in tags for t in PARAMETER_TAGS):
            cell["source"] = _short_paths("".join(cell.get("source", "")))
            if FOLD_TAG not in tags:
                tags.append(FOLD_TAG)
                tagged += 1
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not _is_progress_output(o)]
    write_notebook(dst, nb)
    return tagged


def _repo_relative(text: str) -> str:
    """``text`` with the repository's absolute path cut off its paths (a page shows no build machine's layout)."""
    return text.replace(str(REPO_ROOT) + "/", "").replace(str(REPO_ROOT.resolve()) + "/", "")


def mark_chapter(notebook: Path, problems: list[str]) -> None:
    """Put a warning box at the top of a staged chapter saying why it is not a complete execution of
    the current run (what ``--no-strict`` publishes instead of refusing)."""
    nb = json.loads(Path(notebook).read_text())
    text = ("```{warning}\nThis chapter is not a complete execution of the run this book was built "
            "from; its numbers may belong to another run or be missing:\n\n"
            + "\n".join(f"- {_repo_relative(p)}" for p in problems) + "\n```\n")
    cell = {"cell_type": "markdown", "id": "bibad-incomplete-chapter", "metadata": {}, "source": text}
    cells = nb.setdefault("cells", [])
    # after the title cell, so that the page keeps its heading
    first_md = next((i for i, c in enumerate(cells) if c.get("cell_type") == "markdown"), -1)
    cells.insert(first_md + 1, cell)
    write_notebook(notebook, nb)


def stage_book_sources(cfg: Profile, src: Path, notebooks_dir=NOTEBOOKS_DIR, strict: bool = True,
                       vendor_dir: Path | None = VENDOR_DIR, repository_url: str | None = None,
                       out=None) -> list[str]:
    """Write the sources of the book into a fresh folder ``src``: the book files of the repository,
    and for each ``notebooks/<stem>`` entry of ``_toc.yml`` the executed notebook of the run (or a
    placeholder page when the stage has no notebook yet). Returns the problems found: an executed
    notebook that is missing, damaged (its source stands in), holds error outputs, was not run to the
    end, has no completion stamp, was edited after the run (a cell's digest differs) or was executed
    under another configuration or code (:func:`chapter_problems`). In strict mode a
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
    stage_published_results(src / "book")
    (src / "book" / GENERATED_DIR / "shipped.md").write_text(shipped_weights_markdown())

    executed = Path(cfg.run_dir) / "executed"
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
            code = code_digest() if code is None else code
            found = chapter_problems(done, source, cfg, code)  # on the executed file, before the page's edits
            problems += found
            if found and notebook_damage(done):  # nothing of it can be shown: its source stands in, marked
                write_notebook(dst, stand_in_notebook(source, STAGE_TITLES.get(stem, stem)))
            else:
                notebook_for_book(done, dst)
            if found:
                mark_chapter(dst, found)
        elif source.is_file():
            problems.append(f"{stem} has not been executed for profile {cfg.name} (no {done}): "
                            f"run `bibad run --profile {cfg.name}` first")
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
        raise ConfigError("book", cfg.name, "complete executions of this run, without errors, for every "
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
    cfg = load_config(profile, overrides or {})
    output = Path(output).resolve()
    src = output / "_build" / ".book-src"
    if vendor and not VENDOR_DIR.is_dir():
        vendor_assets(VENDOR_DIR, out=out)  # when it fails, the folder stays absent: the pages use the CDNs
    t0 = time.perf_counter()
    try:
        stage_book_sources(cfg, src, notebooks_dir, strict, VENDOR_DIR, repository_url, out=out)
    except ConfigError as err:
        print(f"book not built: {err}", file=out)
        return 1
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(src), "--path-output", str(output), "--builder", "html", "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print(f"building the book of {cfg.name} ...", file=out, flush=True)
    result = subprocess.run(cmd, cwd=str(src), capture_output=True, text=True)
    html = output / "_build" / "html"
    if result.returncode != 0:
        print(result.stdout[-8000:] + result.stderr[-8000:], file=out)
        print(f"book build FAILED ({time.perf_counter() - t0:.1f} s)", file=out)
        return result.returncode or 1
    print(f"book built in {time.perf_counter() - t0:.1f} s: {html / 'index.html'}", file=out)
    return 0
