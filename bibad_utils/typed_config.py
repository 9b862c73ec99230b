"""The validated profile as a frozen, typed object: ``cfg.sampling.guidance``, ``cfg.finetune.steps``, ``cfg.target``.

:func:`typed_profile` turns what :func:`bibad_utils.config.validate_profile` returns into a :class:`Profile`,
a pydantic model whose fields are built from the declarations the validation reads (the top-level keys of
:data:`bibad_utils.config.TOP_LEVEL`, the fields of each :class:`~bibad_utils.schema.Section` of
:data:`~bibad_utils.config.SECTIONS`), so that a key is declared once: a section is a frozen model of its
own (:class:`ConfigSection`), whose field types follow :attr:`~bibad_utils.schema.Field.kind`. A section whose
keys follow a registry (``triggers``, ``model``, ``defenses``) also takes the keys its fields do not name.
Nothing is validated again (the validation is :mod:`bibad_utils.config`'s, with its messages): the values are
kept as validated, not converted.

Two views of one object:

- attributes: a key's value, or its declared default where the profile leaves the key out (a section kept as
  written takes its defaults from the function it is passed to, :func:`~bibad_utils.schema.signature_defaults`);
  assigning one raises (frozen); a value that is itself a list or a dict (``sampling.guidance``, a trigger's
  options) is the plain one of the validated profile (so that it hashes and compares as before): read it, never
  change it;
- a read-only mapping of exactly the validated dict: ``cfg["sampling"]``, ``get``, ``in``, ``keys``, ``items``,
  ``dict(cfg)``; :meth:`ConfigSection.as_dict` returns that dict (a deep copy, nested sections as dicts), which is
  what the artifact keys hash, so a key computed from the typed object equals the one computed from the dict
  (pydantic's ``model_dump()`` also writes the declared defaults of the keys the profile leaves out).

Code that changes a configuration merges over ``as_dict()`` and validates again (``Study.variant``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, PrivateAttr, create_model

from bibad_utils.base import ConfigError
from bibad_utils.config import SECTIONS, TOP_LEVEL, load_profile
from bibad_utils.schema import REQUIRED, Field, Fields

KIND_TYPES = {"int": int, "number": float, "bool": bool, "str": str, "value": Any}  # Field.kind -> annotation


class ConfigSection(BaseModel, Mapping):
    """A frozen mapping of one validated section (or of the whole profile, :class:`Profile`): its keys are
    the validated dict's, in its order; an attribute also reads a declared key the dict leaves out (its
    default)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())
    _keys: tuple = PrivateAttr(default=())

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def as_dict(self) -> dict:
        """The validated dict this object was made from (a deep copy; nested sections as dicts)."""
        return {key: value.as_dict() if isinstance(value, ConfigSection) else copy.deepcopy(value)
                for key, value in self.items()}


class OpenSection(ConfigSection):
    """A section whose keys follow a registry: it also keeps the keys its fields do not declare."""

    model_config = ConfigDict(extra="allow")


class Profile(ConfigSection):
    """The whole validated profile (:func:`typed_profile`): the top-level keys and one
    :class:`ConfigSection` per section."""

    def __reduce__(self):
        return typed_profile, (self.as_dict(),)  # its models are made per profile: rebuilt, not looked up


def annotation(f: Field):
    """The type of a field's value: its kind's (a ``choice`` as the Literal of its choices), or null."""
    kind = Literal[f.choices] if f.kind == "choice" else KIND_TYPES[f.kind]
    return Optional[kind] if f.nullable else kind


def model_of(name: str, fields: Fields, open_keys: bool, base: type[ConfigSection] = ConfigSection,
             sections: dict[str, type[ConfigSection]] | None = None) -> type[ConfigSection]:
    """A frozen model named ``name`` with one field per declared key (``sections``: further fields typed as
    those models, required); ``open_keys``: keys beyond the declared ones are kept too (:class:`OpenSection`)."""
    declared = {key: (annotation(f), ... if f.default is REQUIRED else f.default) for key, f in fields.items()}
    declared.update({key: (model, ...) for key, model in (sections or {}).items()})
    return create_model(name, __base__=OpenSection if open_keys else base, **declared)


def construct(model: type[ConfigSection], values: dict, where: str) -> ConfigSection:
    """``model`` holding ``values`` as they are (validated already: no conversion); a key the model cannot
    hold is an error rather than a key silently dropped from the artifact keys."""
    if model.model_config.get("extra") != "allow":
        unknown = [key for key in values if key not in model.model_fields]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}" if where else str(unknown[0]), values[unknown[0]],
                              f"a key of the typed {where or 'profile'}: one of {list(model.model_fields)}")
    obj = model.model_construct(**values)
    obj._keys = tuple(values)
    return obj


def typed_profile(validated: Mapping) -> Profile:
    """The frozen, typed :class:`Profile` of a validated profile (what
    :func:`~bibad_utils.config.validate_profile` returns); ``as_dict()`` gives that dict back."""
    validated = validated.as_dict() if isinstance(validated, ConfigSection) else copy.deepcopy(dict(validated))
    models = {name: model_of(name.title().replace("_", ""), section.field_map(), callable(section.fields))
              for name, section in SECTIONS.items()}
    values = {key: construct(models[key], value, key) if key in models else value for key, value in validated.items()}
    return construct(model_of("Profile", TOP_LEVEL, False, Profile, models), values, "")


def load_config(profile: str | Path = "demo", overrides: dict | None = None) -> Profile:
    """:func:`~bibad_utils.config.load_profile` as the frozen, typed :class:`Profile`."""
    return typed_profile(load_profile(profile, overrides))
