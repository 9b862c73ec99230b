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


class ConfigErrors(ConfigError):
    """Several parameters with values that are not allowed, found by one check of a whole profile: ``param``,
    ``value`` and ``allowed`` are the first's (a caller that reads one error reads the one it read before),
    ``errors`` holds all of them and the message gives one line each."""

    def __init__(self, errors):
        first = errors[0]
        super().__init__(first.param, first.value, first.allowed)
        self.errors = list(errors)
        self.args = ("; ".join(str(e) for e in self.errors) if len(self.errors) < 2 else
                     f"{len(self.errors)} parameters are not allowed: " + "; ".join(str(e) for e in self.errors),)


def raise_all(errors: list) -> None:
    """Raise what ``errors`` (ConfigErrors) hold, if anything: the one error itself, or :class:`ConfigErrors`."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def repo_path(path) -> Path:
    """A path as a profile gives it: ``~`` expanded, a relative one taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def registry_in_package(package_file, attr, cls: type, first=(), skip=(), unique=("name",)) -> dict:
    """``{obj.name: obj}`` for every object of type ``cls`` that a module of a package declares as ``attr`` (a
    name, or several tried in turn; one object, or a tuple of them): the modules named in ``first`` in that
    order, then the others by name; ``skip`` lists modules that declare nothing. ``package_file``: the
    package's ``__init__`` or any module file in it. An object whose ``unique`` attributes repeat another's
    is a ConfigError naming its module. What the registries of triggers, datasets and detectors read, so
    that a new one is a new module of its package."""
    import importlib
    import pkgutil

    folder = Path(package_file).resolve().parent
    package = ".".join(folder.relative_to(REPO_ROOT).parts)
    found = [m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in set(skip)]
    order = [m for m in first if m in found] + sorted(m for m in found if m not in first)
    def declared():  # (module name, object), module by module, imported as they are reached
        for name in order:
            module = importlib.import_module(f"{package}.{name}")
            for value in (getattr(module, a, None) for a in ((attr,) if isinstance(attr, str) else attr)):
                yield from ((name, v) for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, cls))

    out: dict = {}
    for name, obj in declared():
        for field in unique:
            if any(getattr(o, field) == getattr(obj, field) for o in out.values()):
                raise ConfigError(f"{folder.name}.{name}", getattr(obj, field),
                                  f"a {field} no other module of the package declares")
        out[obj.name] = obj
    return out
