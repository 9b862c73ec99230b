"""Training on generations: TA and ASR of classifiers trained on the poisoned training set and on the
poisoned DM's generations."""

from __future__ import annotations

import math

import pandas as pd

from bibad_utils.experiments.castle_walls.config import SOURCES
from bibad_utils.experiments.castle_walls.paper_numbers import PAPER_TRAIN_ON_GEN, paper_at
from bibad_utils.experiments.castle_walls.victims import all_class_set, trained_classifier
from bibad_utils.judges import predict


def train_on_generations_table(study, w: float | None = None) -> pd.DataFrame:
    """TA and ASR of classifiers trained on each source of :data:`SOURCES`, per grid cell.

    The two ``n_all``-image classifiers (a stratified subset of the poisoned training set with its poison
    fraction, and the generations) share size and schedule (``defenses.gen_classifier``); the full one
    uses ``defenses.classifier``. Columns: ``cell, attack, p, source, n_train, TA, TA_lo, TA_hi, ASR, ASR_lo,
    ASR_hi, n_ta, k_ta, n_asr, k_asr, train_seconds``, ``acc_generated`` (accuracy on the all-class
    generations against their prompt's class: for the real sources how well a real-trained classifier
    transfers to generations, for ``generated`` its training accuracy), ``paper_TA, paper_ASR`` (ImageNette, training set for
    the real sources, generation set for ``generated``), ``paper_TA_caltech15``, ``paper_ASR_caltech15``,
    ``guidance`` (the w of the generated set: ``w``, default ``guidance_all``). Rates in [0, 1].
    """
    w = study.guidance_all if w is None else float(w)
    rows = []
    for cell in study.grid_cells():
        gen_set = all_class_set(study, cell, w)
        for source in SOURCES:
            model, rep = trained_classifier(study, cell, source, w)
            pred_gen, _ = predict(model, gen_set.images, device=study.device)
            gen = source == "generated"
            pin = paper_at(PAPER_TRAIN_ON_GEN["imagenette"], (cell.kind, cell.ratio)) or {}
            pcal = paper_at(PAPER_TRAIN_ON_GEN["caltech15"], (cell.kind, cell.ratio)) or {}
            row = {"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "source": source,
                   "n_train": rep["n_train"], "train_seconds": rep["train_seconds"], "guidance": w}
            row.update({k: rep[k] for k in ("TA", "TA_lo", "TA_hi", "ASR", "ASR_lo", "ASR_hi",
                                            "n_ta", "k_ta", "n_asr", "k_asr")})
            row["acc_generated"] = float((pred_gen == gen_set.labels).mean())
            row["paper_TA"] = pin["TA"][gen] / 100 if "TA" in pin else math.nan
            row["paper_ASR"] = pin["ASR"][gen] / 100 if "ASR" in pin else math.nan
            row["paper_TA_caltech15"] = pcal["TA"][gen] / 100 if "TA" in pcal else math.nan
            row["paper_ASR_caltech15"] = pcal["ASR"][gen] / 100 if "ASR" in pcal else math.nan
            rows.append(row)
    return pd.DataFrame(rows)
