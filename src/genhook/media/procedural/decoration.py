"""Decorative geometry around the hero: corner blobs, halo or panel, ring, dot grid, confetti."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genhook.media.procedural.hero import Hero
from genhook.media.procedural.layout import Layout
from genhook.media.procedural.lighting import Light
from genhook.media.procedural.palette import RGB, Scheme, contrast, far, luminance, mix
from genhook.media.procedural.shapes import (
    disc,
    ellipse,
    fill,
    paint,
    ring,
    rrect,
    soft_mask,
    union,
)


@dataclass(frozen=True)
class _Picker:
    """Draws decoration colours: any accent, or one that stands out from the backdrop."""

    rng: np.random.Generator
    accents: tuple[RGB, ...]
    visible: tuple[RGB, ...]

    @classmethod
    def of(cls, sc: Scheme, rng: np.random.Generator) -> _Picker:
        seen = tuple(
            c for c in (*sc.accents, sc.trim) if contrast(luminance(c), luminance(sc.top)) >= 1.6
        )
        return cls(rng, sc.accents, seen or (far(sc.top),))

    def any(self) -> RGB:
        return self.accents[int(self.rng.integers(len(self.accents)))]

    def bright(self) -> RGB:
        return self.visible[int(self.rng.integers(len(self.visible)))]


def decorate(
    img: Image.Image,
    lay: Layout,
    hero: Hero,
    sc: Scheme,
    light: Light,
    rng: np.random.Generator,
) -> None:
    """Blobs in two corners, a halo disc or a rounded backdrop card, an arc or neon ring, dots,
    confetti. (Not an arched panel: a hero on a podium in an arch reads as a shrine.)"""
    pick = _Picker.of(sc, rng)
    _blobs(img, lay.unit, pick)
    halo_r = hero.height * (0.6 + 0.12 * rng.random())
    cx = hero.cx + (rng.random() - 0.5) * 0.3 * halo_r
    cy = hero.cy + (rng.random() - 0.4) * 0.2 * halo_r
    colour, alpha, motif = pick.any(), 0.55 + 0.35 * rng.random(), rng.random()
    if motif < 0.6:
        disc(img, colour, alpha, cx, cy, halo_r)
    else:
        panel = (cx - 0.95 * halo_r, cy - 0.95 * halo_r, cx + 0.95 * halo_r, hero.base)
        paint(img, colour, alpha, panel, rrect(panel, 0.16 * halo_r))
    ring_r = halo_r * (1.12 + 0.1 * rng.random())
    start, sweep, colour = 360 * rng.random(), 120 + 170 * rng.random(), pick.bright()
    box = (cx - ring_r, cy - ring_r, cx + ring_r, cy + ring_r)
    width = max(1.0, 0.012 * lay.unit)
    if light.neon:
        fill(img, colour, soft_mask(img.size, box, ring(box, 0, 360, 3 * width), 3 * width))
        paint(img, mix(colour, (255, 255, 255), 0.6), 1.0, box, ring(box, 0, 360, width))
    else:
        paint(img, colour, 0.95, box, ring(box, start, start + sweep, width))
    corners = [0, 1] if lay.centred else [1] if lay.text[0] < lay.art[0] else [0, 2]
    corner = corners[int(rng.integers(2)) % len(corners)]
    _dot_grid(img, lay, pick.bright(), corner, int(rng.integers(3, 6)))
    _confetti(img, lay, pick, (cx, cy, 1.08 * ring_r))


def _blobs(img: Image.Image, unit: float, pick: _Picker) -> None:
    """Two large translucent discs centred near two of the canvas corners."""
    w, h = img.size
    for corner in pick.rng.permutation(4)[:2]:
        colour, size, alpha, slide = pick.any(), *pick.rng.random(3)
        r = unit * (0.3 + 0.2 * size)
        x = (w if corner & 1 else 0) + (slide - 0.5) * 0.5 * r * (1 if corner & 2 else -1)
        disc(img, colour, 0.14 + 0.16 * alpha, x, h if corner & 2 else 0, r)


def _confetti(
    img: Image.Image, lay: Layout, pick: _Picker, keep_out: tuple[float, float, float]
) -> None:
    """Up to six small dots and rings in the art area, outside the circle ``keep_out``."""
    art = lay.art
    for _ in range(6):
        colour, u, v, size, hollow = pick.bright(), *pick.rng.random(4)
        x, y = art[0] + u * (art[2] - art[0]), art[1] + v * (art[3] - art[1])
        if math.hypot(x - keep_out[0], y - keep_out[1]) < keep_out[2]:
            continue
        r = lay.unit * (0.008 + 0.014 * size)
        c = (x - r, y - r, x + r, y + r)
        paint(img, colour, 0.9, c, ring(c, 0, 360, 0.35 * r) if hollow < 0.4 else ellipse(c))


def _dot_grid(img: Image.Image, lay: Layout, colour: RGB, corner: int, n: int) -> None:
    """An ``n`` x ``n`` grid of small dots in corner ``corner`` (bit 0: right, bit 1: bottom)."""
    pitch, r = 0.032 * lay.unit, 0.0055 * lay.unit
    art = lay.art
    x0 = art[2] - (n - 1) * pitch if corner & 1 else art[0]
    y0 = art[3] - (n - 1) * pitch if corner & 2 else art[1]
    box = (x0 - r, y0 - r, x0 + (n - 1) * pitch + r, y0 + (n - 1) * pitch + r)
    dots = [
        ellipse((x0 + i * pitch - r, y0 + j * pitch - r, x0 + i * pitch + r, y0 + j * pitch + r))
        for i in range(n)
        for j in range(n)
    ]
    paint(img, colour, 0.75, box, union(*dots))
