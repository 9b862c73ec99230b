"""CIFAR-10 (Krizhevsky 2009) from local files, with no pickle: a zip of images, a folder of images, or
the official binary version.

Three sources, found under ``root`` by :func:`find_cifar10` (``root`` may also name one of them directly):

- ``zip``: an archive holding ``[<prefix>/]{train,test}/<class>/NNNN.jpg`` (the project's offline copy
  ``cifar10-jpg.zip``: JPEG quality 75), members read straight from the archive with :mod:`zipfile`;
- ``folder``: the same layout extracted (``<root>/cifar10/{train,test}/<class>/*.jpg`` or ``.png``, or
  ``<root>/{train,test}/<class>/...``);
- ``binary``: the official binary version ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``
  (each record: 1 label byte, then 3,072 bytes of a 32 x 32 image, channel by channel, rows top to
  bottom). ``download=True`` fetches it (:data:`CIFAR10_BINARY_URL`) with torchvision's downloader into
  ``root``. The python version (:data:`CIFAR10_URL`, ``cifar-10-batches-py``) is never read: its batches
  are pickles.

Order: class by class (airplane .. truck), and within a class in the order of the original batches (file
names sort numerically), so that image ``i`` is the same picture whichever source it is read from (the
zip's pixels differ from the lossless binary by its JPEG loss).

Subset: ``n_per_class`` keeps that many images of every class, chosen per class by
``np.random.default_rng([seed, CIFAR10_STREAM, split, class]).permutation``: its first ``n_per_class``
positions, sorted. The same (seed, split, n) gives the same images every run, and a smaller subset is
contained in a larger one.

Decoded images are cached as uint8 ``.npy`` files like the other real datasets
(:func:`bibad_utils.data.real.cached_arrays`), keyed by the fingerprint of the files read and the chosen
images; default cache folder :func:`default_cache_dir` (``<repository>/data/.bibad_cache``), so that a
shared copy of the data is only ever read.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.data import real
from bibad_utils.data.registry import DatasetSpec

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TARGET = 4
CIFAR10_SPLITS = ("train", "test")
CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}
CIFAR10_ZIP = "cifar10-jpg.zip"
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_BINARY_DIR = "cifar-10-batches-bin"
CIFAR10_BINARY_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's; pickled, not read
CIFAR10_STREAM = 0xC10  # separates the subset's random stream from other seeded choices
RECORD_BYTES = 1 + 3 * 32 * 32

_MEMBER = re.compile(r"^(?P<prefix>(?:[^/]+/)*?)(?P<split>train|test)/(?P<cls>[^/]+)/(?P<name>[^/]+)$")


def find_cifar10(root) -> tuple[str, Path] | None:
    """(format, path) of the CIFAR-10 source at or under ``root``: ``("zip", file)``, ``("folder",
    folder holding train/ and test/)`` or ``("binary", folder of the .bin batches)``; None when there is
    none. Under one folder the official binary version comes first, then ``cifar10-jpg.zip``, then an
    extracted folder; name the file or folder itself as ``root`` to choose."""
    root = Path(root)
    if root.is_file():
        return ("zip", root) if zipfile.is_zipfile(root) else None
    if not root.is_dir():
        return None
    for folder in (root / CIFAR10_BINARY_DIR, root):
        if any((folder / f).is_file() for files in CIFAR10_BINARY_FILES.values() for f in files):
            return "binary", folder
    if (root / CIFAR10_ZIP).is_file():
        return "zip", root / CIFAR10_ZIP
    for folder in (root / "cifar10", root):
        if any((folder / s / c).is_dir() for s in CIFAR10_SPLITS for c in CIFAR10_CLASSES):
            return "folder", folder
    return None


def _number_first(name: str):
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _listing(kind: str, path: Path) -> dict:
    """{(split, class index): [members or paths in file order]} of a zip or an extracted image folder."""
    if kind == "zip":
        return real.zip_listing(path, _MEMBER, CIFAR10_CLASSES, _number_first, "CIFAR-10",
                                "CIFAR-10's {train,test}/<class>/*.png")
    return real.folder_listing(path, CIFAR10_SPLITS, CIFAR10_CLASSES, _number_first)


def read_binary_batches(files) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 ``[N, 32, 32, 3]`` images, int64 ``[N]`` labels) of CIFAR-10 binary batch files, in file and
    record order. Raises ConfigError naming a file whose size is not a whole number of 3,073-byte
    records or that holds a label outside 0..9."""
    images, labels = [], []
    for f in files:
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD_BYTES:
            raise ConfigError("dataset.root", str(f), f"a CIFAR-10 binary batch of whole {RECORD_BYTES}-byte "
                                                      f"records (it has {raw.size} bytes)")
        rec = raw.reshape(-1, RECORD_BYTES)
        if rec[:, 0].max() >= len(CIFAR10_CLASSES):
            raise ConfigError("dataset.root", str(f), "CIFAR-10 records with labels 0..9")
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def _binary_listing(folder: Path, split: str) -> tuple[dict, list[Path], np.ndarray]:
    files = [folder / f for f in CIFAR10_BINARY_FILES[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 binary batches missing in {folder}: {missing}; the archive "
                                f"{CIFAR10_BINARY_URL} holds all six")
    images, labels = read_binary_batches(files)
    return {(split, c): np.flatnonzero(labels == c).tolist() for c in range(len(CIFAR10_CLASSES))}, files, images


def subset_positions(n_available: int, n_per_class: int | None, seed: int, split: str, class_index: int):
    """Sorted positions (within one class, in file order) of the images kept (:func:`~bibad_utils.data.real.
    class_subset`, drawn with ``np.random.default_rng([seed, CIFAR10_STREAM, split index, class_index])``)."""
    return real.class_subset(n_available, n_per_class, [seed, CIFAR10_STREAM, CIFAR10_SPLITS.index(split), class_index],
                             f"{split} images of class {CIFAR10_CLASSES[class_index]} in this copy")


def _resized(img: np.ndarray, image_size: int) -> np.ndarray:
    """A square uint8 ``[32, 32, 3]`` image at ``image_size`` (bicubic; both resize modes agree on a square)."""
    if img.shape[:2] == (image_size, image_size):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((image_size, image_size),
                                                                        Image.Resampling.BICUBIC))


def default_cache_dir() -> Path:
    """Where CIFAR-10's decoded images are cached when no ``cache_dir`` is given: ``.bibad_cache`` under
    :func:`~bibad_utils.data.default_data_root` (the project's git-ignored ``data/``), never beside the
    source, which may be an archive or a shared read-only copy."""
    from bibad_utils.data.base import default_data_root

    return default_data_root() / ".bibad_cache"


def source_files(root, **_ignored) -> tuple[Path, list[Path]] | None:
    """(base folder, every file the CIFAR-10 loader may read, both splits) of the source under ``root``,
    or None when there is none."""
    found = find_cifar10(root)
    if found is None:
        return None
    kind, path = found
    if kind == "zip":
        return path.parent, [path]
    if kind == "binary":
        return path, [path / f for files in CIFAR10_BINARY_FILES.values() for f in files if (path / f).is_file()]
    return path, [f for files in _listing("folder", path).values() for f in files]


def _not_found(root: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 not found under {root.resolve()}: expected {root / CIFAR10_ZIP} (zip of "
        f"{{train,test}}/<class>/*.jpg), {root / 'cifar10'}/{{train,test}}/<class>/*.jpg, or the binary version "
        f"{root / CIFAR10_BINARY_DIR}/data_batch_1.bin; root may also name the zip itself. Pass download=True "
        f"or download {CIFAR10_BINARY_URL} and extract it into {root.resolve()}. The python version "
        f"({Path(CIFAR10_URL).name}, cifar-10-batches-py) is not read: its batches are pickles.")


def load_cifar10(split: str = "train", root="data", image_size: int = 32, download: bool = False, seed: int = 0,
                 n_per_class: int | None = None, resize: str = "center_crop", cache_dir=None,
                 num_workers: int = 0):
    """CIFAR-10 as an :class:`~bibad_utils.data.ImageSet`: classes airplane .. truck (target 4 = "deer"),
    uint8 ``[N, S, S, 3]`` images memory-mapped from the cache, int64 labels, class by class.

    split: "train" (50,000 images) or "test" (10,000). root: a folder holding one of the sources of
    :func:`find_cifar10`, or the zip itself. image_size: side S in pixels (32: the images as stored;
    otherwise resized with a bicubic filter). n_per_class: a class-balanced subset of that many images
    per class (:func:`subset_positions`, drawn with ``seed``), or None for all. download: fetch the
    official binary version into ``root`` when no source is there. num_workers: threads decoding the
    images of a zip or an extracted folder (each thread with its own handle of a zip). ``meta`` records
    the source, its format, the subset and the cache file.
    """
    from bibad_utils.data.base import ImageSet

    real.check_common(split, image_size, resize, n_per_class=n_per_class)
    root = Path(root)
    found = find_cifar10(root)
    if found is None and download:
        if root.suffix.lower() == ".zip":
            raise ConfigError("download", download, f"false when root names an archive ({root} is missing)")
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR10_BINARY_URL, str(root), md5=CIFAR10_BINARY_MD5)
        found = find_cifar10(root)
    if found is None:
        raise _not_found(root)
    kind, path = found
    image_size, seed = int(image_size), int(seed)
    pixels = None
    if kind == "zip":
        listing, read = _listing("zip", path), [path]
    elif kind == "folder":
        listing = _listing("folder", path)
        read = None
    else:
        listing, read, pixels = _binary_listing(path, split)
    chosen, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        items = listing.get((split, label))
        if not items:
            raise FileNotFoundError(f"CIFAR-10 class {cls!r} of the {split} split missing in {path}")
        keep = subset_positions(len(items), n_per_class, seed, split, label)
        chosen += [items[i] for i in keep]
        labels += [label] * len(keep)
    read = chosen if read is None else read
    base = path.parent if kind == "zip" else path
    content = real.files_fingerprint(read, base)
    # what identifies each chosen image: its record number, its path under the folder, or its member name
    names = {"binary": lambda c: str(c), "folder": lambda c: Path(c).relative_to(base).as_posix(),
             "zip": lambda c: c}[kind]
    names = [names(c) for c in chosen]
    key = real.fingerprint_of([real.CACHE_VERSION, "cifar10", kind, split, image_size, resize, n_per_class,
                               seed if n_per_class is not None else None, *names, *labels,
                               content["listing_sha256"], content["content_sha256"]])
    size = "all" if n_per_class is None else f"{n_per_class}pc"
    stem = f"cifar10-{split}-{image_size}px-{resize}-{size}-{key}"
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)

    def fill(out):
        if kind == "binary":
            for i, pos in enumerate(chosen):
                out[i] = _resized(pixels[pos], image_size)
            return labels
        real.read_items(kind, path, chosen, out, image_size, resize, num_workers)
        return labels

    info = {"name": "cifar10", "split": split, "image_size": image_size, "resize": resize, "source_format": kind,
            "n_per_class": n_per_class, "seed": seed, "items": names, "class_names": list(CIFAR10_CLASSES)}
    images, cached_labels = real.cached_arrays(cache_dir, stem, len(chosen), image_size, fill, info)
    meta = {"source": str(path), "source_format": kind, "target": CIFAR10_TARGET, "split": split,
            "image_size": image_size, "resize": resize, "n_per_class": n_per_class,
            "subset_seed": seed if n_per_class is not None else None,
            "cache": str(real.cache_paths(cache_dir, stem)[0]), "files_fingerprint": content}
    return ImageSet(images, cached_labels, list(CIFAR10_CLASSES), "cifar10", meta)


DATASET = DatasetSpec("cifar10", len(CIFAR10_CLASSES), real.rooted_loader(load_cifar10), load_cifar10, per_class=True,
                      source_files=source_files, check_options=real.check_real_options,
                      summary="CIFAR-10 (the paper's pixel-DDPM and diffusion-classifier setting)")
