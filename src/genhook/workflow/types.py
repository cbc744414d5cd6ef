"""Type compatibility between a wired source (input field or node output) and a parameter."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def json_type(schema: dict[str, Any], *, optional: bool) -> Any:
    """The Python type a JSON Schema property delivers (``T | None`` when it may be absent)."""
    t = schema.get("type")
    base = JSON_TYPES.get(t, Any) if isinstance(t, str) else Any
    return base | None if optional and base is not Any else base


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if get_origin(tp) in (Union, types.UnionType):
        return get_args(tp)
    return None


def compatible(source: Any, target: Any) -> bool:
    """Can a value of type ``source`` be given to a parameter of type ``target``?"""
    if source is Any or target is Any or source == target:
        return True
    src_args = _union_args(source)
    if src_args is not None:
        return all(compatible(a, target) for a in src_args)
    tgt_args = _union_args(target)
    if tgt_args is not None:
        return any(compatible(source, a) for a in tgt_args)
    if source is int and target is float:
        return True
    s_origin, t_origin = get_origin(source) or source, get_origin(target) or target
    if isinstance(s_origin, type) and isinstance(t_origin, type):
        if not issubclass(s_origin, t_origin):
            return False
        s_args, t_args = get_args(source), get_args(target)
        if not s_args or not t_args or len(s_args) != len(t_args):
            return True
        return all(compatible(a, b) for a, b in zip(s_args, t_args, strict=True))
    return False


def describe(tp: Any) -> str:
    """A short readable name of a type for error messages."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")
