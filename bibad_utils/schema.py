"""Typed profile sections: each section of a profile is declared once, by the module that owns it, as
fields with a type, a range and one default; :func:`bibad_utils.config.validate_profile` checks every
section on load and keeps the result, so nothing downstream validates a section again.

A :class:`Field` is one key: its kind (``int``, ``number``, ``bool``, ``str``, ``choice``, or ``value``
with a test of its own), its range, whether null is allowed, and its default (:data:`REQUIRED` when a
profile must set it). A :class:`Section` is the fields of one profile section plus a check of what
spans several keys (or the whole profile). A section either writes its defaults into the resolved
profile (``fill=True``) or leaves the profile as written (``fill=False``): the sections whose dicts enter
artifact keys as written (``finetune``, ``sampling``, ``judges``, ...) take their defaults from the
signature of the function they are passed to (:func:`signature_defaults`), so that a default is written
in one place either way.

Every failure is a :class:`bibad_utils.base.ConfigError` that names the dotted parameter, the value (at most
:data:`SHOWN_CHARS` characters of it, :func:`short`) and what is allowed. :func:`parse_yaml` reads the YAML a
profile is written in, refusing hostile text (repeated keys, alias bombs) before anything is built. This
module imports nothing of the package but :mod:`bibad_utils.base`.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable


from bibad_utils.base import ConfigError


class _Required:
    def __repr__(self):
        return "<missing>"


REQUIRED = _Required()  # the default of a key every profile sets; also the value shown when it is absent
INT_MAX = 2 ** 31 - 1  # the largest integer a field without a `high` bound takes (a count, a size, steps)
SHOWN_CHARS = 80  # a ConfigError shows at most about this many characters of a value


class Shown(str):
    """A long value as a ConfigError shows it: the start of its repr and ``...`` (its own repr, unquoted)."""

    __repr__ = str.__str__


class _Full(Exception):
    """:func:`short` has seen enough."""


def short(value, limit: int = SHOWN_CHARS):
    """``value`` itself when its repr has at most ``limit`` characters, else a :class:`Shown` of its first
    ``limit``: the work is bounded by ``limit``, whatever the size of the value (or its cycles)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return Shown(f"<an integer of {int(value.bit_length() * math.log10(2)) + 1} digits>")
    parts, size = [], 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def walk(v) -> None:
        if not isinstance(v, (list, tuple, dict)):
            return emit(repr(v[:limit + 1] if isinstance(v, str) else v))
        emit("{" if isinstance(v, dict) else "[" if isinstance(v, list) else "(")
        for i, item in enumerate(v.items() if isinstance(v, dict) else v):
            emit(", " if i else "")
            if isinstance(v, dict):
                walk(item[0])
                emit(": ")
            walk(item[1] if isinstance(v, dict) else item)
        emit("}" if isinstance(v, dict) else "]" if isinstance(v, list) else ",)" if len(v) == 1 else ")")

    try:
        walk(value)
    except _Full:
        return Shown("".join(parts)[:limit] + "...")
    return value


def is_int(value, minimum: int | None = None) -> bool:
    """An integer (Python or NumPy, not a bool), at least ``minimum`` when given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return ok and (minimum is None or value >= minimum)


def is_number(value) -> bool:
    """A finite real number (Python or NumPy, not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _bound_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


@dataclass(frozen=True)
class Field:
    """One key of a section. ``kind``: ``int`` | ``number`` | ``bool`` | ``str`` (non-empty) | ``choice``
    (one of ``choices``) | ``value`` (anything that passes ``test``; without a test, what the section's
    own check accepts). ``low`` / ``high`` bound numbers
    (open bounds with ``low_open`` / ``high_open``); ``nullable`` also admits null; ``test`` is a further
    test of a non-null value; ``allowed`` replaces the generated text of what is allowed."""

    kind: str
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    choices: tuple = ()
    test: Callable[[Any], bool] | None = None
    allowed: str | None = None
    doc: str = ""

    def __post_init__(self):
        if self.kind not in ("int", "number", "bool", "str", "choice", "value"):
            raise ConfigError("Field.kind", self.kind, "int | number | bool | str | choice | value")
        if self.kind == "value" and self.allowed is None:
            raise ConfigError("Field.allowed", self.allowed, "an `allowed` text for a field of kind value")

    def accepts(self, value) -> bool:
        if value is None and self.nullable:
            return True
        kind = self.kind
        if kind == "int":
            ok = is_int(value)
        elif kind == "number":
            ok = is_number(value)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str) and bool(value.strip())
        elif kind == "choice":
            ok = not isinstance(value, (list, dict)) and value in self.choices
        else:
            ok = True
        if ok and kind == "int" and self.high is None:
            ok = abs(value) <= INT_MAX
        if ok and kind in ("int", "number"):
            if self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value < self.high if self.high_open else value <= self.high
        return ok and (self.test is None or self.test(value))

    def expected(self) -> str:
        """What the key allows, in words (the end of a ConfigError's message)."""
        if self.allowed is not None:
            return self.allowed
        bounds = _bound_text(self.low, self.high, self.low_open, self.high_open)
        text = {"int": "a positive integer" if (self.low == 1 and not self.low_open and self.high is None)
                else "an integer" + bounds,
                "number": "a number" + bounds, "bool": "true or false", "str": "a non-empty string",
                "choice": f"one of {list(self.choices)}"}[self.kind]
        return text + (" or null" if self.nullable else "")

    def check(self, param: str, value) -> None:
        if not self.accepts(value):
            capped = self.kind == "int" and self.high is None and is_int(value) and abs(value) > INT_MAX
            raise ConfigError(param, short(value), self.expected() + (f", at most {INT_MAX:,}" if capped else ""))


def signature_defaults(fn: Callable, fields: dict[str, Field]) -> dict[str, Field]:
    """``fields`` with the default of every optional field that has none taken from ``fn``'s signature
    (the keyword arguments the section is passed as): the function's default is the only one written."""
    params = inspect.signature(fn).parameters
    out = {}
    for key, f in fields.items():
        p = params.get(key)
        if f.default is REQUIRED and p is not None and p.default is not inspect.Parameter.empty:
            f = Field(**{**f.__dict__, "default": p.default})
        out[key] = f
    return out


Fields = dict[str, Field]


@dataclass
class Section:
    """The fields of one profile section. ``fields`` may be a function, read at each use (sections whose
    keys follow a registry). ``check(values, prefix, profile)`` runs after every field passed, on the
    values with defaults filled in, and may return the dict to keep instead (e.g. with a content
    fingerprint added); ``active(values)`` False waives the required keys (a training section with ``steps: 0``).
    ``fill``: whether the resolved profile gets the defaults written in."""

    name: str
    fields: Fields | Callable[[], Fields]
    check: Callable[[dict, str, dict], dict | None] | None = None
    fill: bool = True
    active: Callable[[dict], bool] | None = None
    doc: str = ""

    def field_map(self) -> Fields:
        return self.fields() if callable(self.fields) else self.fields

    def defaults(self) -> dict:
        """Every key with a default, and its default (a fresh copy)."""
        return {k: copy.deepcopy(f.default) for k, f in self.field_map().items() if f.default is not REQUIRED}

    def value(self, values: dict, key: str):
        """``values[key]``, or the key's one default when ``values`` leaves it out."""
        fields = self.field_map()
        if key not in fields:
            raise ConfigError(f"{self.name}.{key}", REQUIRED, f"a key among {list(fields)}")
        return values[key] if key in values else copy.deepcopy(fields[key].default)

    def validate(self, values, prefix: str | None = None, profile: dict | None = None) -> dict:
        """Check ``values`` (a mapping; null reads as empty) and return the section to keep: a copy, with
        the defaults written in when ``fill``. Raises ConfigError on the first bad key."""
        prefix = self.name if prefix is None else prefix
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(prefix, short(values), "a mapping of parameters")
        fields = self.field_map()
        unknown_keys(values, fields, prefix)
        active = self.active is None or self.active(values)
        for key, f in fields.items():
            if key in values:
                f.check(f"{prefix}.{key}", values[key])
            elif f.default is REQUIRED and active:
                raise ConfigError(f"{prefix}.{key}", REQUIRED, f.expected())
        full = {**self.defaults(), **copy.deepcopy(values)}
        if self.check is not None:
            kept = self.check(full, prefix, profile or {})
            if kept is not None:
                return kept
        return full if self.fill else copy.deepcopy(values)

    def validate_partial(self, values, prefix: str | None = None) -> dict:
        """Check the keys ``values`` sets (a partial section, e.g. overrides of this one); nothing is
        required, nothing filled in, no cross-key check. Null reads as empty; returns a copy."""
        prefix = self.name if prefix is None else prefix
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise ConfigError(prefix, short(values), f"a mapping of {self.name} keys {list(self.field_map())}")
        fields = self.field_map()
        unknown_keys(values, fields, prefix)
        for key, value in values.items():
            fields[key].check(f"{prefix}.{key}", value)
        return copy.deepcopy(values)


def typo_hint(key, known, cutoff: float = 0.6, prefix: str = "") -> str:
    """`` (did you mean <prefix><k>?)`` naming the known key ``k`` that ``key`` most looks like a typo of
    (difflib's ratio at least ``cutoff``), or "" when none does: the one wording of every such hint."""
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=cutoff)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def unknown_keys(values: dict, known, prefix: str) -> None:
    """A key not in ``known`` is an error: one that looks like a known key is named as its likely typo."""
    for key in values:
        if key in known:
            continue
        hint = typo_hint(key, known, 0.8, f"{prefix}." if prefix else "")
        where = f"{prefix}.{key}" if prefix else str(key)
        raise ConfigError(where, short(values[key]), f"a known key{hint}" if hint else f"a key among {list(known)}")


def name_list(param: str, value, allowed, allow_empty: bool = False) -> None:
    """``value`` must be a list of distinct names from ``allowed`` (non-empty unless ``allow_empty``)."""
    expected = f"a list of distinct names from {list(allowed)}" + ("" if allow_empty else ", not empty")
    if not isinstance(value, list) or (not value and not allow_empty):
        raise ConfigError(param, short(value), expected)
    for i, item in enumerate(value):
        if item not in allowed:
            raise ConfigError(f"{param}[{i}]", short(item), f"one of {list(allowed)}")
    if len(set(value)) != len(value):
        raise ConfigError(param, short(value), expected)


def number_list(param: str, value, low=None, high=None, low_open=False, high_open=False, *,
                allow_empty: bool = False, distinct: bool = True, what: str = "numbers",
                nullable: bool = False) -> list[float]:
    """``value`` must be a list of numbers in the range (distinct, non-empty unless told); returns floats
    (``nullable``: null is allowed too, and returned as None)."""
    if value is None and nullable:
        return None
    bounds = _bound_text(low, high, low_open, high_open)
    expected = (("null or " if nullable else "") + ("a" if allow_empty else "a non-empty")
                + (" list of distinct " if distinct else " list of ") + what + bounds)
    probe = Field("number", low=low, high=high, low_open=low_open, high_open=high_open)
    if (not isinstance(value, (list, tuple)) or (not value and not allow_empty)
            or not all(probe.accepts(v) for v in value) or (distinct and len(set(value)) != len(value))):
        raise ConfigError(param, short(value), expected)
    return [float(v) for v in value]
