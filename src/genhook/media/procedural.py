"""The procedural renderer: a deterministic, offline, designed composition made from a prompt.

:func:`render` paints, in order: a palette gradient lit by a named lighting setup (radial glow,
vignette, window light or neon glows), decorative geometry (a halo disc, an arc, corner blobs, a
panel, a dot grid), a soft-shadowed "hero object" on a podium standing in for the subject, the
subject's name set in large type, a few words of the prompt, and a small honest corner label.

Determinism: every random choice comes from a numpy ``Generator`` seeded with a SHA-256 of the
seed, prompt and subject, and the pixel arithmetic uses only exactly rounded operations (``+``,
``-``, ``*``, ``/``, ``sqrt``) plus Pillow's integer drawing and FreeType text, so the same
arguments give byte-identical pixels. The same seed and prompt at another size give the same
composition, laid out for that aspect ratio.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
IBox = tuple[int, int, int, int]
Field = npt.NDArray[np.float32]

_SS = 3  # supersampling factor for anti-aliased shape masks
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_FALLBACK_PALETTE: tuple[RGB, ...] = (
    (29, 53, 87),
    (69, 123, 157),
    (168, 218, 220),
    (241, 250, 238),
)


# ----------------------------------------------------------------------------------------- light


@dataclass(frozen=True)
class _Light:
    """A lighting setup: how the backdrop is lit and how the hero object is shaded."""

    glow: tuple[float, float]  # glow centre as a fraction of (width, height)
    glow_radius: float  # as a fraction of the longer side
    glow_strength: float  # 0..1, how far the glow pulls the backdrop toward ``tint``
    tint: RGB
    vignette: float  # 0..1 darkening toward the corners
    direction: tuple[float, float, float]  # toward the light: x right, y up, z to the viewer
    ambient: float
    specular: float
    rim: float
    shadow_blur: float  # as a fraction of the hero's height
    shadow_length: float  # horizontal reach of the cast shadow, fraction of the hero's height
    shadow_opacity: float
    window: bool = False
    neon: bool = False


_LIGHTS: dict[str, _Light] = {
    "softbox": _Light(
        (0.5, 0.15),
        0.75,
        0.35,
        (255, 255, 255),
        0.18,
        (-0.5, 0.6, 0.62),
        0.42,
        0.35,
        0.12,
        0.10,
        0.25,
        0.38,
    ),
    "golden_hour": _Light(
        (0.88, 0.22),
        0.85,
        0.5,
        (255, 184, 108),
        0.3,
        (0.85, 0.25, 0.47),
        0.38,
        0.45,
        0.3,
        0.07,
        0.95,
        0.42,
    ),
    "diffuse": _Light(
        (0.5, 0.35),
        1.0,
        0.18,
        (255, 255, 255),
        0.1,
        (-0.2, 0.5, 0.84),
        0.6,
        0.12,
        0.05,
        0.18,
        0.12,
        0.25,
    ),
    "rim": _Light(
        (0.5, 0.42),
        0.42,
        0.35,
        (255, 246, 228),
        0.55,
        (0.0, 0.25, 0.35),
        0.22,
        0.25,
        0.95,
        0.08,
        0.15,
        0.55,
    ),
    "hard_key": _Light(
        (0.18, 0.12),
        0.6,
        0.32,
        (255, 255, 255),
        0.22,
        (-0.72, 0.55, 0.42),
        0.28,
        0.6,
        0.08,
        0.012,
        0.6,
        0.45,
    ),
    "window": _Light(
        (0.2, 0.3),
        0.8,
        0.25,
        (240, 246, 255),
        0.22,
        (-0.8, 0.3, 0.52),
        0.4,
        0.3,
        0.18,
        0.05,
        0.7,
        0.36,
    ),
    "neon": _Light(
        (0.5, 0.5),
        0.6,
        0.12,
        (255, 255, 255),
        0.5,
        (0.0, 0.3, 0.6),
        0.32,
        0.5,
        0.75,
        0.1,
        0.2,
        0.5,
        neon=True,
    ),
    "daylight": _Light(
        (0.5, -0.1),
        1.1,
        0.3,
        (255, 252, 238),
        0.07,
        (-0.3, 0.85, 0.43),
        0.55,
        0.25,
        0.05,
        0.05,
        0.3,
        0.3,
    ),
}
_LIGHTS["window"] = replace(_LIGHTS["window"], window=True)
_DEFAULT_LIGHT = "softbox"


def _light(name: str, mirror: bool) -> _Light:
    """The named setup (unknown names give softbox), mirrored left-right when ``mirror``."""
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    light = _LIGHTS.get(key, _LIGHTS[_DEFAULT_LIGHT])
    if not mirror:
        return light
    (gx, gy), (dx, dy, dz) = light.glow, light.direction
    return replace(light, glow=(1.0 - gx, gy), direction=(-dx, dy, dz))


# ---------------------------------------------------------------------------------------- colour


def _parse(palette: Sequence[str]) -> list[RGB]:
    """``#rrggbb`` strings to RGB tuples; a palette with under two usable colours is padded."""
    colours: list[RGB] = []
    for text in palette:
        match = _HEX.match(text.strip())
        if match:
            value = int(match.group(1), 16)
            colours.append((value >> 16, (value >> 8) & 255, value & 255))
    for extra in _FALLBACK_PALETTE:
        if len(colours) >= 2:
            break
        colours.append(extra)
    return colours


def _luminance(c: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour, 0..1."""

    def lin(v: float) -> float:
        v /= 255.0
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])


def _contrast(a: float, b: float) -> float:
    """WCAG contrast ratio between two relative luminances (1..21)."""
    hi, lo = max(a, b), min(a, b)
    return (hi + 0.05) / (lo + 0.05)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


@dataclass(frozen=True)
class _Scheme:
    """Which palette colour does what."""

    top: RGB  # backdrop gradient ends
    bottom: RGB
    hero: RGB
    trim: RGB  # cap, lid, label band of the hero
    podium: RGB
    accents: tuple[RGB, ...]  # decoration, never empty


def _scheme(colours: list[RGB], rng: np.random.Generator) -> _Scheme:
    """Backdrop from the first two colours; the hero in the colour standing out most from it."""
    base, second = colours[0], colours[1]
    bottom = _mix(base, second, 0.25 + 0.35 * float(rng.random()))
    lum = _luminance(base)
    others = colours[1:] if len(colours) > 2 else [second, _mix(second, _far(base), 0.5)]
    ranked = sorted(others, key=lambda c: -_contrast(_luminance(c), lum))
    hero = ranked[0]
    trim = ranked[1] if len(ranked) > 1 else _mix(hero, _far(hero), 0.6)
    podium = _mix(base, second, 0.55) if _contrast(_luminance(second), lum) < 2.5 else second
    if _contrast(_luminance(podium), _luminance(hero)) < 1.3:
        podium = _mix(podium, _far(hero), 0.35)
    accents = tuple(c for c in others if c != hero) or (trim,)
    return _Scheme(base, bottom, hero, trim, podium, accents)


def _far(c: RGB) -> RGB:
    """Near-black for a light colour, near-white for a dark one."""
    return (18, 18, 20) if _luminance(c) > 0.28 else (250, 250, 247)


# ------------------------------------------------------------------------------------- backdrop


def _axis(n: int) -> Field:
    return np.arange(n, dtype=np.float32) + np.float32(0.5)


def _radial(w: int, h: int, centre: tuple[float, float], radius: float) -> Field:
    """A smooth (1 - d^2/r^2)^2 falloff, 1 at ``centre`` (pixels) and 0 from ``radius`` on."""
    r = np.float32(max(radius, 1.0))
    dx = (_axis(w) - np.float32(centre[0])) / r
    dy = (_axis(h) - np.float32(centre[1])) / r
    t = np.clip(np.float32(1.0) - (dy * dy)[:, None] - (dx * dx)[None, :], 0.0, 1.0)
    return t * t


def _smoothstep(e0: float, e1: float, x: Field) -> Field:
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def _toward(img: Field, colour: Sequence[float], amount: Field) -> None:
    """In place: ``img += (colour - img) * amount``, per pixel."""
    target = np.asarray(colour, dtype=np.float32)
    img += (target - img) * amount[:, :, None]


def _window_light(w: int, h: int, x_frac: float) -> Field:
    """Soft four-pane window light cast on the backdrop, slanted."""
    s = np.float32(min(w, h))
    x = (_axis(w) - np.float32(x_frac * w)) / s
    y = (_axis(h) - np.float32(0.42 * h)) / s
    u = x[None, :] + np.float32(0.35) * y[:, None]  # slant
    v = np.broadcast_to(y[:, None], (h, w))
    pane = _smoothstep(0.3, 0.26, np.abs(u)) * _smoothstep(0.34, 0.3, np.abs(v))
    bars = _smoothstep(0.008, 0.02, np.abs(u)) * _smoothstep(0.008, 0.02, np.abs(v))
    out: Field = pane * bars
    return out


def _backdrop(w: int, h: int, sc: _Scheme, light: _Light, angle: float, seed: int) -> Image.Image:
    """Gradient, glow, window or neon light and vignette, dithered to 8 bits."""
    dx, dy = math.sin(angle), math.cos(angle)
    xs, ys = _axis(w) / np.float32(w) - 0.5, _axis(h) / np.float32(h) - 0.5
    t = np.clip(np.float32(dx) * xs[None, :] + np.float32(dy) * ys[:, None] + 0.5, 0.0, 1.0)
    top = np.asarray(sc.top, dtype=np.float32)
    img: Field = top + t[:, :, None] * (np.asarray(sc.bottom, dtype=np.float32) - top)
    long_side = max(w, h)
    glow = _radial(w, h, (light.glow[0] * w, light.glow[1] * h), light.glow_radius * long_side)
    _toward(img, light.tint, glow * np.float32(light.glow_strength))
    if light.window:
        _toward(
            img,
            light.tint,
            _window_light(w, h, light.glow[0] + 0.3 * (0.5 - light.glow[0])) * np.float32(0.3),
        )
    if light.neon:
        for i, (cx, cy) in enumerate(((0.0, 0.15), (1.0, 0.85))):
            colour = sc.accents[i % len(sc.accents)]
            _toward(img, colour, _radial(w, h, (cx * w, cy * h), 0.7 * long_side) * 0.55)
    r2 = (xs * xs)[None, :] * np.float32(2.0) + (ys * ys)[:, None] * np.float32(2.0)
    img *= (np.float32(1.0) - np.float32(light.vignette) * r2 * r2)[:, :, None]
    noise = np.random.default_rng([seed, 1])
    dither = noise.random((h, w), dtype=np.float32) - noise.random((h, w), dtype=np.float32)
    img += (dither * np.float32(2.0))[:, :, None]
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Frame:
    """Maps canvas coordinates into a (supersampled or reduced) mask's coordinates."""

    x0: int
    y0: int
    scale: float

    def pts(self, *xy: float) -> list[float]:
        return [(v - (self.x0 if i % 2 == 0 else self.y0)) * self.scale for i, v in enumerate(xy)]

    def len(self, v: float) -> float:
        return v * self.scale


DrawFn = Callable[[ImageDraw.ImageDraw, _Frame], None]


def _clip(size: tuple[int, int], box: Box) -> IBox | None:
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(size[0], math.ceil(box[2])), min(size[1], math.ceil(box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _mask(size: tuple[int, int], box: Box, draw: DrawFn) -> tuple[IBox, Image.Image] | None:
    """An anti-aliased coverage mask of what ``draw`` paints inside ``box`` (clipped to canvas)."""
    ib = _clip(size, box)
    if ib is None:
        return None
    w, h = ib[2] - ib[0], ib[3] - ib[1]
    big = Image.new("L", (w * _SS, h * _SS), 0)
    draw(ImageDraw.Draw(big), _Frame(ib[0], ib[1], _SS))
    return ib, big.reduce(_SS)


def _soft_mask(
    size: tuple[int, int], box: Box, blur: float, draw: DrawFn
) -> tuple[IBox, Image.Image] | None:
    """Like :func:`_mask` but blurred by ``blur`` pixels; drawn small, blurred, scaled up."""
    pad = 2.5 * blur
    ib = _clip(size, (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    if ib is None:
        return None
    w, h = ib[2] - ib[0], ib[3] - ib[1]
    q = max(1.0, blur / 3.0)
    sw, sh = max(1, round(w / q)), max(1, round(h / q))
    small = Image.new("L", (sw, sh), 0)
    draw(ImageDraw.Draw(small), _Frame(ib[0], ib[1], sw / w))
    if blur >= 0.5:
        small = small.filter(ImageFilter.GaussianBlur(blur * sw / w))
    return ib, small.resize((w, h), Image.Resampling.BILINEAR)


def _fill(img: Image.Image, colour: RGB, masked: tuple[IBox, Image.Image] | None) -> None:
    if masked is not None:
        img.paste(colour, masked[0], masked[1])


def _paint(
    img: Image.Image,
    colour: RGB,
    alpha: float,
    box: Box,
    draw: Callable[[ImageDraw.ImageDraw, _Frame, int], None],
) -> None:
    """Paint ``colour`` at opacity ``alpha`` wherever ``draw(d, frame, level)`` draws."""
    level = max(0, min(255, round(255 * alpha)))
    _fill(img, colour, _mask(img.size, box, lambda d, f: draw(d, f, level)))


def _disc(img: Image.Image, colour: RGB, alpha: float, cx: float, cy: float, r: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    _paint(img, colour, alpha, box, lambda d, f, a: d.ellipse(f.pts(*box), fill=a))


def _rrect(img: Image.Image, colour: RGB, alpha: float, box: Box, radius: float) -> None:
    _paint(
        img,
        colour,
        alpha,
        box,
        lambda d, f, a: d.rounded_rectangle(f.pts(*box), radius=f.len(radius), fill=a),
    )


def _arc(
    img: Image.Image,
    colour: RGB,
    alpha: float,
    cx: float,
    cy: float,
    r: float,
    span: tuple[float, float],
    width: float,
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    _paint(
        img,
        colour,
        alpha,
        box,
        lambda d, f, a: d.arc(
            f.pts(*box), span[0], span[1], fill=a, width=max(1, round(f.len(width)))
        ),
    )


# ---------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    art: Box  # where the hero and its decoration go
    text: Box  # where the subject and prompt line go
    centred: bool  # text centred (stacked layouts) or flush left/right (side by side)
    flush_right: bool
    unit: float  # min(width, height)


def _layout(w: int, h: int, text_left: bool, label_band: float) -> _Layout:
    s = float(min(w, h))
    m = 0.07 * s
    bottom = h - m - label_band
    if w >= 1.25 * h:  # side by side
        split = 0.5 * w
        if text_left:
            text, art = (m, m, split - 0.02 * w, bottom), (split - 0.02 * w, m, w - m, h - m)
        else:
            text, art = (split + 0.04 * w, m, w - m, bottom), (m, m, split + 0.04 * w, h - m)
        return _Layout(art, text, False, not text_left, s)
    cut = h * (0.6 if h > 1.3 * w else 0.63)
    return _Layout((m, m, w - m, cut), (m, cut + 0.01 * h, w - m, bottom), True, False, s)


# ------------------------------------------------------------------------------------------ hero


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) or 1.0
    return v[0] / n, v[1] / n, v[2] / n


def _shade(base: RGB, light: _Light, nx: Field, ny: Field, nz: Field, rim_colour: RGB) -> Field:
    """Lambert + Blinn specular + rim term for unit normals (arrays broadcast together)."""
    lx, ly, lz = (np.float32(v) for v in _unit(light.direction))
    d = light.direction
    hx, hy, hz = (np.float32(v) for v in _unit((d[0], d[1], d[2] + math.hypot(*d))))
    ndl = np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    diffuse = np.float32(light.ambient) + np.float32(1.0 - light.ambient) * ndl
    spec = np.clip(nx * hx + ny * hy + nz * hz, 0.0, 1.0)
    for _ in range(5):  # spec ** 32 without pow
        spec = spec * spec
    edge = np.float32(1.0) - nz
    rim = np.float32(light.rim) * edge * edge * edge
    col: Field = np.asarray(base, dtype=np.float32) * diffuse[..., None]
    col += (np.float32(255 * light.specular) * spec)[..., None]
    col += np.asarray(rim_colour, dtype=np.float32) * rim[..., None]
    return col


def _to_image(col: Field, seed: int) -> Image.Image:
    """Dither a float RGB field to an 8-bit image."""
    noise = np.random.default_rng([seed, 2])
    shape = col.shape[:2]
    dither = noise.random(shape, dtype=np.float32) - noise.random(shape, dtype=np.float32)
    out = col + (dither * np.float32(1.5))[..., None] + np.float32(0.5)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class _Painter:
    """Shades solids onto the canvas under one light."""

    img: Image.Image
    light: _Light
    rim_colour: RGB
    seed: int

    def cylinder(
        self, colour: RGB, span: tuple[float, float], box: Box, draw: DrawFn, bend: float = 1.0
    ) -> None:
        """Paint what ``draw`` covers in ``box``, shaded as an upright cylinder over ``span``."""
        masked = _mask(self.img.size, box, draw)
        if masked is None:
            return
        ib, mask = masked
        half = max((span[1] - span[0]) / 2.0, 1e-3)
        u = (_axis(ib[2] - ib[0]) + np.float32(ib[0] - span[0] - half)) / np.float32(half)
        u = np.clip(u * np.float32(bend), -1.0, 1.0)
        nz = np.sqrt(np.float32(1.0) - u * u)
        col = _shade(colour, self.light, u, np.zeros_like(u), nz, self.rim_colour)
        rows = ib[3] - ib[1]
        fall = np.float32(1.0) - np.float32(0.14) * _axis(rows) / np.float32(rows)
        field = col[None, :, :] * fall[:, None, None]
        self.img.paste(_to_image(field, self.seed), ib[:2], mask)

    def sphere(self, colour: RGB, cx: float, cy: float, r: float) -> None:
        """Paint a shaded ball."""
        box = (cx - r, cy - r, cx + r, cy + r)
        masked = _mask(self.img.size, box, lambda d, f: d.ellipse(f.pts(*box), fill=255))
        if masked is None:
            return
        ib, mask = masked
        u = (_axis(ib[2] - ib[0]) + np.float32(ib[0] - cx)) / np.float32(r)
        v = (_axis(ib[3] - ib[1]) + np.float32(ib[1] - cy)) / np.float32(r)
        nz = np.sqrt(np.clip(np.float32(1.0) - (v * v)[:, None] - (u * u)[None, :], 0.0, 1.0))
        nx = np.broadcast_to(u[None, :], nz.shape)
        ny = np.broadcast_to(-v[:, None], nz.shape)
        col = _shade(colour, self.light, nx, ny, nz, self.rim_colour)
        self.img.paste(_to_image(col, self.seed), ib[:2], mask)

    def flat(self, colour: RGB, normal: tuple[float, float, float], box: Box, draw: DrawFn) -> None:
        """Paint what ``draw`` covers in one colour, lit as a flat face facing ``normal``."""
        n = [np.full(1, v, dtype=np.float32) for v in _unit(normal)]
        lit = _shade(colour, self.light, n[0], n[1], n[2], self.rim_colour)[0]
        rgb = (int(min(255.0, lit[0])), int(min(255.0, lit[1])), int(min(255.0, lit[2])))
        _fill(self.img, rgb, _mask(self.img.size, box, draw))


@dataclass(frozen=True)
class _Hero:
    """Where the hero object stands and how big it is."""

    kind: str
    cx: float
    base: float  # y of the podium top the hero stands on
    height: float
    width: float


_HERO_WIDTH = {"bottle": 0.42, "jar": 0.64, "sphere": 0.8, "cube": 0.9, "arch": 0.58}
_UP = (0.0, 1.0, 0.45)


def _rect_fn(box: Box) -> DrawFn:
    return lambda d, f: d.rectangle(f.pts(*box), fill=255)


def _rrect_fn(box: Box, radius: float) -> DrawFn:
    return lambda d, f: d.rounded_rectangle(f.pts(*box), radius=f.len(radius), fill=255)


def _ellipse_fn(box: Box) -> DrawFn:
    return lambda d, f: d.ellipse(f.pts(*box), fill=255)


def _poly_fn(pts: Sequence[float]) -> DrawFn:
    return lambda d, f: d.polygon(f.pts(*pts), fill=255)


def _drum(
    p: _Painter, colour: RGB, top_colour: RGB, x0: float, x1: float, y0: float, y1: float
) -> None:
    """An upright cylinder seen from slightly above: side from ``y0`` to ``y1``, then its top."""
    e = 0.2 * (x1 - x0)

    def side(d: ImageDraw.ImageDraw, f: _Frame) -> None:
        d.rectangle(f.pts(x0, y0, x1, y1), fill=255)
        d.ellipse(f.pts(x0, y1 - e / 2, x1, y1 + e / 2), fill=255)

    p.cylinder(colour, (x0, x1), (x0, y0, x1, y1 + e / 2), side)
    top = (x0, y0 - e / 2, x1, y0 + e / 2)
    p.flat(top_colour, _UP, top, _ellipse_fn(top))


def _bottle(p: _Painter, hero: _Hero, sc: _Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    body = (cx - bw / 2, base - 0.7 * hh, cx + bw / 2, base)
    neck = (cx - 0.18 * bw, base - 0.86 * hh, cx + 0.18 * bw, base - 0.62 * hh)
    cap = (cx - 0.23 * bw, base - hh, cx + 0.23 * bw, base - 0.84 * hh)
    band = (body[0], base - 0.5 * hh, body[2], base - 0.22 * hh)
    p.cylinder(sc.hero, (neck[0], neck[2]), neck, _rect_fn(neck))
    p.cylinder(sc.hero, (body[0], body[2]), body, _rrect_fn(body, 0.3 * bw))
    p.cylinder(sc.trim, (body[0], body[2]), band, _rect_fn(band))
    p.cylinder(sc.trim, (cap[0], cap[2]), cap, _rrect_fn(cap, 0.06 * bw))


def _jar(p: _Painter, hero: _Hero, sc: _Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    _drum(p, sc.hero, sc.hero, cx - bw / 2, cx + bw / 2, base - 0.74 * hh, base)
    _drum(
        p,
        sc.trim,
        _mix(sc.trim, (255, 255, 255), 0.15),
        cx - 0.53 * bw,
        cx + 0.53 * bw,
        base - 0.95 * hh,
        base - 0.74 * hh,
    )


def _sphere(p: _Painter, hero: _Hero, sc: _Scheme) -> None:
    r = hero.width / 2
    p.sphere(sc.hero, hero.cx, hero.base - 0.97 * r, r)


def _cube(p: _Painter, hero: _Hero, sc: _Scheme) -> None:
    cx, half = hero.cx, hero.width / 2
    rise, side = 0.5 * half, hero.height * 0.55
    bottom_y = hero.base + 0.2 * rise
    mid_y = bottom_y - side
    top = [cx, mid_y, cx - half, mid_y - rise, cx, mid_y - 2 * rise, cx + half, mid_y - rise]
    left = [cx, bottom_y, cx, mid_y, cx - half, mid_y - rise, cx - half, bottom_y - rise]
    right = [cx, bottom_y, cx, mid_y, cx + half, mid_y - rise, cx + half, bottom_y - rise]
    for pts, normal in ((left, (-0.75, 0.0, 0.66)), (right, (0.75, 0.0, 0.66)), (top, _UP)):
        box = (min(pts[0::2]), min(pts[1::2]), max(pts[0::2]), max(pts[1::2]))
        p.flat(sc.hero, normal, box, _poly_fn(pts))
    band = [
        cx,
        bottom_y - 0.35 * side,
        cx,
        bottom_y - 0.6 * side,
        cx + half,
        bottom_y - 0.6 * side - rise,
        cx + half,
        bottom_y - 0.35 * side - rise,
    ]
    box = (cx, min(band[1::2]), cx + half, max(band[1::2]))
    p.flat(sc.trim, (0.75, 0.0, 0.66), box, _poly_fn(band))


def _arch_fn(box: Box) -> DrawFn:
    def draw(d: ImageDraw.ImageDraw, f: _Frame) -> None:
        r = (box[2] - box[0]) / 2
        d.ellipse(f.pts(box[0], box[1], box[2], box[1] + 2 * r), fill=255)
        d.rectangle(f.pts(box[0], box[1] + r, box[2], box[3]), fill=255)

    return draw


def _arch(p: _Painter, hero: _Hero, sc: _Scheme) -> None:
    cx, base, hh, bw = hero.cx, hero.base, hero.height, hero.width
    outer = (cx - bw / 2, base - hh, cx + bw / 2, base)
    inner = (cx - 0.3 * bw, base - hh + 0.2 * bw, cx + 0.3 * bw, base - 0.1 * hh)
    p.cylinder(sc.hero, (outer[0], outer[2]), outer, _arch_fn(outer), 0.6)
    p.cylinder(sc.trim, (outer[0], outer[2]), inner, _arch_fn(inner), 0.6)


_HEROES: dict[str, Callable[[_Painter, _Hero, _Scheme], None]] = {
    "bottle": _bottle,
    "jar": _jar,
    "sphere": _sphere,
    "cube": _cube,
    "arch": _arch,
}


def _hero_geometry(kind: str, art: Box) -> _Hero:
    """Size the hero and its podium to sit centred in the art area."""
    aw, ah = art[2] - art[0], art[3] - art[1]
    ratio = _HERO_WIDTH[kind]
    hh = min(0.62 * ah, 0.62 * aw / ratio, 0.5 * aw / (1.6 * ratio) * 1.6)
    podium_h = 0.13 * hh + 0.2 * 1.7 * ratio * hh / 2
    stack = hh + podium_h
    top = art[1] + (ah - stack) / 2 + 0.02 * ah
    return _Hero(kind, (art[0] + art[2]) / 2, top + hh, hh, ratio * hh)


def _shadows(img: Image.Image, hero: _Hero, podium: Box, light: _Light, colour: RGB) -> None:
    """Soft shadows: the podium's on the floor, the hero's on the wall behind it."""
    h = hero.height
    lean = -light.direction[0] * light.shadow_length * h
    blur = max(1.0, light.shadow_blur * h)
    x0, x1, y1 = podium[0], podium[2], podium[3]
    floor = (x0 - 0.1 * h + 0.3 * lean, y1 - 0.08 * h, x1 + 0.1 * h + 0.3 * lean, y1 + 0.1 * h)
    _fill(
        img,
        colour,
        _soft(img.size, floor, 2 * blur + 0.03 * h, light.shadow_opacity, _ellipse_fn(floor)),
    )
    wall = (
        hero.cx - hero.width / 2 + 0.35 * lean,
        hero.base - 0.96 * h,
        hero.cx + hero.width / 2 + 0.35 * lean,
        hero.base,
    )
    _fill(
        img,
        colour,
        _soft(
            img.size,
            wall,
            1.5 * blur + 0.02 * h,
            0.55 * light.shadow_opacity,
            _rrect_fn(wall, 0.25 * hero.width),
        ),
    )


def _soft(
    size: tuple[int, int], box: Box, blur: float, alpha: float, draw: DrawFn
) -> tuple[IBox, Image.Image] | None:
    level = max(0, min(255, round(255 * alpha)))

    def at_level(d: ImageDraw.ImageDraw, f: _Frame) -> None:
        draw(_Levelled(d, level), f)

    return _soft_mask(size, box, blur, at_level)
