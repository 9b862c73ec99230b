"""What the memorization stage's analyses share: its paper numbers, the interval differences of rates and
means, the profile section and the cached image embeddings."""

from __future__ import annotations

import math

import numpy as np

from bibad_utils import paper
from bibad_utils import store as st
from bibad_utils.base import ConfigError
from bibad_utils.memorization import embed, embedding_key_params
from bibad_utils.metrics import Z95
from bibad_utils.stages import Cell, Study


STAGE = "06_memorization"


PAPER_DATASETS = {d: paper.DATASET_NAMES[d] for d in paper.DUPLICATES}


def mean_difference(a, b, z: float = Z95) -> tuple[float, float, float]:
    """Difference of the means of two independent samples ``mean(a) - mean(b)`` with a normal
    (Welch) interval ``d +- z * sqrt(var(a)/n_a + var(b)/n_b)`` (unbiased variances).

    a, b: float ``[n]`` (NaNs dropped). Returns ``(d, lo, hi)`` in the samples' unit; NaN when a
    sample has fewer than two values.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    d = float(a.mean() - b.mean())
    half = z * math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return d, d - half, d + half


def paper_duplicate_values(p: float, metric: str) -> dict:
    """The paper's (random, duplicate) ratios as fractions for poisoning ratio ``p`` and ``metric``
    (G1 | G2): ``{dataset: (random, duplicate)}`` for the datasets that report this p (may be empty), from
    :data:`bibad_utils.paper.DUPLICATES` (the talk slides; the slide names neither trigger nor guidance)."""
    if metric not in ("G1", "G2"):
        raise ConfigError("metric", metric, "G1 | G2")
    out = {}
    for dataset in paper.DUPLICATES:
        v = paper.duplicates(p, metric, dataset)
        if v is not None:
            out[dataset] = v
    return out


def group_matches(found_groups, planted_groups) -> list[bool]:
    """For each found group (list of indices), whether it is exactly one planted group."""
    planted = {frozenset(int(i) for i in g) for g in planted_groups}
    return [frozenset(int(i) for i in g) in planted for g in found_groups]


def embedding_params(study: Study) -> dict:
    """The embedding's part of the memorization artifacts' keys (:func:`embedding_key_params`: the
    weights file's content enters them when the embedding reads one)."""
    return embedding_key_params(study.cfg.memorization)


def embedding_inputs(study: Study) -> list[str]:
    """Artifact keys the embedding depends on: the clean classifier's for the ``classifier`` embedding."""
    if study.cfg.memorization.embedding != "classifier":
        return []
    study.judges.classifier()
    return [st.artifact_key("judge_classifier", study.judges.params(), [study.data_key])]


def embed_images(study: Study, images) -> np.ndarray:
    """Embeddings of uint8 ``[N, H, W, 3]`` images with the study's measure: float32 ``[N, D]``,
    unit rows (see :func:`bibad_utils.memorization.embed`)."""
    m = study.cfg.memorization
    model = study.judges.classifier() if m.embedding == "classifier" else None
    return embed(images, m.embedding, device=study.device, batch_size=m.batch_size, model=model,
                 pixel_size=m.pixel_size, weights_path=m.weights_path, highpass=m.highpass)


def train_embedding(study: Study) -> np.ndarray:
    """Embeddings of the clean training set, float32 ``[N_train, D]``; cached."""
    def build(art):
        st.save_array(art.dir / "embedding.npy", embed_images(study, study.train_set.images))

    path = study.store.cached("mem_embed", embedding_params(study), [study.data_key] + embedding_inputs(study),
                              build, device=str(study.device))
    return st.load_array(path / "embedding.npy")


def training_embedding(study: Study, cell: Cell) -> np.ndarray:
    """Embeddings of the training set of ``cell`` as its DM saw it (poisoned rows with their trigger),
    float32 ``[N_train, D]``: the clean embedding with the poisoned rows re-embedded."""
    emb = np.array(train_embedding(study))
    if cell.trigger_kind is not None:
        ps = study.poisoned(cell)
        if len(ps.indices):
            emb[ps.indices] = embed_images(study, ps.images_uint8(ps.indices))
    return emb
