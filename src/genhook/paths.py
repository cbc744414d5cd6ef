"""Where the shipped workflows and presets live (inside a wheel, or at a checkout's root), and
the private folders that hold a service's data."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The shipped ``workflows`` or ``presets`` folder: inside a wheel, else the checkout's root."""
    inside = _PACKAGE / "_shipped" / name
    if inside.is_dir():
        return inside
    return _PACKAGE.parent.parent / name


def workflows_dir() -> Path:
    """The shipped ``workflows/`` (``GENHOOK_WORKFLOWS_DIR`` is read by genhook.config)."""
    return shipped_dir("workflows")


def presets_dir() -> Path:
    """The shipped ``presets/`` (``GENHOOK_PRESETS_DIR`` is read by genhook.config)."""
    return shipped_dir("presets")


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """``path`` as a folder only its owner can enter: missing folders are made ``0700``; an
    existing one that others can read is tightened to ``0700`` when ``tighten``."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    if tighten and path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path
