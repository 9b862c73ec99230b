"""The profile's ``dataset`` section: its keys and their validation (the builder's own options are checked
against its signature by :func:`bibad_utils.data.validate_dataset_options`)."""

from __future__ import annotations

import math

from bibad_utils.base import ConfigError, repo_path
from bibad_utils.data import DATASET_CLASSES, PER_CLASS_DATASETS, dataset_fingerprint, validate_dataset_options
from bibad_utils.data.cifar10 import CIFAR10_PER_CLASS
from bibad_utils.data.imagenette import IMAGENETTE_MIN_PER_CLASS
from bibad_utils.schema import Field, Section

_SIZE = "a positive integer (null: a real dataset's own size)"
# the most images per class a class-balanced subset of a whole copy can keep, by dataset and split
_MOST_PER_CLASS = {"cifar10": CIFAR10_PER_CLASS, "imagenette": IMAGENETTE_MIN_PER_CLASS}


def _check(ds: dict, prefix: str, profile: dict) -> dict:
    """The section to keep: as written, with ``options`` ({} when absent), ``root`` made absolute for a
    real dataset, and the fingerprint of a real dataset's files (every artifact key computed from it then
    follows their content, not their path)."""
    name = ds["name"]
    procedural = name == "procedural"
    for key in ("n_per_class", "n_test_per_class"):  # the procedural dataset's size; a real one has its own
        Field("int", low=1, nullable=not procedural).check(f"{prefix}.{key}", ds[key])
        if name in _MOST_PER_CLASS and ds[key] is not None:
            most = _MOST_PER_CLASS[name]["train" if key == "n_per_class" else "test"]
            Field("int", low=1, high=most, nullable=True,
                  allowed=f"an integer in [1, {most}] (a class-balanced subset) or null (all)").check(
                f"{prefix}.{key}", ds[key])
    out = {k: v for k, v in profile.get("dataset", {}).items() if k != "fingerprint"}
    out["options"] = dict(ds["options"] or {})
    root = ds["root"]
    if root is not None and not procedural:
        path = repo_path(root)
        archive = name in ("cifar10", "imagenette") and path.is_file() and path.suffix.lower() == ".zip"
        if not (path.is_dir() or archive):
            also = " or its image zip" if name in ("cifar10", "imagenette") else ""
            raise ConfigError(f"{prefix}.root", root, f"an existing folder for {name}{also} (not found: {path})")
        out["root"] = str(path)
    validate_dataset_options(name, out["options"], image_size=ds["image_size"], n_per_class=ds["n_per_class"],
                             n_test_per_class=ds["n_test_per_class"])
    if not procedural:
        fingerprint = dataset_fingerprint(name, out.get("root"), **out["options"])
        if fingerprint is not None:
            out["fingerprint"] = fingerprint
    return out


# Left as written (plus the options, the absolute root and the fingerprint): part of every artifact key.
DATASET = Section("dataset", {
    "name": Field("choice", choices=tuple(DATASET_CLASSES)),
    "root": Field("str", default=None, nullable=True,
                  allowed="a folder path (cifar10, imagenette: or its zip) or null",
                  doc="local folder of a real dataset (null: its default location under data/); for "
                      "cifar10 and imagenette also its image zip, e.g. ../shared/data/cifar10-jpg.zip or "
                      "../shared/data/imagenette2-224.zip (relative to the repository)"),
    "image_size": Field("int", low=8),
    "n_per_class": Field("int", default=None, low=1, nullable=True, allowed=_SIZE,
                         doc="training images per class (procedural; cifar10, imagenette: a seeded "
                             "class-balanced subset, null = all)"),
    "n_test_per_class": Field("int", default=None, low=1, nullable=True, allowed=_SIZE,
                              doc="test images per class (procedural; cifar10, imagenette: a seeded "
                                  "class-balanced subset, null = all)"),
    "options": Field("value", default={}, nullable=True, test=lambda v: isinstance(v, dict),
                     allowed="a mapping of dataset options", doc="keyword arguments of the dataset's builder"),
    "fingerprint": Field("value", default=None, nullable=True, test=lambda v: isinstance(v, dict),
                         allowed="a fingerprint the loader computes (not set by hand)"),
}, check=_check, fill=False)


def check_ratios_fit(cfg: dict) -> None:
    """Each p must leave int(N p) <= the number of non-target images (known before loading for the
    procedural dataset and a CIFAR-10 or ImageNette subset: N = 10 n_per_class, one tenth per class)."""
    ds = cfg["dataset"]
    if ds["name"] not in PER_CLASS_DATASETS or ds["n_per_class"] is None:
        return
    n_classes = DATASET_CLASSES[ds["name"]]
    n_images = n_classes * ds["n_per_class"]
    n_other = (n_classes - 1) * ds["n_per_class"]
    for i, p in enumerate(cfg["ratios"]):
        n = int(math.floor(n_images * p + 1e-9))
        if n > n_other:
            raise ConfigError(f"ratios[{i}]", p,
                              f"a ratio of at most {n_other / n_images:g}: int(N p) = {n} poisoned images "
                              f"exceed the {n_other} non-target images of the {ds['name']} dataset "
                              f"(N = {n_images})")
