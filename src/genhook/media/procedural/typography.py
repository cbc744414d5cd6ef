"""Setting type: wrapping and fitting the subject to a box, the text block.

Only the subject (the product name, headline or title the workflow passes) is set in large
type. Words of the prompt are never printed: they are instructions to an engine, and on the
picture they read as a bug ("PRODUCT PHOTOGRAPH OF KITCHENWARE CLEAN").
"""

from __future__ import annotations

from dataclasses import dataclass

from genhook.media.procedural.fonts import TypeFace
from genhook.media.procedural.shapes import Box

LEAD = 1.08  # heading line pitch, in ems


def font_at(size: int) -> TypeFace:
    """The fallback chain of faces (see :mod:`.fonts`) at ``size`` px."""
    return TypeFace(max(1, size))


def stroke_width(size: int) -> int:
    """Stroke width that turns the regular face into a heading weight."""
    return size // 30


def _split_long(word: str, font: TypeFace, width: float) -> list[str]:
    """``word`` broken into pieces no wider than ``width`` (a single glyph may still be wider)."""
    if font.getlength(word) <= width:
        return [word]
    pieces, cur = [], ""
    for ch in word:
        if cur and font.getlength(cur + ch) > width:
            pieces.append(cur)
            cur = ""
        cur += ch
    return [*pieces, cur] if cur else pieces


def _wrap(text: str, font: TypeFace, width: float) -> list[str]:
    """Greedy word wrap to ``width`` px; words wider than a line are broken."""
    lines, cur = [], ""
    for word in text.split():
        for piece in _split_long(word, font, width):
            trial = f"{cur} {piece}" if cur else piece
            if cur and font.getlength(trial) > width:
                lines.append(cur)
                cur = piece
            else:
                cur = trial
    return [*lines, cur] if cur else lines


def ellipsize(line: str, font: TypeFace, width: float) -> str:
    """``line`` cut to fit ``width`` with a trailing ellipsis."""
    while line and font.getlength(line + "…") > width:
        line = line[:-1].rstrip()
    return line + "…"


def _fit(
    text: str, box: tuple[float, float], sizes: tuple[int, int], max_lines: int
) -> tuple[int, list[str]]:
    """The largest size in ``sizes`` at which ``text`` wraps into ``box`` (width, height) in at
    most ``max_lines`` lines, and those lines; if none does, the smallest size, ellipsized."""
    (width, height), (lo, hi) = box, sizes
    best: tuple[int, list[str]] | None = None
    while lo <= hi:
        size = (lo + hi) // 2
        lines = _wrap(text, font_at(size), width - 2 * stroke_width(size))
        if len(lines) <= max_lines and len(lines) * LEAD * size <= height:
            best, lo = (size, lines), size + 1
        else:
            hi = size - 1
    if best is not None:
        return best
    size = sizes[0]
    font = font_at(size)
    lines = _wrap(text, font, width)
    keep = max(1, min(max_lines, int(height // (LEAD * size))))
    if len(lines) > keep:
        lines = [*lines[: keep - 1], ellipsize(lines[keep - 1], font, width)]
    return size, lines


@dataclass(frozen=True)
class Block:
    """The text block, set but not yet placed: heading lines under a short accent bar."""

    size: int  # heading size
    lines: list[str]
    bar: float  # bar thickness
    gap: float

    @property
    def font(self) -> TypeFace:
        return font_at(self.size)

    @property
    def height(self) -> float:
        return self.bar + self.gap + len(self.lines) * LEAD * self.size

    def width(self) -> float:
        widths = [self.font.getlength(line) + 2 * stroke_width(self.size) for line in self.lines]
        return max([*widths, 0.09 * self.size])


def set_type(subject: str, box: Box, unit: float, centred: bool) -> Block:
    """Size the subject to the largest type that fits ``box`` under the bar."""
    width, height = box[2] - box[0], box[3] - box[1]
    bar, gap = max(2.0, 0.011 * unit), max(3.0, 0.028 * unit)
    room = max(8.0, height - bar - 2 * gap)
    sizes = (max(6, round(0.034 * unit)), max(6, round((0.1 if centred else 0.13) * unit)))
    size, lines = _fit(subject, (width, room), sizes, 3) if subject else (sizes[0], [])
    return Block(size, lines, bar, gap)
