"""Settings of stage 05: the profile's ``defenses`` section (declared with its defaults and the project's
deviations from the reference recipes in :mod:`bibad_utils.defenses.profile`, validated once on load and
read as ``study.cfg.defenses``), the classifiers' settings (:func:`classifier_settings`) and the stage's
constants."""

from __future__ import annotations

from bibad_utils import paper as P
from bibad_utils.base import ConfigError
from bibad_utils.defenses import DETECTORS as REGISTRY
from bibad_utils.judges import JUDGE_KEYS, PHOTOMETRIC_KEYS

STAGE = "05_castle_walls"
SOURCES = ("poisoned train (all)", "poisoned train (subset)", "generated")
# The scored sets: a known-answer set (clean non-target test images and the same images with the trigger
# pasted), a subset of the poisoned training set, and the poisoned DM's all-class generations.
SETS = ("known answer", "training", "generated")
# The two readings of the generation set: scored with the backdoored victim, or with a classifier
# trained on the generations themselves (chapter 05, section 2).
CLASSIFIERS = ("victim", "generations classifier")


def detectors() -> tuple[str, ...]:
    """The detectors of the stage: those of the registry :data:`bibad_utils.defenses.DETECTORS`, read at
    each call (a detector registered later joins every table): CD, STRIP, FCT (the reference recipe),
    FCT variant (the project's), then any other."""
    return tuple(REGISTRY)


def detector_key(name: str) -> str:
    """The profile section (under ``defenses``) of detector ``name``'s options."""
    return REGISTRY[name].key

# "A few points" of TA lost by training on generations: the largest drop the paper itself reports in its
# train-on-generations table (ImageNette and Caltech15; Caltech15 BadNets-2 p = 5 %: 99.83 -> 87.33 %), so
# the paper's own numbers pass; and the TA a diffusion classifier may lose to count as comparable.
TA_COST_MAX = P.largest_ta_drop()
DC_TA_MARGIN = 0.05
# The generations' ground truth is the trigger detector. The clean DM never saw a trigger, so the share
# of its generations the detector flags estimates the detector's false-positive rate on generations;
# when even its lower 95 % bound exceeds this, the generated set has no usable truth.
GEN_FLAG_MAX = 0.10
# Below this many positives (or negatives) in a scored set, a bootstrap of the AUROC resamples the same
# few images and its interval is far too narrow: such a comparison is not a test.
MIN_CLASS_COUNT = 5


def detection_cells(study) -> list:
    """The grid cells of the detectors and the diffusion classifier: those at ``defenses.detect_ratios``
    (every grid cell when it is null). A ratio the grid lacks is an error naming the grid's ratios."""
    d = study.cfg.defenses
    cells = study.grid_cells()
    if d.detect_ratios is None:
        return cells
    grid = sorted({round(c.ratio, 9) for c in cells})
    wanted = {round(r, 9) for r in d.detect_ratios}
    if not wanted <= set(grid):
        raise ConfigError("defenses.detect_ratios", d.detect_ratios, f"ratios of the grid, among {grid}")
    return [c for c in cells if round(c.ratio, 9) in wanted]


def classifier_settings(study, small: bool = False) -> dict:
    """Keyword arguments of :func:`bibad_utils.judges.train_classifier` for this stage's classifiers:
    the profile's ``judges`` section overridden by ``defenses.classifier``, and for the two
    ``n_all``-image classifiers (``small``) further by ``defenses.gen_classifier``."""
    d = study.cfg.defenses
    # the judges' photometric augmentation is not inherited (module docstring)
    kw = {k: v for k, v in study.cfg.judges.items() if k in JUDGE_KEYS and k not in PHOTOMETRIC_KEYS}
    kw.update(d.classifier)
    if small:
        kw.update(d.gen_classifier)
    return kw
