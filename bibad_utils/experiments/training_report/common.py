"""What the three training-side stages share: the paper's ImageNette reference of r_train and two argument helpers."""

from __future__ import annotations

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int

# The paper's trigger ratio among training images of the target prompt, ImageNette (SD, target
# "garbage truck"), p -> r_train (fractions). Source: the paper's Insight-1 figure (trigger
# amplification, training-set bars), as listed in PAPER.md under "Metrics".
PAPER_R_TRAIN_IMAGENETTE = {0.01: 0.089, 0.02: 0.164, 0.05: 0.330, 0.10: 0.496}
# ImageNette (imagenette2) official train split: 9,469 images, 961 of them garbage trucks (the target).
IMAGENETTE_TRAIN_N = 9469
IMAGENETTE_TARGET_N = 961


def check_count(name, value):
    """Raise a ConfigError unless ``value`` is an integer >= 1."""
    if not is_int(value, 1):
        raise ConfigError(name, value, "an integer >= 1")


def showcase_cell(study):
    """The cell the guidance sweep shows: BadNets-1 at the largest p (the first attack if the grid has no
    BadNets-1)."""
    attack = "badnets1" if "badnets1" in study.cfg.attacks else study.cfg.attacks[0]
    return [c for c in study.grid_cells() if c.kind == attack][-1]

