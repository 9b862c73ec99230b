"""One registry of backdoor-data detectors, all called the same way.

A detector is called as ``run_detector(name, f, images, context, **options)`` and returns a dict
with ``scores`` (float64 ``[N]``, higher = more likely poisoned) and, for some detectors, extra
arrays (CD: ``masks``). ``context`` (:class:`DetectorContext`) carries what some detectors need
besides the classifier and the images: clean images to superimpose (STRIP), labelled data to
fine-tune on (FCT), clean held-out images to fix CD's logit scale on, the seed and the device. ``options`` are the detector's own keyword arguments
(the profile's ``defenses.<name>`` section); :data:`DETECTORS` lists each detector's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bibad_utils.base import ConfigError
from bibad_utils.defenses.cd import CALIBRATIONS, cd_logit_scale, cd_scores, check_calibration
from bibad_utils.defenses.fct import fct_scores, fct_variant_scores
from bibad_utils.defenses.strip import strip_scores
from bibad_utils.schema import is_int, is_number


@dataclass
class DetectorContext:
    """What a detector may need besides ``f`` and the images: ``clean_pool`` (images known to be
    clean, STRIP), ``train_images``/``train_labels`` (FCT's fine-tuning data), ``heldout`` (clean images
    ``f`` did not train on, apart from every scored set) or ``heldout_max_logit`` (``f``'s mean largest
    logit on them, measured once before scoring): CD's ``logit_calibration: clean_heldout`` takes its one
    logit scale per classifier from them (:func:`~bibad_utils.defenses.cd.cd_logit_scale`), ``seed``,
    ``device``."""

    clean_pool: Any = None
    train_images: Any = None
    train_labels: Any = None
    heldout: Any = None
    heldout_max_logit: float | None = None
    seed: int = 0
    device: Any = "cpu"


@dataclass(frozen=True)
class Detector:
    """A registered detector: ``name``, ``run(f, images, context, **options) -> dict``, its
    ``defaults`` (the options a profile may set), ``extras`` (arrays returned besides ``scores``),
    a one-line ``summary`` and ``check(options, prefix)``, which raises ConfigError for a bad option
    (called on the profile before any heavy work). ``key``: its section under the profile's
    ``defenses`` (default: the name in lower case, spaces as underscores)."""

    name: str
    run: Callable[..., dict]
    defaults: dict
    summary: str
    extras: tuple = field(default=())
    check: Callable[[dict, str], None] | None = None
    key: str = ""

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.name.lower().replace(" ", "_"))


def option_checker(ints: dict[str, int] = None, nonneg: tuple = (), choices: dict[str, tuple] = None,
                   extra: Callable[[dict, str], None] | None = None) -> Callable[[dict, str], None]:
    """A ``check(options, prefix)`` for a detector: integer options with their minimum (``ints``), numbers
    >= 0 (``nonneg``), options with a fixed set of values (``choices``), then ``extra``."""
    def check(opts: dict, prefix: str) -> None:
        for key, minimum in (ints or {}).items():
            if not is_int(opts[key], minimum):
                raise ConfigError(f"{prefix}.{key}", opts[key], f"an integer >= {minimum}")
        for key in nonneg:
            if not is_number(opts[key]) or opts[key] < 0:
                raise ConfigError(f"{prefix}.{key}", opts[key], "a number >= 0")
        for key, allowed in (choices or {}).items():
            if opts[key] not in allowed:
                raise ConfigError(f"{prefix}.{key}", opts[key], " | ".join(allowed))
        if extra is not None:
            extra(opts, prefix)
    return check


def _cd_extra(opts: dict, prefix: str) -> None:
    check_calibration(opts["logit_calibration"], opts["logit_reference"], f"{prefix}.")
    betas = opts["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{prefix}.betas", betas, "two numbers in [0, 1)")


def _cd(f, images, ctx, *, logit_calibration="none", logit_reference=None, **opts):
    # One scale per classifier, fixed on clean held-out images before scoring: never on the scored set.
    check_calibration(logit_calibration, logit_reference, "CD.")
    if logit_calibration == "clean_heldout" and ctx.heldout_max_logit is None and (
            ctx.heldout is None or ctx.heldout is images):
        raise ConfigError("context.heldout", None if ctx.heldout is None else "the scored images",
                          "clean images the classifier did not train on, apart from the scored set, or "
                          "context.heldout_max_logit (CD.logit_calibration: clean_heldout)")
    scale = cd_logit_scale(f, ctx.heldout, logit_calibration, logit_reference,
                           heldout_max_logit=ctx.heldout_max_logit, device=ctx.device)
    scores, masks = cd_scores(f, images, seed=ctx.seed, device=ctx.device, return_masks=True,
                              logit_scale=scale, **{k: tuple(v) if k == "betas" else v for k, v in opts.items()})
    return {"scores": scores, "masks": masks, "logit_scale": np.float64(scale)}


def _strip(f, images, ctx, **opts):
    if ctx.clean_pool is None:
        raise ConfigError("context.clean_pool", None, "clean images to superimpose (STRIP)")
    return {"scores": strip_scores(f, images, ctx.clean_pool, seed=ctx.seed, device=ctx.device, **opts)}


def _fct_extra(opts: dict, prefix: str) -> None:
    epochs = opts["finetune_epochs"]
    if epochs is not None and not is_int(epochs, 1):
        raise ConfigError(f"{prefix}.finetune_epochs", epochs, "null (finetune_steps random batches) or an integer >= 1")


def _fct_with(fn):
    def run(f, images, ctx, **opts):
        return {"scores": fn(f, images, train_images=ctx.train_images, train_labels=ctx.train_labels,
                             seed=ctx.seed, device=ctx.device, **opts)}
    return run


DETECTORS: dict[str, Detector] = {
    "CD": Detector(
        "CD", _cd,
        {"steps": 100, "lr": 0.1, "betas": [0.1, 0.1], "gamma": 0.01, "beta": 1.0, "batch_size": 128,
         "logit_calibration": "none", "logit_reference": None},
        "Cognitive Distillation: minus the L1 norm of the distilled mask; logit_calibration clean_heldout "
        "rescales a weak victim's logits so that its mean largest logit on clean held-out images is "
        "logit_reference (one scale per classifier, for every scored set); none keeps them",
        ("masks", "logit_scale"),
        option_checker({"steps": 1, "batch_size": 1}, ("lr", "gamma", "beta"),
                       {"logit_calibration": CALIBRATIONS}, extra=_cd_extra)),
    "STRIP": Detector(
        "STRIP", _strip, {"n_overlay": 100, "mode": "sum", "alpha": 0.5, "batch_size": 512},
        "STRIP: minus the mean entropy under superimposed clean images (mode sum: the reference's "
        "saturating sum; blend: (1 - alpha) x + alpha x_r)",
        check=option_checker({"n_overlay": 1, "batch_size": 1}, ("alpha",), {"mode": ("sum", "blend")})),
    "FCT": Detector(
        "FCT", _fct_with(fct_scores),
        {"finetune_epochs": 10, "finetune_optimizer": "sgd", "finetune_steps": 0, "finetune_lr": 0.01,
         "finetune_batch_size": 128, "max_rotation": 180.0, "max_translate": 0.2, "batch_size": 256},
        "FCT as the reference: squared raw-feature distance under rotation up to 180 degrees and shift "
        "0.2 with black fill, after the reference's class-centre cosine fine-tuning (10 epochs of SGD, lr 0.01)",
        check=option_checker({"batch_size": 1, "finetune_batch_size": 2, "finetune_steps": 0},
                             ("finetune_lr", "max_rotation", "max_translate"),
                             choices={"finetune_optimizer": ("adam", "sgd")}, extra=_fct_extra)),
    "FCT variant": Detector(
        "FCT variant", _fct_with(fct_variant_scores),
        {"finetune_steps": 20, "finetune_lr": 1.0e-4, "finetune_batch_size": 128, "temperature": 0.1,
         "max_rotation": 15.0, "max_translate": 0.1, "batch_size": 256},
        "the project's FCT variant: normalised-feature distance under rotation up to 15 degrees and "
        "shift 0.1 with grey fill, after a supervised contrastive fine-tuning",
        check=option_checker({"batch_size": 1, "finetune_batch_size": 2, "finetune_steps": 0},
                             ("finetune_lr", "temperature", "max_rotation", "max_translate"))),
}


def register(detector: Detector) -> Detector:
    """Add ``detector`` to :data:`DETECTORS` (the profile's ``defenses.<key>`` section and every table of
    chapter 05 follow the registry); a name or profile key already taken is an error."""
    if detector.name in DETECTORS or any(d.key == detector.key for d in DETECTORS.values()):
        raise ConfigError("detector", detector.name, "a name and profile key no registered detector uses")
    DETECTORS[detector.name] = detector
    return detector


def detector_names() -> list[str]:
    """Names of the registered detectors, in registry order."""
    return list(DETECTORS)


def run_detector(name: str, f, images, context: DetectorContext | None = None, **options) -> dict:
    """Run the registered detector ``name`` on ``images`` with classifier ``f``.

    ``options`` override the detector's defaults (unknown keys are an error naming the detector).
    Returns a dict with ``scores`` float64 ``[N]`` (higher = more likely poisoned) and the
    detector's ``extras``.
    """
    if name not in DETECTORS:
        raise ConfigError("detector", name, f"one of {detector_names()}")
    det = DETECTORS[name]
    for key in options:
        if key not in det.defaults:
            raise ConfigError(f"{name}.{key}", options[key], f"a key among {sorted(det.defaults)}")
    return det.run(f, images, context or DetectorContext(), **{**det.defaults, **options})
