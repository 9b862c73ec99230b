"""Parallel cells: worker processes write exactly the artifacts the calling process would."""

import pytest

from bibad_utils import parallel
from bibad_utils.base import ConfigError
from bibad_utils.stages import Cell, Study

TINY = {"run_dir": None, "attacks": ["badnets1"], "ratios": [0.1], "controls": ["clean"],
        "finetune": {"steps": 2, "checkpoint_every": 2}, "pretrain": {"steps": 2, "checkpoint_every": 2}}


def test_cell_spelling_round_trips():
    for cell in (Cell("clean"), Cell("badnets1", 0.05), Cell("wanet", 0.1, "duplicate"), Cell("badnets2", 0.2, seed=2)):
        assert Cell.parse(parallel._spec(cell)) == cell


def test_worker_count_reads_the_environment(monkeypatch):
    monkeypatch.setenv(parallel.ENV_WORKERS, "3")
    assert parallel.worker_count(10) == 3
    assert parallel.worker_count(2) == 2
    monkeypatch.setenv(parallel.ENV_WORKERS, "zero")
    with pytest.raises(ConfigError, match="BIBAD_WORKERS"):
        parallel.worker_count(4)


@pytest.mark.slow
def test_workers_on_a_gpu_only_when_asked(monkeypatch):
    import torch

    monkeypatch.delenv(parallel.ENV_WORKERS, raising=False)
    assert parallel.workers_allowed(torch.device("cpu"))
    assert not parallel.workers_allowed(torch.device("cuda"))
    monkeypatch.setenv(parallel.ENV_WORKERS, "4")
    assert parallel.workers_allowed(torch.device("cuda"))
    monkeypatch.setenv(parallel.ENV_WORKERS, "1")
    assert not parallel.workers_allowed(torch.device("cuda"))


def test_workers_write_the_keys_the_study_asks_for(tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.ENV_WORKERS, "2")
    study = Study("smoke", {**TINY, "run_dir": str(tmp_path / "run")}, progress=False)
    cells = study.cells()
    assert not any(study.model_cached(c) for c in cells)
    assert parallel.compute_cells(study, cells, generate=True) == 2
    assert all(study.model_cached(c) for c in cells)
    built = {c: study.store.list("generate") for c in cells}
    keys = [study.generation_key(c) for c in cells]  # cached: nothing is sampled again
    assert set(keys) <= set(next(iter(built.values())))


def test_judge_tasks_list_the_missing_judges_and_their_ablation(tmp_path):
    study = Study("smoke", {**TINY, "run_dir": str(tmp_path / "run")}, progress=False)
    tasks = parallel.judge_tasks(study)
    plain = {"judges": {"color_jitter": 0.0, "blur": 0.0, "noise": 0.0}}
    assert tasks == [("judge", {}, "classifier"), ("judge", {}, "badnets1"),
                     ("judge", plain, "classifier"), ("judge", plain, "badnets1")]
    study.judges.classifier()  # trained here: no longer a task
    assert ("judge", {}, "classifier") not in parallel.judge_tasks(study) and study.judges.cached("classifier")


@pytest.mark.slow
def test_workers_train_the_judges_the_study_asks_for(tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.ENV_WORKERS, "2")
    study = Study("smoke", {**TINY, "run_dir": str(tmp_path / "run")}, progress=False)
    assert parallel.compute_cells(study, [], judges=True) == 2
    assert parallel.judge_tasks(study) == []  # every judge (and its ablation twin) is in the store
    assert study.judges.cached("classifier") and study.judges.cached("badnets1")
