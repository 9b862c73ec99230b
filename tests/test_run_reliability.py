"""`bibad run` and `bibad book` when things go wrong: two commands on one run directory, executed notebooks
edited by hand or cut short, runs interrupted by Ctrl-C or SIGTERM, kernels that die, and errors of the
system (read-only directories, a full disk) that must reach the user as one line, not a traceback.

Notebooks are executed by a stand-in for papermill (it writes the executed copy at once) or, where a real
process is needed, by a short Python subprocess; every test takes seconds."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from bibad_utils.cli import main
from bibad_utils.config import REPO_ROOT, ConfigError
from bibad_utils.files import DamagedFileError
from bibad_utils.publish import keys, notebooks
from bibad_utils.publish.book import stage_book_sources
from bibad_utils.publish.runstate import LOCK_FILE, RunLocked, run_lock
from bibad_utils.typed_config import load_config

STEMS = ("01_poisoning", "02_finetuning", "03_generation")  # stems the book's table of contents lists


def _sources(folder: Path) -> Path:
    """Three stage notebooks: a title, papermill's parameter cell and one printing cell each."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        params = nbformat.v4.new_code_cell("profile = 'smoke'\noverrides = {}")
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {stem}"), params,
                                             nbformat.v4.new_code_cell(f"print('{stem}', 42)")])
        nbformat.write(nb, str(folder / f"{stem}.ipynb"))
    return folder


def _executed_copy(src: Path) -> dict:
    """What papermill leaves for a source notebook: every code cell run, printing 'answer 42'."""
    nb = json.loads(Path(src).read_text())
    count = 0
    for cell in nb["cells"]:
        cell.setdefault("metadata", {})["papermill"] = {"status": "completed", "start_time": "2024-01-01T00:00:00"}
        if cell["cell_type"] == "code":
            count += 1
            cell["execution_count"] = count
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["answer 42\n"]}]
    return nb


class Calls(list):
    """The stems executed, in order; ``hook`` (stem, dst), when set, runs before the copy is written."""
    hook = None


@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill.execute_notebook replaced by :func:`_executed_copy`; returns the list of stems executed.
    ``calls.hook`` (stem, dst) runs before the copy is written (to interrupt, or to look at run.json)."""
    import papermill

    calls = Calls()

    def execute(src, dst, **kw):
        stem = Path(src).stem
        calls.append(stem)
        if calls.hook:
            calls.hook(stem, Path(dst))
        Path(dst).write_text(json.dumps(_executed_copy(src)))

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return calls


@pytest.fixture
def run_args(tmp_path):
    """argv of `bibad run` on the three notebooks into tmp_path/run."""
    return ["run", "--profile", "smoke", "--notebooks-dir", str(_sources(tmp_path / "nb")),
            "--set", f"run_dir={tmp_path / 'run'}"]


def _record(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "executed" / "run.json").read_text())


# ---------------------------------------------------------------- 1. one command per run directory

HOLDER = textwrap.dedent("""
    import sys, time
    from bibad_utils.publish.runstate import run_lock
    with run_lock(sys.argv[1], command="bibad run --profile smoke"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_run_is_refused_at_once_naming_the_holder_and_a_crash_frees_the_lock(tmp_path, run_args,
                                                                                       fake_papermill, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"pid {holder.pid} \(`bibad run --profile smoke`"):
            with run_lock(run_dir):
                pass
        assert main(run_args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: run directory") and f"pid {holder.pid}" in err and err.count("\n") == 1
        assert fake_papermill == [] and not (run_dir / "executed" / "run.json").exists()
        # the book reads the run: not while a run holds it
        assert main(["book", "--profile", "smoke", "--set", f"run_dir={run_dir}", "--no-vendor",
                     "--output", str(tmp_path / "out")]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()  # a crash: the kernel drops the lock with the process
        holder.wait()
    with run_lock(run_dir) as held:
        assert held
    assert main(run_args) == 0 and fake_papermill == list(STEMS)
    assert (run_dir / LOCK_FILE).read_text() == ""  # released: no holder's name left behind


def test_readers_share_the_lock_and_a_run_waits_for_none_of_them(tmp_path):
    with run_lock(tmp_path, shared=True), run_lock(tmp_path, shared=True):
        with pytest.raises(RunLocked, match="another process"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            with run_lock(tmp_path, shared=True):
                pass


# ---------------------------------------------------------------- 2. edited executed notebooks

def test_an_edited_output_or_source_is_run_again_naming_the_cell(tmp_path, run_args, fake_papermill, capsys):
    assert main(run_args) == 0
    done = tmp_path / "run" / "executed" / "02_finetuning.ipynb"
    assert json.loads(done.read_text())["metadata"]["bibad"]["cell_digests"]
    assert main(run_args) == 0 and len(fake_papermill) == 3  # all up to date
    capsys.readouterr()
    nb = json.loads(done.read_text())
    nb["cells"][2]["outputs"][0]["text"] = ["answer 43\n"]  # a number changed by hand
    done.write_text(json.dumps(nb))
    assert main(run_args) == 0
    out = capsys.readouterr().out
    assert "[2/3] 02_finetuning ... running (its executed copy was edited: cell 2 (code) changed" in out
    assert fake_papermill[3:] == ["02_finetuning", "03_generation"] and "answer 42" in done.read_text()
    nb = json.loads(done.read_text())
    nb["cells"][1]["source"] = "profile = 'full'\noverrides = {}"  # a code cell's source
    done.write_text(json.dumps(nb))
    assert main(run_args) == 0 and fake_papermill[5:] == ["02_finetuning", "03_generation"]
    assert "cell 1 (code) changed" in capsys.readouterr().out


def _stamped(tmp_path) -> tuple[dict, Path, Path]:
    """A run of one stage, 01_poisoning, executed and stamped: (cfg, the executed copy, the sources)."""
    sources = _sources(tmp_path / "nb")
    for stem in STEMS[1:]:  # the book shows placeholders for them
        (sources / f"{stem}.ipynb").unlink()
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    done = tmp_path / "run" / "executed" / "01_poisoning.ipynb"
    done.parent.mkdir(parents=True)
    nb = _executed_copy(sources / "01_poisoning.ipynb")
    nb["cells"][1]["source"] = f"profile = '{tmp_path}/p.yaml'\noverrides = {{}}"  # the page shortens it
    nb["cells"][2]["outputs"].append({"output_type": "stream", "name": "stderr",
                                      "text": "train:  40%|####      | 48/120 [00:03<00:04, 15.2it/s]"})
    done.write_text(json.dumps(nb))
    keys.stamp(done, keys.execution_key(sources / "01_poisoning.ipynb", cfg, keys.code_digest()), {})
    return cfg, done, sources


def test_strict_book_refuses_an_edited_notebook_naming_it_and_the_cell(tmp_path):
    cfg, done, sources = _stamped(tmp_path)

    def stage(strict):
        return stage_book_sources(cfg, tmp_path / "src", notebooks_dir=sources, strict=strict, vendor_dir=None,
                                  out=io.StringIO())

    # the book's own edits of its copy (a progress bar dropped, a path shortened) are not edits of the run
    assert [p for p in stage(True) if "01_poisoning" in p] == []
    nb = json.loads(done.read_text())
    nb["cells"][2]["outputs"][0]["text"] = ["answer 41\n"]
    done.write_text(json.dumps(nb))
    with pytest.raises(ConfigError, match="--no-strict"):
        stage(True)
    problems = [p for p in stage(False) if "01_poisoning" in p]
    assert len(problems) == 1 and str(done) in problems[0] and "cell 2 (code) changed" in problems[0]
    page = nbformat.read(str(tmp_path / "src" / "notebooks" / "01_poisoning.ipynb"), 4)
    assert "not a complete execution" in page.cells[1].source and "cell 2 (code)" in page.cells[1].source
    # cells added or removed are named too
    nb["cells"].pop()
    done.write_text(json.dumps(nb))
    assert "cells were added or removed" in keys.chapter_problems(done, sources / "01_poisoning.ipynb", cfg,
                                                                    keys.code_digest())[0]


def test_the_digest_ignores_what_does_not_change_content(tmp_path):
    _, done, _ = _stamped(tmp_path)
    nb = nbformat.read(str(done), 4)
    for cell in nb.cells:  # what Jupyter changes on opening and saving a notebook
        cell.metadata["collapsed"] = True
        cell.metadata.setdefault("execution", {})["iopub.status.idle"] = "2030-01-01T00:00:00Z"
    nb.metadata["widgets"] = {}
    nbformat.write(nb, str(done))  # text split into lists of lines, cell ids, another key order
    assert keys.edited_cells(json.loads(done.read_text())) is None
    nb.cells[2].outputs[0].text = "answer 42!\n"
    nbformat.write(nb, str(done))
    assert "cell 2 (code) changed" in keys.edited_cells(json.loads(done.read_text()))


# ---------------------------------------------------------------- 3. interrupted runs and damaged copies

def test_run_json_says_running_then_interrupted_with_the_notebook(tmp_path, run_args, fake_papermill, capsys):
    assert main(run_args) == 0
    assert _record(tmp_path)["status"] == "ok"
    seen = {}

    def hook(stem, dst):
        seen[stem] = _record(tmp_path)
        if stem == "02_finetuning":
            dst.write_text(json.dumps(_executed_copy(dst)))  # the cells run so far
            raise KeyboardInterrupt

    fake_papermill.hook = hook
    assert main(run_args + ["--force"]) == 130
    assert capsys.readouterr().err.startswith("error: interrupted")
    assert seen["01_poisoning"]["status"] == "running" and seen["01_poisoning"]["running"] == "01_poisoning"
    assert seen["01_poisoning"]["pending"] == list(STEMS) and seen["02_finetuning"]["notebooks"][0]["status"] == "ok"
    record = _record(tmp_path)
    assert record["status"] == "interrupted" and record["interrupted_in"] == "02_finetuning"
    assert [n["status"] for n in record["notebooks"]] == ["ok", "interrupted"] and record["pending"] == ["03_generation"]
    # the interrupted copy says so, and is run again next time
    interrupted = notebooks.read_notebook(tmp_path / "run" / "executed" / "02_finetuning.ipynb")
    assert notebooks.errors_in(interrupted)[0].startswith(
        "ExecutionStopped: the execution stopped in this cell: interrupted (Ctrl-C)")
    fake_papermill.hook = None
    assert main(run_args) == 0 and fake_papermill[-2:] == ["02_finetuning", "03_generation"]


def test_a_truncated_executed_copy_is_run_again_and_reported_by_the_book(tmp_path, run_args, fake_papermill,
                                                                         capsys):
    assert main(run_args) == 0
    done = tmp_path / "run" / "executed" / "02_finetuning.ipynb"
    done.write_bytes(done.read_bytes()[:200])  # a disk that filled while it was written
    with pytest.raises(DamagedFileError, match="02_finetuning.ipynb is damaged: not JSON"):
        notebooks.errors_in(notebooks.read_notebook(done))
    assert not notebooks.mark_failed_execution(done, "anything")
    book = ["book", "--profile", "smoke", "--set", f"run_dir={tmp_path / 'run'}", "--no-vendor",
            "--notebooks-dir", str(tmp_path / "nb"), "--output", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(book) == 1
    captured = capsys.readouterr()
    assert f"{done} is damaged: not JSON" in captured.out and "Traceback" not in captured.out + captured.err
    cfg = load_config("smoke", {"run_dir": str(tmp_path / "run")})
    problems = stage_book_sources(cfg, tmp_path / "src", notebooks_dir=tmp_path / "nb", strict=False,
                                  vendor_dir=None, out=io.StringIO())
    assert any("02_finetuning.ipynb is damaged" in p for p in problems)
    page = nbformat.read(str(tmp_path / "src" / "notebooks" / "02_finetuning.ipynb"), 4)  # the source, marked
    assert page.cells[0].source == "# 02_finetuning" and "is damaged" in page.cells[1].source
    assert main(run_args) == 0
    assert "02_finetuning ... running (its executed copy is damaged: not JSON" in capsys.readouterr().out
    assert notebooks.errors_in(notebooks.read_notebook(done)) == []


def test_a_dead_kernel_is_recorded_on_the_cell_that_was_running():
    """The notebook as papermill leaves it when the kernel dies in cell 2 before its first message: cell 2
    started but has no execution count, and papermill's end marks every cell ``completed``."""
    def cell(ct, count, started):
        c = {"cell_type": ct, "metadata": {"papermill": {"status": "completed",
                                                         "start_time": "t" if started else None}}, "source": "x"}
        return c if ct == "markdown" else {**c, "execution_count": count, "outputs": []}

    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [cell("markdown", None, True), cell("code", 1, True), cell("code", None, True),
                    cell("code", None, False), cell("markdown", None, False)]}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "01_a.ipynb"
        path.write_text(json.dumps(nb))
        assert notebooks.mark_failed_execution(path, "DeadKernelError('Kernel died')")
        cells = json.loads(path.read_text())["cells"]
        assert cells[1]["outputs"] == [] and cells[2]["outputs"][0]["ename"] == "DeadKernelError"
        assert cells[2]["metadata"]["papermill"]["status"] == "failed"
        assert cells[3]["metadata"]["papermill"]["status"] == "pending"  # not left "completed"
        assert notebooks.pending_cells(notebooks.read_notebook(path)) == [2, 3]


# ---------------------------------------------------------------- 4. errors as one line

@pytest.mark.parametrize("error,code,says", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/executed/run.json"), 1,
     "error: No space left on device: /r/executed/run.json: free some disk space"),
    (PermissionError(errno.EACCES, "Permission denied", "/r/executed"), 1,
     "error: Permission denied: /r/executed: it is not writable by you"),
    (DamagedFileError(Path("/r/claims/a.json"), "not JSON"), 1, "error: /r/claims/a.json is damaged: not JSON"),
    (RuntimeError("boom"), 1, "error: RuntimeError: boom (unexpected: run the command again with --debug"),
])
def test_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, error, code, says):
    from bibad_utils import cli

    def fail(*a, **kw):
        raise error

    monkeypatch.setattr(cli, "run_notebooks", fail)
    assert main(["run", "--profile", "smoke"]) == code
    err = capsys.readouterr().err
    assert err.startswith(says) and err.count("\n") == 1
    for argv in (["--debug", "run", "--profile", "smoke"], ["run", "--debug", "--profile", "smoke"]):
        with pytest.raises(type(error)):
            main(argv)


def test_a_refused_write_with_something_to_execute_is_one_line_before_any_kernel(tmp_path, run_args,
                                                                               fake_papermill, monkeypatch,
                                                                               capsys):
    from bibad_utils.publish import runstate

    assert main(run_args) == 0

    def refuse(path, obj):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(runstate, "save_json", refuse)  # what a read-only run directory answers
    assert main(run_args) == 0  # nothing to execute: up to date
    assert "run.json not updated (Permission denied)" in capsys.readouterr().out
    assert main(run_args + ["--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Permission denied: ") and "run.json: it is not writable by you" in err
    assert err.count("\n") == 1 and fake_papermill == list(STEMS)


NOBODY = 65534


def _as_reader(cmd: list[str], home: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` as a user who may not write the run (root writes anything: it runs as nobody then)."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: cannot run as a user a read-only directory stops")
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    env = dict(os.environ, HOME=str(home), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env)


def test_a_read_only_finished_run_is_up_to_date_and_exits_0(fake_papermill):
    base = Path(tempfile.mkdtemp(prefix="bibad-ro-"))  # not under pytest's private tmp: another user reads it
    try:
        base.chmod(0o755)
        args = ["run", "--profile", "smoke", "--notebooks-dir", str(_sources(base / "nb")),
                "--set", f"run_dir={base / 'run'}"]
        assert main(args) == 0
        for path in [base, *base.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        cli = [sys.executable, "-m", "bibad_utils.cli"]
        proc = _as_reader(cli + args, base)
        if proc.returncode in (126, 127) or "No module named 'bibad_utils'" in proc.stderr:
            pytest.skip(f"the reader cannot read the repository or its Python: {proc.stderr[-300:]}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("up to date (--force") == 3 and "run.json not updated" in proc.stdout
        assert "Traceback" not in proc.stderr
    finally:
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(base)


def test_sigterm_stops_a_real_kernel_and_marks_the_cell_it_was_running(tmp_path):
    """`bibad run` executing a real kernel is sent SIGTERM while a cell sleeps: exit 143, run.json says
    interrupted in that notebook, the sleeping cell holds the error, the cell after it is not marked
    completed, and the kernel process ends with the run."""
    folder = tmp_path / "nb"
    folder.mkdir()
    params = nbformat.v4.new_code_cell("profile = 'smoke'\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    sleeper = nbformat.v4.new_code_cell(f"import os, time\nopen({str(tmp_path / 'kernel.pid')!r}, 'w').write(str(os.getpid()))\n"
                                        "time.sleep(120)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Sleeps"), params, sleeper,
                                         nbformat.v4.new_code_cell("after = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, str(folder / "01_poisoning.ipynb"))
    run_dir, pid_file = tmp_path / "run", tmp_path / "kernel.pid"
    proc = subprocess.Popen([sys.executable, "-m", "bibad_utils.cli", "run", "--profile", "smoke", "--notebooks-dir",
                             str(folder), "--set", f"run_dir={run_dir}"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    kernel = None
    try:
        for _ in range(900):  # the kernel starts in seconds; a loaded machine gets 90
            if pid_file.is_file() and pid_file.read_text():
                kernel = int(pid_file.read_text())
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert kernel is not None, "the kernel never reached the sleeping cell"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out + err
    # one line from bibad (the kernel, shut down mid-cell, may log its own ZMQ error above it)
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    assert f'File "{REPO_ROOT / "bibad_utils"}' not in err
    record = json.loads((run_dir / "executed" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted_in"] == "01_poisoning"
    cells = json.loads((run_dir / "executed" / "01_poisoning.ipynb").read_text())["cells"]
    slept = next(i for i, c in enumerate(cells) if "time.sleep(120)" in "".join(c["source"]))
    # the error of the interruption (the kernel's KeyboardInterrupt, or the runner's note) is on that cell
    assert [o["output_type"] for o in cells[slept]["outputs"]] == ["error"]
    assert cells[slept]["metadata"]["papermill"]["status"] == "failed"
    assert cells[slept + 1]["metadata"]["papermill"]["status"] == "pending"
    assert notebooks.pending_cells(notebooks.read_notebook(run_dir / "executed" / "01_poisoning.ipynb")) == [slept + 1]
    for _ in range(100):  # the kernel notices its parent is gone within a few seconds
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail(f"the kernel {kernel} outlived the interrupted run")
