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

from bibad_utils.memorization.duplicates import (choose_threshold, duplicate_pool, duplicate_pr, find_duplicate_groups,
                                                 similarity_forest)
from bibad_utils.memorization.embeddings import embed
from bibad_utils.memorization.replication import nearest_train_similarity, replication_rate, top_replicated_pairs
from bibad_utils.memorization.settings import DEFAULTS, embedding_key_params, validate_config

__all__ = [
    "DEFAULTS", "choose_threshold", "duplicate_pool", "duplicate_pr", "embed", "embedding_key_params",
    "find_duplicate_groups", "nearest_train_similarity", "replication_rate", "similarity_forest",
    "top_replicated_pairs", "validate_config",
]
