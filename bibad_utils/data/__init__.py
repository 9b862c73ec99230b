"""Datasets, prompts and image conversions.

Images at rest are ``numpy.uint8`` arrays ``[N, H, W, 3]`` (NHWC, 0..255); images handed to models are
``torch.float32`` tensors ``[N, 3, H, W]`` in [-1, 1]. :func:`to_float` and :func:`to_uint8` convert
between the two (:mod:`bibad_utils.data.base`). Every dataset is an :class:`ImageSet`; each dataset is one
module of this package that defines a ``DATASET`` (:mod:`bibad_utils.data.registry`), and
:func:`load_dataset` builds one by name.
"""

from __future__ import annotations

from pathlib import Path

from bibad_utils.base import ConfigError
from bibad_utils.schema import typo_hint
from bibad_utils.data.base import PROMPT_TEMPLATE, ImageSet, as_index, default_data_root, to_float, to_uint8
from bibad_utils.data.procedural import make_procedural
from bibad_utils.data.registry import DatasetSpec, dataset_spec, datasets, register_dataset

# Read at import for the readers that want a table (the profile's allowed names): every registered dataset
# with its number of classes, and those whose size dataset.n_per_class / n_test_per_class sets.
DATASET_CLASSES = {name: spec.n_classes for name, spec in datasets().items()}
PER_CLASS_DATASETS = tuple(name for name, spec in datasets().items() if spec.per_class)


def load_dataset(name: str, split: str = "train", root=None, image_size: int | None = None, seed: int = 0,
                 download: bool = False, **options) -> ImageSet:
    """Build the registered dataset ``name`` (procedural | imagenette | caltech15 | cifar10 | mnist5k | any
    dataset module added to the package).

    split: ``"train"`` or ``"test"`` (``"val"`` is accepted for ImageNette, whose test split is its
    official validation split). image_size: side in pixels of the returned square images (None: the
    loader's default: procedural, cifar10, mnist5k 32, imagenette 512, caltech15 256). seed: the
    procedural generator's seed, Caltech15's train/test split seed, and the seed of CIFAR-10's and
    ImageNette's class-balanced subsets. root: folder of the real datasets (default
    :func:`default_data_root`; for CIFAR-10 and ImageNette also the zip itself). options go to the
    dataset's builder (e.g. :func:`make_procedural`'s ``n_per_class`` and difficulty knobs; ``cache_dir``,
    ``test_fraction``, ``n_per_class`` of the real loaders).
    """
    return dataset_spec(name).load(split=split, root=root, image_size=image_size, seed=seed, download=download,
                                   **options)


def validate_dataset_options(name: str, options: dict, image_size: int = 32, n_per_class=None,
                             n_test_per_class=None, prefix: str = "dataset.options.") -> None:
    """Check a profile's ``dataset.options`` against the registered dataset ``name``: only the keys of its
    builder's signature (less what the study passes itself), each value checked by the dataset's
    ``check_options``, without building anything. Raises ConfigError naming ``dataset.options.<key>``, the
    value and what is allowed."""
    spec = dataset_spec(name)
    schema = spec.options()
    for key, value in options.items():
        if key not in schema:
            raise ConfigError(f"{prefix}{key}", value, f"an option of the {name} dataset{typo_hint(key, schema)}: "
                                                       f"one of {sorted(schema)}")
    if spec.check_options is not None:
        spec.check_options(options, image_size, n_per_class, n_test_per_class, prefix=prefix)


def dataset_fingerprint(name: str, root=None, **options) -> dict | None:
    """Fingerprint of the files a dataset is read from (both splits; see
    :func:`bibad_utils.data.real.files_fingerprint`), or None for a dataset read from no files of its own
    (generated, or inside a pinned package) and when the files are not there (yet)."""
    from bibad_utils.data import real

    spec = dataset_spec(name)
    if spec.source_files is None:
        return None
    found = spec.source_files(default_data_root() if root is None else Path(root), **options)
    return None if found is None or not found[1] else real.files_fingerprint(found[1], found[0])


def dataset_from_config(cfg: dict, split: str = "train", seed: int = 0) -> ImageSet:
    """The dataset described by a profile's ``dataset`` section (keys name, root, image_size,
    n_per_class, n_test_per_class, options, and optionally download) for ``split``. The per-class
    sizes belong to the datasets registered with ``per_class`` (procedural; the class-balanced subsets of
    CIFAR-10 and ImageNette, null = all); another dataset needs them null. A subset larger than a
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
    if dataset_spec(name).per_class:
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
    "DATASET_CLASSES", "DatasetSpec", "ImageSet", "PER_CLASS_DATASETS", "PROMPT_TEMPLATE", "as_index",
    "dataset_fingerprint", "dataset_from_config", "dataset_spec", "datasets", "default_data_root", "load_dataset",
    "make_procedural", "register_dataset", "to_float", "to_uint8", "validate_dataset_options",
]
