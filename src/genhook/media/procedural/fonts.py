"""Type faces with per-glyph fallback, bidirectional order and Arabic shaping, and an audit of
the characters that no face could draw.

The faces are Kurinto Sans (SIL Open Font License 1.1), installed by the ``weblate-fonts``
package: Kurinto Sans covers Latin (extended), Greek, Cyrillic, Hebrew, Arabic, Armenian,
Georgian, Devanagari, Thai, kana and more; its SC, JP, KR and TC faces add Han ideographs and
Hangul. For each character the first face of :data:`FACES` whose character map holds it is used
(read once per face with fontTools), so a line may be drawn in several runs of different faces.

Layout is Pillow's ``BASIC`` engine everywhere, never raqm: Pillow's raqm needs the system's
libfribidi, which ``pip install`` does not provide, so it would change the pixels from one
machine to the next. Instead a line is put into visual order by python-bidi (the Unicode
Bidirectional Algorithm) after arabic-reshaper has replaced Arabic letters by their contextual
presentation forms; a form no face has falls back to its base letter.

A character that no face has is not drawn (no ``.notdef`` box): it leaves a gap, and it is added
to the set of the innermost :func:`glyph_audit` block, so the caller can report it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path

import arabic_reshaper
from bidi import get_display
from fontTools.ttLib import TTFont
from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont
RGBInk = tuple[int, int, int]

FACES = (
    "KurintoSans-Rg.ttf",
    "KurintoSansSC-Rg.ttf",
    "KurintoSansJP-Rg.ttf",
    "KurintoSansKR-Rg.ttf",
    "KurintoSansTC-Rg.ttf",
)
"""The fallback chain, first choice first."""
_FONT_DIR = "static/weblate_fonts/kurinto/ttf"

_audit: ContextVar[set[str] | None] = ContextVar("glyph_audit", default=None)


@contextmanager
def glyph_audit() -> Iterator[set[str]]:
    """Collect, into the yielded set, every character drawn in this block that no face has."""
    missing: set[str] = set()
    token = _audit.set(missing)
    try:
        yield missing
    finally:
        _audit.reset(token)


@cache
def face_path(index: int) -> Path:
    """The font file of face ``index`` of :data:`FACES`, inside the installed package."""
    path = Path(str(files("weblate_fonts") / _FONT_DIR / FACES[index]))
    if not path.is_file():
        raise RuntimeError(f"font {FACES[index]} missing: reinstall the weblate-fonts package")
    return path


@cache
def coverage(index: int) -> frozenset[int]:
    """The code points that face ``index`` maps to a glyph."""
    with TTFont(face_path(index), lazy=True) as font:
        return frozenset(font.getBestCmap())


FONTS_KEPT = 4
"""Faces (each at one size) kept open. Each one maps its font file anew and touches about
1 MiB of it, resident in the process that draws; a render tries about 8 sizes to fit its
title, one after another, and few sizes come back in the next render. Measured over 48
renders of 12 subjects: 394 faces opened with 4 kept, 361 with 12, 60 with 256 (but 58 MiB
resident, and growing with every new size up to 256 MiB). A face opens and sets its first
glyph in about 2 ms."""


@lru_cache(maxsize=FONTS_KEPT)
def font(index: int, size: int) -> Font:
    """Face ``index`` at ``size`` px, laid out by Pillow's basic engine (see the module doc)."""
    return ImageFont.truetype(face_path(index), max(1, size), layout_engine=ImageFont.Layout.BASIC)


@lru_cache(maxsize=4096)
def face_for(ch: str) -> int | None:
    """The first face that has a glyph for ``ch``, or None if none has."""
    code = ord(ch)
    return next((i for i in range(len(FACES)) if code in coverage(i)), None)


def _drawn(ch: str) -> bool:
    """False for characters that are never drawn: controls, formatting (ZWJ, bidi marks) and
    variation selectors."""
    return unicodedata.category(ch) not in ("Cc", "Cf") and not (
        0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF
    )


@lru_cache(maxsize=1024)
def visual(text: str) -> str:
    """``text`` in the order it is drawn, left to right: NFC, invisible characters dropped,
    Arabic shaped, bidi-reordered. Presentation forms no face has become their base letters."""
    text = "".join(ch for ch in unicodedata.normalize("NFC", text) if _drawn(ch))
    if any("\u0600" <= ch <= "\u06ff" or "\u0750" <= ch <= "\u077f" for ch in text):
        text = arabic_reshaper.reshape(text)
    text = get_display(text)
    return "".join(
        unicodedata.normalize("NFKC", ch)
        if face_for(ch) is None and ("\ufb50" <= ch <= "\ufdff" or "\ufe70" <= ch <= "\ufeff")
        else ch
        for ch in text
    )


@lru_cache(maxsize=1024)
def runs(text: str) -> tuple[tuple[int | None, str], ...]:
    """``text`` in visual order, split into runs that one face draws (None: no face has it)."""
    out: list[tuple[int | None, str]] = []
    for ch in visual(text):
        face = face_for(ch)
        if out and out[-1][0] == face:
            out[-1] = (face, out[-1][1] + ch)
        else:
            out.append((face, ch))
    return tuple(out)


def missing(text: str) -> set[str]:
    """The characters of ``text`` that no face can draw."""
    return {ch for face, run in runs(text) if face is None for ch in run}


@dataclass(frozen=True)
class TypeFace:
    """The fallback chain at one size: measures and draws mixed-script text on one baseline."""

    size: int

    @property
    def primary(self) -> Font:
        return font(0, self.size)

    def getlength(self, text: str) -> float:
        """Advance width of ``text`` in px (a character no face has counts as the primary
        face's ``.notdef`` width: the gap it leaves)."""
        return sum(font(face or 0, self.size).getlength(run) for face, run in runs(text))

    def middle(self) -> float:
        """Distance from the baseline up to halfway between ascender and descender."""
        ascent, descent = self.primary.getmetrics()
        return (ascent - descent) / 2

    def draw(
        self,
        d: ImageDraw.ImageDraw,
        xy: tuple[float, float],
        text: str,
        fill: RGBInk,
        stroke: int = 0,
    ) -> None:
        """Draw ``text`` with its left end at x and its baseline at y; record what is missing."""
        x, y = xy
        audit = _audit.get()
        for face, run in runs(text):
            f = font(face or 0, self.size)
            if face is None:
                if audit is not None:
                    audit.update(run)
            else:
                d.text(
                    (x, y),
                    run,
                    font=f,
                    fill=fill,
                    anchor="ls",
                    stroke_width=stroke,
                    stroke_fill=fill,
                )
            x += f.getlength(run)
