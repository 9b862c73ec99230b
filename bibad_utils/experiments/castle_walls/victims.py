"""The classifiers of stage 05: the backdoored victim of each cell (trained on its whole poisoned
training set) and the equal-size classifiers of "training on generations", all cached; TA and ASR."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.experiments.castle_walls.config import SOURCES, classifier_settings
from bibad_utils.judges import load_classifier, predict, save_classifier, train_classifier
from bibad_utils.metrics import stratified_subset, ta_asr_report
from bibad_utils.report import with_interval


def nontarget_test_indices(study) -> np.ndarray:
    return np.flatnonzero(study.test_set.labels != study.target)


def triggered_test_images(study, kind: str, indices=None) -> torch.Tensor:
    """Non-target test images with the trigger ``kind`` stamped: float [-1, 1] ``[M, 3, H, W]``
    (all non-target test images, or those at ``indices`` of the test set)."""
    idx = nontarget_test_indices(study) if indices is None else np.asarray(indices, dtype=np.int64)
    x, _ = study.test_set.batch(idx)
    return study.trigger(kind).apply(x)


def evaluate_ta_asr(study, model, kind: str) -> dict:
    """:func:`ta_asr_report` of ``model`` on the whole clean test set and on every non-target test
    image with the trigger ``kind``."""
    pred_c, _ = predict(model, study.test_set, device=study.device)
    pred_t, _ = predict(model, triggered_test_images(study, kind), device=study.device)
    return ta_asr_report(pred_c, study.test_set.labels, pred_t, study.target)


class _SubsetView:
    """Rows ``indices`` of a dataset with ``batch``/``labels``/``class_names`` (read on the fly)."""

    def __init__(self, base, indices):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(base.labels)[self.indices]
        self.class_names = base.class_names

    def __len__(self):
        return len(self.indices)

    def batch(self, indices, device="cpu"):
        return self.base.batch(self.indices[np.asarray(indices, dtype=np.int64)], device=device)


def train_subset_indices(study, cell, n: int) -> np.ndarray:
    """``n`` rows of ``cell``'s poisoned training set, stratified by (poisoned label, poisoned?), so
    the class mix and the poison fraction are those of the whole set (seeded by the profile)."""
    ps = study.poisoned(cell)
    return stratified_subset(2 * np.asarray(ps.labels) + ps.is_poisoned.astype(np.int64), n, study.seed)


def all_class_set(study, cell, w: float | None = None):
    """``cell``'s all-class generations at ``w`` (None: ``guidance_all``; else one of ``castle_guidance``)."""
    w = study.guidance_all if w is None else float(w)
    gens = study.generations(cell)
    if ("all", w) not in gens:
        raise ConfigError("w", w, "a w of the cell's all-class sets: "
                          + ", ".join(f"{k[1]:g}" for k in gens if k[0] == "all"))
    return gens[("all", w)]


def classifier_key(study, cell, source: str, w: float | None = None) -> tuple[str, dict, list[str]]:
    """(stage, params, inputs) of the classifier of ``cell`` trained on ``source`` (one of
    :data:`SOURCES`); ``w``: the guidance of the generated set it trains on (None: ``guidance_all``)."""
    if source not in SOURCES:
        raise ConfigError("source", source, " | ".join(SOURCES))
    n_all = int(study.cfg.sampling.n_all)
    full = source == SOURCES[0]
    params = {"source": source, "classifier": classifier_settings(study, small=not full), "seed": study.seed,
              "target": study.target, "n": None if full else n_all,
              "trigger": study.cfg.triggers.get(cell.trigger_kind)}
    if source == "generated":
        params["guidance_all"] = study.guidance_all if w is None else float(w)
        inputs = [study.generation_key(cell)]
    else:
        inputs = [study.poison_key(cell)]
    return "castle_classifier", params, inputs


def trained_classifier(study, cell, source: str, w: float | None = None):
    """The classifier of ``cell`` trained on ``source`` and its TA/ASR report; cached.

    Sources: ``poisoned train (all)`` (the backdoored model, every row of the poisoned training set),
    ``poisoned train (subset)`` (``sampling.n_all`` rows, :func:`train_subset_indices`),
    ``generated`` (the poisoned DM's all-class generations at ``w``, default ``guidance_all``, labelled by
    their prompt; the real sources do not depend on ``w``).
    Returns ``(model, report)``: report = :func:`evaluate_ta_asr` keys plus ``n_train``,
    ``train_seconds`` and ``history`` (one dict per epoch). The metrics are the final epoch's.
    """
    if cell.trigger_kind is None:
        raise ConfigError("cell", cell.name, "a grid cell with a trigger (a kind of bibad_utils.triggers.TRIGGERS)")
    w = None if source != "generated" else w
    stage, params, inputs = classifier_key(study, cell, source, w)
    kw = dict(params["classifier"])
    arch = kw.pop("arch")

    def build(art):
        ps = study.poisoned(cell)
        if source == SOURCES[0]:
            data, labels = ps, None
        elif source == SOURCES[1]:
            data, labels = _SubsetView(ps, train_subset_indices(study, cell, params["n"])), None
        else:
            gen = all_class_set(study, cell, w)
            data, labels = gen.images, gen.labels
        started = time.perf_counter()
        model, history = train_classifier(data, labels, arch=arch, seed=study.seed, device=study.device,
                                          num_classes=len(study.class_names), progress=study.progress, **kw)
        seconds = time.perf_counter() - started
        report = {**evaluate_ta_asr(study, model, cell.trigger_kind), "n_train": len(data) if labels is None
                  else len(labels), "train_seconds": seconds, "history": history}
        save_classifier(model, art.dir / "model", meta={"report": report})
        st.save_json(art.dir / "report.json", report)

    path = study.store.cached(stage, params, inputs, build, device=str(study.device))
    return load_classifier(path / "model", device=study.device), st.load_json(path / "report.json")


def backdoored_table(study) -> pd.DataFrame:
    """TA and ASR of each grid cell's backdoored classifier (the detectors' f), final epoch."""
    rows = []
    for cell in study.grid_cells():
        model, rep = trained_classifier(study, cell, SOURCES[0])
        rows.append({"cell": cell.name, "classifier": model.config["arch"], "n_train": rep["n_train"],
                     "epochs": len(rep["history"]), "TA": with_interval(rep["TA"], rep["TA_lo"], rep["TA_hi"], True),
                     "ASR": with_interval(rep["ASR"], rep["ASR_lo"], rep["ASR_hi"], True),
                     "train seconds": round(rep["train_seconds"], 1)})
    return pd.DataFrame(rows).set_index("cell")
