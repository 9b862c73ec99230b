"""What every real dataset's loader shares (CIFAR-10: :mod:`bibad_utils.data.cifar10`, ImageNette:
:mod:`bibad_utils.data.imagenette`, Caltech15: :mod:`bibad_utils.data.caltech15`): decoding and resizing,
the files' fingerprint, the pixel cache, a folder of images as a dataset and the option checks.

Each loader reads the standard on-disk layout, resizes every image to ``image_size`` x ``image_size``
(``resize="center_crop"``: shorter side to S with an anti-aliased bicubic filter, then the central square;
``"stretch"``: both sides to S) and caches the result as uint8 ``.npy`` files under ``cache_dir``
(default ``<root>/.bibad_cache``). A cache file is named by a fingerprint of the files read (their names,
sizes and bytes, never their modification times) and the resize settings, written atomically, checked
against the SHA-256 recorded when it was written, and memory-mapped read-only when reused.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.files import check_file_structure, load_json, save_array, save_json, stat_signature, verified_sha256
from bibad_utils.schema import Field

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RESIZE_MODES = ("center_crop", "stretch")
CACHE_VERSION = 1
# the options every real loader shares, as a profile's ``dataset.options`` may set them
OPTION_FIELDS = {
    "resize": Field("choice", choices=RESIZE_MODES, allowed=" | ".join(RESIZE_MODES)),
    "test_fraction": Field("number", low=0, high=1, low_open=True, high_open=True, allowed="a fraction in (0, 1)"),
    "num_workers": Field("int", low=0, allowed="an integer >= 0"),
    "cache_dir": Field("str", nullable=True, allowed="a folder path or null"),
}


class ImageReadError(OSError):
    """An image file of a dataset could not be decoded; the message names the file."""


def check_common(split, image_size, resize, splits=("train", "test"), n_per_class=None):
    if split not in splits:
        raise ConfigError("split", split, " | ".join(splits))
    Field("int", low=8, allowed="an integer >= 8 (pixels)").check("image_size", image_size)
    OPTION_FIELDS["resize"].check("resize", resize)
    Field("int", low=1, nullable=True, allowed="a positive integer (images per class) or null (all)").check(
        "n_per_class", n_per_class)


def run_each(one, n: int, num_workers: int) -> None:
    """``one(i)`` for i in 0 .. n - 1: on ``num_workers`` threads when more than one, else in order."""
    if num_workers > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            list(pool.map(one, range(n)))
    else:
        for i in range(n):
            one(i)


def decode_image(path, image_size: int, resize: str = "center_crop") -> tuple[np.ndarray, str]:
    """(uint8 ``[S, S, 3]``, mode): the RGB image at ``path`` (a file path or a binary file object) resized
    to S x S, and the file's own colour mode, as PIL reads it before the conversion to RGB (``"RGB"`` as
    stored; ``"L"`` greyscale, ``"CMYK"``, ``"P"`` palette ... converted); raises :class:`ImageReadError`
    naming the file if it cannot be decoded."""
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


def read_items(kind: str, path: Path, items, out, image_size: int, resize: str, num_workers: int) -> list[str]:
    """Decode a dataset's ``items`` into ``out[i]`` as :func:`decode_image` (on ``num_workers`` threads,
    :func:`run_each`): paths of an extracted ``"folder"``, or members of the ``"zip"`` at ``path`` (one archive
    handle per thread). Returns each file's own colour mode."""
    local, opened, modes = threading.local(), [], [""] * len(items)

    def read(member):
        if kind == "folder":
            return decode_image(member, image_size, resize)
        archive = getattr(local, "archive", None)
        if archive is None:
            archive = local.archive = zipfile.ZipFile(path)
            opened.append(archive)
        try:
            data = archive.read(member)
        except (zipfile.BadZipFile, OSError) as err:
            raise ImageReadError(f"cannot read member {member} of {path}: {err}") from err
        try:
            return decode_image(io.BytesIO(data), image_size, resize)
        except ImageReadError as err:
            raise ImageReadError(f"cannot read image {member} of {path}: {err.__cause__}") from err

    def one(i):
        out[i], modes[i] = read(items[i])

    try:
        run_each(one, len(items), num_workers)
    finally:
        for archive in opened:
            archive.close()
    return modes


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


def cache_paths(cache_dir: Path, stem: str):
    return cache_dir / f"{stem}.images.npy", cache_dir / f"{stem}.labels.npy", cache_dir / f"{stem}.json"


def cached_arrays(cache_dir: Path, stem: str, n: int, image_size: int, fill, info: dict):
    """(images memmap, labels) from the cache, building them first with ``fill(out)`` if absent. The cache's
    json records both files' SHA-256 when written; a reuse compares them (once per process while the files
    are unchanged), so a cache file changed in place is refused, not read."""
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
    recorded = load_json(info_path)["sha256"]
    for what, path in (("images", img_path), ("labels", lab_path)):
        if verified_sha256(path) != recorded[what]:
            raise ConfigError("cache", str(path), f"the bytes written into the cache (sha256 differs: changed "
                                                  f"since); delete the files {cache_dir / stem}.* and load "
                                                  f"again to rebuild them")
    images = np.load(img_path, mmap_mode="r")
    labels = np.load(lab_path, allow_pickle=False)
    if images.shape != (n, image_size, image_size, 3) or labels.shape != (n,):
        raise ConfigError("cache", str(img_path), f"{n} images of {image_size} px; delete the stale cache files")
    return images, labels


def folder_dataset(name, split, files, labels, class_names, image_size, resize, cache_dir, num_workers, meta):
    from bibad_utils.data.base import ImageSet

    root = Path(meta["source"])
    rel = [str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else str(f) for f in files]
    content = files_fingerprint(files, root)
    key = fingerprint_of([CACHE_VERSION, name, split, image_size, resize, *rel, *labels,
                          content["listing_sha256"], content["content_sha256"]])
    stem = f"{name}-{split}-{image_size}px-{resize}-{key}"
    info = {"name": name, "split": split, "image_size": image_size, "resize": resize, "files": rel,
            "class_names": list(class_names)}

    def fill(out):
        read_items("folder", root, files, out, image_size, resize, num_workers)
        return labels

    images, cached_labels = cached_arrays(Path(cache_dir), stem, len(files), image_size, fill, info)
    meta = {**meta, "split": split, "image_size": image_size, "resize": resize, "n_files": len(files),
            "cache": str(cache_paths(Path(cache_dir), stem)[0]), "files_fingerprint": content}
    return ImageSet(images, cached_labels, list(class_names), name, meta)


def rooted_loader(load):
    """A :class:`~bibad_utils.data.DatasetSpec`'s ``load`` for a loader of files under a root: ``load`` with
    ``root`` None read as :func:`~bibad_utils.data.default_data_root` and ``image_size`` None as its default."""
    def load_from_root(split="train", root=None, image_size=None, seed=0, download=False, **options):
        from bibad_utils.data.base import default_data_root

        kwargs = {} if image_size is None else {"image_size": image_size}
        return load(split, default_data_root() if root is None else Path(root), download=download, seed=seed,
                    **kwargs, **options)
    return load_from_root


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def zip_listing(path: Path, member, classes, sort_key, name: str, layout: str) -> dict:
    """{(split, class index): [member names, sorted by ``sort_key`` of the file name]} of a zip holding one tree
    ``<prefix>/<split>/<class>/<image>`` (``member``: a regex with groups prefix, split, cls, name; ``classes``:
    the class folder names in label order). Hidden files, other extensions and other folders are passed over;
    a ConfigError naming ``dataset.root`` if the zip cannot be read (``layout`` says what it should hold) or
    holds more than one ``name`` tree."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError("dataset.root", str(path), f"a readable zip of {layout} (it cannot be opened: {err})") from err
    found, prefixes = {}, set()
    for item in names:
        m = member.match(item)
        if (m is None or m["cls"] not in classes or m["name"].startswith(".")
                or not m["name"].lower().endswith(IMAGE_EXTENSIONS)):
            continue
        prefixes.add(m["prefix"])
        found.setdefault((m["split"], classes.index(m["cls"])), []).append(item)
    if len(prefixes) > 1:
        raise ConfigError("dataset.root", str(path), f"a zip with one {name} tree; it holds {sorted(prefixes)}")
    return {k: sorted(v, key=lambda n: sort_key(n.rsplit("/", 1)[1])) for k, v in found.items()}


def folder_listing(folder: Path, splits, classes, sort_key) -> dict:
    """{(split, class index): [image paths, sorted by ``sort_key`` of the file name]} of an extracted
    ``<split>/<class>/<image>`` folder (the splits and classes present)."""
    return {(split, label): sorted(image_files(folder / split / cls), key=lambda f: sort_key(f.name))
            for split in splits for label, cls in enumerate(classes) if (folder / split / cls).is_dir()}


def class_subset(n_available: int, n_per_class: int | None, stream: list[int], what: str) -> np.ndarray:
    """Sorted positions (within one class, in file order) of the images a class-balanced subset keeps: all of
    them when ``n_per_class`` is None, else the first ``n_per_class`` of a permutation drawn with
    ``np.random.default_rng(stream)``. ConfigError naming ``n_per_class`` when the class has fewer images
    (``what`` names them: "train images of class truck in this copy")."""
    if n_per_class is None:
        return np.arange(n_available)
    if n_per_class > n_available:
        raise ConfigError("n_per_class", n_per_class, f"at most {n_available} ({what}) or null (all)")
    return np.sort(np.random.default_rng([int(x) for x in stream]).permutation(n_available)[:n_per_class])


def check_real_options(options: dict, image_size, n_per_class=None, n_test_per_class=None,
                       prefix: str = "dataset.options.") -> None:
    """The value checks of the options every real loader shares (:data:`OPTION_FIELDS`): a ConfigError
    naming ``<prefix><key>``, the value and what is allowed."""
    for key, value in options.items():
        if key in OPTION_FIELDS:
            OPTION_FIELDS[key].check(f"{prefix}{key}", value)
