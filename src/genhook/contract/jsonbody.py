"""Strict JSON for trigger bodies: one parser for the API and ``genhook run``.

Python's ``json.loads`` accepts more than JSON (``NaN``, ``Infinity``), lets the last of two equal
keys win silently, turns ``1e999`` into infinity, raises ``ValueError`` past 4,300 integer digits
and ``RecursionError`` on deep nesting, and returns strings holding lone surrogates or NUL, which
cannot be encoded as UTF-8 or stored in PostgreSQL. :func:`parse_json` refuses every one of these
with ``invalid_json`` (422) before the body is validated or stored, with a description that says
what was wrong, where, and the limit when a limit was passed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from genhook.errors import ErrorCode, InvalidInput

MAX_DEPTH = 32
"""Objects and arrays nested deeper than this are refused (a trigger is a flat record)."""
MAX_INT_DIGITS = 20
"""Integers with more digits are refused: send a very long number as a string."""

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


class _Refused(Exception):
    """Raised inside the parser's hooks; turned into ``invalid_json``."""


def _bad(description: str, field: str | None = None) -> InvalidInput:
    return InvalidInput(ErrorCode.INVALID_JSON, description, field=field)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Refused(f"the key {_echo(key)} appears twice in one object")
        obj[key] = value
    return obj


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(
            f"an integer of {len(text.lstrip('-'))} digits exceeds the limit of "
            f"{MAX_INT_DIGITS} digits (send it as a string)"
        )
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {_echo(text)} is out of range (beyond 64-bit floating point)")
    return value


def parse_json(data: bytes | str) -> Any:
    """The JSON value of ``data``; :class:`InvalidInput` (``invalid_json``) if it is not strict
    JSON within the limits above."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"the body is not UTF-8 text (byte {exc.start})") from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except _Refused as exc:
        raise _bad(f"the body is not accepted JSON: {exc}") from None
    except RecursionError:
        raise _bad(f"the body is nested deeper than the limit of {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON: {exc}") from None
    except ValueError as exc:  # e.g. a number the int/float constructors refuse
        raise _bad(f"the body is not accepted JSON: {exc}") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and characters, without recursion; ``field`` is the top-level key at fault."""
    stack: list[tuple[Any, int, str | None]] = [(value, 0, None)]
    while stack:
        item, depth, top = stack.pop()
        if isinstance(item, str):
            _check_text(item, top)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _bad(f"the body is nested deeper than the limit of {MAX_DEPTH} levels", top)
            if isinstance(item, dict):
                for key, child in item.items():
                    owner = key if depth == 0 else top
                    _check_text(key, owner)
                    stack.append((child, depth + 1, owner))
            else:
                stack.extend((child, depth + 1, top) for child in item)


def _check_text(text: str, field: str | None) -> None:
    found = _BAD_CHARS.search(text)
    if found is None:
        return
    char = found.group()
    what = (
        "a NUL character (\\u0000)" if char == "\x00" else f"a lone surrogate (\\u{ord(char):04x})"
    )
    safe = field if field is None or _BAD_CHARS.search(field) is None else None
    where = f" in '{safe}'" if safe else ""
    raise _bad(f"the body holds {what}{where}: text must be valid Unicode without NUL", safe)


def _echo(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return repr(cut.encode("ascii", "backslashreplace").decode("ascii"))
