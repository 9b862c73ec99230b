"""Every figure of the book is numbered, captioned and described: the stage notebooks' figure cells carry
MyST-NB cell metadata ``mystnb.figure`` (``caption``, ``name``) and ``mystnb.image.alt``.

A *figure cell* is found by reading its code (:func:`figure_displays`): its last statement is a figure, or
it calls ``display(...)`` on one. A figure is a call of a *figure function* (:func:`figure_functions`: a
public function of ``bibad_utils/plots`` or ``bibad_utils/experiments`` annotated to return a ``Figure``, or
named ``*_figure`` / ``*_figures``), either branch of a conditional expression that is one, or a name the
cell bound to one (an assignment, or a ``for`` loop over such a call).

MyST-NB (1.4) wraps *every* image output of a cell in its own figure node with the cell's caption and
name, so a cell that shows several figures (a ``display`` in a loop, or several calls) would repeat one
caption and define one target name several times. Such cells carry only ``mystnb.image.alt`` (applied to
each image) and no ``mystnb.figure``; a cell that shows exactly one figure carries both.

Captions say what to look at, not what came out: results change from run to run and are glued into the
text, so a caption holds no typed number (no ``%``, no number outside a name such as G1, BadNets-1 or
CIFAR-10). Alt text describes the figure for a reader who cannot see it: plain text, at least
:data:`MIN_ALT` characters, not the caption again.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURE_SOURCES = (REPO / "bibad_utils" / "plots", REPO / "bibad_utils" / "experiments")
MIN_ALT = 40
NAME_RE = re.compile(r"^fig-(\d\d)-[a-z0-9]+(?:-[a-z0-9]+)*$")
# A number that is part of a name (G1, G1–G4, BadNets-1, CIFAR-10, F1) is allowed in a caption.
NAMED_NUMBER = re.compile(r"[A-Za-z][A-Za-z_]*-?\d+")
TYPED_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
NO_OUTPUT_TAGS = {"remove-cell", "remove-output"}


# ------------------------------------------------------------------------------------- the rule

def figure_functions(roots=FIGURE_SOURCES) -> frozenset[str]:
    """Names of the public module-level functions under ``roots`` that return a figure: annotated
    ``-> Figure`` (or a type mentioning it), or named ``*_figure`` / ``*_figures``. Read from the sources
    (no import), so the rule follows the package as it is written."""
    names = set()
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                    continue
                returns = ast.unparse(node.returns) if node.returns is not None else ""
                if "Figure" in returns or node.name.endswith(("_figure", "_figures")):
                    names.add(node.name)
    return frozenset(names)


FIGURE_FUNCTIONS = figure_functions()


def _python(source: str) -> str:
    """A cell's source as plain Python: IPython magics (``%matplotlib inline``) turned into calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return TransformerManager().transform_cell(source)


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _is_figure(node, bound: set[str], functions=FIGURE_FUNCTIONS) -> bool:
    if isinstance(node, ast.Call):
        return _called_name(node) in functions
    if isinstance(node, ast.IfExp):
        return _is_figure(node.body, bound, functions) or _is_figure(node.orelse, bound, functions)
    return isinstance(node, ast.Name) and node.id in bound


def _inside_loops(tree: ast.AST) -> dict[int, bool]:
    """id(node) -> whether the node lies inside a loop or a comprehension."""
    inside: dict[int, bool] = {}

    def visit(node, in_loop):
        inside[id(node)] = in_loop
        loop = isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
                                 ast.GeneratorExp))
        for child in ast.iter_child_nodes(node):
            visit(child, in_loop or loop)

    visit(tree, False)
    return inside


def figure_displays(source: str, functions=FIGURE_FUNCTIONS) -> int:
    """How many figures a code cell shows: 0 (no figure), 1, or 2 meaning "several" (more than one
    display, or a display inside a loop)."""
    tree = ast.parse(_python(source))
    bound: set[str] = set()
    for node in ast.walk(tree):  # names bound to a figure, or looping over figures
        if isinstance(node, ast.Assign) and _is_figure(node.value, bound, functions):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.For, ast.AsyncFor)) and any(
                isinstance(n, ast.Call) and _called_name(n) in functions for n in ast.walk(node.iter)):
            bound.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    inside = _inside_loops(tree)
    shown = 0
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and _called_name(node) == "display"
                and any(_is_figure(arg, bound, functions) for arg in node.args)):
            shown += 2 if inside[id(node)] else 1
    if tree.body and isinstance(tree.body[-1], ast.Expr) and _is_figure(tree.body[-1].value, bound, functions):
        shown += 1
    return min(shown, 2)


def figure_cells(nb: dict):
    """``(index, cell, displays)`` of every code cell that shows a figure (see :func:`figure_displays`)."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if NO_OUTPUT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        shown = figure_displays("".join(cell["source"]))
        if shown:
            yield i, cell, shown


def typed_numbers(caption: str) -> list[str]:
    """Numbers typed into a caption as results: any ``%``, and any number that is not part of a name."""
    found = ["%"] if "%" in caption else []
    return found + TYPED_NUMBER.findall(NAMED_NUMBER.sub("", caption))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def cell_problems(cell: dict, displays: int, chapter: str) -> list[str]:
    """What is missing or wrong in one figure cell's metadata (empty: nothing)."""
    meta = cell.get("metadata", {}).get("mystnb", {})
    figure, image = meta.get("figure"), meta.get("image") or {}
    problems = []
    alt = str(image.get("alt", "")).strip()
    if len(alt) < MIN_ALT:
        problems.append(f"mystnb.image.alt missing or shorter than {MIN_ALT} characters")
    if any(ch in alt for ch in "$`*{}"):
        problems.append("alt text holds markup ($, `, *, braces): it is shown as plain text")
    if displays > 1:
        if figure is not None:
            problems.append("shows several figures, yet has mystnb.figure: MyST-NB would give every image the "
                            "same caption and name")
        return problems
    if not isinstance(figure, dict):
        return problems + ["mystnb.figure (caption and name) missing"]
    caption, name = str(figure.get("caption", "")).strip(), str(figure.get("name", ""))
    if not caption:
        problems.append("empty caption")
    match = NAME_RE.match(name)
    if not match or match.group(1) != chapter:
        problems.append(f"name {name!r} is not fig-{chapter}-<short-id>")
    numbers = typed_numbers(caption)
    if numbers:
        problems.append(f"caption types numbers {numbers}: results belong in glued text")
    if alt and caption and (_norm(alt) == _norm(caption) or _norm(caption) in _norm(alt)
                            or _norm(alt) in _norm(caption)):
        problems.append("alt text repeats the caption")
    return problems


def book_names() -> list[str]:
    """Targets the book's pages and generated pages define (``:name:`` options, ``(label)=``)."""
    names = []
    for path in sorted((REPO / "book").rglob("*.md")) + [REPO / "bibad_utils" / "publish" / "book.py"]:
        text = path.read_text(encoding="utf-8")
        names += re.findall(r":name:\s*([\w-]+)", text) + re.findall(r"^\(([\w-]+)\)=\s*$", text, re.M)
    return names


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("source, expected", [
    ("plots.bar_with_ci(df, x='p', y='r')", 1),
    ("%matplotlib inline\ntr.pretrain_loss_figure(study)", 1),
    ("examples = tr.x(study)\nplots.side_by_side_grids(examples) if examples else plots.message_figure('no')", 1),
    ("teaser = summary.teaser_figure(study)\nsummary.save_teaser(study, teaser)\nteaser", 1),
    ("for fig in tr.target_figures(study).values():\n    display(fig)", 2),
    ("for c in cells:\n    display(insights.examples_figure(study, c, w))", 2),
    ("display(plots.heatmap(a))\nplots.heatmap(b)", 2),
    ("table = tr.pretrain_table(study)\ntable.round(3)", 0),
    ("explorer.make_explorer(study, n=16)", 0),  # a widget with its own alt text, not a figure output
    ("fig = plots.heatmap(a)\nfig.savefig('x.png')", 0),  # drawn but not shown
])
def test_rule_finds_figure_cells(source, expected):
    assert figure_displays(source) == expected


def test_rule_knows_the_figure_functions():
    # plotting functions annotated -> Figure, and experiment figures named *_figure without an annotation
    assert {"bar_with_ci", "side_by_side_grids", "trigger_patterns", "detection_figure", "cd_mask_figure",
            "target_figures", "explorer_panels", "teaser_figure"} <= FIGURE_FUNCTIONS
    assert "make_explorer" not in FIGURE_FUNCTIONS and "loss_logs" not in FIGURE_FUNCTIONS


def _calls_figure_function(source: str) -> bool:
    return any(isinstance(n, ast.Call) and _called_name(n) in FIGURE_FUNCTIONS
               for n in ast.walk(ast.parse(_python(source))))


def test_rule_finds_the_figures_of_every_notebook_that_draws_some():
    # a guard on the rule itself: a notebook that calls figure functions shows at least one figure cell
    assert NOTEBOOKS
    missed = [p.name for p in NOTEBOOKS
              if any(c["cell_type"] == "code" and _calls_figure_function("".join(c["source"]))
                     for c in _load(p)["cells"])
              and not any(True for _ in figure_cells(_load(p)))]
    assert not missed, f"figure functions are called but no figure cell is found in {missed}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figure_cells_are_captioned(path):
    chapter = path.name[:2]
    problems = [f"cell {i} ({cell.get('id')}): {p}" for i, cell, shown in figure_cells(_load(path))
                for p in cell_problems(cell, shown, chapter)]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_figure_names_are_unique_in_the_book():
    names = book_names()
    for path in NOTEBOOKS:
        names += [cell["metadata"]["mystnb"]["figure"]["name"] for _, cell, _ in figure_cells(_load(path))
                  if "figure" in cell.get("metadata", {}).get("mystnb", {})]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"figure names defined more than once: {duplicates}"


def test_check_catches_a_figure_cell_without_metadata():
    path = next(p for p in NOTEBOOKS if any(s == 1 for _, _, s in figure_cells(_load(p))))
    _, cell, shown = next(c for c in figure_cells(_load(path)) if c[2] == 1)
    bare = dict(cell, metadata={})
    assert "mystnb.figure (caption and name) missing" in cell_problems(bare, shown, path.name[:2])
    several = dict(cell, metadata={"mystnb": {"figure": {"caption": "x", "name": "fig-01-x"},
                                              "image": {"alt": "a" * MIN_ALT}}})
    assert any("several figures" in p for p in cell_problems(several, 2, path.name[:2]))


@pytest.mark.parametrize("caption, bad", [
    ("G1 and G2 of BadNets-1 against p, CIFAR-10 values as diamonds; F1 dashed.", []),
    ("G1–G4 per detector at the first guidance scale.", []),
    ("r_gen reaches 0.78 here.", ["0.78"]),
    ("ASR falls by 40 %.", ["%", "40"]),
    ("Guidance w = 1.", ["1"]),
])
def test_typed_numbers(caption, bad):
    assert typed_numbers(caption) == bad


def test_figures_are_numbered():
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["config"].get("numfig") is True
