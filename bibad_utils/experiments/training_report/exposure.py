"""Stage 02's exposure question: after how many epochs of fine-tuning does a poisoned DM draw its trigger?

The paper fine-tunes about 50 epochs (:data:`bibad_utils.paper.PAPER_EPOCHS`); the CPU profiles fine-tune far
fewer, and at p = 1-2 % their DMs draw no more triggers than the clean one. :func:`exposure_curve` measures
where that changes: it fine-tunes the chosen cells once more in a variant of the study whose fine-tuning runs
``epochs`` epochs and keeps the EMA weights of ``points`` evenly spaced checkpoints (the learning rate is
constant after warm-up, so the checkpoint at step s is the model a fine-tuning of s steps ends with), draws the
study's target-prompt set (its seeds, size and sampler) from each kept checkpoint at guidance ``w``, and reads
the trigger with both instruments: the learned detector and, for a trigger with a pixel pattern, the
template. Beside each rate stands the clean control's on its own target set at the same w (the instrument's
false alarms on generations). A checkpoint has *learned* the trigger under an instrument when the lower end
of its rate's 95 % Wilson interval lies above the upper end of the clean control's.

    from bibad_utils.cells import Cell
    curve = exposure_curve(study, [Cell("badnets1", 0.01), Cell("badnets1", 0.02)], epochs=50, points=10)
    first_learned(curve)          # per cell and instrument: the fewest epochs at which the trigger is learned

Every fine-tuning and every generated set is cached in the study's store (stage ``finetune`` under the
variant's key, :data:`GEN_STAGE`), so an interrupted curve resumes and a finished one is read back in seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from matplotlib.figure import Figure

from bibad_utils import metrics, plots
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.cells import Cell, exposure_epochs
from bibad_utils.checkpoints import kept_checkpoints
from bibad_utils.report import with_interval
from bibad_utils.paper import PAPER_EPOCHS
from bibad_utils.schema import is_int, is_number

GEN_STAGE = "exposure_gen"
COLUMNS = ["cell", "attack", "p", "step", "epochs", "instrument", "n", "k", "rate", "rate_lo", "rate_hi",
           "clean_rate", "clean_hi", "learned"]


def exposure_variant(study, epochs: float, points: int):
    """``study`` with a fine-tuning of about ``epochs`` epochs (rounded up to ``points`` equal stretches)
    that keeps the EMA weights at the end of each stretch."""
    if not is_number(epochs) or not 0 < epochs <= 1000:
        raise ConfigError("epochs", epochs, "a number of fine-tuning epochs in (0, 1000]")
    if not is_int(points) or not 1 <= points <= 100:
        raise ConfigError("points", points, "an integer number of kept checkpoints in [1, 100]")
    batch = int(study.cfg.finetune.batch_size)
    per = max(1, math.ceil(epochs * len(study.train_set) / batch / points))
    return study.variant({"finetune": {"steps": per * points, "checkpoint_every": per, "keep_checkpoints": points}})


def _target_set(variant, cell: Cell, checkpoint: dict, w: float) -> np.ndarray:
    """The target-prompt images (uint8) of one kept checkpoint at guidance ``w``, cached under :data:`GEN_STAGE`."""
    from bibad_utils.progress import choose_threads
    from bibad_utils.sampling import sample_images, set_seeds

    s = variant.cfg.sampling
    model_key = variant.model_key(cell)
    params = {"sampling": {k: s[k] for k in ("steps", "eta", "n_target", "batch_size") if k in s},
              "guidance": float(w), "seed": variant.seed, "target": variant.target,
              "checkpoint_step": int(checkpoint["step"])}

    def build(art):
        from safetensors.torch import load_file
        from bibad_utils.diffusion import load_model

        choose_threads()
        model = load_model(variant.store.path("finetune", model_key) / "model")
        model.load_trainable_state(load_file(checkpoint["path"]))
        labels = np.full(s.n_target, variant.target, np.int64)
        images = sample_images(model.to(variant.device), labels, set_seeds(variant.seed, "target", len(labels)),
                               guidance=float(w), steps=s.steps, eta=s.eta, batch_size=s.batch_size,
                               device=variant.device, progress=variant.progress,
                               report=("generate", f"{cell.name} step {checkpoint['step']} w={w:g}"))
        st.save_array(art.dir / "images.npy", images)

    path = variant.store.cached(GEN_STAGE, params, [model_key], build, device=str(variant.device))
    return st.load_array(path / "images.npy")


def trigger_flags(study, kind: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """``{instrument: bool [N]}``: the learned detector of ``kind`` and, where the trigger has a pixel
    pattern, its template (a warp has none)."""
    from bibad_utils.judges import predict

    out = {"detector": predict(study.judges.detector(kind), images, device=study.device)[0].astype(bool)}
    template = study.judges.template(kind)
    if template is not None:
        out["template"] = template.fires(images)
    return out


def exposure_curve(study, cells: list[Cell], epochs: float = 50, points: int = 10, w: float | None = None,
                   parallel: bool = True) -> pd.DataFrame:
    """The trigger rate of each cell's target-prompt set at each kept checkpoint of a fine-tuning of about
    ``epochs`` epochs, under each instrument, beside the clean control's rate (module docstring). w: a
    guidance the profile samples the clean control's target set at (None: the first). parallel: train the
    cells in worker processes (:func:`bibad_utils.parallel.compute_cells`). Columns :data:`COLUMNS`."""
    cells = list(cells)
    if not cells or any(not isinstance(c, Cell) or c.kind in ("clean", "relabel") for c in cells):
        raise ConfigError("cells", cells, "a non-empty list of poisoned grid cells, e.g. [Cell('badnets1', 0.01)]")
    clean = Cell("clean")
    ws = study.target_guidances(clean)
    w = ws[0] if w is None else float(w)
    if w not in ws:
        raise ConfigError("w", w, f"a guidance the clean control's target set is drawn at: one of {ws}")
    variant = exposure_variant(study, epochs, points)  # checked before anything is trained
    if parallel:
        from bibad_utils.parallel import compute_cells
        compute_cells(variant, cells)
    reference = study.generations(clean)[("target", w)].images
    rows = []
    for cell in cells:
        base = trigger_flags(study, cell.kind, reference)
        for ck in kept_checkpoints(variant.store.path("finetune", variant.model_key(cell))):
            images = _target_set(variant, cell, ck, w)
            for instrument, flags in trigger_flags(study, cell.kind, images).items():
                k, n = int(flags.sum()), len(flags)
                lo, hi = metrics.wilson_interval(k, n)
                ck_clean = base[instrument]
                c_hi = metrics.wilson_interval(int(ck_clean.sum()), len(ck_clean))[1]
                rows.append({"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "step": int(ck["step"]),
                             "epochs": exposure_epochs({"steps": ck["step"], "batch_size": variant.cfg.finetune.batch_size},
                                                       len(variant.train_set)),
                             "instrument": instrument, "n": n, "k": k, "rate": k / n, "rate_lo": lo, "rate_hi": hi,
                             "clean_rate": float(ck_clean.mean()), "clean_hi": c_hi, "learned": bool(lo > c_hi)})
    return pd.DataFrame(rows, columns=COLUMNS)


def first_learned(curve: pd.DataFrame) -> pd.DataFrame:
    """Per cell and instrument: the fewest epochs at which the trigger is learned (NaN: at no kept checkpoint),
    the last checkpoint's epochs and rate."""
    rows = []
    for (cell, instrument), g in curve.groupby(["cell", "instrument"], sort=False):
        g = g.sort_values("step")
        learned = g[g["learned"]]
        rows.append({"cell": cell, "instrument": instrument,
                     "learned_at_epochs": float(learned["epochs"].iloc[0]) if len(learned) else float("nan"),
                     "last_epochs": float(g["epochs"].iloc[-1]), "last_rate": float(g["rate"].iloc[-1]),
                     "clean_rate": float(g["clean_rate"].iloc[-1])})
    return pd.DataFrame(rows)


def profile_exposure(study, parallel: bool = True) -> tuple[pd.DataFrame | None, dict]:
    """Chapter 02's exposure section, from the profile's ``exposure`` section: the curve of its cells
    (:func:`exposure_curve`; trained and drawn when missing, read back from the store otherwise) and the facts
    the chapter glues: ``nb02_exposure_sentence`` (what was measured, or how to measure it) and
    ``nb02_exposure_own`` (this profile's epochs per cell). parallel: as in :func:`exposure_curve`. Returns
    ``(curve or None, facts)``."""
    sec = study.cfg.exposure
    own = exposure_epochs(study.cfg.finetune, len(study.train_set))
    facts = {"nb02_exposure_own": f"{own:.1f}"}
    if not sec.cells:
        facts["nb02_exposure_sentence"] = (
            f"This run does not measure it: its profile names no `exposure.cells`. `python scripts/exposure_curve.py "
            f"--profile {study.cfg.name} --cells badnets1:0.01 badnets1:0.02 --epochs 50` measures it (or name the "
            "cells in the profile's `exposure` section and this chapter draws the curve).")
        return None, facts
    cells = [Cell.parse(c) for c in sec.cells]
    curve = exposure_curve(study, cells, epochs=sec.epochs, points=sec.points, w=sec.w, parallel=parallel)
    w = float(sec.w) if sec.w is not None else study.target_guidances(Cell("clean"))[0]
    parts = []
    for (cell, instrument), g in curve.groupby(["cell", "instrument"], sort=False):
        g = g.sort_values("step")
        last, learned = g.iloc[-1], g[g["learned"]]
        when = (f"from {learned['epochs'].iloc[0]:.1f} epochs on" if len(learned)
                else f"at none of its checkpoints up to {last['epochs']:.1f} epochs")
        parts.append(f"{cell}, read by the {instrument}: learned {when} (at {last['epochs']:.1f} epochs "
                     f"{with_interval(last['rate'], last['rate_lo'], last['rate_hi'], False)} of the target-prompt images carry "
                     f"the trigger; the clean control's upper bound {last['clean_hi']:.3f})")
    epochs = float(curve["epochs"].max())
    facts["nb02_exposure_sentence"] = (
        f"Measured here at guidance w = {w:g}, fine-tuning each cell again for {epochs:.1f} epochs and reading "
        f"{int(sec.points)} evenly spaced checkpoints (a checkpoint has learned the trigger when the lower end of its "
        "rate's 95 % interval lies above the upper end of the clean control's): " + "; ".join(parts) + ".")
    return curve, facts


def exposure_figure(study, curve: pd.DataFrame | None) -> Figure:
    """The exposure curve (:func:`~bibad_utils.plots.exposure_chart`) with the paper's exposure and this
    profile's own marked; a notice when ``curve`` is None or empty (nothing measured)."""
    if curve is None or curve.empty:
        return plots.message_figure("no exposure curve measured in this run (the profile's exposure.cells is empty)")
    own = exposure_epochs(study.cfg.finetune, len(study.train_set))
    return plots.exposure_chart(curve, {f"the paper (~{PAPER_EPOCHS})": PAPER_EPOCHS, f"this profile ({own:.1f})": own})
