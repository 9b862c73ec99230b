"""End to end: `bibad run` (papermill) then `bibad book` (jupyter-book, warnings as errors).

Slow: each notebook starts a kernel. The runner is tested on small notebooks written here (so it is
tested whatever stage notebooks exist), and the smoke profile runs through the real notebooks."""

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bibad_utils.config import REPO_ROOT
from bibad_utils.publish.notebooks import STAGE_TITLES, errors_in, find_stages, notebook_title, read_notebook

pytestmark = pytest.mark.slow

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def bibad(*args, timeout=1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bibad_utils.cli", *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def write_notebook(path: Path, title: str, *code: str, markdown: str = ""):
    params = nbformat.v4.new_code_cell('profile = "demo"\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{markdown}"), params]
    cells += [nbformat.v4.new_code_cell(c) for c in code]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def read_html(out: Path, stem: str) -> str:
    return html.unescape((out / "_build" / "html" / "notebooks" / f"{stem}.html").read_text())


def test_run_and_book_on_generated_notebooks(tmp_path):
    notebooks, run_dir, out = tmp_path / "nb", tmp_path / "run", tmp_path / "out"
    notebooks.mkdir()
    write_notebook(
        notebooks / "01_poisoning.ipynb", "A generated first chapter",
        "from pathlib import Path\nfrom bibad_utils.config import load_profile\n"
        "cfg = load_profile(profile, overrides)\n"
        "Path(cfg['run_dir'], 'seen.json').write_text(__import__('json').dumps(cfg['sampling']))",
        "from myst_nb import glue\nglue('n_target', cfg['sampling']['n_target'], display=False)",
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.title('a line')\nplt.show()",
        markdown="The run generates {glue:text}`n_target` images per cell.")
    write_notebook(notebooks / "02_finetuning.ipynb", "A generated second chapter", "print('second', profile)")

    run = bibad("run", "--profile", "smoke", "--notebooks-dir", str(notebooks),
                "--set", f"run_dir={run_dir}", "--set", "sampling.n_target=7")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[1/2] 01_poisoning ... ok" in run.stdout and "[2/2] 02_finetuning ... ok" in run.stdout
    # the notebooks received the profile and the overrides, and ran in the repository root
    assert json.loads((run_dir / "seen.json").read_text())["n_target"] == 7
    for stem in ("01_poisoning", "02_finetuning"):
        assert errors_in(read_notebook(run_dir / "executed" / f"{stem}.ipynb")) == []
    record = json.loads((run_dir / "executed" / "run.json").read_text())
    assert [n["status"] for n in record["notebooks"]] == ["ok", "ok"]
    assert all(n["seconds"] > 0 for n in record["notebooks"])

    # the book is built under the run's configuration (the same --set options): it refuses chapters
    # executed under another one
    book = bibad("book", "--profile", "smoke", "--notebooks-dir", str(notebooks),
                 "--set", f"run_dir={run_dir}", "--set", "sampling.n_target=7", "--output", str(out))
    assert book.returncode == 0, book.stdout + book.stderr
    first = read_html(out, "01_poisoning")
    assert "A generated first chapter" in first
    assert "generates 7 images per cell" in re.sub(r"<[^>]+>", "", first)  # glued, not typed
    assert "<img" in first
    assert "A generated second chapter" in read_html(out, "02_finetuning")
    for stem in list(STAGE_TITLES)[2:]:
        page = read_html(out, stem)
        assert STAGE_TITLES[stem] in page and "not built yet" in page
    intro = html.unescape((out / "_build" / "html" / "book" / "intro.html").read_text())
    assert "threat model" in intro.lower() and "Pan" in intro
    for page in ("reproduce", "publishing", "limitations", "references"):
        assert (out / "_build" / "html" / "book" / f"{page}.html").is_file()


def test_rerun_skips_up_to_date_notebooks(tmp_path):
    notebooks, run_dir = tmp_path / "nb", tmp_path / "run"
    notebooks.mkdir()
    claims = "from pathlib import Path\nfrom bibad_utils.config import load_profile\n" \
             "d = Path(load_profile(profile, overrides)['run_dir'], 'claims')\nd.mkdir(parents=True, exist_ok=True)\n" \
             "(d / 'first.json').write_text('[1]')"
    write_notebook(notebooks / "01_first.ipynb", "First", claims)
    write_notebook(notebooks / "02_second.ipynb", "Second", "y = 2")
    write_notebook(notebooks / "03_third.ipynb", "Third", "z = 3")
    args = ("run", "--profile", "smoke", "--notebooks-dir", str(notebooks), "--set", f"run_dir={run_dir}")

    def statuses(run):
        assert run.returncode == 0, run.stdout + run.stderr
        record = json.loads((run_dir / "executed" / "run.json").read_text())
        return [n["status"] for n in record["notebooks"]]

    assert statuses(bibad(*args)) == ["ok", "ok", "ok"]
    again = bibad(*args)
    assert statuses(again) == ["up to date"] * 3 and "01_first ... up to date" in again.stdout
    # a changed notebook runs again, and so does every later one
    write_notebook(notebooks / "02_second.ipynb", "Second", "y = 20")
    assert statuses(bibad(*args)) == ["up to date", "ok", "ok"]
    # a side output that was changed or removed since makes its notebook run again
    (run_dir / "claims" / "first.json").write_text("[2]")
    assert statuses(bibad(*args)) == ["ok", "ok", "ok"]
    assert (run_dir / "claims" / "first.json").read_text() == "[1]"
    # another profile setting, or --force, runs everything
    assert statuses(bibad(*args, "--set", "seed=1")) == ["ok", "ok", "ok"]
    assert statuses(bibad(*args, "--force")) == ["ok", "ok", "ok"]


def test_failing_notebook_stops_the_run(tmp_path):
    notebooks, run_dir = tmp_path / "nb", tmp_path / "run"
    notebooks.mkdir()
    write_notebook(notebooks / "01_first.ipynb", "First", "x = 1")
    write_notebook(notebooks / "02_broken.ipynb", "Broken", "raise ValueError('planted failure')")
    write_notebook(notebooks / "03_after.ipynb", "After", "y = 2")
    run = bibad("run", "--profile", "smoke", "--notebooks-dir", str(notebooks), "--set", f"run_dir={run_dir}")
    assert run.returncode == 1
    failed = run_dir / "executed" / "02_broken.ipynb"
    assert "02_broken ... FAILED" in run.stdout and str(failed) in run.stdout
    assert "ValueError: planted failure" in run.stdout
    assert errors_in(read_notebook(failed)) == ["ValueError: planted failure"]
    assert not (run_dir / "executed" / "03_after.ipynb").exists()
    record = json.loads((run_dir / "executed" / "run.json").read_text())
    assert [n["status"] for n in record["notebooks"]] == ["ok", "failed"]


def test_smoke_profile_through_the_real_notebooks(smoke_book):
    stages = find_stages(REPO_ROOT / "notebooks")
    if not stages:
        pytest.skip("no stage notebooks (notebooks/NN_*.ipynb) in the repository yet")
    out = smoke_book.parent.parent  # the fixture ran `bibad run` into out/run, then `bibad book`
    for stage in stages:
        assert errors_in(read_notebook(out / "run" / "executed" / stage.name)) == [], stage.name
    for stage in stages:
        page = read_html(out, stage.stem)
        title = notebook_title(stage)
        assert title and title in page, stage.stem
        assert "<img" in page, f"{stage.stem} shows no figure"
        # papermill's parameter cells are folded behind a toggle on the page
        assert "hide-cell" in page or "tag_hide-cell" in page, stage.stem
