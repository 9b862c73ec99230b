"""Replication of training images by generations: nearest-training similarity, replication rate, and
the most similar pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bibad_utils.base import ConfigError
from bibad_utils.memorization.duplicates import check_block, check_embedding, check_threshold


def nearest_train_similarity(gen_emb, train_emb, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each generated image, the cosine similarity to its nearest training image and that image's index.

    gen_emb: float ``[N_gen, D]``, train_emb: float ``[N_train, D]``, unit-norm rows of one embedding.
    Returns (sim float32 ``[N_gen]`` in [-1, 1], idx int64 ``[N_gen]`` into the training set; the first
    index on ties). Computed on ``block`` x ``block`` tiles, so memory is O(block**2).
    """
    gen = check_embedding(gen_emb, "gen_emb")
    train = check_embedding(train_emb, "train_emb")
    block = check_block(block)
    if gen.shape[1] != train.shape[1]:
        raise ConfigError("train_emb", f"dimension {train.shape[1]}", f"the dimension of gen_emb ({gen.shape[1]})")
    if len(train) == 0:
        raise ConfigError("train_emb", "0 rows", "at least one training embedding")
    sim = np.full(len(gen), -np.inf, dtype=np.float32)
    idx = np.zeros(len(gen), dtype=np.int64)
    for g0 in range(0, len(gen), block):
        g = gen[g0:g0 + block]
        best, arg = sim[g0:g0 + block], idx[g0:g0 + block]
        for t0 in range(0, len(train), block):
            s = g @ train[t0:t0 + block].T
            col = s.argmax(axis=1)
            val = s[np.arange(len(g)), col]
            better = val > best
            best[better], arg[better] = val[better], col[better] + t0
    return sim, idx


def replication_rate(sim, threshold: float) -> tuple[float, int, int]:
    """(rate, k, n): the k of n generations whose nearest-training similarity ``sim`` (float ``[n]``) is
    strictly above ``threshold`` (as in "SSCD similarity > 0.5"), and rate = k / n (NaN if n = 0)."""
    sim = np.asarray(sim, dtype=np.float64).reshape(-1)
    t = check_threshold(threshold)
    k, n = int((sim > t).sum()), int(sim.size)
    return (k / n if n else float("nan")), k, n


def top_replicated_pairs(sim, idx, k: int) -> pd.DataFrame:
    """The ``k`` generations most similar to a training image, most similar first.

    sim, idx: the outputs of :func:`nearest_train_similarity`. Returns a DataFrame with columns
    ``gen_index``, ``train_index`` (int) and ``similarity`` (float), at most ``k`` rows; ties keep the
    lower generation index first.
    """
    sim = np.asarray(sim, dtype=np.float64).reshape(-1)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if len(sim) != len(idx):
        raise ConfigError("idx", f"{len(idx)} indices", f"one per similarity ({len(sim)})")
    if not (isinstance(k, (int, np.integer)) and k >= 0):
        raise ConfigError("k", k, "an integer >= 0")
    order = np.argsort(-sim, kind="stable")[:k]
    return pd.DataFrame({"gen_index": order.astype(np.int64), "train_index": idx[order], "similarity": sim[order]})
