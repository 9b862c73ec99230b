"""Duplicates in training data and replication of training images by a diffusion model.

Everything here works on image embeddings: L2-normalised float32 vectors ``[N, D]`` whose dot product
is a cosine similarity in [-1, 1]. :func:`embed` computes them with one of three measures (raw pixels,
a task classifier's features, ImageNet ResNet-50 features); the rest is embedding-agnostic:

- :func:`find_duplicate_groups` - near-duplicate groups inside one set (single linkage at a threshold);
- :func:`duplicate_pr` / :func:`choose_threshold` - pairwise precision and recall against planted
  duplicate groups, and the threshold that maximises F1 (reported, never silently applied);
- :func:`nearest_train_similarity` / :func:`replication_rate` / :func:`top_replicated_pairs` - how
  close each generated image is to its nearest training image, and how many are replicas;
- :func:`duplicate_pool` - the indices from which duplicate poisoning draws its images.

About SSCD. The literature measures replication with SSCD (Pizzi et al. 2022, a ResNet-50 trained for
copy detection; replica if cosine > 0.5). Its weights are published only as TorchScript archives, and
loading one (``torch.jit.load``) unpickles data and runs serialized code from the file. The project loads
weights only from safetensors, so SSCD is not used; ``"resnet50_imagenet"`` is its stand-in (same
backbone, trained for ImageNet classification, not for copy detection). SSCD's 0.5 threshold is
calibrated for SSCD alone and does not carry over to these embeddings: a threshold must be chosen per
embedding, e.g. with :func:`choose_threshold` on planted near-duplicates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from bibad_utils.config import ConfigError

EMBEDDINGS = ("pixels", "classifier", "resnet50_imagenet")

# torchvision's ImageNet weights for ResNet-50 (top-1 80.9 %); SHA-256 prefix is in the file name.
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULTS = {
    "embedding": "pixels",          # pixels | classifier | resnet50_imagenet (see embed)
    "pixel_size": 16,               # pixels: side of the area-averaged thumbnail
    "weights_path": None,           # resnet50_imagenet: local .safetensors state dict (None: torch hub cache)
    "batch_size": 256,              # images per forward pass while embedding
    "block": 1024,                  # rows per similarity block (memory ~ block * N * 4 bytes)
    # cosine >= this joins a duplicate group; None: the F1 optimum on planted duplicates (procedural only)
    "duplicate_threshold": None,
    "replication_threshold": None,  # generation is a replica if cosine > this; None: see replication_quantile
    # None: the duplicate threshold; q in (0, 1): the q-quantile of held-out real images' nearest-training
    # similarity (a replica is closer to a training image than a fraction q of fresh real images are)
    "replication_quantile": None,
    "ratios": [0.05, 0.1],          # poisoning ratios of the random vs duplicate comparison
    "top_pairs": 8,                 # replication pairs shown
}


def validate_config(section: dict | None, prefix: str = "memorization") -> dict:
    """Check a profile's ``memorization`` section and fill in :data:`DEFAULTS` (in place when a dict is
    given); returns it. Unknown keys and bad values raise ConfigError naming ``<prefix>.<key>``."""
    section = {} if section is None else section
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ConfigError(prefix, unknown, f"keys among {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **section}

    def check(key, ok, allowed):
        if not ok:
            raise ConfigError(f"{prefix}.{key}", cfg[key], allowed)

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    check("embedding", cfg["embedding"] in EMBEDDINGS, " | ".join(EMBEDDINGS))
    check("pixel_size", is_int(cfg["pixel_size"]) and cfg["pixel_size"] >= 1, "an integer >= 1")
    check("weights_path", cfg["weights_path"] is None or str(cfg["weights_path"]).endswith(".safetensors"),
          "null or a path to a .safetensors file")
    check("batch_size", is_int(cfg["batch_size"]) and cfg["batch_size"] >= 1, "an integer >= 1")
    check("block", is_int(cfg["block"]) and cfg["block"] >= 1, "an integer >= 1")
    for key in ("duplicate_threshold", "replication_threshold"):
        v = cfg[key]
        check(key, v is None or (is_num(v) and -1.0 <= v <= 1.0), "null or a cosine similarity in [-1, 1]")
    q = cfg["replication_quantile"]
    check("replication_quantile", q is None or (is_num(q) and 0.0 < q < 1.0), "null or a quantile in (0, 1)")
    r = cfg["ratios"]
    check("ratios", isinstance(r, (list, tuple)) and len(r) > 0 and all(is_num(p) and 0 < p < 1 for p in r),
          "a non-empty list of ratios in (0, 1)")
    check("top_pairs", is_int(cfg["top_pairs"]) and cfg["top_pairs"] >= 1, "an integer >= 1")
    cfg["ratios"] = [float(p) for p in r]
    section.update(cfg)
    return section


# ---------------------------------------------------------------------------------------------------
# Embeddings


def _check_images(images) -> np.ndarray:
    images = images if isinstance(images, np.ndarray) else np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError("images", f"{images.dtype} array of shape {images.shape}", "uint8 [N, H, W, 3]")
    return images


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    # A constant image has no direction; it stays the zero vector (cosine 0 with everything).
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)


def _batches(images: np.ndarray, batch_size: int, device) -> "iter[torch.Tensor]":
    """float32 ``[b, 3, H, W]`` in [0, 1] on ``device``, batch by batch (memmaps are read lazily)."""
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start:start + batch_size])
        yield torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _pixel_embedding(images, batch_size, device, pixel_size) -> np.ndarray:
    out = []
    for x in _batches(images, batch_size, device):
        x = F.adaptive_avg_pool2d(x, pixel_size).flatten(1)
        out.append((x - x.mean(dim=1, keepdim=True)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3 * pixel_size * pixel_size), np.float32)


def _resnet50_state_dict(weights_path) -> dict:
    if weights_path is not None:
        path = Path(weights_path)
        if path.suffix != ".safetensors" or not path.is_file():
            raise ConfigError("weights_path", str(weights_path),
                              "an existing .safetensors file holding torchvision's ResNet-50 state dict")
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # weights_only=True restricts unpickling to tensors; the hash in the file name is verified.
        return torch.hub.load_state_dict_from_url(RESNET50_URL, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except Exception as err:  # offline, proxy, corrupt cache: all end in the same advice
        raise ConfigError(
            "weights_path", None,
            "a local .safetensors file of torchvision's ResNet-50 IMAGENET1K_V2 weights, because they are "
            f"neither in the torch hub cache nor downloadable ({err}). Either copy {RESNET50_URL} to "
            f"{torch.hub.get_dir()}/checkpoints/ (TORCH_HOME moves that folder), or on a machine with "
            "internet run `from torchvision.models import resnet50, ResNet50_Weights; "
            "from safetensors.torch import save_file; "
            "save_file(resnet50(weights=ResNet50_Weights.IMAGENET1K_V2).state_dict(), 'resnet50.safetensors')`"
            " and pass weights_path='resnet50.safetensors' (profile key memorization.weights_path)",
        ) from err


def _resnet50_embedding(images, batch_size, device, weights_path, input_size) -> np.ndarray:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.load_state_dict(_resnet50_state_dict(weights_path))
    net.fc = torch.nn.Identity()
    net.eval().to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for x in _batches(images, batch_size, device):
            # The whole image is resized, never cropped: a copy may differ anywhere, corners included.
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True,
                              align_corners=False)
            out.append(net((x - mean) / std).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


def embed(images, method: str = "pixels", *, device="cpu", batch_size: int = 256, model=None,
          pixel_size: int = 16, weights_path=None, input_size: int = 224) -> np.ndarray:
    """Image embeddings for similarity search: float32 ``[N, D]``, each row of unit L2 norm.

    images: uint8 ``[N, H, W, 3]`` (NHWC, 0..255; a memmap is read batch by batch).
    method:
      - ``"pixels"``: the image area-averaged to ``pixel_size`` x ``pixel_size``, minus its own mean
        (one scalar over all pixels and channels), then normalised. The cosine of two embeddings is the
        Pearson correlation of their thumbnails: it measures near-identical layout and colour, is blind to
        global brightness offsets, and knows nothing of semantics. D = 3 * pixel_size**2. A transparent
        baseline, sufficient for near-copies (noise, re-encoding), weak for crops or shifted objects.
      - ``"classifier"``: penultimate features of ``model`` (a classifier from ``bibad_utils.judges``,
        via ``judges.features``), normalised. Measures closeness in what the task classifier attends to:
        same class and similar appearance score high even without being copies.
      - ``"resnet50_imagenet"``: penultimate (global-average-pooled, D = 2048) features of torchvision's
        ResNet-50 with ImageNet weights, on the whole image resized to ``input_size`` px (no crop) and
        ImageNet-normalised. A stand-in for SSCD (see the module docstring): generic visual similarity,
        robust to small shifts and noise, but not trained to separate copies from look-alikes. Weights
        come from ``weights_path`` (a .safetensors state dict) or torchvision's download cache; offline
        without them a ConfigError naming ``weights_path`` explains how to supply them.
    device: torch device for the forward passes; batch_size: images per pass.
    """
    images = _check_images(images)
    if method not in EMBEDDINGS:
        raise ConfigError("method", method, " | ".join(EMBEDDINGS))
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    if method == "pixels":
        if not (isinstance(pixel_size, (int, np.integer)) and pixel_size >= 1):
            raise ConfigError("pixel_size", pixel_size, "an integer >= 1")
        return _normalise(_pixel_embedding(images, batch_size, device, int(pixel_size)))
    if method == "classifier":
        if model is None:
            raise ConfigError("model", None, "a trained classifier (bibad_utils.judges) for method='classifier'")
        from bibad_utils.judges import features

        return _normalise(np.asarray(features(model, images, device=device, batch_size=batch_size)))
    if not (isinstance(input_size, (int, np.integer)) and input_size >= 32):
        raise ConfigError("input_size", input_size, "an integer >= 32")
    return _normalise(_resnet50_embedding(images, batch_size, device, weights_path, int(input_size)))


# ---------------------------------------------------------------------------------------------------
# Duplicates inside one set


def _check_embedding(emb, name="emb") -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ConfigError(name, f"array of shape {emb.shape}", "a 2-D [N, D] embedding")
    return emb


def _check_threshold(threshold, name="threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not -1.0 <= float(threshold) <= 1.0:
        raise ConfigError(name, threshold, "a cosine similarity in [-1, 1]")
    return float(threshold)


def _check_block(block) -> int:
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
    emb = _check_embedding(emb)
    t = _check_threshold(min_threshold, "min_threshold")
    block = _check_block(block)
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
    emb = _check_embedding(emb)
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
    emb = _check_embedding(emb)
    if thresholds is None:
        thresholds = 1.0 - np.logspace(np.log10(0.5), -4.0, 41)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0:
        raise ConfigError("thresholds", thresholds.tolist(), "a non-empty list of cosine similarities")
    for t in thresholds:
        _check_threshold(float(t), "thresholds")
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


# ---------------------------------------------------------------------------------------------------
# Replication of training images by generations


def nearest_train_similarity(gen_emb, train_emb, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each generated image, the cosine similarity to its nearest training image and that image's index.

    gen_emb: float ``[N_gen, D]``, train_emb: float ``[N_train, D]``, unit-norm rows of one embedding.
    Returns (sim float32 ``[N_gen]`` in [-1, 1], idx int64 ``[N_gen]`` into the training set; the first
    index on ties). Computed on ``block`` x ``block`` tiles, so memory is O(block**2).
    """
    gen = _check_embedding(gen_emb, "gen_emb")
    train = _check_embedding(train_emb, "train_emb")
    block = _check_block(block)
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
    t = _check_threshold(threshold)
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
    return pd.DataFrame({"gen_index": order.astype(np.int64), "train_index": idx[order],
                         "similarity": sim[order]})


__all__ = [
    "DEFAULTS", "EMBEDDINGS", "choose_threshold", "duplicate_pool", "duplicate_pr", "embed",
    "find_duplicate_groups", "nearest_train_similarity", "replication_rate", "similarity_forest",
    "top_replicated_pairs", "validate_config",
]
