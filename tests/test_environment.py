"""pyproject.toml (pip) and environment.yml (conda) pin the same packages at the same versions, and the
running environment is the pinned one."""

import re
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.version import Version

from bibad_utils.config import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-!]+)$")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip())
        assert match, f"not an exact pin: {line!r}"
        name = _name(match.group(1))
        assert name not in pins, f"{name} listed twice"
        pins[name] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment():
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def _conda_parts(environment):
    conda, pip = [], []
    for dep in environment["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


def test_same_packages_and_versions(pyproject, environment):
    project = _pins(pyproject["project"]["dependencies"])
    _, pip = _conda_parts(environment)
    conda_pins = _pins(p for p in pip if not p.startswith("-e"))
    assert conda_pins == project
    assert "-e ." in pip  # the study's own package, as `pip install -e .` does


def test_conda_python_matches_requires_python(pyproject, environment):
    conda, _ = _conda_parts(environment)
    python = [d for d in conda if d.startswith("python")]
    assert python == ["python=3.11"]
    floor = pyproject["project"]["requires-python"].removeprefix(">=")
    assert Version("3.11") >= Version(floor)
    assert {d.split("=")[0] for d in conda} <= {"python", "pip", "nodejs"}


def test_installed_versions_are_the_pins(pyproject):
    mismatched = {}
    for name, version in _pins(pyproject["project"]["dependencies"]).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched[name] = (version, None)
            continue
        # local build tags (torch's +cpu / +cu130) do not change the release
        if Version(installed).public != Version(version).public:
            mismatched[name] = (version, installed)
    assert not mismatched, f"pinned vs installed: {mismatched}"
