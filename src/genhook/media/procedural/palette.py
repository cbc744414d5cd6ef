"""Colour: palette parsing, WCAG luminance and contrast, and which colour does what."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_FALLBACK: tuple[RGB, ...] = ((29, 53, 87), (69, 123, 157), (168, 218, 220), (241, 250, 238))
BLACK, WHITE = (17, 17, 19), (250, 250, 247)


def parse_palette(palette: Sequence[str]) -> list[RGB]:
    """``#rrggbb`` strings to RGB tuples; unusable entries are skipped, short palettes padded."""
    colours: list[RGB] = []
    for text in palette:
        match = _HEX.match(text.strip())
        if match:
            value = int(match.group(1), 16)
            colours.append((value >> 16, (value >> 8) & 255, value & 255))
    for extra in _FALLBACK:
        if len(colours) >= 2:
            break
        colours.append(extra)
    return colours


def _linear(v: float) -> float:
    v /= 255.0
    return v / 12.92 if v <= 0.04045 else float(((v + 0.055) / 1.055) ** 2.4)


LINEAR = np.array([_linear(v) for v in range(256)], dtype=np.float64)


def luminance(c: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour, 0..1."""
    return 0.2126 * _linear(c[0]) + 0.7152 * _linear(c[1]) + 0.0722 * _linear(c[2])


def contrast(a: float, b: float) -> float:
    """WCAG contrast ratio between two relative luminances, 1..21."""
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """``a`` moved a fraction ``t`` of the way to ``b``, rounded."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def far(c: RGB) -> RGB:
    """Near-black for a light colour, near-white for a dark one."""
    return BLACK if luminance(c) > 0.18 else WHITE


@dataclass(frozen=True)
class Scheme:
    """Which colour does what."""

    top: RGB  # backdrop gradient ends
    bottom: RGB
    hero: RGB
    trim: RGB  # cap, lid, band of the hero
    podium: RGB
    accents: tuple[RGB, ...]  # decoration; never empty


def scheme(colours: list[RGB], rng: np.random.Generator) -> Scheme:
    """Backdrop from the first two colours; the hero in one that stands out from it."""
    base, second = colours[0], colours[1]
    bottom = mix(base, second, 0.25 + 0.35 * float(rng.random()))
    lum = luminance(base)
    others = colours[1:] if len(colours) > 2 else [second, mix(second, far(second), 0.45)]
    ranked = sorted(others, key=lambda c: -contrast(luminance(c), lum))
    strong = [c for c in ranked if contrast(luminance(c), lum) >= 2.5] or ranked[:1]
    hero = strong[int(rng.integers(min(2, len(strong))))]
    rest = [c for c in others if c != hero] or [mix(hero, far(hero), 0.5)]
    distinct = [c for c in rest if contrast(luminance(c), luminance(hero)) >= 1.8]
    trim = distinct[int(rng.integers(len(distinct)))] if distinct else mix(hero, far(hero), 0.5)
    podium = second if second != hero else mix(base, far(base), 0.12)
    return Scheme(base, bottom, hero, trim, podium, tuple(rest))
