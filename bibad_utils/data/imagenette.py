"""ImageNette (fast.ai's 10-class subset of ImageNet; the paper's own dataset) from a zip of JPEGs or an
extracted folder, with no network unless asked.

Sources, found under ``root`` by :func:`find_imagenette` (``root`` may also name one of them directly):

- ``zip``: an archive holding ``<prefix>/{train,val}/<wnid>/*.JPEG`` (the prefix may be any folder name,
  or none), members read straight from the archive with :mod:`zipfile`; the project's offline copy is
  ``imagenette2-224.zip`` (variant ``"224px"``: every image 224 x 224, 9,469 train + 3,925 val);
- ``folder``: the same layout extracted, ``<root>/<stem>/{train,val}/<wnid>/*.JPEG`` with ``<stem>`` one
  of :data:`IMAGENETTE_STEMS` (``imagenette2-224``, ``imagenette2``, ``imagenette2-320``,
  ``imagenette2-160``), or ``<root>/{train,val}/...`` itself. ``download=True`` fetches an official
  archive (:data:`IMAGENETTE_URLS`: full size, 320 px, 160 px) with torchvision into ``root``; the 224 px
  copy has no official URL.

Order: class by class in sorted WordNet-id order (:data:`IMAGENETTE_WNIDS`, label = index; target 6 =
garbage truck), files sorted by name within a class, so that image ``i`` is the same picture (the same
pixels) whichever source it is read from. Split "test" is the official ``val`` split.

Subset: ``n_per_class`` keeps that many images of every class, chosen per class by
``np.random.default_rng([seed, IMAGENETTE_STREAM, split, class]).permutation`` (split 0 = train, 1 =
test): its first ``n_per_class`` positions, sorted (the rule of the CIFAR-10 loader, with a stream of
its own). The same (seed, split, n) gives the same images every run, and a smaller subset is contained
in a larger one; None (the default) keeps every image and the cache key of the whole split.

Every image goes through :func:`bibad_utils.data.real.decode_image` (the resize of the other real
datasets); a greyscale, CMYK or other non-RGB file is converted to RGB and counted: ``meta
["converted_to_rgb"]`` (images of the split read) and ``meta["converted_modes"]`` (their modes).
Decoded images are cached as uint8 ``.npy`` files (:func:`bibad_utils.data.real.cached_arrays`), keyed
by the fingerprint of the files read and the chosen images; the default cache folder is ``<root>/.bibad_cache`` for an
extracted folder (as before) and ``.bibad_cache`` under the data root for a zip, never beside an
archive that may be a shared read-only copy.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from bibad_utils.base import ConfigError
from bibad_utils.data import real
from bibad_utils.data.registry import DatasetSpec
from bibad_utils.files import load_json

IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042",
                    "n03425413", "n03445777", "n03888257")
IMAGENETTE_CLASSES = ("tench", "English springer", "cassette player", "chain saw", "church", "French horn",
                      "garbage truck", "gas pump", "golf ball", "parachute")
IMAGENETTE_TARGET = 6
IMAGENETTE_URLS = {
    "full": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
    "320px": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
    "160px": "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
}
# variant -> the stem of its zip (``<stem>.zip``) and extracted folder, in the order they are searched;
# "224px" is an offline copy (no official URL)
IMAGENETTE_STEMS = {"224px": "imagenette2-224", "full": "imagenette2", "320px": "imagenette2-320",
                    "160px": "imagenette2-160"}
IMAGENETTE_VARIANTS = tuple(IMAGENETTE_STEMS)
# the split asked for -> the folder of the official split
IMAGENETTE_SPLITS = {"train": "train", "test": "val", "val": "val"}
# images of the smallest class of each official split (chain saw in train, cassette player in val): the
# largest class-balanced subset of a whole copy
IMAGENETTE_MIN_PER_CLASS = {"train": 858, "test": 357}
IMAGENETTE_STREAM = 0x1E7  # separates the subset's random stream from other seeded choices (CIFAR-10: 0xC10)

_MEMBER = re.compile(r"^(?P<prefix>(?:[^/]+/)*?)(?P<split>train|val)/(?P<cls>[^/]+)/(?P<name>[^/]+)$")


def _check_variant(variant):
    if variant is not None and variant not in IMAGENETTE_STEMS:
        raise ConfigError("variant", variant, " | ".join(IMAGENETTE_VARIANTS) + " | null (any found)")


def _is_tree(folder: Path) -> bool:
    return any((folder / sub / w).is_dir() for sub in ("train", "val") for w in IMAGENETTE_WNIDS)


def find_imagenette(root, variant: str | None = None) -> tuple[str, Path] | None:
    """(format, path) of the ImageNette source at or under ``root``: ``("zip", file)`` or ``("folder",
    folder holding train/ and val/)``; None when there is none. Under one folder, for each stem of
    ``variant`` (None: every stem of :data:`IMAGENETTE_STEMS`, in its order) ``<stem>.zip`` comes first,
    then the folder ``<stem>/``; ``root`` itself last. Name the zip or folder itself as ``root`` to choose."""
    _check_variant(variant)
    root = Path(root)
    if root.is_file():
        return "zip", root  # a file that is not a readable zip is named when it is listed
    if not root.is_dir():
        return None
    stems = list(IMAGENETTE_STEMS.values()) if variant is None else [IMAGENETTE_STEMS[variant]]
    for stem in stems:
        if (root / f"{stem}.zip").is_file():
            return "zip", root / f"{stem}.zip"
        if _is_tree(root / stem):
            return "folder", root / stem
    return ("folder", root) if _is_tree(root) else None


def _listing(kind: str, path: Path) -> dict:
    """{(split folder, class index): [members or paths, sorted by file name]} of a zip or an extracted folder."""
    if kind == "zip":
        return real.zip_listing(path, _MEMBER, IMAGENETTE_WNIDS, str, "ImageNette",
                                "ImageNette's {train,val}/<wnid>/*.JPEG")
    return real.folder_listing(path, ("train", "val"), IMAGENETTE_WNIDS, str)


def source_files(root, variant: str | None = None, **_ignored) -> tuple[Path, list[Path]] | None:
    """(base folder, every file the ImageNette loader may read, both splits) of the source under ``root``:
    the zip alone (one file), or every image of an extracted folder; None when there is none."""
    found = find_imagenette(root, variant)
    if found is None:
        return None
    kind, path = found
    if kind == "zip":
        return path.parent, [path]
    return path, [f for files in _listing("folder", path).values() for f in files]


def _not_found(root: Path, variant: str | None) -> FileNotFoundError:
    stems = list(IMAGENETTE_STEMS.values()) if variant is None else [IMAGENETTE_STEMS[variant]]
    looked = [str(root / f"{s}.zip") for s in stems] + [f"{root / s}/{{train,val}}/<wnid>/*.JPEG" for s in stems]
    urls = [IMAGENETTE_URLS[v] for v in IMAGENETTE_URLS if variant in (None, v)]
    get = (f"Pass download=True (torchvision.datasets.Imagenette) or download {' or '.join(urls)} and extract it "
           f"into {root.resolve()}" if urls else "The 224px variant is an offline copy with no official URL: "
           "name its zip as root")
    return FileNotFoundError(
        f"ImageNette not found under {root.resolve()} (variant {variant or 'any'}): looked for "
        f"{', '.join(looked)} and {root}/{{train,val}}/<wnid>/*.JPEG; root may also name the zip itself. {get}.")


def _download(root: Path, variant: str | None):
    if variant == "224px" or root.suffix.lower() == ".zip":
        raise ConfigError("download", True, "false for the 224px variant or a zip root (an offline copy with no "
                                            f"official URL); the official variants are {' | '.join(IMAGENETTE_URLS)}")
    from torchvision.datasets import Imagenette

    Imagenette(str(root), split="train", size=variant or "full", download=True)


def subset_positions(n_available: int, n_per_class: int | None, seed: int, split: str, class_index: int):
    """Sorted positions (within one class, in file order) of the images kept (:func:`~bibad_utils.data.real.
    class_subset`, drawn with ``np.random.default_rng([seed, IMAGENETTE_STREAM, split index, class_index])``,
    train 0, test 1)."""
    return real.class_subset(n_available, n_per_class, [seed, IMAGENETTE_STREAM, ("train", "test").index(split),
                                                        class_index],
                             f"{split} images of class {IMAGENETTE_CLASSES[class_index]} in this copy")


def load_imagenette(split: str = "train", root="data", image_size: int = 512, download: bool = False,
                    variant: str | None = None, resize: str = "center_crop", cache_dir=None, num_workers: int = 0,
                    seed: int = 0, n_per_class: int | None = None):
    """ImageNette as an :class:`~bibad_utils.data.ImageSet`: 10 classes in sorted WordNet-id order (target 6
    = "garbage truck"), uint8 ``[N, S, S, 3]`` images memory-mapped from the cache, int64 labels.

    split: "train" (official train split, 9,469 images) or "test" / "val" (official validation split,
    3,925 images). root: a folder holding one of the sources of :func:`find_imagenette`, or the zip or
    extracted folder itself. image_size: side S in pixels (resized by ``resize``, see
    :mod:`bibad_utils.data.real`). variant: "224px" | "full" | "320px" | "160px" to look only for that
    copy, or None for the first found. download: fetch the official archive of ``variant`` (None:
    full size) when no source is there. num_workers: threads decoding the images. n_per_class: a
    class-balanced subset of that many images per class (:func:`subset_positions`, drawn with ``seed``),
    or None for all. ``meta`` records the source, its format, the variant, the subset, the cache file,
    the files' fingerprint and the RGB conversions (of the images read).
    """
    from bibad_utils.data.base import ImageSet, default_data_root

    _check_variant(variant)
    real.check_common(split, image_size, resize, tuple(IMAGENETTE_SPLITS), n_per_class)
    root = Path(root)
    found = find_imagenette(root, variant)
    if found is None and download:
        _download(root, variant)
        found = find_imagenette(root, variant)
    if found is None:
        raise _not_found(root, variant)
    kind, path = found
    sub, split, image_size = IMAGENETTE_SPLITS[split], ("train" if split == "train" else "test"), int(image_size)
    listing = _listing(kind, path)
    items, labels = [], []
    for label, wnid in enumerate(IMAGENETTE_WNIDS):
        found_items = listing.get((sub, label))
        if not found_items:
            raise FileNotFoundError(f"ImageNette class {wnid} ({IMAGENETTE_CLASSES[label]}) of the {sub} split "
                                    f"missing in {path}; the official archives hold all ten")
        keep = subset_positions(len(found_items), n_per_class, seed, split, label)
        items += [found_items[i] for i in keep]
        labels += [label] * len(keep)
    base = path.parent if kind == "zip" else path
    content = real.files_fingerprint([path] if kind == "zip" else items, base)
    names = items if kind == "zip" else [Path(f).relative_to(base).as_posix() for f in items]
    # a subset's key adds its size and seed (the chosen names are in it already); the whole split's is as before
    subset = [] if n_per_class is None else [int(n_per_class), int(seed)]
    key = real.fingerprint_of([real.CACHE_VERSION, "imagenette", kind, sub, image_size, resize, *subset, *names,
                               *labels, content["listing_sha256"], content["content_sha256"]])
    size = "" if n_per_class is None else f"-{int(n_per_class)}pc"
    stem = f"imagenette-{split}-{image_size}px-{resize}{size}-{key}"
    if cache_dir is None:
        cache_dir = default_data_root() / ".bibad_cache" if kind == "zip" else root / ".bibad_cache"
    cache_dir = Path(cache_dir)
    info = {"name": "imagenette", "split": split, "source_split": sub, "image_size": image_size, "resize": resize,
            "source_format": kind, "items": names, "class_names": list(IMAGENETTE_CLASSES),
            "n_per_class": n_per_class, "seed": int(seed) if n_per_class is not None else None}

    def fill(out):
        modes = real.read_items(kind, path, items, out, image_size, resize, num_workers)
        converted = [i for i, m in enumerate(modes) if m != "RGB"]
        # written into the cache's json with the images, so a reused cache reports them too
        info["converted_to_rgb"] = len(converted)
        info["converted_modes"] = dict(sorted(Counter(modes[i] for i in converted).items()))
        info["converted_items"] = [names[i] for i in converted]
        return labels

    images, cached_labels = real.cached_arrays(cache_dir, stem, len(items), image_size, fill, info)
    stored = load_json(real.cache_paths(cache_dir, stem)[2])
    read_variant = next((v for v, s in IMAGENETTE_STEMS.items() if s == path.name.removesuffix(".zip")), variant)
    meta = {"source": str(path), "source_format": kind, "target": IMAGENETTE_TARGET,
            "variant": read_variant, "split": split, "source_split": sub, "image_size": image_size,
            "resize": resize, "n_files": len(items), "n_per_class": n_per_class,
            "subset_seed": int(seed) if n_per_class is not None else None, "cache": str(real.cache_paths(cache_dir, stem)[0]),
            "files_fingerprint": content, "converted_to_rgb": int(stored["converted_to_rgb"]),
            "converted_modes": dict(stored["converted_modes"])}
    return ImageSet(images, cached_labels, list(IMAGENETTE_CLASSES), "imagenette", meta)


def check_options(options: dict, image_size, n_per_class=None, n_test_per_class=None,
                  prefix: str = "dataset.options.") -> None:
    """The shared real-dataset checks and ``variant`` (a copy of ImageNette, or null: the first found)."""
    real.check_real_options(options, image_size, n_per_class, n_test_per_class, prefix)
    if "variant" in options and not (options["variant"] is None or options["variant"] in IMAGENETTE_VARIANTS):
        raise ConfigError(f"{prefix}variant", options["variant"],
                          " | ".join(IMAGENETTE_VARIANTS) + " | null (the first copy found)")


DATASET = DatasetSpec("imagenette", len(IMAGENETTE_CLASSES), real.rooted_loader(load_imagenette), load_imagenette,
                      per_class=True, source_files=source_files, check_options=check_options,
                      summary="ImageNette (the paper's main dataset and target)")
