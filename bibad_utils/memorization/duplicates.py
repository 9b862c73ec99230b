"""Near-duplicate groups inside one set of embeddings, their pairwise precision and recall against planted
groups, the F1-optimal threshold, and the pool duplicate poisoning draws from."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from bibad_utils.base import ConfigError


def check_embedding(emb, name="emb") -> np.ndarray:
    """``emb`` as float32 unit rows ``[N, D]``, or a ConfigError naming ``name``."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ConfigError(name, f"array of shape {emb.shape}", "a 2-D [N, D] embedding")
    return emb


def check_threshold(threshold, name="threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not -1.0 <= float(threshold) <= 1.0:
        raise ConfigError(name, threshold, "a cosine similarity in [-1, 1]")
    return float(threshold)


def check_block(block) -> int:
    if not (isinstance(block, (int, np.integer)) and block >= 1):
        raise ConfigError("block", block, "an integer >= 1")
    return int(block)


def similarity_forest(emb, min_threshold: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-similarity spanning forest of the graph "cosine >= ``min_threshold``" on the rows of ``emb``.

    Returns (i int64 [E], j int64 [E], sim float32 [E]) with i < j and E <= N - 1. For every threshold
    t >= ``min_threshold``, the connected components of the edges with sim >= t are exactly those of the
    full graph "cosine >= t" (single linkage), so one forest answers every threshold. Similarities are
    computed ``block`` rows at a time; the forest is re-reduced after each block, so memory stays
    O(block * N) however dense the graph.
    """
    emb = check_embedding(emb)
    t = check_threshold(min_threshold, "min_threshold")
    block = check_block(block)
    n = len(emb)
    fi, fj, fs = (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),)
    for start in range(0, n, block):
        s = emb[start:start + block] @ emb.T
        rows, cols = np.nonzero(s >= np.float32(t))
        rows_global = rows + start
        keep = cols > rows_global  # every unordered pair once, from the block holding its smaller index
        bi, bj, bs = rows_global[keep], cols[keep], s[rows[keep], cols[keep]]
        if len(bi) == 0:
            continue
        i, j, sim = np.concatenate([fi, bi]), np.concatenate([fj, bj]), np.concatenate([fs, bs])
        # Weights 2 - sim are >= 1 (never the implicit zero of a sparse matrix); minimal weight = maximal sim.
        tree = minimum_spanning_tree(coo_matrix((2.0 - sim.astype(np.float64), (i, j)), shape=(n, n)).tocsr())
        tree = tree.tocoo()
        a, b = np.minimum(tree.row, tree.col), np.maximum(tree.row, tree.col)
        fi, fj, fs = a.astype(np.int64), b.astype(np.int64), (2.0 - tree.data).astype(np.float32)
    order = np.lexsort((fj, fi))
    return fi[order], fj[order], fs[order]


def _groups_from_edges(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    if len(i) == 0:
        return []
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    members = np.flatnonzero(sizes[labels] > 1)
    groups: dict[int, list[int]] = {}
    for idx in members:
        groups.setdefault(int(labels[idx]), []).append(int(idx))
    return sorted(groups.values())


def find_duplicate_groups(emb, threshold: float, block: int = 1024) -> list[list[int]]:
    """Near-duplicate groups: connected components of the graph joining images whose cosine similarity is
    >= ``threshold`` (single linkage, so a chain of near-copies is one group), singletons dropped.

    emb: float ``[N, D]`` unit-norm rows (:func:`embed`). Returns sorted lists of indices, the groups sorted
    by their smallest index. Similarities are computed ``block`` rows at a time (10k images: 40 MB a block).
    """
    emb = check_embedding(emb)
    i, j, _ = similarity_forest(emb, threshold, block)
    return _groups_from_edges(len(emb), i, j)


def _group_labels(groups, n: int, name: str) -> np.ndarray:
    labels = np.full(n, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        members = np.asarray(list(members), dtype=np.int64)
        if members.size and (members.min() < 0 or members.max() >= n):
            raise ConfigError(name, f"index range [{members.min()}, {members.max()}]", f"indices in [0, {n})")
        if np.any(labels[members] >= 0) or len(np.unique(members)) != len(members):
            raise ConfigError(name, f"group {g} shares an index with another group",
                              "disjoint groups of distinct indices")
        labels[members] = g
    return labels


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def duplicate_pr(pred_groups, true_groups, n: int) -> dict:
    """Pairwise precision / recall of predicted duplicate groups against true ones, over ``n`` images.

    A pair of images counts as predicted (true) if both lie in one predicted (true) group. Returns
    ``precision`` = TP / predicted pairs, ``recall`` = TP / true pairs, ``f1`` = 2 TP / (predicted + true),
    each a float in [0, 1] (NaN when its denominator is 0), and the integer counts ``tp``,
    ``pred_pairs``, ``true_pairs``. Counted from group sizes, so a giant group costs no memory.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ConfigError("n", n, "an integer >= 0")
    pred = _group_labels(pred_groups, int(n), "pred_groups")
    true = _group_labels(true_groups, int(n), "true_groups")
    both = (pred >= 0) & (true >= 0)
    tp = _pairs(np.unique(pred[both] * max(int(n), 1) + true[both], return_counts=True)[1])
    pred_pairs = _pairs(np.bincount(pred[pred >= 0])) if np.any(pred >= 0) else 0
    true_pairs = _pairs(np.bincount(true[true >= 0])) if np.any(true >= 0) else 0
    nan = float("nan")
    return {
        "precision": tp / pred_pairs if pred_pairs else nan,
        "recall": tp / true_pairs if true_pairs else nan,
        "f1": 2 * tp / (pred_pairs + true_pairs) if pred_pairs + true_pairs else nan,
        "tp": tp, "pred_pairs": pred_pairs, "true_pairs": true_pairs,
    }


def choose_threshold(emb, true_groups, thresholds=None, block: int = 1024) -> tuple[float, pd.DataFrame]:
    """The duplicate threshold that maximises pairwise F1 against planted ``true_groups``, and the sweep.

    thresholds: candidate cosine similarities (default 41 values from 0.5 to 0.9999, evenly spaced in
    log(1 - threshold), since pixel correlations of near-copies crowd just below 1). Returns (best threshold,
    DataFrame with one row per candidate: threshold, precision, recall, f1, tp, pred_pairs, true_pairs,
    n_groups). Ties go to the highest threshold (the most conservative). The study reports the chosen
    value and the sweep; it is calibrated on planted near-copies, so it measures "as close as a planted
    copy", not a universal notion of replication.
    """
    emb = check_embedding(emb)
    thresholds = 1.0 - np.logspace(np.log10(0.5), -4.0, 41) if thresholds is None else thresholds
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0:
        raise ConfigError("thresholds", thresholds.tolist(), "a non-empty list of cosine similarities")
    for t in thresholds:
        check_threshold(float(t), "thresholds")
    n = len(emb)
    _group_labels(true_groups, n, "true_groups")
    fi, fj, fs = similarity_forest(emb, float(thresholds.min()), block)
    rows = []
    for t in thresholds:
        keep = fs >= np.float32(t)  # the same float32 comparison as find_duplicate_groups
        groups = _groups_from_edges(n, fi[keep], fj[keep])
        rows.append({"threshold": float(t), **duplicate_pr(groups, true_groups, n), "n_groups": len(groups)})
    sweep = pd.DataFrame(rows)
    f1 = sweep["f1"].fillna(-1.0).to_numpy()
    best = np.flatnonzero(f1 == f1.max())
    best_t = float(sweep["threshold"].to_numpy()[best].max())
    return best_t, sweep


def duplicate_pool(groups) -> np.ndarray:
    """int64 ``[M]``: the sorted indices of every image in a duplicate group (all copies, originals
    included): the pool from which duplicate poisoning draws its images."""
    members = [int(i) for g in groups for i in g]
    if any(i < 0 for i in members):
        raise ConfigError("groups", [i for i in members if i < 0][:5], "non-negative image indices")
    return np.unique(np.asarray(members, dtype=np.int64))
