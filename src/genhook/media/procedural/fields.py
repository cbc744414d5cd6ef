"""Float pixel fields: pixel-centre coordinates, and dithering back to 8-bit pixels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

Field = npt.NDArray[np.float32]


def axis(n: int) -> Field:
    """Pixel-centre coordinates ``0.5, 1.5, ..., n - 0.5``."""
    return np.arange(n, dtype=np.float32) + np.float32(0.5)


_TILE = np.random.default_rng(0x5EED).random((128, 128), dtype=np.float32)


def dither_tile(h: int, w: int, scale: int) -> npt.NDArray[np.uint16]:
    """Uniform dither in ``[0, scale)``: a fixed random tile repeated over ``h x w``."""
    reps = (-(-h // _TILE.shape[0]), -(-w // _TILE.shape[1]))
    tile = (_TILE * np.float32(scale)).astype(np.uint16)
    return np.ascontiguousarray(np.tile(tile, reps)[:h, :w])


def quantise(col: Field) -> Image.Image:
    """Dither a float RGB field (0..255) to an 8-bit image, so smooth shading does not band."""
    h, w = col.shape[:2]
    dither = dither_tile(h, w, 256).astype(np.float32) * np.float32(1.0 / 256.0)
    out = np.clip(col + dither[:, :, None], 0.0, 255.0)
    return Image.fromarray(out.astype(np.uint8))
