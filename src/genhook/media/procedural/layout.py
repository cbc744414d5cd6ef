"""Where things go: the art area and the text area for a canvas's aspect ratio."""

from __future__ import annotations

from dataclasses import dataclass

from genhook.media.procedural.shapes import Box


@dataclass(frozen=True)
class Layout:
    art: Box  # where the hero and its decoration go
    text: Box  # where the subject and the prompt line go
    centred: bool  # stacked layouts centre the text; side-by-side ones set it flush left
    unit: float  # min(width, height)


def layout(w: int, h: int, text_left: bool, label_band: float) -> Layout:
    """Side by side for landscape images, art above text otherwise; the label band kept free."""
    s = float(min(w, h))
    m = 0.07 * s
    bottom = h - m - label_band
    if w >= 1.25 * h:
        split = 0.5 * w
        if text_left:
            text, art = (m, m, split - 0.02 * w, bottom), (split - 0.02 * w, m, w - m, h - m)
        else:
            text, art = (split + 0.04 * w, m, w - m, bottom), (m, m, split + 0.04 * w, h - m)
        return Layout(art, text, False, s)
    cut = h * (0.6 if h > 1.3 * w else 0.64)
    return Layout((m, m, w - m, cut), (m, cut + 0.01 * h, w - m, bottom), True, s)
