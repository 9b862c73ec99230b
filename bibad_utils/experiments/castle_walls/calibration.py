"""CD's logit calibration in stage 05: the clean held-out images it is measured on and the one measurement
per classifier (:func:`cd_calibration`), made before any set is scored and shared by every scored set."""

from __future__ import annotations

import numpy as np

from bibad_utils import defenses as D
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.experiments.castle_walls.config import CLASSIFIERS, SOURCES
from bibad_utils.metrics import stratified_subset
from bibad_utils.experiments.castle_walls.victims import nontarget_test_indices, classifier_key, trained_classifier


def known_answer_indices(study) -> np.ndarray:
    """Sorted test-set rows of the known-answer set: ``n_known`` non-target test images, stratified by class
    (seeded by the profile; the same for every cell)."""
    test_labels = np.asarray(study.test_set.labels)
    nt = nontarget_test_indices(study)
    return nt[stratified_subset(test_labels[nt], study.cfg.defenses["n_known"], study.seed)]


def heldout_indices(study) -> np.ndarray:
    """Sorted test-set rows on which CD's logit scale is measured (``logit_calibration: clean_heldout``): up to
    ``n_calibration`` clean test images outside the known-answer set, stratified by class (seeded). No
    classifier of this stage trains on the test set and none of these images is scored, so the scale is
    fixed before, and apart from, every scored set; the same rows for every cell and classifier."""
    d = study.cfg.defenses
    rest = np.setdiff1d(np.arange(len(study.test_set.labels)), known_answer_indices(study))
    if len(rest) == 0:
        raise ConfigError("defenses.n_known", d.n_known,
                          "fewer than the test images, so that clean held-out images remain for CD's calibration")
    labels = np.asarray(study.test_set.labels)[rest]
    return rest[stratified_subset(labels, min(int(d.n_calibration), len(rest)), study.seed)]


def cd_calibration(study, cell, classifier: str = "victim") -> dict:
    """What CD's ``logit_calibration: clean_heldout`` fixes for one classifier of ``cell``, measured once, before
    any set is scored, and cached: ``mean_max_logit`` (its mean largest logit on :func:`heldout_indices`) and
    ``n_heldout``; every CD run with this classifier scales its logits by ``logit_reference / mean_max_logit``,
    whichever set it scores."""
    if classifier not in CLASSIFIERS:
        raise ConfigError("classifier", classifier, " | ".join(CLASSIFIERS))
    d = study.cfg.defenses
    source = SOURCES[0] if classifier == CLASSIFIERS[0] else "generated"
    params = {"n_calibration": d.n_calibration, "n_known": d.n_known, "seed": study.seed}
    inputs = [st.artifact_key(*classifier_key(study, cell, source)), study.data_key]

    def build(art):
        heldout = np.asarray(study.test_set.images[heldout_indices(study)])
        mml = D.mean_max_logit(trained_classifier(study, cell, source)[0], heldout, device=study.device)
        art.meta.update({"mean_max_logit": mml, "n_heldout": len(heldout)})
        st.save_json(art.dir / "calibration.json", {"mean_max_logit": mml, "n_heldout": len(heldout)})

    path = study.store.cached("castle_cd_calibration", params, inputs, build, device=str(study.device))
    return st.load_json(path / "calibration.json")


def calibrated(options: dict) -> bool:
    """True when detector ``options`` ask for CD's clean held-out logit calibration."""
    return options.get("logit_calibration") == "clean_heldout"
