"""Replication: the paper's "poisoning exacerbates duplication": how close each generation lies to its
nearest training image, the threshold from held-out real images, and the replication rate per DM."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bibad_utils import store as st
from bibad_utils.experiments.memorization_study.common import (embed_images, embedding_inputs, embedding_params,
                                                               train_embedding, training_embedding)
from bibad_utils.experiments.memorization_study.duplicates import duplicate_comparison_cells, duplicate_threshold
from bibad_utils.memorization import nearest_train_similarity, replication_rate, top_replicated_pairs
from bibad_utils.metrics import wilson_interval
from bibad_utils.stages import Cell, Study


HELDOUT = "held-out real"


def _nearest(study: Study, kind: str, params: dict, inputs: list, images, train) -> tuple[np.ndarray, np.ndarray]:
    """The artifact ``kind`` (cached): the cosine similarity of each of ``images()``'s embeddings to its nearest
    row of ``train()`` (float32) and that row's index (int64); the two are called only to build it."""
    def build(art):
        sim, idx = nearest_train_similarity(embed_images(study, images()), train(), block=study.cfg.memorization.block)
        st.save_array(art.dir / "similarity.npy", sim)
        st.save_array(art.dir / "nearest.npy", idx)

    path = study.store.cached(kind, params, inputs, build, device=str(study.device))
    return st.load_array(path / "similarity.npy"), st.load_array(path / "nearest.npy")


def heldout_similarity(study: Study) -> tuple[np.ndarray, np.ndarray]:
    """The reference of "no memorization": each held-out real (test) image's cosine similarity to its
    nearest clean training image (float32 ``[N_test]``) and that image's index (int64 ``[N_test]``); cached."""
    test_key = st.artifact_key("data_test", {"dataset": study.cfg.dataset.as_dict(), "seed": study.seed,
                                             "labels": study.test_set.labels})
    return _nearest(study, "mem_heldout", embedding_params(study), [study.data_key, test_key] + embedding_inputs(study),
                    lambda: study.test_set.images, lambda: train_embedding(study))


def replication_threshold(study: Study) -> float:
    """Cosine threshold above which a generation counts as a replica (see
    :func:`replication_threshold_source`)."""
    m = study.cfg.memorization
    if m.replication_threshold is not None:
        return float(m.replication_threshold)
    if m.replication_quantile is not None:
        return float(np.quantile(heldout_similarity(study)[0].astype(np.float64), m.replication_quantile))
    return duplicate_threshold(study)


def replication_threshold_source(study: Study) -> str:
    """Where :func:`replication_threshold` comes from: ``memorization.replication_threshold`` if set; else,
    with ``memorization.replication_quantile`` = q, the q-quantile of the held-out real images' nearest-
    training similarity (a replica is closer to a training image than a fraction q of fresh real images
    are); else the duplicate finder's threshold (as close to a training image as a planted copy)."""
    m = study.cfg.memorization
    if m.replication_threshold is not None:
        return "profile (memorization.replication_threshold)"
    if m.replication_quantile is not None:
        return f"{m.replication_quantile:.0%} quantile of held-out real images' nearest-training similarity"
    return "the duplicate threshold"


def replication_cells(study: Study) -> list[Cell]:
    """The clean model, each attack's model at the largest grid ratio, and the duplicate-poisoning cells
    of :func:`duplicate_comparison_cells` (already trained there)."""
    return [Cell("clean")] + study.top_cells() + [dup for _, dup in duplicate_comparison_cells(study)]


def replication_scores(study: Study, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """For each all-class generation of ``cell``'s DM: cosine similarity to its nearest training image
    (float32 ``[N_all]`` in [-1, 1]) and that image's index (int64 ``[N_all]``); cached."""
    params = {**embedding_params(study), "set": "all", "guidance": study.guidance_all}
    inputs = [study.generation_key(cell), study.poison_key(cell)] + embedding_inputs(study)
    return _nearest(study, "mem_replication", params, inputs,
                    lambda: study.generations(cell)[("all", study.guidance_all)].images,
                    lambda: training_embedding(study, cell))


def replication_similarities(study: Study, cells=None, heldout: bool = True) -> dict[str, np.ndarray]:
    """``{name: nearest-training similarities}`` for the histogram: each cell (default
    :func:`replication_cells`) by its name, and (``heldout``) the held-out real images as the reference."""
    out = {HELDOUT: heldout_similarity(study)[0]} if heldout else {}
    out.update({c.name: replication_scores(study, c)[0] for c in (cells or replication_cells(study))})
    return out


def replication_table(study: Study) -> pd.DataFrame:
    """Replication of training images by the all-class generations, one row per cell of
    :func:`replication_cells` after a first reference row ``held-out real`` (the test images against the
    clean training set, kind ``real``): ``cell``, ``model`` (the name on several lines, for axes), ``kind``,
    ``p``, ``pool``, ``n`` images, ``k`` replicas (similarity > ``threshold``), ``rate`` with Wilson
    95 % bounds ``lo`` / ``hi``, ``mean_sim`` and ``median_sim`` (cosine), ``nearest_poisoned`` (fraction of
    generations whose nearest training image is a poisoned one) beside ``poisoned_share`` (fraction of the
    training set that is poisoned)."""

    threshold = replication_threshold(study)
    entries = [(HELDOUT, "real", 0.0, "random", heldout_similarity(study), np.zeros(0, np.int64))]
    for cell in replication_cells(study):
        entries.append((cell.name, cell.kind, cell.ratio, cell.pool, replication_scores(study, cell),
                        np.asarray(study.poison_manifest(cell)["indices"], dtype=np.int64)))
    rows = []
    for name, kind, p, pool, (sim, idx), poisoned in entries:
        rate, k, n = replication_rate(sim, threshold)
        lo, hi = wilson_interval(k, n)
        rows.append({
            "cell": name, "model": name.replace(" ", "\n"), "kind": kind, "p": p, "pool": pool, "n": n, "k": k,
            "rate": rate, "lo": lo, "hi": hi, "threshold": threshold,
            "mean_sim": float(np.mean(sim)) if n else math.nan,
            "median_sim": float(np.median(sim)) if n else math.nan,
            "nearest_poisoned": float(np.isin(idx, poisoned).mean()) if n else math.nan,
            "poisoned_share": len(poisoned) / len(study.train_set),
        })
    return pd.DataFrame(rows)


def top_pairs(study: Study, cell: Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` (``memorization.top_pairs``) all-class generations of ``cell`` most similar to a
    training image: (generated uint8 ``[k, H, W, 3]``, their nearest training images as the model saw
    them, uint8 ``[k, H, W, 3]``, similarities float ``[k]``), most similar first; the arguments of
    :func:`bibad_utils.plots.pairs_figure`."""
    sim, idx = replication_scores(study, cell)
    pairs = top_replicated_pairs(sim, idx, study.cfg.memorization.top_pairs)
    gen = study.generations(cell)[("all", study.guidance_all)].images
    train = study.poisoned(cell).images_uint8(pairs["train_index"].to_numpy())
    return np.asarray(gen[pairs["gen_index"].to_numpy()]), train, pairs["similarity"].to_numpy()
