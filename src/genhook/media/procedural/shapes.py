"""Anti-aliased shapes: shape constructors, coverage masks (sharp or blurred) and painting."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from genhook.media.procedural.palette import RGB

Box = tuple[float, float, float, float]
IBox = tuple[int, int, int, int]
Masked = tuple[IBox, Image.Image]

_SS = 3  # supersampling factor of anti-aliased shape masks


@dataclass(frozen=True)
class _Frame:
    """Maps canvas coordinates into a mask's (supersampled or reduced) coordinates."""

    x0: int
    y0: int
    scale: float

    def pts(self, *xy: float) -> list[float]:
        return [(v - (self.y0 if i % 2 else self.x0)) * self.scale for i, v in enumerate(xy)]

    def len(self, v: float) -> float:
        return v * self.scale


Shape = Callable[[ImageDraw.ImageDraw, _Frame, int], None]
"""Draws a shape into a mask through a frame, with the given fill level."""


def rect(box: Box) -> Shape:
    return lambda d, f, a: d.rectangle(f.pts(*box), fill=a)


def rrect(box: Box, radius: float) -> Shape:
    return lambda d, f, a: d.rounded_rectangle(f.pts(*box), radius=f.len(radius), fill=a)


def ellipse(box: Box) -> Shape:
    return lambda d, f, a: d.ellipse(f.pts(*box), fill=a)


def poly(pts: Sequence[float]) -> Shape:
    return lambda d, f, a: d.polygon(f.pts(*pts), fill=a)


def ring(box: Box, start: float, end: float, width: float) -> Shape:
    return lambda d, f, a: d.arc(f.pts(*box), start, end, fill=a, width=round(f.len(width)))


def union(*shapes: Shape) -> Shape:
    def draw(d: ImageDraw.ImageDraw, f: _Frame, a: int) -> None:
        for shape in shapes:
            shape(d, f, a)

    return draw


def clip(size: tuple[int, int], box: Box) -> IBox | None:
    """The whole pixels of ``box`` on a canvas of ``size``, or None if it misses the canvas."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(size[0], math.ceil(box[2])), min(size[1], math.ceil(box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _level(alpha: float) -> int:
    return max(0, min(255, round(255 * alpha)))


def mask(size: tuple[int, int], box: Box, shape: Shape, alpha: float = 1.0) -> Masked | None:
    """An anti-aliased coverage mask of ``shape`` within ``box``, clipped to the canvas."""
    ib = clip(size, box)
    if ib is None:
        return None
    big = Image.new("L", ((ib[2] - ib[0]) * _SS, (ib[3] - ib[1]) * _SS), 0)
    shape(ImageDraw.Draw(big), _Frame(ib[0], ib[1], _SS), _level(alpha))
    return ib, big.reduce(_SS)


def soft_mask(
    size: tuple[int, int], box: Box, shape: Shape, blur: float, alpha: float = 1.0
) -> Masked | None:
    """A mask of ``shape`` blurred by ``blur`` px: drawn small, blurred, scaled back up."""
    pad = 2.5 * blur
    ib = clip(size, (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    if ib is None:
        return None
    w, h = ib[2] - ib[0], ib[3] - ib[1]
    q = max(1.0, blur / 3.0)
    sw, sh = max(1, round(w / q)), max(1, round(h / q))
    small = Image.new("L", (sw, sh), 0)
    shape(ImageDraw.Draw(small), _Frame(ib[0], ib[1], sw / w), _level(alpha))
    small = small.filter(ImageFilter.GaussianBlur(blur * sw / w))
    return ib, small.resize((w, h), Image.Resampling.BILINEAR)


def fill(img: Image.Image, colour: RGB, masked: Masked | None) -> None:
    if masked is not None:
        img.paste(colour, masked[0], masked[1])


def paint(img: Image.Image, colour: RGB, alpha: float, box: Box, shape: Shape) -> None:
    """Paint ``colour`` at opacity ``alpha`` wherever ``shape`` covers, anti-aliased."""
    fill(img, colour, mask(img.size, box, shape, alpha))


def disc(img: Image.Image, colour: RGB, alpha: float, cx: float, cy: float, r: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    paint(img, colour, alpha, box, ellipse(box))
