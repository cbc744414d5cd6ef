"""Quality measurements on a decoded image: contrast, sharpness, brightness, faces.

All measures work on the BT.601 grayscale of the image (``cv2.COLOR_RGB2GRAY``, 0..255):

- **contrast**: standard deviation of the grayscale (population, from its histogram). A blank
  or flat image is ~0; ordinary photographs are roughly 40-80.
- **sharpness**: variance of the 3x3 Laplacian of the grayscale (``cv2.Laplacian``).
  Blur removes high frequencies and drives it toward 0. So that the number means the same at
  every size it is measured on a copy downscaled (``INTER_AREA``) to at most
  :data:`SHARPNESS_SIDE` px on the longer side; smaller images are measured as they are.
- **brightness**: mean of the grayscale.
- **faces** (only when asked): OpenCV's Haar cascade ``haarcascade_frontalface_default.xml``
  run on a histogram-equalised grayscale downscaled to at most :data:`FACE_SIDE` px on the longer
  side, boxes scaled back to the original image. Each detection's final-stage level weight from
  ``detectMultiScale3(..., outputRejectLevels=True)`` becomes a confidence in [0, 1] through
  :func:`face_confidence`. Haar cascades fire on some flat graphics, notably a bold letter "e"
  set light on dark, with high weights; so a detection whose box is nearly flat or nearly
  two-tone (see :func:`looks_graphic`) is dropped. Photographed or painted faces have
  continuous shading and are kept.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from fractions import Fraction

import cv2
import cv2.data
import numpy as np
import numpy.typing as npt

from genhook.media import Pixels

SHARPNESS_SIDE = 1024
"""Longest side, in px, of the copy that sharpness is measured on."""
FACE_SIDE = 800
"""Longest side, in px, of the copy that faces are searched on."""
FACE_MIN_FRACTION = 0.05
"""Smallest face searched for, as a fraction of the searched copy's shorter side (>= 24 px)."""
FACE_MIN_NEIGHBOURS = 8
"""Overlapping raw hits a detection needs. Stricter than OpenCV's default of 3: shaded spheres
and glows in composed images gather a handful; clear faces gather dozens."""
FACE_WEIGHT_MIDPOINT = 4.5
"""The level weight that maps to confidence 0.5."""
FACE_WEIGHT_SCALE = 1.0
"""Level-weight units per logit of confidence."""
FLAT_SPREAD = 24.0
"""A detection whose box spans fewer grey levels than this (5th to 95th percentile) is dropped."""
TWO_TONE_LIMIT = 0.7
"""A detection whose box is at least this fraction two-tone is dropped (lettering, flat art)."""
CASCADE_FILE = "haarcascade_frontalface_default.xml"

Gray = npt.NDArray[np.uint8]
_HISTOGRAM_BAND = 1 << 16  # pixels counted at a time


@dataclass(frozen=True)
class Face:
    """One detected face: its box in the measured image's pixels and a confidence in [0, 1]."""

    x: int
    y: int
    w: int
    h: int
    confidence: float


@dataclass(frozen=True)
class Measurements:
    """What :func:`measure` found. ``faces`` is None when face detection was not asked for."""

    width: int
    height: int
    contrast: float
    sharpness: float
    brightness: float
    faces: tuple[Face, ...] | None


def measure(pixels: Pixels, *, detect_faces: bool = False) -> Measurements:
    """Measure an ``(h, w, 3)`` uint8 RGB image; see the module docstring for each measure.

    Faces come sorted by confidence, highest first. Raises ValueError for any other array shape
    or dtype, or an empty image.
    """
    gray = _grayscale(pixels)
    height, width = gray.shape
    brightness, contrast = _mean_std(gray)
    return Measurements(
        width=width,
        height=height,
        contrast=contrast,
        sharpness=sharpness(gray),
        brightness=brightness,
        faces=detect(gray) if detect_faces else None,
    )


def _mean_std(gray: Gray) -> tuple[float, float]:
    """Mean and (population) standard deviation of ``gray``, from its histogram.

    The sums are exact integers, so the figures are correctly rounded, and no full-size
    temporary is made (``gray.std()`` makes a float64 copy: 32 MiB for a 2048x2048 image)."""
    counts = np.zeros(256, dtype=np.int64)
    rows = max(1, _HISTOGRAM_BAND // max(1, gray.shape[1]))
    for top in range(0, gray.shape[0], rows):  # bincount copies its input as int64: in bands
        counts += np.bincount(gray[top : top + rows].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.int64)
    n = int(gray.size)
    total = int(counts @ levels)
    squares = int(counts @ (levels * levels))
    variance = Fraction(n * squares - total * total, n * n)
    return float(Fraction(total, n)), math.sqrt(variance)


def _grayscale(pixels: Pixels) -> Gray:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"expected an (h, w, 3) uint8 RGB array, got {pixels.shape} {pixels.dtype}"
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"empty image {pixels.shape}")
    gray = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    return np.asarray(gray, dtype=np.uint8)


def _fit(gray: Gray, longest: int) -> tuple[Gray, float]:
    """``gray`` shrunk (``INTER_AREA``) so its longer side is at most ``longest``, and the
    factor applied (1.0 when it already fits)."""
    h, w = gray.shape
    factor = longest / max(h, w)
    if factor >= 1.0:
        return gray, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8), factor


def sharpness(gray: Gray) -> float:
    """Variance of the Laplacian of ``gray`` after shrinking it to :data:`SHARPNESS_SIDE`.

    The 3x3 Laplacian of 8-bit pixels is a whole number in -1020..1020: it is computed in 16
    bits (2 MiB at 1024x1024 where float64 takes 8, and as much again for ``var()``'s copy),
    and its variance from exact integer sums."""
    small, _ = _fit(gray, SHARPNESS_SIDE)
    laplacian = np.asarray(cv2.Laplacian(small, cv2.CV_16S), dtype=np.int16)
    total = squares = 0
    rows = max(1, _HISTOGRAM_BAND // max(1, laplacian.shape[1]))
    for top in range(0, laplacian.shape[0], rows):
        band = laplacian[top : top + rows].astype(np.int64)
        total += int(band.sum())
        squares += int(np.dot(band.ravel(), band.ravel()))
    n = int(laplacian.size)
    return float(Fraction(n * squares - total * total, n * n))


def face_confidence(weight: float) -> float:
    """Map a Haar cascade level weight to [0, 1]: ``1 / (1 + exp(-(weight - 4.5) / 1.0))``.

    Monotone increasing. Calibrated on OpenCV 4.14's frontal-face cascade: clear frontal faces
    score weights of about 5-8 (confidence 0.6-0.97); stray detections on textures and round
    objects mostly score below 3 (confidence < 0.2), though an occasional one reaches ~5.5.
    """
    z = (weight - FACE_WEIGHT_MIDPOINT) / FACE_WEIGHT_SCALE
    if z < -60.0:  # exp overflow guard; the value is 0 to double precision anyway
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


_local = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    """This thread's frontal-face classifier, loaded on first use."""
    cascade: cv2.CascadeClassifier | None = getattr(_local, "cascade", None)
    if cascade is None:
        path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"could not load the OpenCV face cascade {path}")
        _local.cascade = cascade
    return cascade


def detect(gray: Gray) -> tuple[Face, ...]:
    """Frontal faces in a grayscale image, in its coordinates, most confident first."""
    small, factor = _fit(gray, FACE_SIDE)
    least = max(24, round(FACE_MIN_FRACTION * min(small.shape)))
    if min(small.shape) < least:
        return ()
    boxes, _levels, weights = _cascade().detectMultiScale3(
        np.asarray(cv2.equalizeHist(small), dtype=np.uint8),
        scaleFactor=1.1,
        minNeighbors=FACE_MIN_NEIGHBOURS,
        minSize=(least, least),
        outputRejectLevels=True,
    )
    faces = [
        _face(box, float(weight), factor, gray.shape)
        for box, weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights), strict=True)
        if not looks_graphic(small[box[1] : box[1] + box[3], box[0] : box[0] + box[2]])
    ]
    return tuple(sorted(faces, key=lambda f: (-f.confidence, f.y, f.x)))


def _face(box: npt.NDArray[np.int32], weight: float, factor: float, shape: tuple[int, ...]) -> Face:
    """A box found on the shrunk copy, scaled back and clipped to the original image."""
    height, width = shape[0], shape[1]
    x, y = min(width - 1, round(int(box[0]) / factor)), min(height - 1, round(int(box[1]) / factor))
    w = max(1, min(width - x, round(int(box[2]) / factor)))
    h = max(1, min(height - y, round(int(box[3]) / factor)))
    return Face(x, y, w, h, face_confidence(weight))


def looks_graphic(patch: Gray) -> bool:
    """True when ``patch`` is nearly flat (5th-95th percentile spread < :data:`FLAT_SPREAD`) or
    nearly two-tone: at least :data:`TWO_TONE_LIMIT` of its pixels lie within
    ``max(6, spread / 10)`` grey levels of the 5th or 95th percentile, as in lettering."""
    if patch.size == 0:
        return True
    lo, hi = (float(v) for v in np.percentile(patch, [5, 95]))
    spread = hi - lo
    if spread < FLAT_SPREAD:
        return True
    near = max(6.0, spread / 10.0)
    values = patch.astype(np.float32)
    two_tone = (np.abs(values - lo) <= near) | (np.abs(values - hi) <= near)
    return bool(np.mean(two_tone) >= TWO_TONE_LIMIT)
