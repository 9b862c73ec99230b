"""Real datasets of the paper: Caltech15 (15 Caltech-256 classes), and the helpers every real loader
shares (ImageNette is read by :mod:`bibad_utils.data.imagenette`, CIFAR-10 by
:mod:`bibad_utils.data.cifar10`).

Each loader reads the standard on-disk layout, resizes every image to ``image_size`` x ``image_size``
(``resize="center_crop"``: shorter side to S with an anti-aliased bicubic filter, then the central square;
``"stretch"``: both sides to S) and caches the result as uint8 ``.npy`` files under ``cache_dir``
(default ``<root>/.bibad_cache``). A cache file is named by a fingerprint of the files read (their names,
sizes and bytes, never their modification times) and the resize settings, written atomically, checked
against the SHA-256 recorded when it was written, and memory-mapped read-only when reused.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.files import stat_signature, verified_sha256
from bibad_utils.store import check_file_structure, load_json, save_array, save_json

CALTECH15_CLASSES = ("horse", "billiard", "binocular", "ladder", "motorbike", "mushroom", "people", "t-shirt",
                     "watch", "airplane", "face", "bathtub", "gorilla", "grapes", "hammock")
CALTECH15_FOLDERS = ("105.horse", "011.billiards", "012.binoculars", "126.ladder", "145.motorbikes-101",
                     "147.mushroom", "159.people", "232.t-shirt", "240.watch-101", "251.airplanes-101",
                     "253.faces-easy-101", "008.bathtub", "090.gorilla", "092.grapes", "096.hammock")
CALTECH15_TARGET = 2
CALTECH256_URL = "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RESIZE_MODES = ("center_crop", "stretch")
CACHE_VERSION = 1


class ImageReadError(OSError):
    """An image file of a dataset could not be decoded; the message names the file."""


def check_common(split, image_size, resize, splits=("train", "test")):
    if split not in splits:
        raise ConfigError("split", split, " | ".join(splits))
    if not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ConfigError("image_size", image_size, "an integer >= 8 (pixels)")
    if resize not in RESIZE_MODES:
        raise ConfigError("resize", resize, " | ".join(RESIZE_MODES))


def read_image(path, image_size: int, resize: str = "center_crop") -> np.ndarray:
    """uint8 ``[S, S, 3]``: the RGB image at ``path`` (a file path or a binary file object) resized to
    S x S; raises :class:`ImageReadError` naming the file if it cannot be decoded."""
    return decode_image(path, image_size, resize)[0]


def decode_image(path, image_size: int, resize: str = "center_crop") -> tuple[np.ndarray, str]:
    """(uint8 ``[S, S, 3]`` RGB image, the file's own colour mode): the decoding behind :func:`read_image`,
    which also reports the mode PIL reads before the conversion to RGB (``"RGB"`` as stored; ``"L"``
    greyscale, ``"CMYK"``, ``"P"`` palette ... converted)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if im.format == "JPEG":
                # decode at a reduced DCT scale when the image is much larger than needed
                im.draft("RGB", (image_size, image_size))
            im = im.convert("RGB")
            w, h = im.size
            if resize == "stretch":
                im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
            else:
                scale = image_size / min(w, h)
                nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
                left, top = (nw - image_size) // 2, (nh - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
            return np.asarray(im, dtype=np.uint8).copy(), mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image file {path}: {err}") from err


def fingerprint_of(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


_CONTENT_MEMO: dict[str, str] = {}


def files_fingerprint(files, base) -> dict:
    """What the content of ``files`` is, for cache and artifact keys: ``{"files", "bytes",
    "listing_sha256", "content_sha256"}``. The listing hash covers each file's path relative to ``base``
    and its size; the content hash covers the names and every byte. Neither reads modification times, so a
    copy of the same files (which gets new mtimes) keeps every key, and a file replaced by another one of the
    same size and mtime changes them. The bytes are read once per process while no file's
    :func:`~bibad_utils.files.stat_signature` (ctime included) changes: about 0.3 s for CIFAR-10's 64 MB zip,
    0.6 s for ImageNette's 143 MB one on this project's 2-core machine."""
    base = Path(base)
    rows = []
    for f in files:
        f = Path(f)
        rel = f.relative_to(base).as_posix() if f.is_relative_to(base) else f.as_posix()
        rows.append((rel, f.stat().st_size, f))
    rows.sort(key=lambda r: r[0])
    listing = hashlib.sha256()
    for rel, size, _ in rows:
        listing.update(f"{rel}\0{size}\n".encode())
    memo_key = hashlib.sha256(repr([(str(f.resolve()), stat_signature(f)) for _, _, f in rows]).encode()).hexdigest()
    content = _CONTENT_MEMO.get(memo_key)
    if content is None:
        h = hashlib.sha256()
        for rel, _, f in rows:
            h.update(rel.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            h.update(b"\0")
        content = _CONTENT_MEMO[memo_key] = h.hexdigest()
    return {"files": len(rows), "bytes": int(sum(r[1] for r in rows)), "listing_sha256": listing.hexdigest(),
            "content_sha256": content}


def source_files(name: str, root, **_ignored) -> tuple[Path, list[Path]] | None:
    """(base folder, every file the loader of ``name`` may read, both splits), or None when the dataset
    is not under ``root``."""
    root = Path(root)
    if name == "caltech15":
        folder = find_caltech256(root)
        if folder is None:
            return None
        files = []
        for sub in CALTECH15_FOLDERS:
            suffix = sub.split(".", 1)[1]
            dirs = [folder / sub] if (folder / sub).is_dir() else [
                p for p in folder.iterdir() if p.is_dir() and p.name.split(".", 1)[-1] == suffix]
            for d in dirs:
                files += image_files(d)
        return folder, files
    raise ConfigError("dataset.name", name, "caltech15 (imagenette: bibad_utils.data.imagenette.source_files; "
                                            "cifar10: bibad_utils.data.cifar10.source_files)")


def cache_paths(cache_dir: Path, stem: str):
    return cache_dir / f"{stem}.images.npy", cache_dir / f"{stem}.labels.npy", cache_dir / f"{stem}.json"


def cached_arrays(cache_dir: Path, stem: str, n: int, image_size: int, fill, info: dict):
    """(images memmap, labels) from the cache, building them first with ``fill(out)`` if absent. The cache's
    json records both files' SHA-256 when written; a reuse compares them (once per process while the files
    are unchanged), so a cache file changed in place is refused, not read. Caches written before the
    record existed are checked by structure alone."""
    img_path, lab_path, info_path = cache_paths(cache_dir, stem)
    if not (img_path.exists() and lab_path.exists() and info_path.exists()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{stem}.{os.getpid()}.tmp.npy"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, 3))
            labels = fill(out)
            out.flush()
            del out
            # every file appears whole or not at all; the images last, since they mark the cache complete
            save_array(lab_path, np.asarray(labels, dtype=np.int64))
            save_json(info_path, {**info, "sha256": {"images": verified_sha256(tmp), "labels": verified_sha256(lab_path)}})
            os.replace(tmp, img_path)
        finally:
            if tmp.exists():
                tmp.unlink()
    for path in (img_path, lab_path):
        problem = check_file_structure(path)
        if problem is not None:
            raise ConfigError("cache", str(path), f"a whole cache file ({problem}); delete the files "
                                                  f"{cache_dir / stem}.* and load again to rebuild them")
    recorded = load_json(info_path).get("sha256") or {}
    for what, path in (("images", img_path), ("labels", lab_path)):
        if what in recorded and verified_sha256(path) != recorded[what]:
            raise ConfigError("cache", str(path), f"the bytes written into the cache (sha256 differs: changed "
                                                  f"since); delete the files {cache_dir / stem}.* and load "
                                                  f"again to rebuild them")
    images = np.load(img_path, mmap_mode="r")
    labels = np.load(lab_path, allow_pickle=False)
    if images.shape != (n, image_size, image_size, 3) or labels.shape != (n,):
        raise ConfigError("cache", str(img_path), f"{n} images of {image_size} px; delete the stale cache files")
    return images, labels


def _folder_dataset(name, split, files, labels, class_names, image_size, resize, cache_dir, num_workers,
                    meta):
    from bibad_utils.data import ImageSet

    root = Path(meta["source"])
    rel = [str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else str(f) for f in files]
    content = files_fingerprint(files, root)
    key = fingerprint_of([CACHE_VERSION, name, split, image_size, resize, *rel, *labels,
                          content["listing_sha256"], content["content_sha256"]])
    stem = f"{name}-{split}-{image_size}px-{resize}-{key}"
    info = {"name": name, "split": split, "image_size": image_size, "resize": resize, "files": rel,
            "class_names": list(class_names)}

    def fill(out):
        def one(i):
            out[i] = read_image(files[i], image_size, resize)

        if num_workers > 1:
            with ThreadPoolExecutor(num_workers) as pool:
                list(pool.map(one, range(len(files))))
        else:
            for i in range(len(files)):
                one(i)
        return labels

    images, cached_labels = cached_arrays(Path(cache_dir), stem, len(files), image_size, fill, info)
    meta = {**meta, "split": split, "image_size": image_size, "resize": resize, "n_files": len(files),
            "cache": str(cache_paths(Path(cache_dir), stem)[0]), "files_fingerprint": content}
    return ImageSet(images, cached_labels, list(class_names), name, meta)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


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
    if not 0 < test_fraction < 1:
        raise ConfigError("test_fraction", test_fraction, "a fraction in (0, 1)")
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
        class_dir = folder / name
        if not class_dir.is_dir():
            suffix = name.split(".", 1)[1]
            matches = [p for p in folder.iterdir() if p.is_dir() and p.name.split(".", 1)[-1] == suffix]
            if len(matches) != 1:
                raise FileNotFoundError(f"Caltech15 class folder missing: {class_dir} "
                                        f"({CALTECH15_CLASSES[label]}); see {CALTECH256_URL}")
            class_dir = matches[0]
        found = image_files(class_dir)
        train, test = caltech15_split(len(found), test_fraction, seed, label)
        chosen = train if split == "train" else test
        files += [found[i] for i in chosen]
        labels += [label] * len(chosen)
    cache_dir = Path(root) / ".bibad_cache" if cache_dir is None else Path(cache_dir)
    meta = {"source": str(folder), "target": CALTECH15_TARGET, "split_seed": int(seed),
            "test_fraction": float(test_fraction)}
    return _folder_dataset("caltech15", split, files, labels, CALTECH15_CLASSES, int(image_size), resize,
                           cache_dir, num_workers, meta)
