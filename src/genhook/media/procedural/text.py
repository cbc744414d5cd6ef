"""Text on the canvas: the subject heading in a legible ink, and the corner label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from genhook.media.procedural.layout import Layout
from genhook.media.procedural.palette import (
    BLACK,
    LINEAR,
    RGB,
    WHITE,
    Scheme,
    contrast,
    luminance,
)
from genhook.media.procedural.shapes import Box, IBox, clip, paint, rrect
from genhook.media.procedural.typography import (
    LEAD,
    Block,
    ellipsize,
    font_at,
    set_type,
    stroke_width,
)


def draw_text(img: Image.Image, lay: Layout, subject: str, colours: list[RGB], sc: Scheme) -> None:
    """The subject in large type under a short accent bar."""
    x0, y0, x1, y1 = lay.text
    if x1 - x0 < 8 or y1 - y0 < 8 or not subject:
        return
    block = set_type(subject, lay.text, lay.unit, lay.centred)
    spare = max(0.0, (y1 - y0) - block.height)
    top = y0 + spare * (0.5 if spare < 0.5 * block.height else 0.3)
    wide = min(block.width(), x1 - x0)
    left = (x0 + x1 - wide) / 2 if lay.centred else x0
    pad = 0.02 * lay.unit
    ink, bar = _choose_inks(
        img, (left - pad, top, left + wide + pad, top + block.height), colours, sc, lay.unit
    )
    _draw_block(img, block, (x0, x1, top), lay.centred, (ink, bar))


def _draw_block(
    img: Image.Image,
    block: Block,
    at: tuple[float, float, float],
    centred: bool,
    inks: tuple[RGB, RGB],
) -> None:
    """Draw ``block`` from y ``at[2]`` between x ``at[0]`` and ``at[1]``: bar, then heading."""
    x0, x1, y = at
    ink, bar_ink = inks
    centre, unit = (x0 + x1) / 2, block.gap / 0.028
    bw = max(4.0, 0.09 * unit)
    bx = centre - bw / 2 if centred else x0
    bar = (bx, y, bx + bw, y + block.bar)
    paint(img, bar_ink, 1.0, bar, rrect(bar, block.bar / 2))
    d = ImageDraw.Draw(img)
    font, stroke = block.font, stroke_width(block.size)
    y += block.bar + block.gap
    for line in block.lines:
        lx = centre - font.getlength(line) / 2 if centred else x0 + stroke
        font.draw(d, (lx, y + 0.86 * block.size), line, ink, stroke)
        y += LEAD * block.size


def _region_luminance(img: Image.Image, box: Box) -> tuple[float, float, float]:
    """5th percentile, median and 95th percentile WCAG luminance of the pixels under ``box``."""
    ib = clip(img.size, box)
    if ib is None:
        return 0.5, 0.5, 0.5
    arr = np.asarray(img.crop(ib))
    step = max(1, min(arr.shape[0], arr.shape[1]) // 64)
    px = arr[::step, ::step].reshape(-1, 3)
    lum = 0.2126 * LINEAR[px[:, 0]] + 0.7152 * LINEAR[px[:, 1]] + 0.0722 * LINEAR[px[:, 2]]
    lo, mid, hi = np.percentile(lum, [5, 50, 95])
    return float(lo), float(mid), float(hi)


def _best_ink(candidates: Sequence[RGB], lo: float, hi: float) -> tuple[RGB, float]:
    """The candidate with the best worst-case contrast against luminances ``lo``..``hi``."""
    scored = [(min(contrast(luminance(c), lo), contrast(luminance(c), hi)), c) for c in candidates]
    score, colour = max(scored, key=lambda pair: pair[0])
    return colour, score


def _choose_inks(
    img: Image.Image, area: Box, colours: list[RGB], sc: Scheme, unit: float
) -> tuple[RGB, RGB]:
    """Text and bar colours for ``area``: text at WCAG contrast >= 4.5 against the pixels
    there (palette colours first, then near-black or near-white); if nothing reaches it, a
    translucent backdrop-coloured panel goes down under the text first."""
    lo, mid, hi = _region_luminance(img, area)
    ink, score = _best_ink(colours, lo, hi)
    if score < 4.5:
        ink, score = _best_ink([*colours, BLACK, WHITE], lo, hi)
    if score < 4.5:
        pad = 0.03 * unit
        panel = (area[0] - pad, area[1] - pad, area[2] + pad, area[3] + pad)
        paint(img, sc.top, 0.88, panel, rrect(panel, pad))
        lo, mid, hi = _region_luminance(img, area)
        ink, score = _best_ink([*colours, BLACK, WHITE], lo, hi)
    bars = [c for c in (sc.trim, sc.hero, *colours) if c != ink]
    return ink, next((c for c in bars if contrast(luminance(c), mid) >= 1.6), ink)


def draw_label(img: Image.Image, label: str, size: int, frame: IBox | None = None) -> None:
    """``label`` small on a translucent pill in the bottom-right corner of ``frame`` (whole
    pixels x0, y0, x1, y1; default: the whole image), drawn as if on a copy of ``frame`` alone:
    nothing outside it changes.

    Only the pill's surroundings are copied out to draw on (not the whole frame: a full-size
    copy would be another 16 MiB of a worker's peak); the pixels are the same, since every
    position is moved by whole pixels and clipped where the frame clips it."""
    label = " ".join(label.split())
    if not label:
        return
    fx, fy, fx1, fy1 = frame or (0, 0, *img.size)
    w, h = fx1 - fx, fy1 - fy
    font, pad, margin = font_at(size), 0.6 * size, 0.025 * min(w, h)
    room = w - 2 * pad - 2 * margin
    if font.getlength(label) > room:
        label = ellipsize(label, font, room)
    right, bottom = w - margin, h - margin
    box = (right - font.getlength(label) - 2 * pad, bottom - 1.9 * size, right, bottom)
    region = clip((w, h), (box[0] - size, box[1] - size, box[2] + size, box[3] + size))
    if region is None:
        return
    rx, ry = region[0], region[1]
    sub = img.crop((fx + rx, fy + ry, fx + region[2], fy + region[3]))
    box = (box[0] - rx, box[1] - ry, box[2] - rx, box[3] - ry)
    light_bg = _region_luminance(sub, box)[1] > 0.3
    pill, ink = ((255, 255, 255), (34, 34, 36)) if light_bg else ((0, 0, 0), (240, 240, 238))
    paint(sub, pill, 0.62 if light_bg else 0.5, box, rrect(box, 0.95 * size))
    xy = (box[0] + pad, (box[1] + box[3]) / 2 + font.middle())
    font.draw(ImageDraw.Draw(sub), xy, label, ink)
    img.paste(sub, (fx + rx, fy + ry))
