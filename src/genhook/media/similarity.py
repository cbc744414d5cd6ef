"""Perceptual hashes: whether an output looks like one made before.

:func:`phash` is the 64-bit DCT hash of ``imagehash`` (the image in greyscale at 32x32, the
signs of its lowest 8x8 frequencies against their median), written as 16 hex digits. Two
images that differ only by resizing, re-encoding or small changes of colour are a few bits
apart; unrelated images are about 32 apart. :func:`nearest` finds the closest of earlier
outputs' hashes (the same service, workflow and external id's recent jobs) to one output's.

A clip's hash (:class:`ClipHasher`, :func:`video_phash`) has the same form, so the same
distance and check apply: the per-bit majority of the hashes of :data:`CLIP_FRAMES` frames at
the middles of the clip's fifths (10 %, 30 %, 50 %, 70 %, 90 % of the way in). Each of those is
hashed from a :data:`CLIP_THUMB_WIDTH`-pixel-wide grey thumbnail made by the decoder's own
scaler, chosen among about :data:`CLIP_SAMPLE_FPS` samples a second (the frames video QC looks
at). Sampling by fraction makes a longer or shorter render of the same shot hash alike; the
majority of an odd number of frames lets no single frame (a fade from black, a flash) decide,
while a clip that cuts to another scene part-way no longer matches one that does not. Why these
numbers: docs/video.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genhook.media import Pixels

if TYPE_CHECKING:
    from av.video.frame import VideoFrame

HASH_BITS = 64
HASH_HEX = HASH_BITS // 4
HASH_SIDE = 32
"""The side of the grey square that ``imagehash.phash`` takes its DCT of (8 x 4)."""
CLIP_FRAMES = 5
"""Frames of a clip whose hashes are combined (odd: a per-bit majority has no ties)."""
CLIP_SAMPLE_FPS = 6.0
"""Frames a second a clip's hash chooses among (about; the rest are decoded and passed by)."""
CLIP_THUMB_WIDTH = 160
"""Width of the grey thumbnail a sampled frame is shrunk to by the decoder's scaler."""


@dataclass(frozen=True)
class RecentHash:
    """An earlier output's perceptual hash and the job that made it."""

    job_id: str
    phash: str


def phash(pixels: Pixels) -> str:
    """The 64-bit perceptual hash of ``pixels`` (RGB uint8) as 16 hex digits."""
    import imagehash
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), "RGB")
    return str(imagehash.phash(image, hash_size=8))


def valid(value: object) -> bool:
    """Whether ``value`` is a hash :func:`phash` makes (16 hex digits)."""
    if not isinstance(value, str) or len(value) != HASH_HEX:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def distance(a: str, b: str) -> int:
    """Bits in which two hashes differ (Hamming distance, 0..64)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def nearest(value: str, recent: Iterable[RecentHash]) -> tuple[int, RecentHash] | None:
    """The closest earlier hash to ``value`` and its distance (None: no valid earlier hash;
    the first of equally close ones)."""
    best: tuple[int, RecentHash] | None = None
    for earlier in recent:
        if not valid(earlier.phash):
            continue
        d = distance(value, earlier.phash)
        if best is None or d < best[0]:
            best = (d, earlier)
    return best


def combine(hashes: Sequence[str]) -> str:
    """The per-bit majority of ``hashes`` (an odd number of them for no ties; a tie is 0)."""
    if not hashes:
        raise ValueError("no hashes to combine")
    values = [int(h, 16) for h in hashes]
    bits = 0
    for bit in range(HASH_BITS):
        ones = sum((v >> bit) & 1 for v in values)
        if 2 * ones > len(values):
            bits |= 1 << bit
    return f"{bits:0{HASH_HEX}x}"


@dataclass
class ClipHasher:
    """A clip's perceptual hash, fed every decoded frame in order (:meth:`add`), read at the
    end (:meth:`value`): the module docstring says how. Keeps one 32x32 grey square per
    sample (1 KiB), whatever the frame size; a minute at 6 samples a second is 360 KiB."""

    fps: float
    every: int = field(init=False)
    count: int = field(default=0, init=False)
    squares: list[Any] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.every = max(1, round(self.fps / CLIP_SAMPLE_FPS)) if self.fps > 0 else 1

    def add(self, frame: VideoFrame) -> None:
        """Count ``frame``; shrink and keep it when it is one of the samples."""
        if self.count % self.every == 0:
            from PIL import Image

            width, height = frame.width, frame.height
            thumb_h = max(2, round(CLIP_THUMB_WIDTH * height / max(1, width)))
            grey = frame.reformat(width=CLIP_THUMB_WIDTH, height=thumb_h, format="gray")
            square = Image.fromarray(grey.to_ndarray(), "L").resize(
                (HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS
            )
            self.squares.append(square)
        self.count += 1

    def value(self) -> str | None:
        """The clip's hash; None when no frame was added."""
        import imagehash

        n = len(self.squares)
        if not n:
            return None
        picked = [
            self.squares[min(n - 1, int((i + 0.5) * n / CLIP_FRAMES))] for i in range(CLIP_FRAMES)
        ]
        return combine([str(imagehash.phash(square, hash_size=8)) for square in picked])


def video_phash(path: Path) -> str | None:
    """The perceptual hash of the clip at ``path`` (its first video stream; None: no frame
    decodes), decoding it once; :class:`ClipHasher` fed by another decode of the same file
    gives the same."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        hasher = ClipHasher(float(rate) if rate else 0.0)
        for frame in container.decode(stream):
            hasher.add(frame)
    return hasher.value()
