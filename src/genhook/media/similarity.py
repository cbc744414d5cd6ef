"""Perceptual hashes: whether an output looks like one made before.

:func:`phash` is the 64-bit DCT hash of ``imagehash`` (the image in greyscale at 32x32, the
signs of its lowest 8x8 frequencies against their median), written as 16 hex digits. Two
images that differ only by resizing, re-encoding or small changes of colour are a few bits
apart; unrelated images are about 32 apart. :func:`nearest` finds the closest of earlier
outputs' hashes (the same service, workflow and external id's recent jobs) to one output's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from genhook.media import Pixels

HASH_BITS = 64
HASH_HEX = HASH_BITS // 4


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
