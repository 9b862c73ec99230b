"""The trigger registry: every kind of the package (each module of :mod:`bibad_utils.triggers` that defines a
``KIND``, found by name, in :data:`KIND_MODULES` order), kinds registered at run time, and what reads them:
the profile's ``triggers`` section, its option checks and :func:`make_trigger`."""

from __future__ import annotations


from bibad_utils.base import ConfigError, registry_in_package
from bibad_utils.schema import Field, Section, is_int, typo_hint
from bibad_utils.triggers.base import Trigger, TriggerKind

# The built-in kinds first, in this order (the book's tables and figures follow it); any other module of the
# package that defines a ``KIND`` is a kind too, after them, in name order: a new kind is one file.
KIND_MODULES = ("badnets", "blend", "warp")
_NOT_KINDS = {"base", "registry"}


TRIGGERS: dict[str, TriggerKind] = registry_in_package(__file__, "KIND", TriggerKind, KIND_MODULES, _NOT_KINDS)


def register_trigger(kind: TriggerKind) -> TriggerKind:
    """Add ``kind`` to :data:`TRIGGERS`: profiles may then name it among their ``attacks`` and set its
    options under ``triggers``; a name already taken is an error."""
    if kind.name in TRIGGERS:
        raise ConfigError("trigger kind", kind.name, f"a name not among {list(TRIGGERS)}")
    TRIGGERS[kind.name] = kind
    return kind


def validate_trigger_options(kind: str, options, image_size: int, prefix: str = "triggers.") -> dict:
    """Check the options of trigger ``kind`` for ``image_size`` px images against the registry, without
    building the trigger (a pattern file is opened and checked, and its sha256 computed); returns the
    options with the derived ones filled in (``pattern_sha256`` when a pattern file is given). Raises
    ConfigError naming ``<prefix><kind>.<option>``, the value and what is allowed."""
    if kind not in TRIGGERS:
        raise ConfigError(f"{prefix}{kind}", options, f"options of a trigger kind in {list(TRIGGERS)}")
    spec = TRIGGERS[kind]
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ConfigError(f"{prefix}{kind}", options, f"a mapping of options among {list(spec.settable)}")
    out = dict(options)
    for name, value in options.items():
        opt = spec.option(name)
        if opt is None:
            raise ConfigError(f"{prefix}{kind}.{name}", value,
                              f"a known option of {kind}{typo_hint(name, spec.settable)}: one of {list(spec.settable)}")
        if not opt.check(value, image_size):
            raise ConfigError(f"{prefix}{kind}.{name}", value, opt.allowed(image_size))
    return spec.derive(out, image_size, f"{prefix}{kind}") if spec.derive is not None else out


def make_trigger(kind: str, image_size: int, seed: int = 0, **options) -> Trigger:
    """The trigger ``kind`` (a name in :data:`TRIGGERS`) for S x S images.

    Options: badnets1 ``size`` (patch side, default :func:`badnets1_side`); badnets2 ``alpha`` (0.2),
    ``pattern_path`` (None: the generated :func:`cartoon_pattern`); wanet ``grid`` (4), ``strength``
    (0.5). ``seed`` draws the WaNet field; the other kinds are fixed and record it only.
    """
    if kind not in TRIGGERS:
        raise ConfigError("trigger kind", kind, " | ".join(TRIGGERS))
    if not is_int(image_size) or image_size < 8:
        raise ConfigError("image_size", image_size, "an integer >= 8 (pixels)")
    spec = TRIGGERS[kind]
    unknown = sorted(set(options) - {o.name for o in spec.options})
    if unknown:
        raise ConfigError(f"triggers.{kind}", unknown, f"options among {', '.join(spec.settable)}")
    return spec.builder(int(image_size), int(seed), **options)


def _section_fields() -> dict[str, Field]:
    return {kind: Field("value", default={}, nullable=True, test=lambda v: isinstance(v, dict),
                        allowed=f"a mapping of options among {list(spec.settable)}")
            for kind, spec in TRIGGERS.items()}


def _check_section(values: dict, prefix: str, profile: dict) -> dict:
    given = profile.get("triggers") or {}
    size = profile["dataset"]["image_size"]
    return {kind: validate_trigger_options(kind, given[kind], size, f"{prefix}.") for kind in given}


# The profile's ``triggers`` section: per trigger kind of the registry, its options (checked by the kind's
# own option specs; the kinds the profile names are kept with their derived options filled in).
TRIGGERS_SECTION = Section("triggers", _section_fields, check=_check_section, fill=False)
