"""Salience: which part of an image draws the eye, and how much of it a crop keeps.

The map combines two classic measures on a copy whose longer side is :data:`SIDE` px:

- **colour distinctness** (Achanta et al., "Frequency-tuned salient region detection", 2009):
  the CIELAB distance of each pixel of a slightly blurred copy from the image's mean colour;
  whole objects that differ from the backdrop light up, smooth gradients do not;
- **edge density**: the Sobel gradient magnitude of the lightness, blurred over
  :data:`EDGE_BLUR` of the shorter side, so that text and detailed objects light up as areas.

Each is scaled to a maximum of 1 and the two are averaged. The *salient region* is where the
map reaches twice its mean (Achanta's adaptive threshold). Its *extent* along an axis runs from
where 1 % of its salience lies before it to where 1 % lies after it (so that a stray speck does
not count). :func:`kept_extent` is the share of that extent, along the axis a crop cut, that
lies inside the crop. A crop that keeps less than :data:`MIN_KEPT` cut into what the image is
about -- on the procedural renders, one letter of a title cut off loses about 5 % -- and the
export node flags it. An image whose salient region reaches its edges fails any real crop.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from genhook.media import Pixels

SIDE = 256
"""Longest side, in px, of the copy that salience is measured on."""
EDGE_BLUR = 0.03
"""Sigma of the blur that turns edges into areas, as a fraction of the shorter side."""
MIN_KEPT = 0.97
"""The least share of the salient region's extent a crop must keep, along each axis."""
TAIL = 0.01
"""Share of the salience left out at each end of the extent."""

SalienceMap = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]


def salience(pixels: Pixels) -> SalienceMap:
    """The salient region's weights (0 outside it) on a copy at most :data:`SIDE` px long."""
    h, w = pixels.shape[:2]
    factor = min(1.0, SIDE / max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(
        cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32) / np.float32(255.0),
        cv2.COLOR_RGB2LAB,
    )
    distinct = np.linalg.norm(lab - lab.reshape(-1, 3).mean(axis=0), axis=2).astype(np.float32)
    lightness = lab[:, :, 0]
    edges: npt.NDArray[np.float32] = np.hypot(
        cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3),
        cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3),
    )
    sigma = max(1.0, EDGE_BLUR * min(size))
    edges = np.asarray(cv2.GaussianBlur(edges, (0, 0), sigma), dtype=np.float32)
    combined = (_unit(distinct) + _unit(edges)) / np.float32(2.0)
    mask = combined >= 2.0 * float(combined.mean())
    return np.where(mask, combined, np.float32(0.0)).astype(np.float32)


def kept_extent(region: SalienceMap, box: Box) -> float:
    """The least, over the two axes, share of the salient region's extent inside ``box``
    (fractions of the width and height: x0, y0, x1, y1)."""
    if float(region.sum()) <= 0.0:
        return 1.0  # nothing stands out: no crop can lose it
    kept = 1.0
    for axis, (start, end) in ((0, (box[0], box[2])), (1, (box[1], box[3]))):
        low, high = _extent(region.sum(axis=axis))
        kept = min(kept, max(0.0, min(high, end) - max(low, start)) / (high - low))
    return kept


def _extent(profile: npt.NDArray[np.float32]) -> tuple[float, float]:
    """Where the salience along one axis starts and ends, as fractions, less the tails."""
    cumulative = np.cumsum(profile, dtype=np.float64) / float(profile.sum())
    n = len(profile)
    low = int(np.searchsorted(cumulative, TAIL)) / n
    high = (int(np.searchsorted(cumulative, 1.0 - TAIL)) + 1) / n
    return low, max(high, low + 1.0 / n)


def _unit(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    top = float(values.max())
    return (values / np.float32(top)).astype(np.float32) if top > 0 else values
