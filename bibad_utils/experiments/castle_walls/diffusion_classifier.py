"""The poisoned conditional DM as a classifier (Li et al. 2023) next to the backdoored classifier of the
same cell, on the same images; and its cost, exhaustive vs adaptive."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from bibad_utils import defenses as D
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.experiments.castle_walls.config import SOURCES, detection_cells
from bibad_utils.experiments.castle_walls.paper_numbers import PAPER_DC, paper_at
from bibad_utils.experiments.castle_walls.victims import (nontarget_test_indices, trained_classifier,
                                                          triggered_test_images)
from bibad_utils.judges import predict
from bibad_utils.metrics import stratified_subset, ta_asr_report
from bibad_utils.stages import Cell


def dc_cells(study) -> list:
    """Grid cells whose attack is in ``defenses.dc_attacks``, then (sorted by p) the cells of those attacks at
    the further ratios ``defenses.dc_ratios`` that the grid lacks (their DMs and victims serve the diffusion
    classifier alone: the paper makes its "resists" claim at p = 1 %)."""
    d = study.cfg.defenses
    cells = [c for c in detection_cells(study) if c.kind in d.dc_attacks]
    have = {(c.kind, round(c.ratio, 9)) for c in cells}
    extra = [Cell(a, r) for a in d.dc_attacks for r in sorted(d.dc_ratios) if (a, round(r, 9)) not in have]
    return cells + extra


def dc_images(study, kind: str, n: int | None = None) -> dict:
    """The diffusion classifier's test images: ``clean`` (float [-1, 1] ``[n, 3, H, W]``, a class-stratified
    subset of the test set) with ``labels``, and ``triggered`` (``n`` non-target test images, stratified
    by class, with the trigger ``kind``). ``n`` defaults to ``defenses.dc_n_images``."""
    n = study.cfg.defenses["dc_n_images"] if n is None else n
    labels = np.asarray(study.test_set.labels)
    clean_idx = stratified_subset(labels, n, study.seed)
    nt = nontarget_test_indices(study)
    trig_idx = nt[stratified_subset(labels[nt], n, study.seed)]
    x, _ = study.test_set.batch(clean_idx)
    return {"clean": x, "labels": labels[clean_idx], "triggered": triggered_test_images(study, kind, trig_idx),
            "clean_indices": clean_idx, "triggered_indices": trig_idx}


def dc_predictions(study, cell, p_filter: float) -> dict:
    """Diffusion-classifier predictions of ``cell``'s poisoned DM on :func:`dc_images`; cached per
    (cell, p_filter). Returns ``pred_clean``, ``labels``, ``pred_triggered`` (int64), ``unet_evals``,
    ``seconds`` (wall time of both sets) and ``n_images`` (both sets together)."""
    d = study.cfg.defenses
    params = {"p_filter": float(p_filter), "n_levels": d.dc_levels, "adaptive": d.dc_adaptive,
              "n_images": d.dc_n_images, "seed": study.seed, "target": study.target,
              "trigger": study.cfg.triggers.get(cell.trigger_kind), "kind": cell.trigger_kind}

    def build(art):
        imgs = dc_images(study, cell.trigger_kind)
        model = study.model(cell)
        kw = dict(n_levels=d.dc_levels, p_filter=float(p_filter), batch_size=d.dc_batch_size,
                  seed=study.seed, device=study.device, adaptive=d.dc_adaptive, return_errors=True)
        label = f"{cell.name} p_filter={p_filter:g}"
        pc, dc = D.diffusion_classify(model, imgs["clean"], report=("diffusion classifier", f"{label} clean"), **kw)
        pt, dt = D.diffusion_classify(model, imgs["triggered"], report=("diffusion classifier", f"{label} triggered"),
                                      **kw)
        st.save_array(art.dir / "pred_clean.npy", pc)
        st.save_array(art.dir / "pred_triggered.npy", pt)
        st.save_array(art.dir / "labels.npy", imgs["labels"])
        st.save_json(art.dir / "cost.json", {"unet_evals": dc["unet_evals"] + dt["unet_evals"],
                                             "seconds": dc["seconds"] + dt["seconds"],
                                             "n_images": len(pc) + len(pt), "threads": torch.get_num_threads(),
                                             "device": str(study.device)})

    path = study.store.cached("castle_dc", params, [study.model_key(cell), study.data_key], build,
                              device=str(study.device))
    out = {k: st.load_array(path / f"{k}.npy") for k in ("pred_clean", "pred_triggered", "labels")}
    return {**out, **st.load_json(path / "cost.json")}


def diffusion_classifier_table(study) -> pd.DataFrame:
    """TA and ASR of the diffusion classifier (per ``p_filter``) and of the backdoored classifier of
    the same cell, all on the same :func:`dc_images`, per cell of :func:`dc_cells`.

    Columns: ``cell, attack, p, method`` (``diffusion classifier`` | ``classifier (<arch>)``),
    ``p_filter`` (NaN for the classifier), the :func:`ta_asr_report` keys, ``unet_evals_per_image``,
    ``seconds_per_image`` (NaN for the classifier), ``paper_TA, paper_ASR`` (CIFAR-10, NaN where the
    paper gives none). Rates in [0, 1].
    """
    d = study.cfg.defenses
    rows = []
    for cell in dc_cells(study):
        imgs = dc_images(study, cell.trigger_kind)
        f, _ = trained_classifier(study, cell, SOURCES[0])  # the backdoored classifier
        pc, _ = predict(f, imgs["clean"], device=study.device)
        pt, _ = predict(f, imgs["triggered"], device=study.device)
        paper = paper_at(PAPER_DC["resnet18"], cell.ratio) or {}
        base = {"cell": cell.name, "attack": cell.kind, "p": cell.ratio}
        rows.append({**base, "method": f"classifier ({f.config['arch']})", "p_filter": math.nan,
                     **ta_asr_report(pc, imgs["labels"], pt, study.target), "unet_evals_per_image": math.nan,
                     "seconds_per_image": math.nan, "paper_TA": paper.get("TA", math.nan) / 100,
                     "paper_ASR": paper.get("ASR", math.nan) / 100})
        for pf in d.p_filter:
            res = dc_predictions(study, cell, pf)
            paper = paper_at(paper_at(PAPER_DC["dc"], pf) or {}, cell.ratio) or {}
            rows.append({**base, "method": "diffusion classifier", "p_filter": pf,
                         **ta_asr_report(res["pred_clean"], res["labels"], res["pred_triggered"], study.target),
                         "unet_evals_per_image": res["unet_evals"] / res["n_images"],
                         "seconds_per_image": res["seconds"] / res["n_images"],
                         "paper_TA": paper.get("TA", math.nan) / 100, "paper_ASR": paper.get("ASR", math.nan) / 100})
    return pd.DataFrame(rows)


def dc_benchmark(study) -> pd.DataFrame:
    """Cost of the diffusion classifier, exhaustive vs adaptive pruning (``defenses.dc_adaptive``),
    on ``defenses.dc_bench_images`` clean test images of the first DC cell's DM at p_filter 0; cached
    (the timings are those of the first run).

    Columns: ``mode, n_images, n_classes, n_levels, stages, unet_evals, unet_evals_per_image,
    predicted_evals`` (:func:`bibad_utils.defenses.dc_cost`), ``seconds_per_image, ms_per_unet_eval,
    accuracy, agreement`` (fraction of predictions equal to the exhaustive ones), ``device, threads``.
    """
    d = study.cfg.defenses
    cells = dc_cells(study)
    if not cells:
        raise ConfigError("defenses.dc_attacks", d.dc_attacks, f"attacks of the grid {study.cfg.attacks}")
    cell = cells[0]
    modes = [("exhaustive", None)] + ([("adaptive", d.dc_adaptive)] if d.dc_adaptive else [])
    params = {"n_images": d.dc_bench_images, "n_levels": d.dc_levels, "modes": modes, "seed": study.seed,
              "batch_size": d.dc_batch_size}

    def build(art):
        imgs = dc_images(study, cell.trigger_kind, d.dc_bench_images)
        model = study.model(cell)
        rows, reference = [], None
        for mode, stages in modes:
            pred, det = D.diffusion_classify(model, imgs["clean"], n_levels=d.dc_levels, adaptive=stages,
                                             batch_size=d.dc_batch_size, seed=study.seed,
                                             device=study.device, return_errors=True)
            reference = pred if reference is None else reference
            n = len(pred)
            rows.append({"mode": mode, "cell": cell.name, "n_images": n, "n_classes": len(det["classes"]),
                         "n_levels": d.dc_levels, "stages": "all classes, all levels" if stages is None
                         else str([list(s) for s in stages]), "unet_evals": det["unet_evals"],
                         "unet_evals_per_image": det["unet_evals"] / n,
                         "predicted_evals": D.dc_cost(n, len(det["classes"]), d.dc_levels, stages),
                         "seconds_per_image": det["seconds"] / n,
                         "ms_per_unet_eval": 1000 * det["seconds"] / det["unet_evals"],
                         "accuracy": float((pred == imgs["labels"]).mean()),
                         "agreement": float((pred == reference).mean()),
                         "device": str(study.device), "threads": torch.get_num_threads()})
        st.save_json(art.dir / "benchmark.json", rows)

    path = study.store.cached("castle_dc_bench", params, [study.model_key(cell), study.data_key], build,
                              device=str(study.device))
    return pd.DataFrame(st.load_json(path / "benchmark.json"))
