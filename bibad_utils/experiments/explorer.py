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
from bibad_utils.plots import G_COLORS, MAX_FIGURE_WIDTH_IN, show_image
from bibad_utils.stages import Cell
from bibad_utils.typed_config import Profile

FRAME_TRIGGER = G_COLORS["G1"]    # the detector fires
FRAME_NONE = "#BBBBBB"            # it does not
CELL_INCHES = 0.7                 # displayed side of one image
LABEL_FONTSIZE = 6.5


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

def panel_size(n: int, ncol: int, cell: float = CELL_INCHES) -> tuple[float, float]:
    """(width, height) in inches of a panel of ``n`` images, ``ncol`` per row, with two title lines."""
    cols = max(1, min(ncol, n))
    rows = max(1, math.ceil(n / cols))
    return cols * (cell + 0.08) + 0.1, rows * (cell + 0.2) + 0.55


def draw_panel(container, images, frames=None, labels=None, title: str | None = None, ncol: int = 4) -> None:
    """Draw ``images`` (uint8 ``[N, H, W, 3]``) into ``container`` (a Figure or SubFigure), ``ncol`` per
    row, each framed by ``frames[i]`` (a colour, None: no frame) and labelled ``labels[i]`` below;
    ``title`` (may hold newlines) above. An empty set shows "no images"."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError("images", f"{images.dtype} array of shape {images.shape}", "uint8 [N, H, W, 3]")
    n = len(images)
    for name, seq in (("frames", frames), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ConfigError(name, f"{len(seq)} entries", f"one per image ({n})")
    if title:
        container.suptitle(title, fontsize=8.5, weight="bold", y=0.995, va="top")
    if n == 0:
        ax = container.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no images", ha="center", va="center", fontsize=9, color="#555555")
        return
    cols = max(1, min(ncol, n))
    rows = math.ceil(n / cols)
    _, height = panel_size(n, ncol)
    axes = container.subplots(rows, cols, squeeze=False,
                              gridspec_kw=dict(left=0.02, right=0.98, bottom=0.2 / height, top=1 - 0.5 / height,
                                               wspace=0.12, hspace=0.3))
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        color = None if frames is None else frames[k]
        show_image(ax, images[k], 1, color, 3.0 if color == FRAME_TRIGGER else 1.5)
        if labels is not None:
            ax.set_xlabel(str(labels[k]), fontsize=LABEL_FONTSIZE, labelpad=1.5)


def panels_figure(panels: list[dict], title: str | None = None, ncol: int = 4) -> Figure:
    """Panels side by side, each a dict with ``images`` (uint8 ``[N, H, W, 3]``) and optional ``frames``,
    ``labels`` and ``title`` (see :func:`draw_panel`); ``title`` heads the whole figure. Panels wider together
    than the book's column wrap into balanced rows (four guidance scales: two rows of two), so that the book
    shows their labels at the size they are drawn."""
    if not panels:
        raise ConfigError("panels", panels, "at least one panel")
    sizes = [panel_size(len(p["images"]), ncol) for p in panels]
    widest = max(s[0] for s in sizes)
    fit = max(1, min(len(panels), int(MAX_FIGURE_WIDTH_IN // widest)))
    rows = math.ceil(len(panels) / fit)
    per_row = math.ceil(len(panels) / rows)
    columns = [max(s[0] for s in sizes[i::per_row]) for i in range(per_row)]
    top = 0.3 if title else 0.0
    body_h = rows * max(s[1] for s in sizes)
    fig = Figure(figsize=(sum(columns), body_h + top), dpi=100)
    body = fig
    if title:
        head, body = fig.subfigures(2, 1, height_ratios=[top, body_h], hspace=0.0)
        head.text(0.5, 0.5, title, ha="center", va="center", fontsize=10, weight="bold")
    subs = np.atleast_1d(body.subfigures(rows, per_row, width_ratios=columns, wspace=0.0, hspace=0.0)).reshape(-1)
    for sub in subs[len(panels):]:  # the unused places of a last, shorter row
        sub.set_visible(False)
    for sub, p in zip(subs, panels):
        draw_panel(sub, p["images"], p.get("frames"), p.get("labels"), p.get("title"), ncol)
    return fig


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
        """A :func:`draw_panel` dict of the first ``n`` images of a view, titled ``title`` and the view's
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
