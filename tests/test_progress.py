"""Live progress of ``bibad run``: the kernel's progress file, the terminal line (TTY and not), the
thread choice and the run's summary. No training: the progress file is written by hand."""

import io
import json
import sys
import time

import pytest
import torch

from bibad_utils import cli, progress
from bibad_utils.publish import runner
from bibad_utils.config import ConfigError


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def write_fake(path, **kw):
    state = {"stage": "finetune", "label": "badnets1 p=10%", "done": 350, "total": 600, "unit": "step",
             "rate": 2.5, "eta_s": 100.0, "threads": 1, "busy": None, "time": time.time(), "pid": 1}
    state.update(kw)
    path.write_text(json.dumps(state))
    return state


def test_task_writes_the_progress_file_only_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    monkeypatch.delenv(progress.ENV_FILE, raising=False)
    with progress.Task("finetune", "clean", 10) as t:
        t.update(5)
    assert not path.exists() and t.path is None

    monkeypatch.setenv(progress.ENV_FILE, str(path))
    clock = FakeClock()
    t = progress.Task("finetune", "badnets1 p=10%", 600, path=None, clock=clock)
    t.update(0, force=True)
    clock.t += 10
    t.update(100)
    state = progress.read_state(path)
    assert (state["stage"], state["label"], state["done"], state["total"]) == ("finetune", "badnets1 p=10%", 100, 600)
    assert state["rate"] == pytest.approx(10.0) and state["eta_s"] == pytest.approx(50.0)
    assert state["threads"] == torch.get_num_threads()
    # throttled: a second update within WRITE_EVERY_S leaves the file alone, the last step always writes
    clock.t += progress.WRITE_EVERY_S / 10
    t.update(101)
    assert progress.read_state(path)["done"] == 100
    t.update(600)
    assert progress.read_state(path)["done"] == 600 and progress.read_state(path)["eta_s"] == 0


def test_resumed_task_rates_only_its_own_steps(tmp_path):
    clock = FakeClock()
    t = progress.Task("pretrain", "clean base DM", 2000, done=1500, path=tmp_path / "p.json", clock=clock)
    assert t.rate is None and t.state()["eta_s"] is None
    clock.t += 100
    t.update(1600)
    assert t.rate == pytest.approx(1.0) and t.state()["eta_s"] == pytest.approx(400)


def test_format_line():
    state = {"stage": "finetune", "label": "badnets1 p=10%", "done": 350, "total": 600, "unit": "step",
             "rate": 2.5, "eta_s": 100.0, "threads": 2, "busy": "busy: other processes use 1.0 of 2 cores"}
    line = progress.format_line("02_finetuning", 192, state)
    assert line.startswith("02_finetuning 3:12 | finetune badnets1 p=10% 350/600 | 2.50 step/s | ETA 1:40")
    assert "2 threads" in line and line.endswith("busy: other processes use 1.0 of 2 cores")
    assert progress.format_line("03_generation", 5, None) == "03_generation 0:05"
    assert "ETA ?" in progress.format_line("x", 0, {**state, "rate": None, "eta_s": None})
    assert progress.clock_text(3725) == "1:02:05" and progress.clock_text(None) == "?"


def test_monitor_on_a_terminal_updates_one_line(tmp_path):
    path, out, clock = tmp_path / "p.json", FakeTTY(), FakeClock()
    mon = progress.Monitor(path, "02_finetuning", out=out, clock=clock)
    assert mon.tty
    write_fake(path)
    clock.t += 61
    shown = mon.poll()
    assert "finetune badnets1 p=10% 350/600" in shown and "ETA 1:40" in shown and "1:01" in shown
    write_fake(path, done=360, eta_s=96.0, label="clean")
    mon.poll()
    text = out.getvalue()
    assert text.count("\r") == 2 and "\n" not in text  # rewritten in place, never a new line
    assert "clean 360/600" in text.split("\r")[-1]
    mon.clear()
    assert out.getvalue().endswith("\r") and mon._shown == 0


def test_monitor_without_a_terminal_prints_every_interval(tmp_path):
    path, out, clock = tmp_path / "p.json", io.StringIO(), FakeClock()
    mon = progress.Monitor(path, "02_finetuning", out=out, clock=clock, interval=30)
    assert not mon.tty
    write_fake(path)
    clock.t += 10
    assert mon.poll() is None and out.getvalue() == ""
    clock.t += 20
    assert "350/600" in mon.poll()
    clock.t += 15
    assert mon.poll() is None
    clock.t += 15
    mon.poll()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("02_finetuning 0:30 | finetune badnets1 p=10% 350/600")
    assert lines[1].startswith("02_finetuning 1:00")


def test_monitor_ignores_a_file_left_by_an_earlier_notebook(tmp_path):
    path, out, clock = tmp_path / "p.json", io.StringIO(), FakeClock()
    write_fake(path, time=time.time() - 3600)
    mon = progress.Monitor(path, "03_generation", out=out, clock=clock, interval=30)
    clock.t += 30
    assert mon.poll() == "03_generation 0:30"


def test_monitor_thread_polls_until_stopped(tmp_path):
    path, out = tmp_path / "p.json", FakeTTY()
    write_fake(path)
    with progress.Monitor(path, "02_finetuning", out=out, tick=0.01):
        time.sleep(0.2)
    assert "350/600" in out.getvalue() and out.getvalue().endswith("\r")


def test_choose_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: (0.6, 1.4))
        monkeypatch.setenv(progress.ENV_THREADS, "auto")
        assert progress.choose_threads() == 1
        assert progress.machine_note() == f"busy: other processes use 1.4 of {progress.available_cores()} cores"
        monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: (1.8, 0.2))
        assert progress.choose_threads() == 2 and progress.machine_note() is None
        # a worker of a parallel run does not call its sibling worker's core "busy"
        monkeypatch.setenv(progress.ENV_SIBLINGS, "1")
        assert progress.machine_note(1.1) is None
        assert progress.machine_note(1.7) == f"busy: other processes use 0.7 of {progress.available_cores()} cores"
        monkeypatch.delenv(progress.ENV_SIBLINGS)
        monkeypatch.setenv(progress.ENV_THREADS, "1")
        assert progress.choose_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv(progress.ENV_THREADS)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert progress.choose_threads() == 2
        monkeypatch.setenv(progress.ENV_THREADS, "many")
        with pytest.raises(ConfigError, match="BIBAD_THREADS"):
            progress.choose_threads()
    finally:
        torch.set_num_threads(before)


def test_unset_threads_are_every_core_whatever_the_load(tmp_path, monkeypatch):
    """Without BIBAD_THREADS and OMP_NUM_THREADS the count is fixed (every core), not the idle cores: a CPU
    training's float rounding depends on the thread count, so a count that followed the load would make two
    runs of one profile differ."""
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(progress.ENV_THREADS, raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: pytest.fail("the load was measured"))
        assert progress.choose_threads() == progress.available_cores() == torch.get_num_threads()
        clock = FakeClock()
        task = progress.Task("finetune", "clean", 600, path=tmp_path / "p.json", clock=clock)
        monkeypatch.setattr(progress, "idle_since", lambda sample: (0.2, 1.8))  # the machine became busy
        clock.t += 2 * progress.RECHECK_S
        task.update(10)
        assert torch.get_num_threads() == progress.available_cores()  # still the fixed count
    finally:
        torch.set_num_threads(before)


def test_a_busy_machine_at_the_default_count_is_warned_of_once(monkeypatch):
    monkeypatch.delenv(progress.ENV_THREADS, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(progress, "available_cores", lambda: 2)
    monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: (1.0, 1.0))
    note = progress.busy_warning()
    assert "1.0 of 2 cores" in note and "--threads 1" in note and "--threads auto" in note
    monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: (1.9, 0.1))
    assert progress.busy_warning() is None  # idle
    monkeypatch.setattr(progress, "idle_cores", lambda window=0.3: (1.0, 1.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert progress.busy_warning() is None  # the user chose the count


def test_idle_cores_is_within_the_machine():
    idle, others = progress.idle_cores(window=0.05)
    assert 0 <= idle <= progress.available_cores() and others >= 0


def test_summary_lists_each_notebook_and_the_book():
    record = {"notebooks": [{"name": "01_poisoning", "seconds": 12.8, "status": "ok"},
                            {"name": "02_finetuning", "seconds": 1864.0, "status": "ok"}],
              "total_seconds": 1876.8}
    text = progress.summary(record, "runs/demo/executed", "demo")
    assert "01_poisoning" in text and "0:13" in text and "31:04" in text and "31:17" in text
    assert "runs/demo/executed" in text and "bibad book --profile demo" in text


def test_cli_run_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_notebooks", lambda *a, **kw: seen.update(args=a, kw=kw) or 0)
    monkeypatch.delenv(progress.ENV_THREADS, raising=False)
    assert cli.main(["run", "--retrain-base", "--threads", "1", "--progress-interval", "5"]) == 0
    assert seen["args"][1] == {"pretrain": {"shipped": False}} and seen["kw"]["progress_interval"] == 5
    import os
    assert os.environ.pop(progress.ENV_THREADS) == "1"
    assert cli.main(["run", "--threads", "0"]) == 2


def test_kernel_transport_warning_is_silenced():
    assert "--IPKernelApp.log_level=ERROR" in runner.KERNEL_ARGUMENTS


def test_a_running_task_follows_the_idle_cores(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(progress.ENV_THREADS, "auto")
        clock = FakeClock()
        t = progress.Task("finetune", "clean", 600, path=tmp_path / "p.json", clock=clock)
        torch.set_num_threads(2)
        monkeypatch.setattr(progress, "idle_since", lambda before: (0.7, 1.3))  # another process took a core
        clock.t += progress.RECHECK_S / 2
        t.update(10)
        assert torch.get_num_threads() == 2  # not yet due
        clock.t += progress.RECHECK_S
        t.update(20)
        state = progress.read_state(tmp_path / "p.json")
        assert torch.get_num_threads() == 1 and state["threads"] == 1 and state["busy"].startswith("busy")
        monkeypatch.setattr(progress, "idle_since", lambda before: (1.9, 0.1))
        clock.t += progress.RECHECK_S
        t.update(30)
        assert torch.get_num_threads() == 2 and progress.read_state(tmp_path / "p.json")["busy"] is None
        monkeypatch.setenv(progress.ENV_THREADS, "1")  # fixed by the user: left alone
        monkeypatch.setattr(progress, "idle_since", lambda before: (2.0, 0.0))
        torch.set_num_threads(1)
        clock.t += progress.RECHECK_S
        t.update(40)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_line_shows_the_time_of_an_earlier_run(tmp_path):
    assert progress.format_line("02_finetuning", 192, None, expected=1324) == "02_finetuning 3:12 of ~22:04"
    path, out, clock = tmp_path / "p.json", io.StringIO(), FakeClock()
    mon = progress.Monitor(path, "02_finetuning", out=out, clock=clock, interval=30, expected=600)
    clock.t += 30
    assert mon.poll() == "02_finetuning 0:30 of ~10:00"
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"notebooks": [{"name": "01_poisoning", "seconds": 12.8, "status": "ok"},
                                                {"name": "02_finetuning", "seconds": 0.0, "status": "up to date"},
                                                {"name": "03_generation", "seconds": 9.0, "status": "failed"}]}))
    assert runner._earlier_times(record) == {"01_poisoning": 12.8}
    assert runner._earlier_times(tmp_path / "missing.json") == {}


def _fake_papermill(monkeypatch, seen, reports=3):
    """papermill.execute_notebook replaced by a 'kernel' that reports a task through the progress file
    named by the environment it inherits, then writes the executed copy."""
    import os
    import shutil

    import papermill

    def execute(src, dst, **kw):
        seen.append(kw)
        path = os.environ[progress.ENV_FILE]
        for step in range(1, reports + 1):
            progress.write_state(path, {"stage": "finetune", "label": "badnets1 p=10%", "done": step * 100,
                                        "total": 600, "unit": "step", "rate": 3.0, "eta_s": 50.0, "threads": 1,
                                        "busy": None, "time": time.time(), "pid": os.getpid()})
            time.sleep(0.35)
        shutil.copy(src, dst)

    monkeypatch.setattr(papermill, "execute_notebook", execute)


def _stages(tmp_path):
    import nbformat

    folder = tmp_path / "nb"
    folder.mkdir()
    for name in ("01_first", "02_second"):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}")]
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
    return folder


@pytest.mark.parametrize("tty", [True, False])
def test_run_shows_the_kernels_progress(tmp_path, monkeypatch, tty):
    seen = []
    _fake_papermill(monkeypatch, seen)
    monkeypatch.delenv(progress.ENV_FILE, raising=False)
    out = FakeTTY() if tty else io.StringIO()
    code = runner.run_notebooks("smoke", {"run_dir": str(tmp_path / "run")}, _stages(tmp_path), out=out,
                                  progress_interval=0.2)
    text = out.getvalue()
    assert code == 0 and len(seen) == 2
    assert all(kw["extra_arguments"] == runner.KERNEL_ARGUMENTS for kw in seen)
    assert progress.ENV_FILE not in __import__("os").environ  # restored after the run
    if tty:
        shown = [part for part in text.split("\r") if part.startswith(("01_first 0:0", "02_second 0:0"))]
        assert any(part.startswith("01_first") for part in shown) and any(p.startswith("02_second") for p in shown)
        assert all(" | finetune badnets1 p=10% " in part and "3.00 step/s | ETA 0:50" in part for part in shown)
    else:
        assert "\r" not in text
        lines = [line for line in text.splitlines() if line.startswith(("01_first 0:", "02_second 0:"))]
        assert lines and all(" | finetune badnets1 p=10% " in line for line in lines)
    assert "[1/2] 01_first ... running" in text and "[2/2] 02_second ... ok" in text
    summary = text[text.index("notebook "):]
    assert "01_first" in summary and "02_second" in summary and "bibad book --profile smoke" in summary
    assert not (tmp_path / "run" / "executed" / runner.PROGRESS_FILE).exists()


def test_bar_moves_the_live_task_by_increments_and_relabels(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    monkeypatch.setenv(progress.ENV_FILE, str(path))
    with progress.Bar("detect", "", 4, unit="run", show=False) as bar:
        bar.relabel("CD badnets1-5% training (victim)")
        state = progress.read_state(path)
        assert (state["label"], state["done"], state["total"], state["unit"]) == (
            "CD badnets1-5% training (victim)", 0, 4, "run")
        bar.update(1)  # throttled: the next relabel writes it
        bar.relabel("STRIP badnets1-5% training (victim)")
        state = progress.read_state(path)
        assert (state["label"], state["done"]) == ("STRIP badnets1-5% training (victim)", 1)
        bar.update(3)  # the last unit always writes
    assert progress.read_state(path)["done"] == 4


def test_classifier_training_reports_its_steps(tmp_path, monkeypatch):
    import numpy as np

    from bibad_utils import judges

    path = tmp_path / "p.json"
    monkeypatch.setenv(progress.ENV_FILE, str(path))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    judges.train_classifier(images, np.arange(16) % 2, arch="small_cnn", seed=0, epochs=2, batch_size=8,
                            lr=1e-3, progress=False)
    state = progress.read_state(path)
    assert (state["stage"], state["label"]) == ("train", "classifier small_cnn")
    assert state["done"] == state["total"] == 4
