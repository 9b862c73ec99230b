"""A model from a profile's ``model`` section (:func:`build_model`; a saved folder: :func:`load_model`)."""

from __future__ import annotations

from bibad_utils.base import ConfigError
from bibad_utils.diffusion import pixel, stable_diffusion  # noqa: F401 (each registers its class)
from bibad_utils.diffusion.interface import BACKEND_CLASSES, DiffusionModel
from bibad_utils.diffusion.settings import resolve_config


def build_model(cfg: dict, class_names, image_size: int | None = None) -> DiffusionModel:
    """A profile's ``model`` section -> a freshly initialised (pixel) or pretrained (SD) model on the CPU.

    class_names: one name per class (``num_classes = len(class_names)``); image_size: the dataset's
    image side in pixels, used when the section leaves ``image_size`` out.
    """
    class_names = [str(c) for c in class_names]
    if not class_names:
        raise ConfigError("class_names", class_names, "a non-empty list of class names")
    resolved = resolve_config(cfg, image_size=image_size)
    return BACKEND_CLASSES[resolved["backend"]](resolved, class_names)
