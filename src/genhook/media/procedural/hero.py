"""The hero object standing in for the subject: five kinds, sized to the art area, on a podium."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from genhook.media.procedural.palette import RGB, Scheme, mix
from genhook.media.procedural.shading import Painter
from genhook.media.procedural.shapes import (
    Box,
    arch,
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
    r = hero.width / 2
    p.sphere(sc.hero, hero.cx, hero.base - 0.97 * r, r)
    box = (hero.cx - 1.25 * r, hero.base - 1.2 * r, hero.cx + 1.25 * r, hero.base - 0.74 * r)
    p.flat(sc.trim, (0.0, 0.6, 0.8), box, ring(box, 0, 180, 0.06 * r))


def _cube(p: Painter, hero: Hero, sc: Scheme) -> None:
    cx, half = hero.cx, hero.width / 2
    rise, side = 0.5 * half, hero.height * 0.55
    low = hero.base + 0.2 * rise
    mid = low - side
    top = [cx, mid, cx - half, mid - rise, cx, mid - 2 * rise, cx + half, mid - rise]
    left = [cx, low, cx, mid, cx - half, mid - rise, cx - half, low - rise]
    right = [cx, low, cx, mid, cx + half, mid - rise, cx + half, low - rise]
    band = [
        cx,
        low - 0.35 * side,
        cx,
        low - 0.6 * side,
        cx + half,
        low - 0.6 * side - rise,
        cx + half,
        low - 0.35 * side - rise,
    ]
    faces = (
        (sc.hero, left, (-0.75, 0.0, 0.66)),
        (sc.hero, right, (0.75, 0.0, 0.66)),
        (sc.hero, top, _UP),
        (sc.trim, band, (0.75, 0.0, 0.66)),
    )
    for colour, pts, normal in faces:
        box = (min(pts[0::2]), min(pts[1::2]), max(pts[0::2]), max(pts[1::2]))
        p.flat(colour, normal, box, poly(pts))


def _monolith(p: Painter, hero: Hero, sc: Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    outer = (cx - bw / 2, base - hh, cx + bw / 2, base)
    inner = (cx - 0.3 * bw, base - hh + 0.2 * bw, cx + 0.3 * bw, base - 0.1 * hh)
    p.cylinder(sc.hero, (outer[0], outer[2]), outer, arch(outer), 0.6)
    p.cylinder(sc.trim, (outer[0], outer[2]), inner, arch(inner), 0.6)


HEROES: dict[str, tuple[float, Callable[[Painter, Hero, Scheme], None]]] = {
    "bottle": (0.42, _bottle),
    "jar": (0.64, _jar),
    "ball": (0.8, _ball),
    "cube": (0.9, _cube),
    "monolith": (0.58, _monolith),
}
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
