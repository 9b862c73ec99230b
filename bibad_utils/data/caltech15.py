"""Caltech15: the 15 Caltech-256 classes of the paper, in its order (target 2 = "binocular"), read from the
standard ``256_ObjectCategories`` folder (or torchvision's download) with a seeded per-class split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bibad_utils.data.real import (OPTION_FIELDS, check_common, check_real_options, folder_dataset, image_files,
                                   rooted_loader)
from bibad_utils.data.registry import DatasetSpec

CALTECH15_CLASSES = ("horse", "billiard", "binocular", "ladder", "motorbike", "mushroom", "people", "t-shirt",
                     "watch", "airplane", "face", "bathtub", "gorilla", "grapes", "hammock")
CALTECH15_FOLDERS = ("105.horse", "011.billiards", "012.binoculars", "126.ladder", "145.motorbikes-101",
                     "147.mushroom", "159.people", "232.t-shirt", "240.watch-101", "251.airplanes-101",
                     "253.faces-easy-101", "008.bathtub", "090.gorilla", "092.grapes", "096.hammock")
CALTECH15_TARGET = 2
CALTECH256_URL = "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar"


def source_files(root, **_ignored) -> tuple[Path, list[Path]] | None:
    """(base folder, every file the loader of ``name`` may read, both splits), or None when the dataset
    is not under ``root``."""
    folder = find_caltech256(Path(root))
    if folder is None:
        return None
    return folder, [f for sub in CALTECH15_FOLDERS for d in _class_dirs(folder, sub) for f in image_files(d)]


def _class_dirs(folder: Path, name: str) -> list[Path]:
    """The folder of class ``name`` (``"NNN.name"``) under ``folder``, or else every folder ``*.name``."""
    if (folder / name).is_dir():
        return [folder / name]
    suffix = name.split(".", 1)[1]
    return [p for p in folder.iterdir() if p.is_dir() and p.name.split(".", 1)[-1] == suffix]


def find_caltech256(root) -> Path | None:
    """The Caltech-256 ``256_ObjectCategories`` folder under ``root`` (also ``root/caltech256/...``, the
    torchvision location, or ``root`` itself), or None."""
    root = Path(root)
    for candidate in (root / "256_ObjectCategories", root / "caltech256" / "256_ObjectCategories", root):
        if candidate.is_dir() and any((candidate / f).is_dir() for f in CALTECH15_FOLDERS):
            return candidate
    return None


def caltech15_split(n_images: int, test_fraction: float, seed: int, class_index: int):
    """(train positions, test positions) of one class's sorted file list: a permutation drawn with
    ``np.random.default_rng([seed, class_index])``; its first ``round(n * test_fraction)`` positions are
    the test split. Both are returned sorted."""
    perm = np.random.default_rng([int(seed), int(class_index)]).permutation(n_images)
    n_test = int(round(n_images * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_caltech15(split: str = "train", root="data", image_size: int = 256, download: bool = False,
                   seed: int = 0, test_fraction: float = 0.2, resize: str = "center_crop", cache_dir=None,
                   num_workers: int = 0):
    """Caltech15: the 15 Caltech-256 classes of the paper, in its order (target 2 = "binocular").

    Layout ``<root>/256_ObjectCategories/NNN.name/*.jpg`` (or torchvision's ``<root>/caltech256/...``;
    ``download=True`` fetches it with ``torchvision.datasets.Caltech256``). Caltech-256 has no official
    split: per class, :func:`caltech15_split` puts a seeded ``test_fraction`` of the images in "test".
    """
    check_common(split, image_size, resize)
    OPTION_FIELDS["test_fraction"].check("test_fraction", test_fraction)
    folder = find_caltech256(root)
    if folder is None and download:
        from torchvision.datasets import Caltech256

        Caltech256(str(root), download=True)
        folder = find_caltech256(root)
    if folder is None:
        raise FileNotFoundError(
            f"Caltech-256 not found under {Path(root).resolve()}: expected "
            f"{Path(root) / '256_ObjectCategories'}/105.horse/*.jpg. Pass download=True "
            f"(torchvision.datasets.Caltech256) or download {CALTECH256_URL} and extract it into "
            f"{Path(root).resolve()}.")
    files, labels = [], []
    for label, name in enumerate(CALTECH15_FOLDERS):
        dirs = _class_dirs(folder, name)
        if len(dirs) != 1:
            raise FileNotFoundError(f"Caltech15 class folder missing: {folder / name} "
                                    f"({CALTECH15_CLASSES[label]}); see {CALTECH256_URL}")
        found = image_files(dirs[0])
        train, test = caltech15_split(len(found), test_fraction, seed, label)
        chosen = train if split == "train" else test
        files += [found[i] for i in chosen]
        labels += [label] * len(chosen)
    cache_dir = Path(root) / ".bibad_cache" if cache_dir is None else Path(cache_dir)
    meta = {"source": str(folder), "target": CALTECH15_TARGET, "split_seed": int(seed),
            "test_fraction": float(test_fraction)}
    return folder_dataset("caltech15", split, files, labels, CALTECH15_CLASSES, int(image_size), resize,
                           cache_dir, num_workers, meta)


DATASET = DatasetSpec("caltech15", len(CALTECH15_CLASSES), rooted_loader(load_caltech15), load_caltech15,
                      source_files=source_files, check_options=check_real_options,
                      summary="15 Caltech-256 classes (the paper's second dataset)")
