"""Float pixel fields: pixel-centre coordinates, dithering back to 8-bit pixels, and moving
whole images between numpy and Pillow a band of rows at a time.

A 2048x2048 canvas is 16 MiB in Pillow (4 bytes a pixel) and 12 MiB as an RGB array; copying
it whole makes another full-size buffer or two (Pillow's ``tobytes`` joins its chunks), which
is what a worker's peak memory is made of. :func:`pixels_of` and :func:`image_of` copy the
same bytes band by band instead."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from genhook.media import Pixels

Field = npt.NDArray[np.float32]


def axis(n: int) -> Field:
    """Pixel-centre coordinates ``0.5, 1.5, ..., n - 0.5``."""
    return np.arange(n, dtype=np.float32) + np.float32(0.5)


_TILE = np.random.default_rng(0x5EED).random((128, 128), dtype=np.float32)


def dither_tile(h: int, w: int, scale: int) -> npt.NDArray[np.uint16]:
    """Uniform dither in ``[0, scale)``: a fixed random tile repeated over ``h x w``."""
    rows = dither_rows(w, scale)
    return np.ascontiguousarray(np.tile(rows, (-(-h // rows.shape[0]), 1))[:h])


def dither_rows(w: int, scale: int) -> npt.NDArray[np.uint16]:
    """The first rows of :func:`dither_tile` (as many as the tile has), which repeat down it."""
    tile = (_TILE * np.float32(scale)).astype(np.uint16)
    return np.ascontiguousarray(np.tile(tile, (1, -(-w // tile.shape[1])))[:, :w])


def add_dither(plane: npt.NDArray[np.uint16], scale: int) -> None:
    """In place, ``plane += dither_tile(h, w, scale)`` for an ``(h, w)`` plane, without a
    full-size dither plane (the caller makes sure the sums fit 16 bits)."""
    rows = dither_rows(plane.shape[1], scale)
    for top in range(0, plane.shape[0], rows.shape[0]):
        band = plane[top : top + rows.shape[0]]
        band += rows[: band.shape[0]]


def quantise(col: Field) -> Image.Image:
    """Dither a float RGB field (0..255) to an 8-bit image, so smooth shading does not band."""
    h, w = col.shape[:2]
    dither = dither_tile(h, w, 256).astype(np.float32) * np.float32(1.0 / 256.0)
    out = np.clip(col + dither[:, :, None], 0.0, 255.0)
    return Image.fromarray(out.astype(np.uint8))


BAND_BYTES = 1 << 20
"""About how many bytes of pixels :func:`pixels_of` and :func:`image_of` copy at a time."""


def pixels_of(img: Image.Image) -> Pixels:
    """The ``(height, width, 3)`` uint8 array of an RGB image: ``np.array(img)``, made a band
    of rows at a time."""
    w, h = img.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    step = max(1, BAND_BYTES // (4 * w))
    for top in range(0, h, step):
        bottom = min(h, top + step)
        out[top:bottom] = np.asarray(img.crop((0, top, w, bottom)), dtype=np.uint8)
    return out


def image_of(pixels: Pixels) -> Image.Image:
    """The RGB image of an ``(h, w, 3)`` uint8 array: ``Image.fromarray(pixels)``, a band of
    rows at a time."""
    h, w = pixels.shape[:2]
    img = Image.new("RGB", (w, h))
    step = max(1, BAND_BYTES // (3 * w))
    for top in range(0, h, step):
        img.paste(Image.fromarray(pixels[top : top + step]), (0, top))
    return img
