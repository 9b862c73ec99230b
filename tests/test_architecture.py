"""The package's shape: no import circle, no module over ~400 lines, and the layering rule (the science
never imports the analyses, the figures or the publishing). Read from the source text, nothing is
imported, so the test is fast and sees imports inside functions as well."""

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bibad_utils"
MAX_LINES = 400

# Modules still above MAX_LINES, each with the reason; the list only shrinks.
LONG_MODULES = {
}

# Import circles still present, as sorted module tuples, each with the reason; the list only shrinks.
KNOWN_CIRCLES = {
}

# The science: data, models, judges, metrics and the cached chain. It may not import these.
SCIENCE = ("config", "data", "triggers", "poison", "store", "diffusion", "training", "checkpoints", "sampling", "judges",
           "metrics", "defenses", "memorization", "cells", "shipped_base", "stages", "study_judges", "schema", "base")
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
            if t and t != name and not name.startswith(t + "."):  # a package's own parents are not edges
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


def test_no_module_over_the_line_limit():
    lengths = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in _modules().values()}
    too_long = sorted(f"{p} ({n} lines)" for p, n in lengths.items() if n > MAX_LINES and p not in LONG_MODULES)
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}; split them by idea"
    fixed = sorted(p for p in LONG_MODULES if lengths.get(p, 0) <= MAX_LINES)
    assert not fixed, f"now within {MAX_LINES} lines (or gone), remove from LONG_MODULES: {fixed}"


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
