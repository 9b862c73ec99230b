"""The profile's ``memorization`` section: its defaults (one per key) and its validation."""

from __future__ import annotations

import numpy as np

from bibad_utils.config import ConfigError

EMBEDDINGS = ("pixels", "classifier", "resnet50_imagenet")

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
