"""Composition: seeding the choices and painting the layers in order, for a frame.

A scene keeps its subject and title inside the frame's *safe area*: the image less the shares
of its width and height that a crop may later remove (``safe``), on both sides, so that wherever
the crop lands neither is cut. A frame ``on_white`` is a packshot: the hero object alone on
pure white (255, 255, 255) with no backdrop, decoration, shadow, text or label, so that every
pixel around the product is white (marketplace main images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec

import numpy as np
from PIL import Image

from genhook.media import Pixels
from genhook.media.procedural.backdrop import backdrop
from genhook.media.procedural.decoration import decorate
from genhook.media.procedural.fields import pixels_of
from genhook.media.procedural.hero import HEROES, Hero, hero_for, hero_geometry, stage
from genhook.media.procedural.layout import layout
from genhook.media.procedural.lighting import Light, named_light
from genhook.media.procedural.palette import RGB, Scheme, parse_palette, scheme
from genhook.media.procedural.shading import Painter
from genhook.media.procedural.shapes import Box
from genhook.media.procedural.text import draw_label, draw_text

P = ParamSpec("P")
PURE_WHITE: RGB = (255, 255, 255)
PACKSHOT_MARGIN = 0.1
"""Share of each side left white around a packshot's product (it fills about 80 %)."""


@dataclass(frozen=True)
class Composition:
    """A rendered image and where its parts are, in its pixels (x0, y0, x1, y1).

    ``subject`` holds the hero object (and its podium); ``title``, when the image has text, is
    the area the subject's name is set in.
    """

    pixels: Pixels
    subject: Box
    title: Box | None


def compose(
    *,
    prompt: str,
    subject: str,
    palette: Sequence[str],
    lighting: str,
    width: int,
    height: int,
    seed: int,
    label: str = "procedural render",
    on_white: bool = False,
    safe: tuple[float, float] = (0.0, 0.0),
) -> Composition:
    """Compose a ``height x width`` RGB image; identical arguments give identical pixels.

    ``palette`` is 2-6 ``#rrggbb`` colours (the first two make the backdrop; unusable entries are
    skipped and a short palette is padded). ``lighting`` names a setup (softbox, golden_hour,
    diffuse, rim, hard_key, window, neon, daylight; anything else lights like softbox). ``seed``
    and ``prompt`` both steer the composition. ``label`` is printed small in a corner. ``safe``
    is the (width, height) share a later crop may remove; ``on_white`` renders a packshot.
    Returns the pixels and where the subject and the title went.
    """
    if not (0.0 <= safe[0] < 0.5 and 0.0 <= safe[1] < 0.5):
        raise ValueError(f"safe shares must be in [0, 0.5), got {safe}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    text = f"{seed}\x1f{prompt}\x1f{subject}".encode("utf-8", "surrogatepass")
    key = int.from_bytes(hashlib.sha256(text).digest()[:16], "big")
    rng = np.random.default_rng(key)
    colours = parse_palette(palette)
    sc = scheme(colours, rng)
    light = named_light(lighting, mirror=bool(rng.random() < 0.5))
    angle = (float(rng.random()) - 0.5) * 1.2
    kind = hero_for(subject, prompt, rng)
    text_left = bool(rng.random() < 0.7)
    if on_white:
        white = scheme([PURE_WHITE, *colours], np.random.default_rng(key + 1))
        return _packshot(width, height, kind, white, named_light(lighting, mirror=False), safe)

    unit = min(width, height)
    label_size = max(round(0.017 * unit), min(9, unit // 12), 1)
    lay = layout(width, height, text_left, 2.4 * label_size, safe)
    img = backdrop(width, height, sc, light, angle)
    hero = hero_geometry(kind, lay.art)
    decorate(img, lay, hero, sc, light, rng)
    rim = sc.accents[0] if light.neon else light.tint
    stage(Painter(img, light, rim), hero, sc)
    draw_text(img, lay, subject.strip(), colours, sc)
    _label_in(img, label, label_size, safe)
    return Composition(pixels_of(img), lay.art, lay.text)


def _pixels_of(make: Callable[P, Composition]) -> Callable[P, Pixels]:
    def pixels(*args: P.args, **kwargs: P.kwargs) -> Pixels:
        return make(*args, **kwargs).pixels

    pixels.__doc__ = ":func:`compose`'s pixels alone (the same arguments)."
    return pixels


render = _pixels_of(compose)
"""The composed image's pixels: :func:`compose` without the boxes."""


def _label_in(img: Image.Image, label: str, size: int, safe: tuple[float, float]) -> None:
    """The corner label, in the bottom-right corner of the safe area (a crop never cuts it)."""
    w, h = img.size
    sx, sy = round(safe[0] * w), round(safe[1] * h)
    draw_label(img, label, size, (sx, sy, w - sx, h - sy))


def _packshot(
    w: int, h: int, kind: str, sc: Scheme, light: Light, safe: tuple[float, float]
) -> Composition:
    """The hero alone on pure white, centred in the safe area less a white margin, as large
    as fits: drawn once, measured (its box is where it touched the canvas), then redrawn to
    fill the area and moved to its centre. ``subject`` is the product's bounding box."""
    mx, my = (PACKSHOT_MARGIN + safe[0]) * w, (PACKSHOT_MARGIN + safe[1]) * h
    room_w, room_h = w - 2 * mx, h - 2 * my
    ratio = HEROES[kind][0]
    tall = max(1.0, min(room_h, room_w / ratio) / 2)
    img, box = _hero_alone(w, h, kind, sc, light, tall)
    if box is not None:  # grow (or shrink) it to fill the area, then centre it
        tall *= min(room_w / (box[2] - box[0]), room_h / (box[3] - box[1]))
        img, box = _hero_alone(w, h, kind, sc, light, max(1.0, tall))
    if box is None:
        return Composition(pixels_of(img), (mx, my, mx, my), None)
    bw, bh = box[2] - box[0], box[3] - box[1]
    left, top = round((w - bw) / 2), round((h - bh) / 2)
    out = Image.new("RGB", (w, h), PURE_WHITE)
    out.paste(img.crop(box), (left, top))
    subject = (float(left), float(top), float(left + bw), float(top + bh))
    return Composition(pixels_of(out), subject, None)


def _hero_alone(
    w: int, h: int, kind: str, sc: Scheme, light: Light, tall: float
) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """The hero ``tall`` px high, standing mid-canvas on white; and the box of what it drew."""
    img = Image.new("RGB", (w, h), PURE_WHITE)
    hero = Hero(kind, w / 2, h / 2 + 0.5 * tall, tall, HEROES[kind][0] * tall)
    HEROES[kind][1](Painter(img, light, light.tint), hero, sc)
    drawn = np.asarray(img).min(axis=2) < 255
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return img, None
    return img, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
