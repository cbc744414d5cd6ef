"""The backdrop: a palette gradient lit by a lighting setup, smooth enough to compute coarse."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from genhook.media.procedural.fields import Field, add_dither, axis, image_of
from genhook.media.procedural.lighting import Light
from genhook.media.procedural.palette import Scheme


def _radial(xs: Field, ys: Field, centre: tuple[float, float], radius: float) -> Field:
    """A smooth ``(1 - d^2/r^2)^2`` falloff: 1 at ``centre``, 0 from ``radius`` on (pixels)."""
    r = np.float32(max(radius, 1.0))
    dx = (xs - np.float32(centre[0])) / r
    dy = (ys - np.float32(centre[1])) / r
    t = np.clip(np.float32(1.0) - (dy * dy)[:, None] - (dx * dx)[None, :], 0.0, 1.0)
    out: Field = t * t
    return out


def _smoothstep(e0: float, e1: float, x: Field) -> Field:
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0.0, 1.0)
    out: Field = t * t * (np.float32(3.0) - np.float32(2.0) * t)
    return out


def _toward(img: Field, colour: Sequence[float], amount: Field) -> None:
    """In place, per pixel: ``img += (colour - img) * amount``."""
    img += (np.asarray(colour, dtype=np.float32) - img) * amount[:, :, None]


def _window_light(xs: Field, ys: Field, centre: tuple[float, float], unit: float) -> Field:
    """A soft, slanted four-pane window of light falling on the backdrop."""
    x = (xs - np.float32(centre[0])) / np.float32(unit)
    y = (ys - np.float32(centre[1])) / np.float32(unit)
    u = np.abs(x[None, :] + np.float32(0.35) * y[:, None])
    v = np.abs(y)[:, None]
    pane = _smoothstep(0.3, 0.25, u) * _smoothstep(0.36, 0.31, v)
    bars = _smoothstep(0.008, 0.02, u) * _smoothstep(0.008, 0.02, v)
    out: Field = pane * bars
    return out


_BACKDROP_STEP = 4  # the backdrop is smooth: compute it on a grid 4x coarser, then upscale


def backdrop(w: int, h: int, sc: Scheme, light: Light, angle: float) -> Image.Image:
    """Gradient, glow, window or neon light and vignette.

    Computed at quarter resolution in float, upscaled bit-exactly in 16-bit fixed point
    (``INTER_LINEAR_EXACT``), then dithered to 8 bits so gradients do not band.
    """
    ws, hs = max(2, -(-w // _BACKDROP_STEP)), max(2, -(-h // _BACKDROP_STEP))
    xs, ys = axis(ws) * np.float32(w / ws), axis(hs) * np.float32(h / hs)  # in full-size px
    nx, ny = xs / np.float32(w) - np.float32(0.5), ys / np.float32(h) - np.float32(0.5)
    gx, gy = np.float32(math.sin(angle)), np.float32(math.cos(angle))
    t = np.clip(gx * nx[None, :] + gy * ny[:, None] + np.float32(0.5), 0.0, 1.0)
    top = np.asarray(sc.top, dtype=np.float32)
    img: Field = top + t[:, :, None] * (np.asarray(sc.bottom, dtype=np.float32) - top)
    longest = max(w, h)
    glow = _radial(xs, ys, (light.glow[0] * w, light.glow[1] * h), light.glow_radius * longest)
    _toward(img, light.tint, glow * np.float32(light.glow_strength))
    if light.window:
        centre = ((0.5 + 0.7 * (light.glow[0] - 0.5)) * w, 0.4 * h)
        _toward(img, light.tint, _window_light(xs, ys, centre, min(w, h)) * np.float32(0.32))
    if light.neon:
        for i, (cx, cy) in enumerate(((0.0, 0.1), (1.0, 0.9))):
            spot = _radial(xs, ys, (cx * w, cy * h), 0.75 * longest)
            _toward(img, sc.accents[i % len(sc.accents)], spot * np.float32(0.6))
    r2 = (nx * nx)[None, :] * np.float32(2.0) + (ny * ny)[:, None] * np.float32(2.0)
    img *= (np.float32(1.0) - np.float32(light.vignette) * r2 * r2)[:, :, None]
    fixed = np.clip(img * np.float32(256.0) + np.float32(0.5), 0, 65535 - 255).astype(np.uint16)
    del img, t, glow, r2  # the coarse fields are done with
    # One channel at a time (the exact upscale treats channels apart, so the pixels are the
    # same), the dither added in place (at most 65280 + 255 < 65536: nothing wraps): full-size
    # temporaries are what a worker's peak memory is made of.
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        plane = np.ascontiguousarray(fixed[:, :, c])
        resized = cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)
        up = np.asarray(resized, dtype=np.uint16).reshape(h, w)
        add_dither(up, 256)
        out[:, :, c] = np.right_shift(up, 8, out=up)
        del resized, up  # before the next channel's is made
    return image_of(out)
