"""Setting type: the font, prompt words, wrapping and fitting text to a box, the text block."""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import ImageFont

from genhook.media.procedural.shapes import Box

Font = ImageFont.FreeTypeFont
TRACKING = 0.14  # letter spacing of the prompt line, in ems
LEAD = 1.08  # heading line pitch, in ems


def font_at(size: int) -> Font:
    """Pillow's bundled FreeType face (Aileron Regular) at ``size`` px."""
    font = ImageFont.load_default(size=max(1, size))
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RuntimeError("the procedural renderer needs Pillow with FreeType")
    return font


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
    ]
)


def prompt_words(prompt: str, subject: str, limit: int = 6) -> list[str]:
    """Up to ``limit`` words of the prompt, skipping the subject's own words where possible and
    not starting or ending on a stopword."""
    words = re.findall(r"[^\W_][\w'&-]*", prompt)
    own = {w.casefold() for w in re.findall(r"\w+", subject)}
    chosen = [w for w in words if w.casefold() not in own] or words
    while len(chosen) > 1 and chosen[0].casefold() in _STOPWORDS:
        chosen = chosen[1:]
    chosen = chosen[:limit]
    while len(chosen) > 1 and chosen[-1].casefold() in _STOPWORDS:
        chosen = chosen[:-1]
    return chosen


def stroke_width(size: int) -> int:
    """Stroke width that turns the regular face into a heading weight."""
    return size // 30


def _split_long(word: str, font: Font, width: float) -> list[str]:
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


def _wrap(text: str, font: Font, width: float) -> list[str]:
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


def ellipsize(line: str, font: Font, width: float, tracking: float = 0.0) -> str:
    """``line`` cut to fit ``width`` with a trailing ellipsis."""
    while line and tracked_width(line + "…", font, tracking) > width:
        line = line[:-1].rstrip()
    return line + "…"


def tracked_width(text: str, font: Font, tracking: float) -> float:
    """Width of ``text`` in px with ``tracking`` px added between characters."""
    if not tracking:
        return font.getlength(text)
    return sum(font.getlength(ch) for ch in text) + tracking * max(0, len(text) - 1)


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


def _tagline(words: list[str], font: Font, width: float) -> str:
    """The most words that fit on one tracked uppercase line (not ending on a stopword)."""
    tracking = TRACKING * font.size
    for n in range(len(words), 0, -1):
        if n > 1 and words[n - 1].casefold() in _STOPWORDS:
            continue
        text = " ".join(words[:n]).upper()
        if tracked_width(text, font, tracking) <= width:
            return text
    return ellipsize(words[0].upper(), font, width, tracking) if words else ""


@dataclass(frozen=True)
class Block:
    """The text block, set but not yet placed: heading lines over a bar, a tagline under."""

    size: int  # heading size
    lines: list[str]
    small: Font
    tag: str
    bar: float  # bar thickness
    gap: float

    @property
    def font(self) -> Font:
        return font_at(self.size)

    @property
    def height(self) -> float:
        tag = self.gap * 0.6 + self.small.size if self.tag else 0.0
        return self.bar + self.gap + len(self.lines) * LEAD * self.size + tag

    def width(self) -> float:
        widths = [self.font.getlength(line) + 2 * stroke_width(self.size) for line in self.lines]
        tag = tracked_width(self.tag, self.small, TRACKING * self.small.size)
        return max([*widths, tag, 0.09 * self.size])


def set_type(subject: str, words: list[str], box: Box, unit: float, centred: bool) -> Block:
    """Size the subject to the largest type that fits ``box`` above the tagline."""
    width, height = box[2] - box[0], box[3] - box[1]
    small = font_at(max(6, round(0.028 * unit)))
    tag = _tagline(words, small, width)
    bar, gap = max(2.0, 0.011 * unit), max(3.0, 0.028 * unit)
    room = max(8.0, height - bar - 2 * gap - (1.3 * small.size if tag else 0))
    sizes = (max(6, round(0.034 * unit)), max(6, round((0.1 if centred else 0.13) * unit)))
    size, lines = _fit(subject, (width, room), sizes, 3) if subject else (sizes[0], [])
    return Block(size, lines, small, tag, bar, gap)
