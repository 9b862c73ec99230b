"""The generation explorer of chapter 07: the target-prompt generations of any cell of the grid, with
the judges' verdicts on every image.

A view is one (trigger, p, w): the DM poisoned with ``trigger`` at ratio ``p`` (``p = 0``: the clean
control, judged by that trigger's detector), sampled with guidance ``w``. Every image gets a frame
coloured by the trigger detector's decision (vermillion: trigger; grey: none) and a label naming the
class the clean classifier sees; the title counts G1-G4 over the whole target-prompt set of the view.

Everything is read from the study's cached artifacts (generations, judges); nothing is trained here as
long as the earlier stages have run. :func:`make_explorer` builds the interactive widget for JupyterLab,
:func:`explorer_panels` the static figure (all w side by side) for the book, which has no kernel.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from bibad_utils import metrics
from bibad_utils.base import ConfigError
from bibad_utils.plots.grids import side_by_side_grids
from bibad_utils.plots.style import G_COLORS
from bibad_utils.stages import Cell
from bibad_utils.typed_config import Profile

FRAME_TRIGGER = G_COLORS["G1"]    # the detector fires
FRAME_NONE = "#BBBBBB"            # it does not
CELL_PX = 70                      # displayed side of one image, in screen pixels


# ----------------------------------------------------------------------------------------- choices

def explorer_choices(cfg: Profile) -> dict:
    """The explorer's choices from a resolved profile: ``{"trigger": [attack, ...], "p": [0.0 (when the
    profile has the clean control), ratios ascending...], "w": [guidance, ...]}`` (floats)."""
    ratios = sorted(float(p) for p in cfg.ratios)
    return {"trigger": list(cfg.attacks),
            "p": ([0.0] if "clean" in cfg.controls else []) + ratios,
            "w": [float(w) for w in cfg.sampling.guidance]}


def p_label(p: float) -> str:
    """``"clean (p = 0)"`` for the control, else e.g. ``"p = 10%"``."""
    return "clean (p = 0)" if p == 0 else f"p = {100 * p:g}%"


def cell_for(cfg: Profile, trigger: str, p: float) -> Cell:
    """The cell of a view: ``Cell("clean")`` for ``p = 0``, else ``Cell(trigger, p)`` with ``p`` one of
    the profile's ratios. Raises ConfigError for a trigger or ratio outside the profile's grid."""
    choices = explorer_choices(cfg)
    if trigger not in choices["trigger"]:
        raise ConfigError("trigger", trigger, f"one of the profile's attacks {choices['trigger']}")
    for q in choices["p"]:
        if math.isclose(float(p), q, abs_tol=1e-12):
            return Cell("clean") if q == 0 else Cell(trigger, q)
    raise ConfigError("p", p, f"one of {choices['p']} (0: the clean control)")


def _check_guidance(cfg: Profile, w: float) -> float:
    for g in explorer_choices(cfg)["w"]:
        if math.isclose(float(w), g):
            return g
    raise ConfigError("w", w, f"one of the profile's guidance scales {explorer_choices(cfg)['w']}")


# ------------------------------------------------------------------------------------------- texts

def counts_text(trigger, match) -> str:
    """G1-G4 counts and ratios of one view on two lines, e.g. ``"G1 3 (19%) · G2 5 (31%)\\nG3 1 (6%) ·
    G4 7 (44%) of 16"``. ``trigger``, ``match``: bool ``[N]`` (T and M of every target-prompt image)."""
    c = metrics.g_counts(trigger, match)
    if c["n"] == 0:
        return "no images"

    def one(g):
        return f"{g} {c[f'n_{g}']} ({c[g]:.0%})"

    return f"{one('G1')} · {one('G2')}\n{one('G3')} · {one('G4')} of {c['n']}"


def frame_colors(trigger) -> list[str]:
    """One frame colour per image from the detector's decisions (bool ``[N]``)."""
    return [FRAME_TRIGGER if t else FRAME_NONE for t in np.asarray(trigger, dtype=bool)]


# ----------------------------------------------------------------------------------------- drawing

def panel_grids(panels: list[dict], ncol: int = 4) -> dict:
    """The arguments of :func:`~bibad_utils.plots.grids.side_by_side_grids` for ``panels``: dicts with
    ``images`` (uint8 ``[N, H, W, 3]``) and optional ``frames`` (a colour per image, None: no frame; the
    detector's are thicker where it fires), ``labels`` (a text under each image) and ``title`` (which names
    the panel, newlines kept), ``ncol`` images a row, each shown :data:`CELL_PX` pixels wide."""
    names = [str(p.get("title", "")) for p in panels]
    if not panels or len(set(names)) < len(names):
        raise ConfigError("panels", names, "at least one panel, with titles that differ")
    frames = {n: p["frames"] for n, p in zip(names, panels) if p.get("frames") is not None}
    return {"grids": {n: p["images"] for n, p in zip(names, panels)}, "nrow": ncol,
            "scale": CELL_PX / max(np.shape(panels[0]["images"])[1:3], default=CELL_PX),
            "labels": {n: p["labels"] for n, p in zip(names, panels) if p.get("labels") is not None},
            "border_colors": frames,
            "border_widths": {n: [3.0 if c == FRAME_TRIGGER else 1.5 for c in f] for n, f in frames.items()}}


def panels_figure(panels: list[dict], title: str | None = None, ncol: int = 4) -> Figure:
    """Panels (:func:`panel_grids`) side by side, ``title`` above them all; panels wider together than the
    book's column wrap into balanced rows (four guidance scales: two rows of two), so that the book shows their
    labels at the size they are drawn."""
    return side_by_side_grids(**panel_grids(panels, ncol), suptitle=title)


# ------------------------------------------------------------------------------------ from a study

class ExplorerData:
    """Judged target-prompt generations of a study, memoised per (cell, w, trigger) so that moving the
    explorer's sliders back and forth judges each set once."""

    def __init__(self, study):
        self.study = study
        self._views: dict = {}

    def view(self, cell: Cell, w: float, trigger: str) -> dict:
        """``{"images": uint8 [N, H, W, 3], "trigger": bool [N], "match": bool [N], "pred": int64 [N]}``
        of ``cell``'s generations for the target prompt at guidance ``w``, judged with ``trigger``'s
        detector and the clean classifier."""
        w = _check_guidance(self.study.cfg, w)
        key = (cell, w, trigger)
        if key not in self._views:
            gen = self.study.generations(cell)[("target", w)]
            judged = self.study.judges.judge(gen, trigger)
            self._views[key] = {"images": gen.images, "trigger": judged["trigger"], "match": judged["match"],
                                "pred": judged["pred"]}
        return self._views[key]

    def panel(self, cell: Cell, w: float, trigger: str, n: int, title: str) -> dict:
        """A :func:`panel_grids` dict of the first ``n`` images of a view, titled ``title`` and the view's
        G1-G4 counts (over all its images)."""
        v = self.view(cell, w, trigger)
        names = self.study.class_names
        k = min(int(n), len(v["images"]))
        return {"images": v["images"][:k], "frames": frame_colors(v["trigger"][:k]),
                "labels": [names[c] for c in v["pred"][:k]],
                "title": f"{title}\n{counts_text(v['trigger'], v['match'])}"}


def _heading(cell: Cell, trigger: str) -> str:
    return f"{'clean DM' if cell.kind == 'clean' else cell.name} · {trigger} detector"


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError("n", n, "an integer >= 1 (images shown)")
    return int(n)


def explorer_figure(study, cell: Cell, w: float, n: int = 16, trigger: str | None = None,
                    data: ExplorerData | None = None) -> Figure:
    """The first ``n`` target-prompt generations of ``cell`` at guidance ``w``, framed by the detector of
    ``trigger`` (default: the cell's own trigger; required for the clean control), labelled with the
    clean classifier's class, titled with G1-G4 over the whole set. ``data`` reuses judged views."""
    n = _check_n(n)
    trigger = trigger or cell.trigger_kind
    if trigger is None:
        raise ConfigError("trigger", trigger, f"a trigger kind whose detector judges {cell.name}")
    data = data or ExplorerData(study)
    return panels_figure([data.panel(cell, w, trigger, n, f"w = {w:g}")], title=_heading(cell, trigger),
                         ncol=4 if n <= 16 else 8)


def explorer_panels(study, trigger: str, p: float, n: int = 16, data: ExplorerData | None = None) -> Figure:
    """The static view of one (trigger, p) for the book: every guidance scale of the profile side by
    side (:func:`explorer_figure` per w)."""
    n = _check_n(n)
    cell = cell_for(study.cfg, trigger, p)
    data = data or ExplorerData(study)
    panels = [data.panel(cell, w, trigger, n, f"w = {w:g}") for w in explorer_choices(study.cfg)["w"]]
    return panels_figure(panels, title=_heading(cell, trigger), ncol=4)


def static_views(cfg: Profile) -> list[tuple[str, float]]:
    """Every (trigger, p) of the grid, trigger-major, p ascending (the clean control first): an attack that
    ``attack_ratios`` limits to some ratios is shown at those alone (no model is trained for the explorer)."""
    c = explorer_choices(cfg)
    own = cfg.attack_ratios or {}
    return [(t, p) for t in c["trigger"] for p in c["p"]
            if p == 0 or t not in own or any(math.isclose(p, float(q), abs_tol=1e-12) for q in own[t])]


# ------------------------------------------------------------------------------------------ widget

def figure_html(fig: Figure, alt: str = "") -> str:
    """An ``<img>`` holding the figure as an inline PNG (a data URI): the widget's saved state then
    shows the figure in a page without a kernel, with no file beside it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}" style="max-width: 100%">'


def explorer_widget(choices: dict, render: Callable[[str, float, float], Figure]):
    """The explorer's controls (trigger and p dropdowns, a w slider) above an image that shows
    ``render(trigger, p, w)``, redrawn on every change. ``choices`` as from :func:`explorer_choices`.
    Returns an ``ipywidgets.VBox`` whose ``controls`` attribute maps "trigger", "p", "w" to the widgets
    and whose ``view`` is the ``ipywidgets.HTML`` showing the figure (:func:`figure_html`)."""
    # Imported here: ipywidgets adds about 0.2 s (python -X importtime) to every importer of this module
    # (the summary's teaser, the static views) while only the interactive widget needs it.
    import ipywidgets as widgets

    for key in ("trigger", "p", "w"):
        if not choices.get(key):
            raise ConfigError(f"choices[{key!r}]", choices.get(key), "a non-empty list")
    trigger = widgets.Dropdown(options=list(choices["trigger"]), description="trigger")
    p = widgets.Dropdown(options=[(p_label(q), q) for q in choices["p"]], value=choices["p"][-1], description="model")
    w = widgets.SelectionSlider(options=[(f"{g:g}", g) for g in choices["w"]], value=choices["w"][0],
                                description="guidance w", continuous_update=False)
    view = widgets.HTML()
    status = widgets.HTML()

    def update(_change=None):
        status.value = "<i>drawing ...</i>"
        alt = f"target-prompt generations, {trigger.value}, {p_label(p.value)}, w = {w.value:g}"
        view.value = figure_html(render(trigger.value, p.value, w.value), alt)
        status.value = ""

    for control in (trigger, p, w):
        control.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([trigger, p, w]), status, view])
    box.controls = {"trigger": trigger, "p": p, "w": w}
    box.view = view
    return box


def make_explorer(study, n: int = 16, data: ExplorerData | None = None):
    """The interactive explorer of ``study``: choose a trigger, p (or the clean control) and w, see the
    first ``n`` target-prompt generations of that cell judged (:func:`explorer_figure`). ``data``
    shares judged views with other figures."""
    n = _check_n(n)
    data = data or ExplorerData(study)

    def render(trigger, p, w):
        return explorer_figure(study, cell_for(study.cfg, trigger, p), w, n=n, trigger=trigger, data=data)

    return explorer_widget(explorer_choices(study.cfg), render)
