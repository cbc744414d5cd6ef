"""Platform targets of a node: a preset code, a bundle, or a list of them, resolved in order."""

from __future__ import annotations

from typing import Any

from genhook.errors import ErrorCode, InvalidInput
from genhook.presets import PlatformPreset, Presets
from genhook.workflow.refs import find_refs


def unknown_targets(value: Any, presets: Presets) -> list[str]:
    """The literal codes in ``value`` (a template's raw parameter) that name no preset or bundle;
    references (``${...}``) are checked when the run resolves them."""
    targets = value if isinstance(value, list) else [value]
    return [
        t
        for t in targets
        if isinstance(t, str) and not list(find_refs(t)) and presets.resolve_platforms(t) is None
    ]


def resolve_targets(value: str | list[str], presets: Presets) -> list[PlatformPreset]:
    """Every preset ``value`` selects (bundles expanded), each once, in order."""
    targets = value if isinstance(value, list) else [value]
    found: list[PlatformPreset] = []
    for target in targets:
        chosen = presets.resolve_platforms(target)
        if chosen is None:
            raise InvalidInput(
                ErrorCode.UNKNOWN_PLATFORM,
                f"no platform preset or bundle {target!r}",
                field="platforms",
            )
        found += [p for p in chosen if p not in found]
    return found
