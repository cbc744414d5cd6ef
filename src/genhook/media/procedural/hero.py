"""The hero object standing in for the subject: five product kinds (the one the subject names,
else one drawn at random), sized to the art area, on a podium."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genhook.media.procedural.palette import RGB, Scheme, mix
from genhook.media.procedural.shading import Painter
from genhook.media.procedural.shapes import (
    Box,
    ellipse,
    fill,
    poly,
    rect,
    ring,
    rrect,
    soft_mask,
    union,
)


@dataclass(frozen=True)
class Hero:
    """Where the hero object stands and how big it is."""

    kind: str
    cx: float
    base: float  # y of the podium top the hero stands on
    height: float
    width: float

    @property
    def cy(self) -> float:
        return self.base - 0.5 * self.height


_UP = (0.0, 1.0, 0.45)


def _drum(p: Painter, colour: RGB, x0: float, x1: float, y0: float, y1: float) -> None:
    """An upright cylinder seen from a little above: its side from ``y0`` to ``y1``, its top."""
    e = 0.2 * (x1 - x0)
    side = union(rect((x0, y0, x1, y1)), ellipse((x0, y1 - e / 2, x1, y1 + e / 2)))
    p.cylinder(colour, (x0, x1), (x0, y0, x1, y1 + e / 2), side)
    top = (x0, y0 - e / 2, x1, y0 + e / 2)
    p.flat(colour, _UP, top, ellipse(top))


def _bottle(p: Painter, hero: Hero, sc: Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    body = (cx - bw / 2, base - 0.7 * hh, cx + bw / 2, base)
    neck = (cx - 0.18 * bw, base - 0.86 * hh, cx + 0.18 * bw, base - 0.62 * hh)
    cap = (cx - 0.23 * bw, base - hh, cx + 0.23 * bw, base - 0.84 * hh)
    band = (body[0], base - 0.5 * hh, body[2], base - 0.22 * hh)
    p.cylinder(sc.hero, (neck[0], neck[2]), neck, rect(neck))
    p.cylinder(sc.hero, (body[0], body[2]), body, rrect(body, 0.3 * bw))
    p.cylinder(sc.trim, (body[0], body[2]), band, rect(band))
    p.cylinder(sc.trim, (cap[0], cap[2]), cap, rrect(cap, 0.06 * bw))


def _jar(p: Painter, hero: Hero, sc: Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    _drum(p, sc.hero, cx - bw / 2, cx + bw / 2, base - 0.72 * hh, base)
    _drum(p, sc.trim, cx - 0.53 * bw, cx + 0.53 * bw, base - 0.9 * hh, base - 0.7 * hh)


def _ball(p: Painter, hero: Hero, sc: Scheme) -> None:
    """A plain glossy ball (no ring: a ringed ball reads as a planet)."""
    r = hero.width / 2
    p.sphere(sc.hero, hero.cx, hero.base - 0.97 * r, r)


def _mug(p: Painter, hero: Hero, sc: Scheme) -> None:
    """A mug: an upright cylinder open at the top (its dark inside showing under a rim), with a
    loop handle on the right; body and handle together are centred on the hero's centre."""
    w, hh, base = hero.width, hero.height, hero.base
    x0 = hero.cx - w / 2
    x1 = x0 + 0.76 * w
    y0 = base - 0.9 * hh
    thick = 0.09 * w
    handle = (x1 - 0.28 * w, y0 + 0.16 * hh, hero.cx + w / 2, y0 + 0.66 * hh)
    p.cylinder(sc.hero, (handle[0], handle[2]), handle, ring(handle, -90, 90, thick))
    _drum(p, sc.hero, x0, x1, y0, base)
    e = 0.2 * (x1 - x0)
    lip = 0.05 * (x1 - x0)
    inside = (x0 + lip, y0 - e / 2 + 0.6 * lip, x1 - lip, y0 + e / 2 - 0.6 * lip)
    p.flat(mix(sc.hero, (0, 0, 0), 0.55), (0.0, -0.4, 0.9), inside, ellipse(inside))


def _tube(p: Painter, hero: Hero, sc: Scheme) -> None:
    """A squeeze tube standing on its cap: a body flaring slightly up to a flat, ribbed seam."""
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    cap = (cx - 0.3 * bw, base - 0.17 * hh, cx + 0.3 * bw, base)
    top, foot = base - 0.9 * hh, base - 0.15 * hh
    body = (cx - 0.47 * bw, top, cx + 0.47 * bw, foot)
    outline = [cx - 0.36 * bw, foot, cx + 0.36 * bw, foot, body[2], top, body[0], top]
    shoulder = (cx - 0.36 * bw, foot - 0.05 * hh, cx + 0.36 * bw, foot + 0.02 * hh)
    seam = (cx - 0.5 * bw, base - hh, cx + 0.5 * bw, top + 0.01 * hh)
    _drum(p, sc.trim, cap[0], cap[2], cap[1], cap[3])
    p.cylinder(sc.hero, (body[0], body[2]), body, union(poly(outline), ellipse(shoulder)))
    p.cylinder(sc.hero, (seam[0], seam[2]), seam, rect(seam), 0.5)
    groove = mix(sc.hero, (0, 0, 0), 0.35)
    for i in range(1, 12):
        x = seam[0] + i * (seam[2] - seam[0]) / 12
        line = (x - 0.006 * bw, seam[1] + 0.01 * hh, x + 0.006 * bw, seam[3] - 0.01 * hh)
        p.flat(groove, (0.0, 0.0, 1.0), line, rect(line))


HEROES: dict[str, tuple[float, Callable[[Painter, Hero, Scheme], None]]] = {
    "bottle": (0.42, _bottle),
    "jar": (0.64, _jar),
    "ball": (0.8, _ball),
    "mug": (1.1, _mug),
    "tube": (0.46, _tube),
}
"""Each kind: its width over its height, and how to draw it. Every kind draws within 0.65 hero
widths of its centre, from 1.05 heights above its base to 0.1 widths below it. Chosen to read
as products and nothing else (no dark cube with a band, no arched slab: those read as buildings
and monuments)."""

_WORDS = {
    "mug": ("mug", "cup", "tasse", "becher", "taza", "tazza", "kopp", "kubek", "чашка", "кружка"),
    "bottle": ("bottle", "perfume", "serum", "wine", "flasche", "botella", "bouteille", "flacon"),
    "jar": ("jar", "candle", "cream", "balm", "honey", "jam", "pot", "bocal", "glas", "tarro"),
    "tube": ("tube", "lotion", "toothpaste", "ointment", "sunscreen", "gel"),
    "ball": ("ball", "sphere", "ornament", "bauble", "ballon", "pelota"),
}
_CJK = {"mug": ("杯", "カップ", "マグ", "컵", "머그"), "bottle": ("瓶", "ボトル", "병")}


def _named(text: str) -> str | None:
    """The first kind a word of ``text`` names (English and a few other languages)."""
    words = set(re.findall(r"\w+", text.casefold()))
    for kind, names in _WORDS.items():
        if words.intersection(names) or words.intersection(n + "s" for n in names):
            return kind
    return next((k for k, marks in _CJK.items() if any(m in text for m in marks)), None)


def hero_for(subject: str, prompt: str, rng: np.random.Generator) -> str:
    """The kind the subject (else the prompt) names, else one drawn from ``rng``. One draw is
    always made, so the choices after it do not depend on whether a name matched."""
    drawn = list(HEROES)[int(rng.integers(len(HEROES)))]
    return _named(subject) or _named(prompt) or drawn


_PODIUM = 1.6  # podium width / hero width


def hero_geometry(kind: str, art: Box) -> Hero:
    """Size the hero (and so its podium) to sit centred in the art area."""
    aw, ah = art[2] - art[0], art[3] - art[1]
    ratio = HEROES[kind][0]
    stack = 1.13 + 0.1 * _PODIUM * ratio  # hero + podium height, in hero heights
    hh = max(1.0, min(0.72 * ah / stack, 0.55 * aw / ratio))
    top = art[1] + (ah - stack * hh) / 2 + 0.04 * ah
    return Hero(kind, (art[0] + art[2]) / 2, top + hh, hh, ratio * hh)


def stage(p: Painter, hero: Hero, sc: Scheme) -> None:
    """Shadows, podium and hero."""
    light, h, size = p.light, hero.height, p.img.size
    pw = _PODIUM * hero.width
    x0, x1, y0, y1 = hero.cx - pw / 2, hero.cx + pw / 2, hero.base, hero.base + 0.13 * h
    shadow = mix(mix(sc.top, sc.bottom, 0.5), (0, 0, 0), 0.6)
    lean = -light.direction[0] * light.shadow_length * h
    blur, op, e = max(1.0, light.shadow_blur * h), light.shadow_opacity, 0.2 * pw
    half = hero.width / 2
    wall = (hero.cx - half + 0.3 * lean, hero.base - 0.95 * h, hero.cx + half + 0.3 * lean, y0)
    wall_shape = rrect(wall, 0.6 * half)
    fill(p.img, shadow, soft_mask(size, wall, wall_shape, 1.5 * blur + 0.02 * h, 0.5 * op))
    dx = 0.25 * lean
    floor = (x0 + dx - 0.05 * h, y1 - 0.3 * e, x1 + dx + 0.05 * h, y1 + 0.75 * e)
    fill(p.img, shadow, soft_mask(size, floor, ellipse(floor), blur + 0.03 * h, op))
    _drum(p, sc.podium, x0, x1, y0, y1)
    dx = 0.15 * lean
    foot = (hero.cx - 1.1 * half + dx, y0 - 0.22 * e, hero.cx + 1.1 * half + dx, y0 + 0.22 * e)
    fill(p.img, shadow, soft_mask(size, foot, ellipse(foot), 0.3 * blur + 0.01 * h, 1.4 * op))
    HEROES[hero.kind][1](p, hero, sc)
