"""What a detector of the registry is: :class:`Detector` (name, run, defaults, checks), the
:class:`DetectorContext` it is called with, and :func:`option_checker`. Each detector module of the package
declares its ``DETECTOR`` (or ``DETECTORS``) with these; :mod:`bibad_utils.defenses.registry` finds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from bibad_utils.base import ConfigError
from bibad_utils.schema import is_int, is_number


@dataclass
class DetectorContext:
    """What a detector may need besides ``f`` and the images: ``clean_pool`` (images known to be
    clean, STRIP), ``train_images``/``train_labels`` (FCT's fine-tuning data), ``heldout`` (clean images
    ``f`` did not train on, apart from every scored set) or ``heldout_max_logit`` (``f``'s mean largest
    logit on them, measured once before scoring): CD's ``logit_calibration: clean_heldout`` takes its one
    logit scale per classifier from them (:mod:`bibad_utils.defenses.cd`), ``seed``,
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
