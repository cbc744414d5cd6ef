"""The quality policy: pure functions from measurements and thresholds to failed checks.

A check fails when its measure is on the wrong side of its threshold; ``shortfall`` says by how
much, relative to the threshold (0.25 = 25 % short), so candidates can be ranked and a
``quality_warning`` can say exactly what was wrong.

``missing_glyphs`` is not measured on pixels: the backend reports the characters it was asked to
set as text and had no glyph for (the check fails when there is any; ``characters`` names them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from genhook.media.qc import Measurements

FacePolicy = Literal["ignore", "require", "forbid"]


@dataclass(frozen=True)
class Thresholds:
    """What an output must meet. Defaults suit photographic and composed images alike."""

    min_width: int = 0
    min_height: int = 0
    min_contrast: float = 8.0
    min_sharpness: float = 30.0
    min_brightness: float = 12.0
    max_brightness: float = 245.0
    faces: FacePolicy = "ignore"
    min_face_confidence: float = 0.5


@dataclass(frozen=True)
class FailedCheck:
    """One failed check: which, the measured value, the limit, and the relative shortfall."""

    check: str
    measured: float
    threshold: float
    comparison: Literal[">=", "<="]
    shortfall: float
    characters: tuple[str, ...] | None = None  # missing_glyphs only: which characters

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the ``quality_warning`` (``characters`` only where it applies)."""
        out = asdict(self)
        if self.characters is None:
            del out["characters"]
        else:
            out["characters"] = list(self.characters)
        return out

    def describe(self) -> str:
        """One line: the check, its measure and limit (and the characters, if any)."""
        text = f"{self.check} {self.measured} (needs {self.comparison} {self.threshold})"
        if self.characters:
            text += ": " + " ".join(f"U+{ord(c):04X} {c!r}" for c in self.characters)
        return text


def _below(check: str, measured: float, minimum: float) -> FailedCheck | None:
    if measured >= minimum:
        return None
    short = (minimum - measured) / minimum if minimum else 1.0
    return FailedCheck(check, round(measured, 3), minimum, ">=", round(short, 4))


def _above(check: str, measured: float, maximum: float) -> FailedCheck | None:
    if measured <= maximum:
        return None
    over = (measured - maximum) / maximum if maximum else 1.0
    return FailedCheck(check, round(measured, 3), maximum, "<=", round(over, 4))


def missing_glyphs(characters: Sequence[str]) -> FailedCheck | None:
    """Fails when any character could not be drawn; shortfall 1 (a glyph is there or not)."""
    if not characters:
        return None
    chars = tuple(sorted(set(characters)))
    return FailedCheck("missing_glyphs", float(len(chars)), 0.0, "<=", 1.0, chars)


def evaluate(m: Measurements, t: Thresholds, missing: Sequence[str] = ()) -> list[FailedCheck]:
    """Every check ``m`` (and the ``missing`` glyphs) fails under ``t`` (empty: it passed)."""
    found = [
        _below("width", m.width, t.min_width),
        _below("height", m.height, t.min_height),
        _below("contrast", m.contrast, t.min_contrast),
        _below("sharpness", m.sharpness, t.min_sharpness),
        _below("brightness", m.brightness, t.min_brightness),
        _above("brightness", m.brightness, t.max_brightness),
    ]
    if t.faces != "ignore":
        best = max((f.confidence for f in m.faces or ()), default=0.0)
        if t.faces == "require":
            found.append(_below("face_confidence", best, t.min_face_confidence))
        else:
            found.append(_above("face_confidence", best, t.min_face_confidence))
    found.append(missing_glyphs(missing))
    return [f for f in found if f is not None]


def score(failed: list[FailedCheck]) -> tuple[int, float]:
    """Rank of a candidate: fewer failed checks first, then the smaller total shortfall."""
    return len(failed), sum(f.shortfall for f in failed)


FIXES = {
    "sharpness": "sharp focus, crisp fine detail",
    "contrast": "rich contrast, clearly defined subject",
    "brightness": "balanced exposure",
    "face_confidence": "a clearly visible face looking at the camera",
    "width": "high resolution",
    "height": "high resolution",
}


UNFIXABLE = frozenset({"missing_glyphs"})
"""Checks another generation cannot change: the text set is the workflow's, not the seed's."""


def retry_may_help(failed: list[FailedCheck]) -> bool:
    """Whether generating again could pass a check that failed."""
    return any(f.check not in UNFIXABLE for f in failed)


def prompt_fix(failed: list[FailedCheck], faces: FacePolicy) -> str:
    """Words to add to the prompt on a retry, aimed at the checks that failed."""
    words: list[str] = []
    for f in failed:
        fix = "no people, no faces" if f.check == "face_confidence" and faces == "forbid" else None
        fix = fix or FIXES.get(f.check)
        if fix and fix not in words:
            words.append(fix)
    return ", ".join(words)
