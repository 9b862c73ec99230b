"""The package's foundation, imported by every layer and importing nothing of the package: where the
repository is, and the one error type for a parameter whose value is not allowed."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A parameter has a value that is not allowed.

    The message names the parameter, the value and what is allowed, e.g.
    ``ratio = 1.5 is not allowed: expected a number in [0, 1)``.
    """

    def __init__(self, param, value, allowed):
        self.param = param
        self.value = value
        self.allowed = allowed
        super().__init__(f"{param} = {value!r} is not allowed: expected {allowed}")


def repo_path(path) -> Path:
    """A path as a profile gives it: ``~`` expanded, a relative one taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p
