"""One registry of backdoor-data detectors, all called the same way.

A detector is called as ``run_detector(name, f, images, context, **options)`` and returns a dict
with ``scores`` (float64 ``[N]``, higher = more likely poisoned) and, for some detectors, extra
arrays (CD: ``masks``). ``context`` (:class:`DetectorContext`) carries what some detectors need
besides the classifier and the images: clean images to superimpose (STRIP), labelled data to
fine-tune on (FCT), clean held-out images to fix CD's logit scale on, the seed and the device. ``options`` are the detector's own keyword arguments
(the profile's ``defenses.<name>`` section); :data:`DETECTORS` lists each detector's defaults. Each module of the package that declares a ``DETECTOR`` (or
``DETECTORS``) is found here, in :data:`BUILT_IN` order, then by module name: a new detector is one file.
"""

from __future__ import annotations

from bibad_utils.base import ConfigError, registry_in_package
from bibad_utils.defenses.detector import Detector, DetectorContext, option_checker  # noqa: F401

BUILT_IN = ("cd", "strip", "fct")
_NOT_DETECTORS = {"common", "detector", "registry", "profile", "diffusion_classifier"}


DETECTORS: dict[str, Detector] = registry_in_package(__file__, ("DETECTOR", "DETECTORS"), Detector, BUILT_IN,
                                                     _NOT_DETECTORS, unique=("name", "key"))


def register(detector: Detector) -> Detector:
    """Add ``detector`` to :data:`DETECTORS` (the profile's ``defenses.<key>`` section and every table of
    chapter 05 follow the registry); a name or profile key already taken is an error."""
    if detector.name in DETECTORS or any(d.key == detector.key for d in DETECTORS.values()):
        raise ConfigError("detector", detector.name, "a name and profile key no registered detector uses")
    DETECTORS[detector.name] = detector
    return detector


def run_detector(name: str, f, images, context: DetectorContext | None = None, **options) -> dict:
    """Run the registered detector ``name`` on ``images`` with classifier ``f``.

    ``options`` override the detector's defaults (unknown keys are an error naming the detector).
    Returns a dict with ``scores`` float64 ``[N]`` (higher = more likely poisoned) and the
    detector's ``extras``.
    """
    if name not in DETECTORS:
        raise ConfigError("detector", name, f"one of {list(DETECTORS)}")
    det = DETECTORS[name]
    for key in options:
        if key not in det.defaults:
            raise ConfigError(f"{name}.{key}", options[key], f"a key among {sorted(det.defaults)}")
    return det.run(f, images, context or DetectorContext(), **{**det.defaults, **options})
