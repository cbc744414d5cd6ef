"""The value syntaxes of settings and flags: durations, schedules, rates, booleans, counts.

Each parser raises ``ValueError`` with a message that says what it accepts; :mod:`genhook.config`
prefixes the variable's name and raises :class:`ConfigError`.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m|h|d)\s*$")


class ConfigError(ValueError):
    """A setting has a value genhook cannot use; the one-line message names the variable."""


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``2m``, ``1.5h``, ``250ms`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 8h, 250ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def duration_value(raw: object) -> float:
    """Seconds in a YAML value: a number of seconds, or a duration string (:func:`parse_duration`);
    ``ValueError`` for anything else (a boolean is not a number of seconds)."""
    if isinstance(raw, bool):
        raise ValueError(f"not a duration: {raw!r} (use e.g. 30s, 2m, 8h, 250ms)")
    return float(raw) if isinstance(raw, int | float) else parse_duration(str(raw))


def parse_schedule(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations: ``30s,2m,8m`` is ``(30.0, 120.0, 480.0)``."""
    if not text.strip():
        return ()
    return tuple(parse_duration(part) for part in text.split(","))


def parse_rate(text: str) -> tuple[int, float]:
    """A rate limit ``N/PERIOD`` (``100/h``, ``10/s``) as (count, period in seconds)."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a rate limit: {text!r} (use N/s, N/m, N/h or N/d, N >= 1)")
    return int(match.group(1)), _UNITS[match.group(2)]


def boolean(text: str) -> bool:
    """``true``/``false`` and the usual spellings (1/0, yes/no, on/off)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"not a positive whole number: {text!r} (use e.g. 100)")
    return value


def _backend_pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"not a list of backend=value: {text!r} (use e.g. {what})")
        pairs.append((name.strip(), value.strip()))
    return pairs


def backend_counts(text: str) -> dict[str, int]:
    """``openai=4,replicate=8``: the most jobs of each backend running at once."""
    return {name: positive_int(value) for name, value in _backend_pairs(text, "openai=4,fal=8")}


def backend_rates(text: str) -> dict[str, tuple[int, float]]:
    """``openai=5/s,replicate=100/m``: the most starts of each backend per window."""
    return {name: parse_rate(value) for name, value in _backend_pairs(text, "openai=5/s")}
