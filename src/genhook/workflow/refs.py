"""Wiring: ``${input.FIELD}`` and ``${NODE.OUTPUT}`` references inside node parameters.

A parameter whose whole value is one reference takes the referenced value as it is (any type);
a reference inside a longer string is interpolated as text. References may sit anywhere inside
lists and mappings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_REF = re.compile(r"\$\{\s*([A-Za-z_][\w-]*)\.([A-Za-z_]\w*)\s*\}")


@dataclass(frozen=True)
class Ref:
    """``source`` is ``input`` or a node name; ``name`` an input field or an output of it."""

    source: str
    name: str

    def __str__(self) -> str:
        return f"${{{self.source}.{self.name}}}"


def whole_ref(value: Any) -> Ref | None:
    """The reference when ``value`` is exactly one ``${...}``, else None."""
    if isinstance(value, str):
        match = _REF.fullmatch(value.strip())
        if match:
            return Ref(match.group(1), match.group(2))
    return None


def find_refs(value: Any) -> Iterator[Ref]:
    """Every reference anywhere inside ``value``."""
    if isinstance(value, str):
        for match in _REF.finditer(value):
            yield Ref(match.group(1), match.group(2))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from find_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from find_refs(item)


def resolve(value: Any, lookup: Mapping[str, Mapping[str, Any]]) -> Any:
    """``value`` with every reference replaced from ``lookup[source][name]``."""
    if isinstance(value, str):
        ref = whole_ref(value)
        if ref is not None:
            return lookup[ref.source].get(ref.name)
        if "${" not in value:
            return value
        return _REF.sub(lambda m: _text(lookup[m.group(1)].get(m.group(2))), value)
    if isinstance(value, Mapping):
        return {k: resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)
