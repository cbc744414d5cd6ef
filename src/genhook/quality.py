"""The quality policy: pure functions from measurements and thresholds to failed checks.

A check fails when its measure is on the wrong side of its threshold; ``shortfall`` says by how
much, relative to the threshold (0.25 = 25 % short), so candidates can be ranked and a
``quality_warning`` can say exactly what was wrong.

``missing_glyphs`` is not measured on pixels: the backend reports the characters it was asked to
set as text and had no glyph for (the check fails when there is any; ``characters`` names them).
Every backend's result carries ``missing_glyphs`` (a remote engine reports none), and every check
here reads only pixels and that field, so each applies to every backend's output alike.

Two content checks, off unless a workflow turns them on (:class:`ContentChecks`, from the
quality_check node's ``near_duplicate`` and ``nsfw`` parameters; :func:`content_checks`):

- ``near_duplicate``: the output's perceptual hash (:mod:`genhook.media.similarity`) is within
  ``max_distance`` bits of a recent output's for the same external id; ``measured`` is the
  distance, ``resembles`` the job that made the look-alike;
- ``nsfw``: NudeNet's shipped detector (:mod:`genhook.media.nsfw`, the ``nsfw`` extra) finds
  exposed-body labels scoring over ``max_score``; ``labels`` lists them with their scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from genhook.media import Pixels
from genhook.media.qc import Measurements
from genhook.media.similarity import RecentHash

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
    resembles: str | None = None  # near_duplicate only: the job whose output it resembles
    labels: tuple[tuple[str, float], ...] | None = None  # nsfw only: (label, score) found

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the ``quality_warning`` (``characters``, ``resembles`` and ``labels``
        only where they apply)."""
        out = asdict(self)
        for key in ("characters", "resembles", "labels"):
            if out[key] is None:
                del out[key]
        if self.characters is not None:
            out["characters"] = list(self.characters)
        if self.labels is not None:
            out["labels"] = dict(self.labels)
        return out

    def describe(self) -> str:
        """One line: the check, its measure and limit (and the characters, the look-alike's
        job or the labels, if any)."""
        text = f"{self.check} {self.measured} (needs {self.comparison} {self.threshold})"
        if self.characters:
            text += ": " + " ".join(f"U+{ord(c):04X} {c!r}" for c in self.characters)
        if self.resembles:
            text += f": resembles the output of {self.resembles}"
        if self.labels:
            text += ": " + ", ".join(f"{label} {value:g}" for label, value in self.labels)
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


@dataclass(frozen=True)
class ContentChecks:
    """The content checks a workflow turned on (None: off, the default)."""

    near_duplicate_max_distance: int | None = None
    """Fail ``near_duplicate`` when a recent output's hash is this many bits away or fewer."""
    nsfw_max_score: float | None = None
    """Fail ``nsfw`` when the detector scores an NSFW label above this (0..1)."""

    @property
    def active(self) -> tuple[str, ...]:
        """The checks on, by name (for /metrics)."""
        on = (
            ("near_duplicate", self.near_duplicate_max_distance is not None),
            ("nsfw", self.nsfw_max_score is not None),
        )
        return tuple(name for name, flag in on if flag)


def content_problem(checks: ContentChecks) -> str | None:
    """Why these checks cannot run in this install (the nsfw extra missing), else None: a
    template asking for them is refused at load with it."""
    if checks.nsfw_max_score is None:
        return None
    from genhook.media.nsfw import unavailable

    return unavailable()


def near_duplicate(
    pixels: Pixels, recent: Sequence[RecentHash], max_distance: int, value: str | None = None
) -> FailedCheck | None:
    """Fails when a recent output's perceptual hash is at most ``max_distance`` bits from this
    one's (``value``, a clip's hash; else that of ``pixels``); ``measured`` is the distance (it
    needs ``>= max_distance + 1``)."""
    from genhook.media.similarity import nearest, phash

    found = nearest(value or phash(pixels), recent)
    if found is None or found[0] > max_distance:
        return None
    bits, earlier = found
    need = max_distance + 1
    short = round((need - bits) / need, 4)
    return FailedCheck(
        "near_duplicate", float(bits), float(need), ">=", short, resembles=earlier.job_id
    )


def nsfw(pixels: Pixels, max_score: float) -> FailedCheck | None:
    """Fails when the NSFW detector scores any of its NSFW labels above ``max_score``."""
    from genhook.media.nsfw import detect

    over = sorted(
        ((label, value) for label, value in detect(pixels).items() if value > max_score),
        key=lambda item: (-item[1], item[0]),
    )
    if not over:
        return None
    failed = _above("nsfw", over[0][1], max_score)
    assert failed is not None
    return FailedCheck(
        failed.check, failed.measured, failed.threshold, "<=", failed.shortfall, labels=tuple(over)
    )


def content_checks(
    pixels: Pixels,
    checks: ContentChecks,
    recent: Sequence[RecentHash] = (),
    value: str | None = None,
) -> list[FailedCheck]:
    """Every content check that ``checks`` turned on and ``pixels`` fails (``value``: a clip's
    perceptual hash, which near_duplicate compares instead of the hash of ``pixels``)."""
    found: list[FailedCheck | None] = []
    if checks.near_duplicate_max_distance is not None:
        limit = checks.near_duplicate_max_distance
        found.append(near_duplicate(pixels, recent, limit, value))
    if checks.nsfw_max_score is not None:
        found.append(nsfw(pixels, checks.nsfw_max_score))
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
    "near_duplicate": "a fresh composition from a different angle",
    "nsfw": "fully clothed, safe for work",
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
