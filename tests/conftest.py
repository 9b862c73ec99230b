"""Shared fixtures: small, fast datasets for unit tests."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_procedural():
    """Procedural training set: 10 classes x 6 images of 16 px (seed 0)."""
    from bibad_utils.data import make_procedural

    return make_procedural(6, image_size=16, seed=0)
