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


def layout(
    w: int, h: int, text_left: bool, label_band: float, safe: tuple[float, float] = (0.0, 0.0)
) -> Layout:
    """Side by side for landscape images, art above text otherwise; the label band kept free.

    ``safe`` is the share of the width and of the height that a crop may later remove: the
    margins grow by it on both sides, so that art and text stay whole wherever the crop lands.
    """
    s = float(min(w, h))
    mx, my = 0.07 * s + safe[0] * w, 0.07 * s + safe[1] * h
    bottom = h - my - label_band
    if w >= 1.25 * h:
        split = 0.5 * w
        if text_left:
            text, art = (mx, my, split - 0.02 * w, bottom), (split - 0.02 * w, my, w - mx, h - my)
        else:
            text, art = (split + 0.04 * w, my, w - mx, bottom), (mx, my, split + 0.04 * w, h - my)
        return Layout(art, text, False, s)
    # art above text, split where it would be without a safe area, scaled into the inner band
    m = 0.07 * s
    cut = my + (h * (0.6 if h > 1.3 * w else 0.64) - m) * (h - 2 * my) / (h - 2 * m)
    return Layout((mx, my, w - mx, cut), (mx, cut + 0.01 * h, w - mx, bottom), True, s)
