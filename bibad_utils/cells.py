"""The cells of the study: one training set each (a control, or an attack at a poisoning ratio, drawn from a
pool, trained with a training seed), their command-line spelling, the profile's ``train_seeds`` and the
generated sets of a cell.

Training seeds: the profile's ``train_seeds`` gives the number of fine-tuning runs of a cell (see
:func:`validate_train_seeds`); replicate ``s`` is ``Cell(kind, p, pool, seed=s)``. A replicate shares the
cell's poisoned set, the pre-trained model and the generation noise; only its training run differs (the
initial weights of a from-scratch model, the batch order, the diffusion noise and timesteps, the dropped
conditions), so the spread across replicates measures the training run. Seed 0 is the profile's own run
and keeps the keys it always had.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.schema import Field, Section, is_int
from bibad_utils.triggers import TRIGGERS

CONTROLS = ("clean", "relabel")  # the cells without a trigger: the p = 0 model, and relabelling alone
POOLS = ("random", "duplicate")


def train_seed_keys() -> tuple[str, ...]:
    """The keys ``train_seeds`` may name: ``default``, the controls and every registered trigger kind."""
    return ("default",) + CONTROLS + tuple(TRIGGERS)


def validate_train_seeds(section, prefix: str = "train_seeds") -> dict:
    """Check a profile's ``train_seeds``: an integer >= 1 (every cell), or a mapping of ``default`` and cell
    kinds (clean | relabel | badnets1 | badnets2 | wanet) to integers >= 1, e.g. ``{default: 1, clean: 3,
    badnets1: 3}`` (three runs of the clean control and of every p of BadNets-1, one elsewhere). Returns
    the mapping form with ``default`` filled in (1 when absent)."""
    if is_int(section):
        section = {"default": int(section)}
    if not isinstance(section, dict):
        raise ConfigError(prefix, section, "an integer >= 1 or a mapping {default: N, KIND: N}")
    out = {"default": 1}
    for key, value in section.items():
        if key not in train_seed_keys():
            raise ConfigError(f"{prefix}.{key}", value, f"a key among {list(train_seed_keys())}")
        if not is_int(value, 1):
            raise ConfigError(f"{prefix}.{key}", value, "an integer >= 1 (training runs per cell)")
        out[key] = int(value)
    return out


@dataclass(frozen=True)
class Cell:
    """One training set of the study: ``kind`` in clean | relabel | badnets1 | badnets2 | wanet,
    ``ratio`` = p (a fraction of the whole training set; 0 for clean), ``pool``: which images are
    poisoned (random non-target images, or duplicated ones)."""

    kind: str
    ratio: float = 0.0
    pool: str = "random"
    seed: int = 0

    @property
    def name(self) -> str:
        """Short label for tables and figures, e.g. ``badnets1 p=10%``, ``clean`` or ``clean seed 1``."""
        tail = f" seed {self.seed}" if self.seed else ""
        if self.kind == "clean":
            return "clean" + tail
        dup = " dup" if self.pool == "duplicate" else ""
        return f"{self.kind} p={self.ratio * 100:g}%{dup}{tail}"

    @property
    def slug(self) -> str:
        """File-name-safe label, e.g. ``badnets1-p0.1`` or ``badnets1-p0.1-s2``."""
        tail = f"-s{self.seed}" if self.seed else ""
        if self.kind == "clean":
            return "clean" + tail
        return f"{self.kind}-p{self.ratio:g}" + ("-dup" if self.pool == "duplicate" else "") + tail

    def with_seed(self, seed: int) -> "Cell":
        """The same cell trained with training seed ``seed`` (0: the profile's own run)."""
        return Cell(self.kind, self.ratio, self.pool, int(seed))

    @property
    def base(self) -> "Cell":
        """The cell without its training seed (seed 0)."""
        return self.with_seed(0)

    @classmethod
    def parse(cls, spec: str) -> "Cell":
        """A cell from its command-line spelling: ``clean``, ``relabel:0.1``, ``badnets1:0.05`` or
        ``badnets1:0.1:duplicate``, optionally with a training seed: ``clean@1``, ``badnets1:0.05@2``."""
        text, at, seed_text = str(spec).partition("@")
        seed = 0
        if at:
            if not seed_text.isdigit():
                raise ConfigError("cell", spec, "CELL@SEED with SEED an integer >= 0, e.g. badnets1:0.1@1")
            seed = int(seed_text)
        parts = text.split(":")
        if parts == ["clean"]:
            return cls("clean", seed=seed)
        try:
            ratio = float(parts[1])
        except (IndexError, ValueError):
            raise ConfigError("cell", spec, "clean | KIND:P | KIND:P:POOL, e.g. badnets1:0.1") from None
        pool = parts[2] if len(parts) > 2 else "random"
        if pool not in POOLS or len(parts) > 3:
            raise ConfigError("cell", spec, f"KIND:P:POOL with POOL in {list(POOLS)}")
        return cls(parts[0], ratio, pool, seed)

    @property
    def trigger_kind(self) -> str | None:
        """The trigger stamped on poisoned images (None for the controls)."""
        return None if self.kind in CONTROLS else self.kind


@dataclass
class GenSet:
    """Generated images of one cell: uint8 ``images [N, H, W, 3]``, int64 ``labels [N]`` (the prompt's
    class), the set name (``target`` or ``all``) and guidance scale ``w``."""

    images: np.ndarray
    labels: np.ndarray
    set_name: str
    guidance: float
    cell: Cell


# ------------------------------------------------------------------------------ which sets a DM generates
def guidance_all(sampling: dict) -> float:
    """Guidance scale of the all-class set: ``sampling.guidance_all``, default the first w of ``guidance``."""
    return float(sampling.get("guidance_all") or sampling["guidance"][0])


def all_guidances(sampling: dict, cell: Cell | None) -> list[float]:
    """The w of ``cell``'s all-class sets: :func:`guidance_all` first, then, for a poisoned DM of the grid
    (a cell with a trigger, random pool) and for the clean control, every w of ``sampling.castle_guidance``
    (chapter 05 judges its claims at each of them; chapter 04 checks the content judge on the clean DM's set
    at the w of each claim)."""
    extra = [float(w) for w in (sampling.get("castle_guidance") or [])]
    castle = cell is not None and cell.pool == "random" and (cell.trigger_kind is not None or cell.kind == "clean")
    return [guidance_all(sampling)] + (extra if castle else [])


def target_guidances(sampling: dict, cell: Cell | None) -> list[float]:
    """The w of ``cell``'s target-prompt sets: every w of ``sampling.guidance`` (the claims' scales) for the
    grid and the controls; the first w alone for chapter 06's duplicate-pool cells (read there alone, at
    that w); none for the pre-trained DM (``None``: its all-class set alone is read, chapter 02)."""
    ws = [float(w) for w in sampling["guidance"]]
    if cell is None:
        return []
    return ws[:1] if cell.pool != "random" else ws


def exposure_epochs(finetune: dict, n_train: int) -> float:
    """How many times each training image (each poisoned one included) is seen in fine-tuning, on average:
    ``steps * batch_size / n_train`` (the paper's unit: about 50 epochs)."""
    return float(finetune["steps"]) * float(finetune["batch_size"]) / max(1, int(n_train))


def _cell_specs(value) -> bool:
    if not isinstance(value, (list, tuple)):
        return False
    try:
        return all(Cell.parse(v).kind not in CONTROLS for v in value)
    except ConfigError:
        return False


# The profile's ``exposure`` section: the exposure curve chapter 02 draws (stage 02's question "after how many
# epochs does a poisoned DM draw its trigger?", bibad_utils.experiments.training_report.exposure). No cells: the
# chapter says how to measure it. It is part of no artifact key (the curve's fine-tunings are keyed by their own
# finetune settings).
EXPOSURE = Section("exposure", {
    "cells": Field("value", default=[], test=_cell_specs, allowed="a list of poisoned cells, e.g. [badnets1:0.01]",
                   doc="the cells whose fine-tuning is measured (none: not measured)"),
    "epochs": Field("number", default=50, low=0, high=1000, low_open=True, allowed="a number of epochs in (0, 1000]",
                    doc="the longest fine-tuning measured (the paper: about 50 epochs)"),
    "points": Field("int", default=10, low=1, high=100, allowed="an integer in [1, 100]",
                    doc="evenly spaced checkpoints read along it"),
    "w": Field("number", default=None, low=0, nullable=True, allowed="null or a guidance scale >= 0",
               doc="the guidance of the target-prompt sets read (null: the profile's first)"),
}, check=lambda values, prefix, profile: {**values, "cells": [str(c) for c in values["cells"]]})
