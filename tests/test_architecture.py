"""The package's shape: no import circle (edges to a package's own ``__init__`` count), no private name
imported from another module, no import after the first definition, every module's one job stated (a
docstring, and a place in CONTRIBUTING's module map), and the layering rule (the science never imports
the analyses, the figures or the publishing). Read from the source text, nothing is imported, so the test
is fast and sees imports inside functions as well."""

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bibad_utils"
# Import circles still present, as sorted module tuples, each with the reason; the list only shrinks.
KNOWN_CIRCLES = {
}

# The science: data, models, judges, metrics and the cached chain. It may not import these.
SCIENCE = ("config", "typed_config", "data", "triggers", "poison", "store", "diffusion", "training", "checkpoints", "sampling", "judges",
           "metrics", "defenses", "memorization", "cells", "shipped_base", "stages", "study_judges", "schema", "profile_yaml",
           "base")
ABOVE_SCIENCE = ("experiments", "plots", "publish", "report", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its text (at the top or inside functions)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` names the submodule when there is one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            # an edge to one's own package counts (its __init__ is a module that may import back), but not
            # to the root package, whose __init__ imports nothing
            if t and t != name and t != "bibad_utils":
                found.add(t)
    return found


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan), as sorted tuples."""
    index, low, stack, on_stack, out = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.add(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    circles = _circles(_graph())
    new = sorted(c for c in circles if c not in KNOWN_CIRCLES)
    assert not new, f"import circles: {new}"
    gone = sorted(set(KNOWN_CIRCLES) - circles)
    assert not gone, f"circles no longer present, remove them from KNOWN_CIRCLES: {gone}"


def test_the_circle_finder_finds_circles():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert _circles({"a": {"b"}, "b": set()}) == set()


def _module_map() -> dict[str, str]:
    """CONTRIBUTING's module map: the name in a row's first cell (``data/`` -> ``data``) -> the row."""
    rows = {}
    for line in (PACKAGE.parent / "CONTRIBUTING.md").read_text().splitlines():
        m = re.match(r"^\| `([^`]+)`", line)
        if m:
            rows[m.group(1).rstrip("/").removesuffix(".*")] = line
    return rows


def test_every_module_states_its_one_job():
    """A module says what it is for (its docstring) and has its place in the module map: a top-level
    module or package has a row, a module of a package is named in its package's row. There is no line
    limit: a module is split when it does two jobs, never to pass a count."""
    rows, problems = _module_map(), []
    for name, path in _modules().items():
        parts = name.split(".")[1:]
        if not parts:
            continue
        if not ast.get_docstring(ast.parse(path.read_text())):
            problems.append(f"{name}: no docstring saying what it is for")
        row = rows.get(parts[0]) or next((r for r in rows.values() if f"`{parts[0]}`" in r.split("|")[1]), None)
        if row is None:
            problems.append(f"{name}: no row for {parts[0]} in CONTRIBUTING's module map")
        elif len(parts) > 1 and path.name != "__init__.py" and f"`{parts[-1]}`" not in row and f"`{parts[-1]}/`" not in row:
            problems.append(f"{name}: {parts[-1]} not named in the {parts[0]} row of the module map")
    assert not problems, problems


def _private_imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("bibad_utils")):
            out += [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_private_name_is_imported_from_another_module():
    found = {name: bad for name, path in _modules().items() if (bad := _private_imports(ast.parse(path.read_text())))}
    assert not found, f"private names imported across modules (make them public where they live): {found}"


def test_no_import_after_the_first_definition():
    late = []
    for name, path in _modules().items():
        seen_def = False
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                seen_def = True
            elif seen_def and isinstance(node, (ast.Import, ast.ImportFrom)):
                late.append(f"{name}:{node.lineno}")
    assert not late, f"module-level imports after a definition (move them to the top): {late}"


def test_the_probes_see_what_they_look_for():
    assert _private_imports(ast.parse("from bibad_utils.x import _y, z\nfrom .w import _v")) == ["_y", "_v"]
    assert _private_imports(ast.parse("from os import _exit\nfrom bibad_utils import __version__")) == []


@pytest.mark.parametrize("science", SCIENCE)
def test_the_science_never_imports_analyses_figures_or_publishing(science):
    graph = _graph()
    own = [m for m in graph if m == f"bibad_utils.{science}" or m.startswith(f"bibad_utils.{science}.")]
    assert own, f"no module bibad_utils.{science}"
    above = tuple(f"bibad_utils.{m}" for m in ABOVE_SCIENCE)
    bad = sorted((m, t) for m in own for t in graph[m] if any(t == a or t.startswith(a + ".") for a in above))
    assert not bad, f"{science} imports above its layer: {bad}"


def test_plots_import_nothing_of_the_package_but_its_base():
    graph = _graph()
    own = [m for m in graph if m == "bibad_utils.plots" or m.startswith("bibad_utils.plots.")]
    outside = sorted({t for m in own for t in graph[m]} - set(own) - {"bibad_utils.base"})
    assert not outside, f"plots import {outside}: figures take computed data as arguments"
