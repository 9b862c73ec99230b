"""The YAML a profile is written in, read safely: ``1e-4``-style floats understood, and refused before any
value is built: text too long, too many aliases or an alias expansion too large (a "billion laughs"
document), nesting too deep, a key written twice (with both lines)."""

from __future__ import annotations

import re

import yaml

from bibad_utils.base import ConfigError
from bibad_utils.schema import SHOWN_CHARS, Shown, short

MAX_YAML_CHARS = 1_000_000  # a profile is a few KB
MAX_ALIASES = 100  # alias uses (*name) in one YAML document
MAX_EXPANDED = 1_000_000  # nodes plus scalar characters of a document with its aliases expanded
MAX_DEPTH = 50  # nesting levels


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants a dot in the mantissa) and refuses, before
    anything is built, a repeated mapping key (YAML keeps the last silently) and aliases that would expand into
    a huge value (a "billion laughs": a few KB of nested aliases, gigabytes once expanded)."""

    def __init__(self, text: str, param: str, shown, prefix: str):
        super().__init__(text)
        self._param, self._shown, self._prefix, self._aliases = param, shown, prefix, 0

    def _refuse(self, path: str, value, allowed: str):
        dotted = self._prefix + ("" if path.startswith("[") or not (path and self._prefix) else ".") + path
        raise ConfigError(dotted or self._param, value, allowed)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ConfigError(self._param, self._shown, f"YAML that uses aliases (*name) at most {MAX_ALIASES} "
                                  f"times (one more on line {self.peek_event().start_mark.line + 1}): nested aliases "
                                  f"expand exponentially")
        return super().compose_node(parent, index)

    def construct_document(self, node):
        self._inspect(node, "", 0, {}, set())
        return super().construct_document(node)

    def _inspect(self, node, path: str, depth: int, sizes: dict, open_: set) -> int:
        """The size of ``node`` with its aliases expanded (nodes plus scalar characters), memoised in ``sizes``;
        refuses a repeated key, a recursive alias, deep nesting and an expansion over MAX_EXPANDED."""
        if id(node) in sizes:
            return sizes[id(node)]
        line = node.start_mark.line + 1
        if id(node) in open_ or depth > MAX_DEPTH:
            self._refuse(path, Shown("<a recursive alias>" if id(node) in open_ else "<deep nesting>"),
                         f"YAML nested at most {MAX_DEPTH} levels, without recursive aliases (line {line})")
        open_.add(id(node))
        size = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._inspect(v, f"{path}[{i}]", depth + 1, sizes, open_) for i, v in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for k, v in node.value:
                name = k.value[:SHOWN_CHARS] if isinstance(k, yaml.ScalarNode) else "<key>"
                child = f"{path}.{name}" if path else str(name)
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if (k.tag, k.value) in seen:
                        first, again = seen[(k.tag, k.value)], k.start_mark
                        where = (f"on lines {first.line + 1} and {again.line + 1}" if first.line != again.line else
                                 f"on line {again.line + 1} (columns {first.column + 1} and {again.column + 1})")
                        shown = short(v.value) if isinstance(v, yaml.ScalarNode) else Shown("<a collection>")
                        self._refuse(child, shown, f"one value per key: it is written twice, {where}")
                    seen[(k.tag, k.value)] = k.start_mark
                size += sum(self._inspect(n, child, depth + 1, sizes, open_) for n in (k, v))
        if self._aliases and size > MAX_EXPANDED:
            self._refuse(path, Shown(f"<over {MAX_EXPANDED:,} nodes and characters once its aliases are expanded>"),
                         f"YAML whose aliases (*name) expand to at most {MAX_EXPANDED:,} nodes and characters "
                         f"(line {line})")
        open_.discard(id(node))
        sizes[id(node)] = size
        return size


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, param: str = "yaml", shown=None, prefix: str = ""):
    """YAML text -> Python value, with ``1e-4``-style floats understood. Refused with a ConfigError before anything
    is built: text over MAX_YAML_CHARS, more than MAX_ALIASES aliases or an expansion over MAX_EXPANDED (named
    ``param``, or the key where it happens; the text shown as ``shown``), a repeated key (named ``prefix`` and its
    dotted key, with both lines). Malformed YAML raises ``yaml.YAMLError``."""
    shown = short(text) if shown is None else shown
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(param, shown, f"YAML text of at most {MAX_YAML_CHARS:,} characters (here {len(text):,})")
    loader = _Loader(text, param, shown, prefix)
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except (ValueError, RecursionError) as err:  # an integer of over 4,300 digits, thousands of nested brackets
        raise ConfigError(param, shown, f"YAML that Python can read ({short(str(err))})") from None
    finally:
        loader.dispose()
