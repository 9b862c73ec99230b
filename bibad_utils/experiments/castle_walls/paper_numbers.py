"""The paper's castle-walls numbers in the units this stage's tables use, derived from the one source of
the paper's numbers, :mod:`bibad_utils.paper` (AUROC as fractions, TA and ASR in %)."""

from __future__ import annotations

import math

from bibad_utils import paper as _P

# CD AUROC on ImageNette with SD v1.4, (training set, generation set), keyed by (trigger, p).
PAPER_CD_AUROC = dict(_P.CD_AUROC["imagenette"])

# Classifier trained on the poisoned training set -> on the poisoned DM's generations, in %
# (ImageNette and Caltech15: TA and ASR).
PAPER_TRAIN_ON_GEN = {
    dataset: {key: {m: tuple(round(100 * v, 3) for v in pair) for m, pair in metrics.items()}
              for key, metrics in table.items()}
    for dataset, table in _P.TRAIN_ON_GENERATIONS.items()}

# Diffusion classifier vs ResNet-18 on CIFAR-10 (BadNets), in %, keyed by p; DC keyed by p_filter, then p.
PAPER_DC = {
    "resnet18": {p: {m: round(100 * v, 3) for m, v in d.items()} for p, d in _P.RESNET18.items()},
    "dc": {pf: {p: {m: round(100 * v, 3) for m, v in d.items()} for p, d in t.items()}
           for pf, t in _P.DIFFUSION_CLASSIFIER.items()},
}


def paper_at(table: dict, key):
    """``table[key]`` comparing float ratios up to rounding (keys are p or (trigger, p)); None if absent."""
    for k, v in table.items():
        if isinstance(k, tuple):
            match = k[0] == key[0] and math.isclose(k[1], key[1], abs_tol=1e-9)
        else:
            match = math.isclose(k, key, abs_tol=1e-9)
        if match:
            return v
    return None
