"""Composition: seeding the choices and painting the layers in order."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from genhook.media import Pixels
from genhook.media.procedural.backdrop import backdrop
from genhook.media.procedural.decoration import decorate
from genhook.media.procedural.hero import hero_for, hero_geometry, stage
from genhook.media.procedural.layout import layout
from genhook.media.procedural.lighting import named_light
from genhook.media.procedural.palette import parse_palette, scheme
from genhook.media.procedural.shading import Painter
from genhook.media.procedural.text import draw_label, draw_text


def render(
    *,
    prompt: str,
    subject: str,
    palette: Sequence[str],
    lighting: str,
    width: int,
    height: int,
    seed: int,
    label: str = "procedural render",
) -> Pixels:
    """Render a composed ``height x width`` RGB image; identical arguments give identical pixels.

    ``palette`` is 2-6 ``#rrggbb`` colours (the first two make the backdrop; unusable entries are
    skipped and a short palette is padded). ``lighting`` names a setup (softbox, golden_hour,
    diffuse, rim, hard_key, window, neon, daylight; anything else lights like softbox). ``seed``
    and ``prompt`` both steer the composition. ``label`` is printed small in a corner.
    """
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

    unit = min(width, height)
    label_size = max(round(0.017 * unit), min(9, unit // 12), 1)
    lay = layout(width, height, text_left, 2.4 * label_size)
    img = backdrop(width, height, sc, light, angle)
    hero = hero_geometry(kind, lay.art)
    decorate(img, lay, hero, sc, light, rng)
    rim = sc.accents[0] if light.neon else light.tint
    stage(Painter(img, light, rim), hero, sc)
    draw_text(img, lay, subject.strip(), colours, sc)
    draw_label(img, label, label_size)
    return np.array(img, dtype=np.uint8, order="C")
