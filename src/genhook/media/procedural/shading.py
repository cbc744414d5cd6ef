"""Lit solids: shading cylinders, spheres and flat faces under one lighting setup."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genhook.media.procedural.fields import Field, axis, quantise
from genhook.media.procedural.lighting import Light
from genhook.media.procedural.palette import RGB
from genhook.media.procedural.shapes import Box, Shape, ellipse, mask, paint


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) or 1.0
    return v[0] / n, v[1] / n, v[2] / n


def _shade(base: RGB, light: Light, nx: Field, ny: Field, nz: Field, rim_colour: RGB) -> Field:
    """Lambert + Blinn specular + rim light for unit normals (arrays that broadcast)."""
    lx, ly, lz = (np.float32(v) for v in _unit(light.direction))
    hx, hy, hz = (np.float32(v) for v in _unit((float(lx), float(ly), float(lz) + 1.0)))
    ndl = np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    diffuse = np.float32(light.ambient) + np.float32(1.0 - light.ambient) * ndl
    spec = np.clip(nx * hx + ny * hy + nz * hz, 0.0, 1.0)
    for _ in range(5):  # spec ** 32 without pow
        spec = spec * spec
    edge = np.float32(1.0) - nz
    rim = np.float32(light.rim) * edge * edge * edge
    col: Field = np.asarray(base, dtype=np.float32) * diffuse[..., None]
    col += (np.float32(255.0 * light.specular) * spec)[..., None]
    col += np.asarray(rim_colour, dtype=np.float32) * rim[..., None]
    return col


@dataclass(frozen=True)
class Painter:
    """Shades solids onto the canvas under one light."""

    img: Image.Image
    light: Light
    rim_colour: RGB

    def cylinder(
        self, colour: RGB, span: tuple[float, float], box: Box, shape: Shape, bend: float = 1.0
    ) -> None:
        """Paint ``shape`` (within ``box``) shaded as an upright cylinder over x in ``span``."""
        masked = mask(self.img.size, box, shape)
        if masked is None:
            return
        ib, coverage = masked
        half = max((span[1] - span[0]) / 2.0, 1e-3)
        u = (axis(ib[2] - ib[0]) + np.float32(ib[0] - span[0] - half)) / np.float32(half)
        u = np.clip(u * np.float32(bend), -1.0, 1.0)
        nz = np.sqrt(np.float32(1.0) - u * u)
        col = _shade(colour, self.light, u, np.zeros_like(u), nz, self.rim_colour)
        rows = ib[3] - ib[1]
        fall = np.float32(1.0) - np.float32(0.14) * axis(rows) / np.float32(rows)
        field: Field = col[None, :, :] * fall[:, None, None]
        self.img.paste(quantise(field), ib[:2], coverage)

    def sphere(self, colour: RGB, cx: float, cy: float, r: float) -> None:
        """Paint a shaded ball."""
        box = (cx - r, cy - r, cx + r, cy + r)
        masked = mask(self.img.size, box, ellipse(box))
        if masked is None:
            return
        ib, coverage = masked
        u = (axis(ib[2] - ib[0]) + np.float32(ib[0] - cx)) / np.float32(r)
        v = (axis(ib[3] - ib[1]) + np.float32(ib[1] - cy)) / np.float32(r)
        nz = np.sqrt(np.clip(np.float32(1.0) - (v * v)[:, None] - (u * u)[None, :], 0.0, 1.0))
        nx = np.broadcast_to(u[None, :], nz.shape)
        ny = np.broadcast_to(-v[:, None], nz.shape)
        col = _shade(colour, self.light, nx, ny, nz, self.rim_colour)
        self.img.paste(quantise(col), ib[:2], coverage)

    def flat(self, colour: RGB, normal: tuple[float, float, float], box: Box, shape: Shape) -> None:
        """Paint ``shape`` in one colour, lit as a flat face turned toward ``normal``."""
        n = [np.full(1, v, dtype=np.float32) for v in _unit(normal)]
        lit = _shade(colour, self.light, n[0], n[1], n[2], self.rim_colour)[0]
        rgb = (int(min(255.0, lit[0])), int(min(255.0, lit[1])), int(min(255.0, lit[2])))
        paint(self.img, rgb, 1.0, box, shape)
