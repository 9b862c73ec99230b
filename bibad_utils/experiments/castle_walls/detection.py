"""Detection: the registered detectors (:mod:`bibad_utils.defenses.registry`) score three sets per cell.

- ``known answer``: ``n_known`` clean non-target test images and the same images with the cell's trigger
  pasted; the victim must separate them before any other AUROC of the detector means anything;
- ``training``: a subset of the poisoned training set (poisoned and clean images drawn separately, each
  stratified by label, ``n_detect_poisoned`` of them poisoned); truth: the poison indices;
- ``generated``: the poisoned DM's all-class generations; truth: the trigger detector's verdict.

The known-answer and training sets are scored with the backdoored victim; the generated set with the victim
and with the classifier trained on the generations (the two readings of the paper's setup). Each
(detector, set, classifier) is cached on its own, so adding a detector recomputes nothing else.

CD's logit calibration (``defenses.cd.logit_calibration``) is fixed per classifier on clean held-out test
images (:func:`.calibration.heldout_indices`: none of them is scored, no classifier of the stage trains on the test set),
so the three sets are scored with one scale; :func:`cd_sensitivity` shows what the reference value does.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bibad_utils import defenses as D
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.experiments.castle_walls.calibration import cd_calibration, calibrated, known_answer_indices
from bibad_utils.experiments.castle_walls.config import (CLASSIFIERS, SETS, SOURCES, detection_cells,
                                                         detector_key, detectors)
from bibad_utils.experiments.castle_walls.paper_numbers import PAPER_CD_AUROC, paper_at
from bibad_utils.experiments.castle_walls.victims import all_class_set, classifier_key, trained_classifier
from bibad_utils.metrics import (auroc_difference, auroc_interval, auroc_or_nan, stratified_subset,
                                 wilson_interval)
from bibad_utils.progress import Bar
from bibad_utils.stages import Cell


def clean_dm_flag_rate(study, kind: str) -> dict:
    """Share of the clean DM's all-class generations that the trigger detector of ``kind`` flags (an
    estimate of its false-positive rate on generations), with a Wilson interval: ``rate, lo, hi, n``.
    NaN when the profile has no ``clean`` control (no clean DM is trained for this check alone)."""

    if "clean" not in study.cfg.controls:
        return {"rate": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    flags = np.asarray(study.judges.judge(all_class_set(study, Cell("clean")), kind)["trigger"], dtype=bool)
    lo, hi = wilson_interval(int(flags.sum()), len(flags))
    return {"rate": float(flags.mean()), "lo": lo, "hi": hi, "n": len(flags)}


def training_detection_indices(study, cell, n: int, n_poisoned: int | None) -> np.ndarray:
    """Sorted rows of ``cell``'s poisoned training set to score: ``n_poisoned`` poisoned and ``n - n_poisoned``
    clean ones, each drawn stratified by label (``n_poisoned`` None: the set's own poison share, stratified by
    (label, poisoned?)). AUROC does not depend on the share of positives, so drawing more poisoned images
    than p would give only narrows its interval."""
    ps = study.poisoned(cell)
    labels, pois = np.asarray(ps.labels), np.asarray(ps.is_poisoned, dtype=bool)
    if n_poisoned is None:
        return stratified_subset(2 * labels + pois.astype(np.int64), n, study.seed)
    pos, neg = np.flatnonzero(pois), np.flatnonzero(~pois)
    k = min(n_poisoned, len(pos))
    picks = [pos[stratified_subset(labels[pos], k, study.seed)],
             neg[stratified_subset(labels[neg], min(n - k, len(neg)), study.seed)]]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _with_overrides(detector: str, d: dict, overrides: dict) -> dict:
    """The profile's options of ``detector`` with ``overrides``, checked as the profile's are."""
    det = D.DETECTORS[detector]
    base = d[det.key]
    if not isinstance(overrides, dict):
        raise ConfigError("options", overrides, f"a mapping with keys among {sorted(base)}")
    for k, v in overrides.items():
        if k not in base:
            raise ConfigError(f"defenses.{det.key}.{k}", v, f"a key among {sorted(base)}")
    opts = {**base, **overrides}
    if det.check is not None:
        det.check(opts, f"defenses.{det.key}")
    return opts


def detection_sets(study, cell, w: float | None = None) -> dict:
    """The sets scored for ``cell`` (:data:`SETS`), each with uint8 ``images [n, H, W, 3]``, int64
    ``labels [n]`` (the labels a defender would hold: poisoned labels, prompt classes; for the known-answer
    set the target for triggered copies), bool ``truth [n]`` and int64 ``indices [n]`` (into the poisoned
    training set, the generation set, the test set). ``w``: the guidance of the generated set (None:
    ``guidance_all``)."""
    d = study.cfg.defenses
    gen = all_class_set(study, cell, w)
    n = len(gen.labels) if d.n_detect is None else min(int(d.n_detect), len(gen.labels))
    ps = study.poisoned(cell)
    tr_idx = training_detection_indices(study, cell, n, d.n_detect_poisoned)
    gen_idx = stratified_subset(np.asarray(gen.labels), n, study.seed)
    verdict = study.judges.judge(gen, cell.trigger_kind)["trigger"]
    template = study.judges.template(cell.trigger_kind)  # the second reading of the generations' truth (None: a warp)
    gen_images = np.asarray(gen.images[gen_idx])
    test_labels = np.asarray(study.test_set.labels)
    kn_idx = known_answer_indices(study)
    x, _ = study.test_set.batch(kn_idx)
    triggered = study.trigger(cell.trigger_kind).apply(x)
    as_uint8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
    k = len(kn_idx)
    return {
        "known answer": {"images": np.concatenate([as_uint8(x), as_uint8(triggered)]),
                         "labels": np.concatenate([test_labels[kn_idx], np.full(k, study.target)]).astype(np.int64),
                         "truth": np.r_[np.zeros(k, bool), np.ones(k, bool)],
                         "indices": np.concatenate([kn_idx, kn_idx]).astype(np.int64)},
        "training": {"images": ps.images_uint8(tr_idx), "labels": np.asarray(ps.labels)[tr_idx],
                     "truth": np.asarray(ps.is_poisoned)[tr_idx].astype(bool), "indices": tr_idx},
        "generated": {"images": gen_images, "labels": np.asarray(gen.labels)[gen_idx],
                      "truth": np.asarray(verdict, dtype=bool)[gen_idx], "indices": gen_idx,
                      "truth_template": None if template is None else np.asarray(template.fires(gen_images), bool)},
    }


def detector_scores(study, cell, set_name: str, detector: str, classifier: str = "victim",
                    sets: dict | None = None, options: dict | None = None, w: float | None = None) -> dict:
    """Scores of one registered ``detector`` on one of :func:`detection_sets` with one of :data:`CLASSIFIERS`;
    cached on its own. STRIP superimposes clean test images; FCT fine-tunes a copy of the classifier on the
    scored set with its labels; CD with ``logit_calibration: clean_heldout`` takes its one logit scale per
    classifier from :func:`cd_calibration` (recorded as ``logit_scale`` in the artifact and its manifest).
    ``options``: overrides of the profile's options for this detector (checked as the profile's are);
    ``w``: the guidance of the generated set and of the generations' classifier (None: ``guidance_all``).
    Returns ``scores`` float64 ``[n]`` (higher = more likely poisoned), the detector's extras (CD: ``masks``,
    ``logit_scale``), ``seconds`` and the set's arrays."""
    if set_name not in SETS:
        raise ConfigError("set_name", set_name, " | ".join(SETS))
    if detector not in detectors():
        raise ConfigError("detector", detector, " | ".join(detectors()))
    if classifier not in CLASSIFIERS:
        raise ConfigError("classifier", classifier, " | ".join(CLASSIFIERS))
    d = study.cfg.defenses
    data = (sets or detection_sets(study, cell, w))[set_name]
    w = None if w is None or float(w) == study.guidance_all else float(w)
    source = SOURCES[0] if classifier == CLASSIFIERS[0] else "generated"
    opts = d[detector_key(detector)] if options is None else _with_overrides(detector, d, options)
    params = {"detector": detector, "options": opts, "set": set_name, "n": len(data["labels"]),
              "n_poisoned": d.n_detect_poisoned, "n_known": d.n_known, "seed": study.seed}
    if calibrated(opts):  # only a calibrated CD depends on the held-out images
        params["n_calibration"] = d.n_calibration
    if w is not None and (set_name == "generated" or classifier != CLASSIFIERS[0]):
        params["guidance"] = w  # a further all-class set (castle_guidance)
    data_input = {"training": study.poison_key(cell), "generated": study.generation_key(cell),
                  "known answer": study.poison_key(cell)}[set_name]
    inputs = [st.artifact_key(*classifier_key(study, cell, source, w if source == "generated" else None)),
              data_input, study.data_key]
    extras = D.DETECTORS[detector].extras

    def build(art):
        f = trained_classifier(study, cell, source, w)[0]
        cal = cd_calibration(study, cell, classifier) if calibrated(opts) else {}
        ctx = D.DetectorContext(clean_pool=study.test_set.images, train_images=data["images"],
                                train_labels=data["labels"], seed=study.seed, device=study.device,
                                heldout_max_logit=cal.get("mean_max_logit"))
        t0 = time.perf_counter()
        out = D.run_detector(detector, f, data["images"], ctx, **opts)
        st.save_json(art.dir / "seconds.json", {"seconds": time.perf_counter() - t0})
        if "logit_scale" in out:
            art.meta.update({"logit_scale": float(out["logit_scale"]), **cal})
        for name in ("scores", *extras):
            st.save_array(art.dir / f"{name}.npy", np.asarray(out[name]))

    path = study.store.cached("castle_detector", params, inputs, build, device=str(study.device))
    out = {name: st.load_array(path / f"{name}.npy") for name in ("scores", *extras)}
    out["seconds"] = st.load_json(path / "seconds.json")["seconds"]
    return {**out, **data}


def detection_scores(study, cell, set_name: str, classifier: str = "victim", w: float | None = None,
                     sets: dict | None = None) -> dict:
    """Every registered detector's scores on one set: ``{name: scores}`` plus ``masks`` (CD), ``seconds``
    (per detector) and the set's ``images``, ``labels``, ``truth``, ``indices``."""
    sets = detection_sets(study, cell, w) if sets is None else sets  # a caller scoring several sets builds them once
    out, seconds = {}, {}
    for det in detectors():
        res = detector_scores(study, cell, set_name, det, classifier, sets, w=w)
        out[det], seconds[det] = res["scores"], res["seconds"]
        if det == "CD":
            out["masks"] = res["masks"]
    return {**out, "seconds": seconds, **sets[set_name]}


def detection_table(study, cells=None) -> pd.DataFrame:
    """AUROC of each detector on each scored set and classifier (every set with the victim, the generations
    also with the classifier trained on them), per grid cell.

    Columns: ``cell, attack, p, detector, set, classifier, n, n_poisoned`` (positives of the truth),
    ``n_clean``, ``auroc, auroc_lo, auroc_hi`` (95 % stratified bootstrap), ``seconds``, ``paper`` (the
    paper's CD AUROC on ImageNette for the training and generated sets, NaN elsewhere), ``note``,
    ``logit_scale`` (CD: the factor on the classifier's logits that scored the set, one per classifier,
    :func:`.calibration.cd_calibration`; NaN for the other detectors).
    """
    d = study.cfg.defenses
    rows = []
    cells = list(cells or detection_cells(study))
    combos = [(s, CLASSIFIERS[0]) for s in SETS] + [("generated", CLASSIFIERS[1])]
    live = Bar("detect", "", len(cells) * len(combos) * len(detectors()), unit="run", show=False)
    for cell in cells:
        sets = detection_sets(study, cell)
        for set_name, clf in combos:
            truth = sets[set_name]["truth"]
            for det in detectors():
                live.relabel(f"{det} {cell.name} {set_name} ({clf})")
                res = detector_scores(study, cell, set_name, det, clf, sets)
                live.update(1)
                auc, lo, hi = auroc_interval(res["scores"], truth, d.n_boot, study.seed)
                paper = paper_at(PAPER_CD_AUROC, (cell.kind, cell.ratio)) if det == "CD" else None
                note = ""
                if math.isnan(auc):
                    note = ("no triggered image among the scored generations: AUROC undefined" if not truth.any()
                            else "every scored image is triggered: AUROC undefined")
                rows.append({"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "detector": det,
                             "set": set_name, "classifier": clf, "n": len(truth), "n_poisoned": int(truth.sum()),
                             "n_clean": int((~truth).sum()), "auroc": auc, "auroc_lo": lo, "auroc_hi": hi,
                             "seconds": float(res["seconds"]),
                             "paper": math.nan if paper is None or set_name == "known answer"
                             else paper[set_name == "generated"], "note": note,
                             "logit_scale": float(res["logit_scale"]) if "logit_scale" in res else math.nan})
    live.close()
    return pd.DataFrame(rows)


def detection_csv(det: pd.DataFrame) -> pd.DataFrame:
    """:func:`detection_table` in the machine-readable form of ``detection.csv``: one row per (attack, p,
    detector, set, classifier) with ``auroc, lo, hi, n_pos, n_neg``."""
    out = det[["attack", "p", "detector", "set", "classifier", "auroc", "auroc_lo", "auroc_hi", "n_poisoned",
               "n_clean"]].rename(columns={"auroc_lo": "lo", "auroc_hi": "hi", "n_poisoned": "n_pos",
                                           "n_clean": "n_neg"})
    return out.reset_index(drop=True)


DETECTION_CSV = "detection.csv"


def save_detection_csv(run_dir, det: pd.DataFrame) -> Path:
    """Write :func:`detection_csv` to ``<run_dir>/figures/detection.csv`` (floats to 4 decimals; beside the
    claims table, a side output the pipeline tracks and ``bibad readme`` publishes); returns the path."""
    path = Path(run_dir) / "figures" / DETECTION_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    detection_csv(det).to_csv(path, index=False, float_format="%.4f")
    return path


def detection_differences(study, w: float | None = None) -> pd.DataFrame:
    """``AUROC(generated) - AUROC(training)`` per cell of :func:`detection_cells` and detector with a bootstrap
    interval; both sets are scored with the victim.

    Columns: ``cell, attack, p, detector, classifier, auroc_known, auroc_known_lo, auroc_train, auroc_train_lo,
    auroc_train_hi, auroc_gen, diff, diff_lo, diff_hi``, ``n_poisoned_train, n_train, n_triggered_gen, n``,
    ``clean_dm_flagged`` (and its lower Wilson bound ``clean_dm_flagged_lo``, :func:`clean_dm_flag_rate`),
    ``paper_train, paper_gen`` (CD, ImageNette; NaN elsewhere), ``guidance`` (the w of the generations:
    ``w``, default ``guidance_all``); the generations' second reading, the trigger template's
    (:mod:`bibad_utils.experiments.insights.trigger_truth`): ``n_triggered_gen_tpl``, ``auroc_gen_tpl``,
    ``diff_tpl``, ``diff_tpl_lo``, ``diff_tpl_hi`` (NaN without a template), and ``reading``: the instrument
    that passes the planted faint-trigger check (:func:`~bibad_utils.experiments.insights.trigger_truth.
    preferred_instrument`: detector | template | both | none).
    """
    from bibad_utils.experiments.insights.trigger_truth import planted_check, preferred_instrument

    planted = planted_check(study)
    d = study.cfg.defenses
    w = study.guidance_all if w is None else float(w)
    rows = []
    for cell in detection_cells(study):
        sets = detection_sets(study, cell, w)  # judges the generations once for the three sets
        kn = detection_scores(study, cell, "known answer", w=w, sets=sets)
        tr = detection_scores(study, cell, "training", w=w, sets=sets)
        ge = detection_scores(study, cell, "generated", w=w, sets=sets)
        flag = clean_dm_flag_rate(study, cell.trigger_kind)
        reading = preferred_instrument(planted, cell.trigger_kind) if len(planted) else "none"
        tpl_truth = ge["truth_template"]
        for det in detectors():
            diff, lo, hi = auroc_difference(ge[det], ge["truth"], tr[det], tr["truth"], d.n_boot, study.seed)
            tpl = ((math.nan,) * 3 if tpl_truth is None else
                   auroc_difference(ge[det], tpl_truth, tr[det], tr["truth"], d.n_boot, study.seed))
            a_kn, kn_lo, kn_hi = auroc_interval(kn[det], kn["truth"], d.n_boot, study.seed)
            a_tr, tr_lo, tr_hi = auroc_interval(tr[det], tr["truth"], d.n_boot, study.seed)
            paper = paper_at(PAPER_CD_AUROC, (cell.kind, cell.ratio)) if det == "CD" else None
            rows.append({"cell": cell.name, "attack": cell.kind, "p": cell.ratio, "detector": det,
                         "classifier": CLASSIFIERS[0], "guidance": w, "auroc_known": a_kn, "auroc_known_lo": kn_lo, "auroc_known_hi": kn_hi,
                         "auroc_train": a_tr, "auroc_train_lo": tr_lo, "auroc_train_hi": tr_hi,
                         "auroc_gen": auroc_or_nan(ge[det], ge["truth"]), "diff": diff, "diff_lo": lo,
                         "diff_hi": hi, "n_poisoned_train": int(tr["truth"].sum()), "n_train": len(tr["truth"]),
                         "n_triggered_gen": int(ge["truth"].sum()), "n": len(ge["truth"]),
                         "clean_dm_flagged": flag["rate"], "clean_dm_flagged_lo": flag["lo"],
                         "paper_train": math.nan if paper is None else paper[0],
                         "paper_gen": math.nan if paper is None else paper[1],
                         "n_triggered_gen_tpl": math.nan if tpl_truth is None else int(tpl_truth.sum()),
                         "auroc_gen_tpl": math.nan if tpl_truth is None else auroc_or_nan(ge[det], tpl_truth),
                         "diff_tpl": tpl[0], "diff_tpl_lo": tpl[1], "diff_tpl_hi": tpl[2], "reading": reading})
    return pd.DataFrame(rows)


def cd_sensitivity(study, cell) -> pd.DataFrame:
    """CD's training-set and generation-set AUROC, and their difference, at each logit reference of
    ``defenses.cd_sensitivity`` (plus the profile's own setting), on ``cell`` with its victim.

    Every row uses the one-scale rule: the victim's logit scale is fixed by :func:`.calibration.cd_calibration` (or is 1
    without calibration) and scores both sets; the sets are those of :func:`detection_sets` (the same images
    as the detection table). Each (reference, set) is a cached :func:`detector_scores` run, so the profile's
    own setting reuses the detection table's artifacts. ``defenses.cd_sensitivity: []`` gives only the
    profile's own setting.

    Columns: ``cell, calibration`` (``clean_heldout | none``), ``reference`` (NaN without calibration),
    ``label`` ("none" or the reference), ``in_use`` (the profile's setting), ``logit_scale`` (the factor used),
    ``mean_max_logit_heldout`` (the victim's mean largest logit on the held-out images), ``n_heldout``,
    ``auroc_train, auroc_train_lo, auroc_train_hi, auroc_gen, auroc_gen_lo, auroc_gen_hi`` (95 % stratified
    bootstrap), ``diff, diff_lo, diff_hi`` (AUROC(generated) - AUROC(training)), ``n_train,
    n_poisoned_train, n_gen, n_triggered_gen``, ``seconds`` (CD's run time on the two sets); rows ordered
    none first, then by reference.
    """
    d = study.cfg.defenses
    cd = d[detector_key("CD")]
    in_use = cd["logit_reference"] if calibrated(cd) else None
    refs = {None if r is None else float(r) for r in d.cd_sensitivity} | {None if in_use is None else float(in_use)}
    refs = sorted(refs, key=lambda r: -math.inf if r is None else r)
    sets = detection_sets(study, cell)
    cal = cd_calibration(study, cell, CLASSIFIERS[0])
    rows = []
    for ref in refs:
        own = (ref is None) == (in_use is None) and (ref is None or ref == float(in_use))
        overrides = None if own else ({"logit_calibration": "none", "logit_reference": None} if ref is None
                                      else {"logit_calibration": "clean_heldout", "logit_reference": ref})
        tr, ge = (detector_scores(study, cell, s, "CD", CLASSIFIERS[0], sets, overrides) for s in ("training", "generated"))
        a_tr, tr_lo, tr_hi = auroc_interval(tr["scores"], tr["truth"], d.n_boot, study.seed)
        a_ge, ge_lo, ge_hi = auroc_interval(ge["scores"], ge["truth"], d.n_boot, study.seed)
        diff, lo, hi = auroc_difference(ge["scores"], ge["truth"], tr["scores"], tr["truth"], d.n_boot, study.seed)
        scale = float(tr["logit_scale"])
        if scale != float(ge["logit_scale"]):  # the one-scale rule, read back from the two artifacts
            raise RuntimeError(f"CD scored the training and generated sets of {cell.name} with two logit scales "
                               f"({scale} and {float(ge['logit_scale'])})")
        rows.append({"cell": cell.name, "calibration": "none" if ref is None else "clean_heldout",
                     "reference": math.nan if ref is None else ref, "label": "none" if ref is None else f"{ref:g}", "in_use": own,
                     "logit_scale": scale, "mean_max_logit_heldout": cal["mean_max_logit"],
                     "n_heldout": cal["n_heldout"],
                     "auroc_train": a_tr, "auroc_train_lo": tr_lo, "auroc_train_hi": tr_hi,
                     "auroc_gen": a_ge, "auroc_gen_lo": ge_lo, "auroc_gen_hi": ge_hi,
                     "diff": diff, "diff_lo": lo, "diff_hi": hi, "n_train": len(tr["truth"]),
                     "n_poisoned_train": int(tr["truth"].sum()), "n_gen": len(ge["truth"]),
                     "n_triggered_gen": int(ge["truth"].sum()), "seconds": float(tr["seconds"] + ge["seconds"])})
    return pd.DataFrame(rows)


def victim_logit_profile(study, cell, n: int = 500) -> dict:
    """How the victim of ``cell`` reads its poisoned training images (what CD has to preserve).

    On up to ``n`` poisoned images: ``mean_max_logit`` (the scale of the victim's logits, also over as many
    clean training images: ``mean_max_logit_clean``), ``target_top1`` (share predicted as the target) and
    ``true_runner_up`` (share whose second-ranked class is the image's class before poisoning: the
    trigger's evidence is added to the content's instead of overriding it)."""
    import torch

    f, _ = trained_classifier(study, cell, SOURCES[0])
    ps = study.poisoned(cell)
    pois = np.flatnonzero(np.asarray(ps.is_poisoned))[:n]
    clean = np.flatnonzero(~np.asarray(ps.is_poisoned))[:n]
    true = np.asarray(study.train_set.labels)[pois]
    out = {}
    with torch.no_grad():
        f.eval()
        for name, idx in (("poisoned", pois), ("clean", clean)):
            x = torch.from_numpy(ps.images_uint8(idx)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(study.device)
            logits = torch.cat([f(x[i:i + 256]) for i in range(0, len(x), 256)]).cpu()
            out[name] = logits
    top = out["poisoned"].argsort(dim=1, descending=True).numpy()
    return {"mean_max_logit": float(out["poisoned"].max(dim=1).values.mean()),
            "mean_max_logit_clean": float(out["clean"].max(dim=1).values.mean()),
            "target_top1": float((top[:, 0] == study.target).mean()),
            "true_runner_up": float((top[:, 1] == true).mean()), "n": int(len(pois))}
