"""The dataset registry: every module of :mod:`bibad_utils.data` that defines a ``DATASET`` (a
:class:`DatasetSpec`) is a dataset the study can load, found by name in :data:`BUILT_IN` order and then in
module-name order, so a new dataset is one file. What reads it: :func:`bibad_utils.data.load_dataset`, the
profile's allowed ``dataset.name`` values and their option checks, and the real datasets' fingerprints."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from bibad_utils.base import ConfigError, registry_in_package

# The built-in datasets first, in this order; any other module of the package with a ``DATASET`` after them.
BUILT_IN = ("procedural", "imagenette", "caltech15", "cifar10", "mnist")
_NOT_DATASETS = {"base", "registry", "profile", "real"}
# Arguments the study passes to every loader itself: a profile's ``dataset.options`` may not set them.
PASSED_BY_THE_STUDY = ("n_per_class", "image_size", "seed", "split", "root", "download")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset the study can load.

    name: the profile's ``dataset.name``; n_classes: its number of classes; load: ``load(split, root,
    image_size, seed, download, **options) -> ImageSet`` (``root`` and ``image_size`` may be None: the
    loader's defaults); builder: the function whose keyword parameters (less :data:`PASSED_BY_THE_STUDY`)
    are the profile's ``dataset.options`` with their defaults; per_class: ``dataset.n_per_class`` /
    ``n_test_per_class`` set its size (else they must be null); source_files: ``(root, **options) -> (base
    folder, files) | None`` for a dataset read from files (its fingerprint enters every artifact key; None:
    generated, or read from a pinned package); check_options: ``(options, image_size, n_per_class,
    n_test_per_class, prefix) -> None`` raising ConfigError for a bad option value (None: types only)."""

    name: str
    n_classes: int
    load: Callable
    builder: Callable
    per_class: bool = False
    source_files: Callable | None = None
    check_options: Callable | None = None
    summary: str = ""

    def options(self) -> dict:
        """option -> default of the profile's ``dataset.options`` (from the builder's signature)."""
        return {p.name: p.default for p in inspect.signature(self.builder).parameters.values()
                if p.name not in PASSED_BY_THE_STUDY and p.kind is not p.VAR_KEYWORD}


# Filled on first use (:func:`datasets`): the dataset modules import this one, so the package's modules can
# be read only once they have all been imported.
DATASETS: dict[str, DatasetSpec] = {}
_SCANNED: list[bool] = []


def datasets() -> dict[str, DatasetSpec]:
    """Every dataset: the package's (scanned once) and those registered at run time, by name."""
    if not _SCANNED:
        registered = dict(DATASETS)
        DATASETS.clear()
        DATASETS.update(registry_in_package(__file__, "DATASET", DatasetSpec, BUILT_IN, _NOT_DATASETS))
        DATASETS.update(registered)
        _SCANNED.append(True)
    return DATASETS


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; ConfigError naming ``dataset.name`` otherwise."""
    known = datasets()
    if name not in known:
        raise ConfigError("dataset.name", name, " | ".join(known))
    return known[name]


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry at run time (from outside the package); a taken name is an error."""
    known = datasets()
    if spec.name in known:
        raise ConfigError("dataset name", spec.name, f"a name not among {list(known)}")
    known[spec.name] = spec
    return spec
