"""Where the shipped workflows and presets live (inside a wheel, or at a checkout's root)."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The shipped ``workflows`` or ``presets`` folder: inside a wheel, else the checkout's root."""
    inside = _PACKAGE / "_shipped" / name
    if inside.is_dir():
        return inside
    return _PACKAGE.parent.parent / name


def workflows_dir() -> Path:
    """``GENHOOK_WORKFLOWS_DIR``, or the shipped ``workflows/``."""
    env = os.environ.get("GENHOOK_WORKFLOWS_DIR")
    return Path(env) if env else shipped_dir("workflows")


def presets_dir() -> Path:
    """``GENHOOK_PRESETS_DIR``, or the shipped ``presets/``."""
    env = os.environ.get("GENHOOK_PRESETS_DIR")
    return Path(env) if env else shipped_dir("presets")
