"""Platform export: fit an image to a preset's exact size and encode it, with libvips (pyvips).

``export`` makes one preset's output; ``export_all`` makes several from one source and returns,
byte for byte, what ``export`` returns for each. Every output is 8-bit sRGB with 3 bands and no
metadata, exactly ``preset.width`` x ``preset.height``:

* ``fit: crop`` -- resize to cover the box, then cut it around the point that libvips'
  attention strategy finds (the busiest, most saturated, most skin-toned region), clamped to the
  image; smaller sources are upscaled. :attr:`Encoded.crop` says which part of the source
  was kept, so that a salience check can measure what the crop lost;
* ``fit: pad`` -- resize so that the whole image fits the box, then centre it on a canvas of
  ``preset.background``.

A preset ``on_white`` is then made pure white around the product: every pixel whose three
channels are all at least :data:`WHITE_SNAP` (an engine's near-white backdrop, resampling
noise) becomes (255, 255, 255), and the padding is white.

Encoder settings, chosen by measurement on 2 cores (see ``docs/benchmarks.md``):

* JPEG: optimised Huffman tables (7% smaller, about 20 ms more per 2 megapixels), not
  progressive (twice that again); libvips' automatic chroma subsampling (4:4:4 from Q 90);
* WebP: effort 2 -- the same size and PSNR as effort 4 (the default) in less than half the time;
* PNG: adaptive row filters with zlib level 2 -- as fast as libvips' default (no filter, level 6)
  and a third smaller on photographic content;
* AVIF: AV1 at effort 3, 8 bits -- effort 4 (the libvips default) takes about 5x as long.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyvips

from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.presets import ImageFormat, PlatformPreset

__all__ = [
    "AVIF_OPTIONS",
    "JPEG_OPTIONS",
    "PNG_OPTIONS",
    "WEBP_OPTIONS",
    "Encoded",
    "export",
    "export_all",
    "to_vips",
]

_KEEP_NONE = 0  # VipsForeignKeep NONE: strip EXIF, XMP, IPTC, ICC and every other item
_PNG_FILTER_ALL = 0xF8  # VipsForeignPngFilter ALL: libpng picks a filter per row (adaptive)

JPEG_OPTIONS: dict[str, object] = {"optimize_coding": True, "keep": _KEEP_NONE}
"""``jpegsave`` options besides ``Q`` (the preset's quality)."""
WEBP_OPTIONS: dict[str, object] = {"effort": 2, "keep": _KEEP_NONE}
"""``webpsave`` options besides ``Q``."""
PNG_OPTIONS: dict[str, object] = {
    "compression": 2,
    "filter": _PNG_FILTER_ALL,
    "keep": _KEEP_NONE,
}
"""``pngsave`` options (PNG is lossless: the preset's quality is not used)."""
AVIF_OPTIONS: dict[str, object] = {
    "compression": "av1",
    "effort": 3,
    "bitdepth": 8,
    "keep": _KEEP_NONE,
}
"""``heifsave`` options besides ``Q``."""

# Rough encode cost per pixel, relative to JPEG: export_all starts the dearest work first.
_COST = {"jpeg": 1, "png": 3, "webp": 4, "avif": 10}
_KNOWN_COLOUR = {"srgb", "b-w", "rgb16", "grey16", "scrgb", "cmyk", "lab", "labs", "xyz", "hsv"}

_Key = tuple[int, int, str, str, bool]
Box = tuple[float, float, float, float]

WHITE_SNAP = 248
"""On-white presets: a pixel whose channels are all at least this becomes pure white."""


@dataclass(frozen=True)
class Encoded:
    """One encoded output: the file's bytes, its pixel size, format and Content-Type."""

    data: bytes
    width: int
    height: int
    format: ImageFormat
    media_type: str
    crop: Box | None = None
    """The part of the source kept, as fractions of its width and height (x0, y0, x1, y1);
    None when all of it was (``fit: pad``, or a source of the preset's exact shape)."""


def to_vips(pixels: Pixels) -> pyvips.Image:
    """Wrap a ``(height, width, 3)`` uint8 RGB array as an sRGB libvips image, without a copy.

    The image reads the array's memory (and keeps the array alive); do not write to the array
    while the image is in use. It is a memory image, so :func:`export_all` renders nothing
    into memory again (a 2048x2048 copy is 12 MiB of a worker's peak).
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise GenhookError(
            ErrorCode.EXPORT_FAILED,
            f"expected a (height, width, 3) uint8 array, got {pixels.shape} {pixels.dtype}",
        )
    try:
        height, width = pixels.shape[:2]
        array = np.ascontiguousarray(pixels)
        image = pyvips.Image.new_from_memory(array.data, width, height, 3, "uchar")
        if image.interpretation != "srgb":  # libvips takes 3 uchar bands for sRGB already
            image = image.copy(interpretation="srgb")
        return image
    except pyvips.Error as exc:
        raise GenhookError(ErrorCode.EXPORT_FAILED, f"cannot wrap the pixels: {exc}") from exc


def export(image: pyvips.Image, preset: PlatformPreset) -> Encoded:
    """Fit ``image`` to ``preset`` (crop or pad) and encode it in the preset's format."""
    try:
        return _encode(*_fit(_normalise(image, preset), preset), preset)
    except pyvips.Error as exc:
        raise _failed(preset, exc) from exc


def export_all(
    image: pyvips.Image, presets: Sequence[PlatformPreset], *, workers: int | None = None
) -> list[Encoded]:
    """``[export(image, p) for p in presets]``, sharing work between presets.

    The source is rendered into memory once (a no-op for :func:`to_vips` images), presets with
    the same size, fit and background share one resize, and the presets are encoded on up to
    ``workers`` threads (default: one per CPU; 1 runs everything in the calling thread). libvips
    releases the GIL and most encoders are single-threaded, so this uses the cores that one
    encode leaves idle. The first failure, in preset order, is raised.
    """
    if not presets:
        return []
    try:
        source = image.copy_memory()
    except pyvips.Error as exc:
        raise _failed(presets[0], exc) from exc
    groups: dict[_Key, list[int]] = {}
    for index, preset in enumerate(presets):
        groups.setdefault(_key(preset), []).append(index)
    # Dearest first, so that the long encodes (AVIF, big PNGs) do not start last.
    tasks = sorted(groups.values(), key=lambda group: -sum(_cost(presets[i]) for i in group))
    results: list[Encoded | GenhookError | None] = [None] * len(presets)

    def run(group: list[int]) -> None:
        current = group[0]  # the preset a failure is reported against
        try:
            fitted, crop = _fit(_normalise(source, presets[current]), presets[current])
            if len(group) > 1:
                fitted = fitted.copy_memory()
            for current in group:
                results[current] = _encode(fitted, crop, presets[current])
        except pyvips.Error as exc:
            error = _failed(presets[current], exc)
            error.__cause__ = exc
            results[current] = error

    count = min(len(tasks), workers or os.cpu_count() or 1)
    if count <= 1:
        for group in tasks:
            run(group)
    else:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="genhook-export") as pool:
            list(pool.map(run, tasks))
    encoded: list[Encoded] = []
    for result in results:
        if isinstance(result, GenhookError):
            raise result
        # None only follows an earlier failure in the same group, which was raised above.
        assert result is not None
        encoded.append(result)
    return encoded


def _key(preset: PlatformPreset) -> _Key:
    return (preset.width, preset.height, preset.fit, preset.background.lower(), preset.on_white)


def _cost(preset: PlatformPreset) -> int:
    return preset.width * preset.height * _COST[preset.format]


def _failed(preset: PlatformPreset, exc: pyvips.Error) -> GenhookError:
    detail = str(exc).strip().replace("\n", "; ")
    return GenhookError(
        ErrorCode.EXPORT_FAILED, f"{preset.code}: {preset.format} export failed: {detail}"
    )


def _rgb(hex_colour: str) -> list[float]:
    return [float(int(hex_colour[i : i + 2], 16)) for i in (1, 3, 5)]


def _normalise(image: pyvips.Image, preset: PlatformPreset) -> pyvips.Image:
    """8-bit sRGB with 3 bands; alpha is flattened onto the preset's background."""
    if image.interpretation not in _KNOWN_COLOUR:  # e.g. "multiband" from a raw array
        image = image.copy(interpretation="srgb" if image.bands >= 3 else "b-w")
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.hasalpha():
        image = image.flatten(background=_rgb(preset.background))
    if image.bands > 3:
        image = image.extract_band(0, n=3)
    return image


def _fit(image: pyvips.Image, preset: PlatformPreset) -> tuple[pyvips.Image, Box | None]:
    """Exactly ``preset.width`` x ``preset.height``: cover + attention crop, or contain + pad;
    and the part of the source the crop kept."""
    width, height = preset.width, preset.height
    crop: Box | None = None
    if preset.fit == "crop":
        out, crop = _cover_crop(image, width, height)
    else:
        out = image.thumbnail_image(width, height=height, size="both")
    if preset.on_white:
        out = (out >= WHITE_SNAP).bandand().ifthenelse(255, out)
    if out.width != width or out.height != height:  # pad; crop already has the exact size
        out = out.gravity(
            "centre", width, height, extend="background", background=_rgb(preset.background)
        )
    return out, crop


def _cover_crop(image: pyvips.Image, width: int, height: int) -> tuple[pyvips.Image, Box | None]:
    """Resize to cover ``width x height``, then cut that box centred on libvips' attention
    point (as ``smartcrop`` does), clamped to the image; and the kept box as fractions."""
    scale = max(width / image.width, height / image.height)
    cover_w = max(width, round(image.width * scale))
    cover_h = max(height, round(image.height * scale))
    resized = image.thumbnail_image(cover_w, height=cover_h, size="force")
    if (cover_w, cover_h) == (width, height):
        return resized, None
    resized = resized.copy_memory()
    _, found = resized.smartcrop(
        width, height, interesting="attention", attention_x=True, attention_y=True
    )
    left = min(max(0, int(found["attention_x"]) - width // 2), cover_w - width)
    top = min(max(0, int(found["attention_y"]) - height // 2), cover_h - height)
    kept = (
        left / cover_w,
        top / cover_h,
        (left + width) / cover_w,
        (top + height) / cover_h,
    )
    return resized.extract_area(left, top, width, height), kept


def _encode(image: pyvips.Image, crop: Box | None, preset: PlatformPreset) -> Encoded:
    if preset.format == "jpeg":
        data = image.jpegsave_buffer(Q=preset.quality, **JPEG_OPTIONS)
    elif preset.format == "webp":
        data = image.webpsave_buffer(Q=preset.quality, **WEBP_OPTIONS)
    elif preset.format == "png":
        data = image.pngsave_buffer(**PNG_OPTIONS)
    else:
        data = image.heifsave_buffer(Q=preset.quality, **AVIF_OPTIONS)
    assert preset.format != "mp4", "video presets are encoded by media/video_export"
    return Encoded(
        data=bytes(data),
        width=image.width,
        height=image.height,
        format=preset.format,
        media_type=preset.media_type,
        crop=crop,
    )
