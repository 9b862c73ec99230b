"""The bibad command without running notebooks: stage selection, validation first, book staging."""

import io
import json
from pathlib import Path

import nbformat
import pytest
import yaml

from bibad_utils import cli
from bibad_utils.publish import book, keys, notebooks, runner, vendor
from bibad_utils.config import REPO_ROOT, ConfigError
from bibad_utils.cli import main
from bibad_utils.publish.book import placeholder_page, stage_book_sources, toc_files
from bibad_utils.publish.notebooks import STAGE_TITLES, find_stages, select_stages
from bibad_utils.typed_config import Profile, load_config


def _notebook(path: Path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def stage_dir(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    for name in ("02_finetuning", "01_poisoning", "10_extra", "notes", "1_bad"):
        _notebook(folder / f"{name}.ipynb", [nbformat.v4.new_markdown_cell(f"# Title of {name}")])
    (folder / "03_generation.md").write_text("# not a notebook\n")
    return folder


def test_find_stages_orders_and_filters(stage_dir):
    assert [p.stem for p in find_stages(stage_dir)] == ["01_poisoning", "02_finetuning", "10_extra"]


def test_select_stages(stage_dir):
    stages = find_stages(stage_dir)
    names = lambda sel: [p.stem for p in sel]  # noqa: E731
    assert names(select_stages(stages)) == ["01_poisoning", "02_finetuning", "10_extra"]
    assert names(select_stages(stages, only=["finetuning"])) == ["02_finetuning"]
    assert names(select_stages(stages, only=["10", "01_poisoning"])) == ["01_poisoning", "10_extra"]
    assert names(select_stages(stages, only=["2"])) == ["02_finetuning"]
    assert names(select_stages(stages, start="02")) == ["02_finetuning", "10_extra"]
    with pytest.raises(ConfigError, match="--only = 'generation'"):
        select_stages(stages, only=["generation"])
    with pytest.raises(ConfigError, match="--from"):
        select_stages(stages, start="99")
    with pytest.raises(ConfigError, match="not both"):
        select_stages(stages, only=["01"], start="02")


def test_bad_profile_stops_before_any_notebook(stage_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["run", "--profile", "smoke", "--notebooks-dir", str(stage_dir),
                 "--set", f"run_dir={run_dir}", "--set", "ratios=[0.1, 1.5]"])
    assert code == 2
    assert "ratios[1] = 1.5 is not allowed" in capsys.readouterr().err
    assert not run_dir.exists()


def test_unknown_profile_and_bad_stage_name(stage_dir, tmp_path, capsys):
    assert main(["run", "--profile", "nope", "--notebooks-dir", str(stage_dir)]) == 2
    err = capsys.readouterr().err
    assert "profile = 'nope'" in err and "smoke" in err
    assert main(["run", "--profile", "smoke", "--notebooks-dir", str(stage_dir),
                 "--set", f"run_dir={tmp_path / 'r'}", "--only", "nonexistent"]) == 2
    assert "--only = 'nonexistent'" in capsys.readouterr().err
    assert main(["run", "--profile", "smoke", "--set", "no_equals"]) == 2


def test_no_notebooks_is_an_error(tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "--notebooks-dir", str(tmp_path),
                 "--set", f"run_dir={tmp_path / 'r'}"]) == 2
    assert "no stage notebooks" in capsys.readouterr().out


def test_profile_parameter_passed_to_notebooks(tmp_path):
    assert runner._profile_parameter("smoke") == "smoke"
    copy = tmp_path / "mine.yaml"
    copy.write_text((REPO_ROOT / "notebooks" / "profiles" / "smoke.yaml").read_text())
    assert runner._profile_parameter(str(copy)) == str(copy.resolve())


def test_stages_command_lists_planned_stages(capsys, stage_dir):
    assert main(["stages", "--notebooks-dir", str(stage_dir)]) == 0
    out = capsys.readouterr().out
    assert "Title of 01_poisoning" in out
    for stem in STAGE_TITLES:
        assert stem in out
    assert "03_generation" in out and "not built yet" in out


def test_toc_lists_the_six_stages_then_book_pages():
    files = toc_files(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text()))
    assert files[0] == "book/intro"
    assert [f for f in files if f.startswith("notebooks/")] == [f"notebooks/{s}" for s in STAGE_TITLES]
    for f in files:
        if f.startswith("book/"):
            assert (REPO_ROOT / f"{f}.md").is_file(), f


def _executed(path: Path, error: bool = False, source_dir: Path | None = None, cfg: Profile | None = None):
    """An executed copy of a two-cell notebook as `bibad run` leaves it: every code cell run and, when
    ``source_dir`` and ``cfg`` are given, its source written there and the copy stamped for ``cfg``."""
    cells = [nbformat.v4.new_markdown_cell("# Poisoning, executed"), nbformat.v4.new_code_cell("1 + 1")]
    if source_dir is not None:
        source_dir.mkdir(parents=True, exist_ok=True)
        _notebook(source_dir / path.name, cells)
    cells[1].execution_count = 1
    cells[1].metadata["papermill"] = {"status": "completed"}
    path.parent.mkdir(parents=True, exist_ok=True)
    if error:
        cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="planted", traceback=[])]
    _notebook(path, cells)
    if source_dir is not None:
        key = keys.execution_key(source_dir / path.name, cfg, keys.code_digest())
        keys.stamp(path, key, {})
    return path


def test_stage_book_sources(tmp_path, stage_dir):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    executed = tmp_path / "run" / "executed"
    executed.mkdir(parents=True)
    _executed(executed / "01_poisoning.ipynb", source_dir=tmp_path / "sources", cfg=cfg)
    src = tmp_path / "src"
    problems = stage_book_sources(cfg, src, notebooks_dir=tmp_path / "sources", strict=True, vendor_dir=None,
                                  repository_url="https://example.org/study")
    assert problems == []
    assert nbformat.read(str(src / "notebooks" / "01_poisoning.ipynb"), 4).cells[0].source == "# Poisoning, executed"
    for stem in list(STAGE_TITLES)[1:]:
        page = (src / "notebooks" / f"{stem}.md").read_text()
        assert page == placeholder_page(stem) and STAGE_TITLES[stem] in page and "not built yet" in page
    for name in ("_config.yml", "_toc.yml", "references.bib", "book/intro.md", "book/reproduce.md"):
        assert (src / name).is_file()
    config = yaml.safe_load((src / "_config.yml").read_text())
    assert config["repository"]["url"] == "https://example.org/study"
    sphinx_config = config["sphinx"]["config"]
    for key in ("mathjax_path", "nb_ipywidgets_js"):  # no vendored scripts: the pages use the CDN defaults
        assert key not in sphinx_config
    assert sphinx_config["html_static_path"] == ["book/static"]  # the book's own stylesheet stays
    assert (src / "book" / "static" / "study.css").is_file() and "study.css" in sphinx_config["html_css_files"]
    assert not (src / "_static").exists()  # Jupyter Book would inject every script of the static paths
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True


def test_parameter_cells_are_folded_on_the_page(tmp_path):
    params = nbformat.v4.new_code_cell("profile = 'smoke'")
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("profile = 'demo'")
    injected.metadata["tags"] = ["injected-parameters"]
    body = nbformat.v4.new_code_cell("1 + 1")
    bar = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0},
        "text/plain": "classifier small_cnn:   0%|          | 0/120 [00:00<?, ?it/s]"})
    log = nbformat.v4.new_output("stream", name="stderr", text="train:  50%|#####     | 5/10 [00:01<00:01, 4it/s]")
    kept = [nbformat.v4.new_output("stream", name="stdout", text="50% | 5/10 done\n"),
            nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    body.outputs = [bar, kept[0], log, kept[1]]
    src = _notebook(tmp_path / "in.ipynb", [params, injected, body])
    assert book.notebook_for_book(src, tmp_path / "out.ipynb") == 2
    cells = nbformat.read(str(tmp_path / "out.ipynb"), 4).cells
    assert [c.metadata.get("tags", []) for c in cells] == [["parameters", "hide-cell"],
                                                           ["injected-parameters", "hide-cell"], []]
    assert [c.source for c in cells] == [c.source for c in (params, injected, body)]
    assert [o.get("text", o.get("data")) for o in cells[2].outputs] == [kept[0].text, kept[1].data]


def test_stage_book_sources_refuses_errors_and_unexecuted(tmp_path, stage_dir):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    executed = tmp_path / "run" / "executed"
    executed.mkdir(parents=True)
    _executed(executed / "01_poisoning.ipynb", error=True)
    # stage_dir holds a source 02_finetuning that was never executed
    with pytest.raises(ConfigError, match="--no-strict"):
        stage_book_sources(cfg, tmp_path / "src", notebooks_dir=stage_dir, strict=True, vendor_dir=None)
    problems = stage_book_sources(cfg, tmp_path / "src", notebooks_dir=stage_dir, strict=False, vendor_dir=None)
    assert len(problems) == 2
    assert "ValueError: planted" in problems[0] and "02_finetuning has not been executed" in problems[1]
    assert (tmp_path / "src" / "notebooks" / "02_finetuning.ipynb").is_file()


def test_stage_book_sources_with_vendor(tmp_path):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    vendor = tmp_path / "vendor"
    (vendor / "mathjax").mkdir(parents=True)
    (vendor / "mathjax" / "tex-mml-chtml.js").write_text("//")
    # no run exists here: the real notebooks are unexecuted, so stage leniently (vendoring is under test)
    stage_book_sources(cfg, tmp_path / "src", vendor_dir=vendor, strict=False, out=io.StringIO())
    config = yaml.safe_load((tmp_path / "src" / "_config.yml").read_text())
    assert config["sphinx"]["config"]["mathjax_path"] == "mathjax/tex-mml-chtml.js"
    assert (tmp_path / "src" / "_vendor" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_book_refuses_unexecuted_notebooks_before_building(tmp_path, stage_dir, capsys):
    code = main(["book", "--profile", "smoke", "--set", f"run_dir={tmp_path / 'run'}", "--no-vendor",
                 "--notebooks-dir", str(stage_dir), "--output", str(tmp_path / "out")])
    assert code == 1
    out = capsys.readouterr().out
    assert "01_poisoning has not been executed" in out and "book not built" in out
    assert not (tmp_path / "out" / "_build" / "html").exists()


def test_vendor_assets_without_npm_warns(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vendor.shutil, "which", lambda name: None)
    assert vendor.vendor_assets(tmp_path / "_vendor") is False
    assert "CDN" in capsys.readouterr().out
    assert not (tmp_path / "_vendor").exists()



def test_execution_key_and_up_to_date(tmp_path):
    src = _notebook(tmp_path / "01_a.ipynb", [nbformat.v4.new_code_cell("x = 1")])
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    code = keys.code_digest()
    key = keys.execution_key(src, cfg, code)
    assert key == keys.execution_key(src, cfg, code)
    assert key != keys.execution_key(src, load_config("smoke", {"run_dir": str(tmp_path / "run"), "seed": 1}),
                                         code)
    assert key != keys.execution_key(src, cfg, code + "changed")
    run_dir = tmp_path / "run"
    (run_dir / "claims").mkdir(parents=True)
    dst = run_dir / "executed.ipynb"
    assert keys.stale_reason(dst, key, run_dir) is not None  # never executed
    dst.write_bytes(src.read_bytes())
    claim = run_dir / "claims" / "a.json"
    claim.write_text("[1]")
    keys.stamp(dst, key, keys.side_outputs(run_dir, 0.0))
    assert keys.stale_reason(dst, key, run_dir) is None
    assert keys.stale_reason(dst, "other", run_dir) is not None
    claim.write_text("[2]")
    assert keys.stale_reason(dst, key, run_dir) == "claims/a.json, which it wrote, has changed or is gone"
    claim.unlink()
    assert keys.stale_reason(dst, key, run_dir) == "claims/a.json, which it wrote, has changed or is gone"


SEVEN_BAD_VALUES = [
    (["triggers.badnets2.alpha=5"], "triggers.badnets2.alpha = 5", "(0, 1]"),
    (["triggers.badnets1={sise: 3}"], "triggers.badnets1.sise = 3", "did you mean size"),
    (["triggers.badnets1.size=100"], "triggers.badnets1.size = 100", "[1, 16]"),
    (["triggers.wanet.grid=1"], "triggers.wanet.grid = 1", "[2, 16]"),
    (["dataset.options.duplicate_fraction=-0.5"], "dataset.options.duplicate_fraction = -0.5", "[0, 1)"),
    (["ratios=[0.95]"], "ratios[0] = 0.95", "at most 0.9"),
    (["dataset.options.colour=red"], "dataset.options.colour = 'red'", "'duplicate_fraction'"),
]


@pytest.mark.parametrize("sets,named,allowed", SEVEN_BAD_VALUES)
def test_bad_trigger_and_dataset_values_refused_before_any_kernel(stage_dir, tmp_path, capsys, monkeypatch,
                                                                  sets, named, allowed):
    import shutil

    import papermill

    started = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, dst, **k: started.append(shutil.copy(src, dst)))
    run_dir = tmp_path / "run"
    argv = ["run", "--profile", "smoke", "--notebooks-dir", str(stage_dir), "--set", f"run_dir={run_dir}"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "is not allowed: expected" in err and allowed in err
    assert started == [] and not run_dir.exists()
    # the same profile without the bad value would start the notebooks
    assert main(argv[:7]) == 0 and len(started) == 3


def test_malformed_set_value_is_an_error_not_a_traceback(capsys):
    assert main(["run", "--profile", "smoke", "--set", "ratios=[0.1, 0.2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set = 'ratios=[0.1, 0.2'") and "valid YAML" in err
    assert "Traceback" not in err


def _book_problems(tmp_path, cfg, sources, strict=False):
    return stage_book_sources(cfg, tmp_path / "src", notebooks_dir=sources, strict=strict, vendor_dir=None,
                              out=io.StringIO())


def test_book_refuses_a_half_run_notebook(tmp_path):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    done = _executed(tmp_path / "run" / "executed" / "01_poisoning.ipynb", source_dir=tmp_path / "sources",
                     cfg=cfg)
    assert _book_problems(tmp_path, cfg, tmp_path / "sources") == []
    # a run killed in the middle: papermill's copy has a cell still pending and no stamp, no error
    nb = json.loads(done.read_text())
    nb["cells"][1]["execution_count"] = None
    nb["cells"][1]["metadata"]["papermill"]["status"] = "pending"
    del nb["metadata"]["bibad"]
    done.write_text(json.dumps(nb))
    assert notebooks.errors_in(notebooks.read_notebook(done)) == []
    problems = _book_problems(tmp_path, cfg, tmp_path / "sources")
    assert len(problems) == 1 and "not run to the end" in problems[0]
    with pytest.raises(ConfigError, match="--no-strict"):
        _book_problems(tmp_path, cfg, tmp_path / "sources", strict=True)
    # --no-strict publishes it with a warning box at the top of the chapter
    page = nbformat.read(str(tmp_path / "src" / "notebooks" / "01_poisoning.ipynb"), 4)
    nbformat.validate(page)
    assert page.cells[0].source.startswith("# Poisoning")
    assert "not a complete execution" in page.cells[1].source and "{warning}" in page.cells[1].source


def test_book_refuses_unstamped_and_other_configuration(tmp_path):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    done = _executed(tmp_path / "run" / "executed" / "01_poisoning.ipynb", source_dir=tmp_path / "sources",
                     cfg=cfg)
    other = load_config("smoke", {"run_dir": str(tmp_path / "run"), "seed": 7})
    problems = _book_problems(tmp_path, other, tmp_path / "sources")
    assert len(problems) == 1 and "another configuration" in problems[0]
    nb = json.loads(done.read_text())
    del nb["metadata"]["bibad"]
    done.write_text(json.dumps(nb))
    problems = _book_problems(tmp_path, cfg, tmp_path / "sources")
    assert len(problems) == 1 and "no completion stamp" in problems[0]


def test_dead_kernel_notebook_says_so_and_is_refused(tmp_path):
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    done = _executed(tmp_path / "run" / "executed" / "01_poisoning.ipynb", source_dir=tmp_path / "sources",
                     cfg=cfg)
    # what papermill leaves when the kernel dies: cells marked completed, no traceback; the stamp of an
    # earlier complete run is gone because the copy is rewritten from the source
    nb = json.loads(done.read_text())
    nb["cells"].append(nbformat.v4.new_code_cell("y = 2"))
    nb["cells"][-1]["metadata"]["papermill"] = {"status": "completed"}
    del nb["metadata"]["bibad"]
    done.write_text(json.dumps(nb))
    assert notebooks.mark_failed_execution(done, "DeadKernelError('Kernel died')")
    assert not notebooks.mark_failed_execution(done, "again")  # already marked: unchanged
    errors = notebooks.errors_in(notebooks.read_notebook(done))
    assert len(errors) == 1 and errors[0].startswith("DeadKernelError: the execution stopped in this cell")
    marked = json.loads(done.read_text())
    assert marked["cells"][1]["outputs"][-1]["ename"] == "DeadKernelError"
    assert marked["metadata"]["bibad"] == {"failed": "DeadKernelError('Kernel died')"}
    problems = _book_problems(tmp_path, cfg, tmp_path / "sources")
    assert "DeadKernelError" in problems[0] and "not run to the end" in problems[1]


def test_real_kernel_death_leaves_a_notebook_that_says_so(tmp_path, capsys):
    """A tiny notebook whose cell ends the kernel process (os._exit): the runner fails, and the executed
    copy holds an error naming the dead kernel, so the book refuses it."""
    folder = tmp_path / "nb"
    folder.mkdir()
    params = nbformat.v4.new_code_cell("profile = 'smoke'\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Dies"), params, nbformat.v4.new_code_cell("import os\nos._exit(1)"),
                nbformat.v4.new_code_cell("never = True")]
    nbformat.write(nb, str(folder / "01_poisoning.ipynb"))
    run_dir = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--notebooks-dir", str(folder), "--set", f"run_dir={run_dir}"]) == 1
    assert "Kernel died" in capsys.readouterr().out
    done = run_dir / "executed" / "01_poisoning.ipynb"
    assert notebooks.errors_in(notebooks.read_notebook(done))[0].startswith("DeadKernelError")
    cfg = load_config("smoke", {"run_dir": str(run_dir)})
    problems = _book_problems(tmp_path, cfg, folder)
    assert problems and "DeadKernelError" in problems[0]


def test_compute_refuses_a_missing_pattern_before_training(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["compute", "--profile", "smoke", "--set", f"run_dir={run_dir}",
                 "--set", f"triggers.badnets2.pattern_path={tmp_path / 'gone.png'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: triggers.badnets2.pattern_path = '{tmp_path / 'gone.png'}'" in err and "existing image" in err
    assert not (run_dir / "artifacts").exists()


def test_bibad_book_refuses_a_half_run_notebook_before_building(tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = load_config("smoke", {"run_dir": str(run_dir)})
    done = _executed(run_dir / "executed" / "01_poisoning.ipynb", source_dir=tmp_path / "sources", cfg=cfg)
    nb = json.loads(done.read_text())
    nb["cells"][1]["metadata"]["papermill"]["status"] = "pending"
    nb["cells"][1]["execution_count"] = None
    done.write_text(json.dumps(nb))
    code = main(["book", "--profile", "smoke", "--set", f"run_dir={run_dir}", "--no-vendor",
                 "--notebooks-dir", str(tmp_path / "sources"), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1 and "not run to the end" in out and "book not built" in out
    assert not (tmp_path / "out" / "_build" / "html").exists()
