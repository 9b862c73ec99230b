"""Shared fixtures: small, fast datasets for unit tests."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Under ``pytest -n N --dist loadgroup`` (make test), every test that uses the smoke book runs on one
    worker, so the slowest fixture of the suite is built once."""
    for item in items:
        if "smoke_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke_book"))


@pytest.fixture(scope="session")
def tiny_procedural():
    """Procedural training set: 10 classes x 6 images of 16 px (seed 0)."""
    from bibad_utils.data import make_procedural

    return make_procedural(6, image_size=16, seed=0)


def run_bibad(*args, timeout=3000) -> subprocess.CompletedProcess:
    """``python -m bibad_utils.cli ARGS`` from the repository root, one thread, hub offline."""
    from bibad_utils.config import REPO_ROOT

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "bibad_utils.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """``_build/html`` of the smoke profile: the real stage notebooks run by papermill (when there are
    any) into ``<out>/run``, then the book built strictly from them. Built once per test session and
    shared by the end-to-end test and the page checks (the smoke run is the slowest step of the suite)."""
    from bibad_utils.config import REPO_ROOT
    from bibad_utils.publish.notebooks import find_stages

    out = tmp_path_factory.mktemp("smoke-book")
    run_dir = out / "run"
    if find_stages(REPO_ROOT / "notebooks"):
        run = run_bibad("run", "--profile", "smoke", "--set", f"run_dir={run_dir}")
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    book = run_bibad("book", "--profile", "smoke", "--set", f"run_dir={run_dir}", "--output", str(out))
    assert book.returncode == 0, book.stdout[-4000:] + book.stderr[-4000:]
    return out / "_build" / "html"
