"""The procedural clip: a slow camera move over one composed scene, encoded with PyAV.

The scene is rendered once, :data:`ZOOM` times larger than the clip's frame; each frame is a
window onto it that closes in (a push-in from the whole scene to its centre at the frame's own
size) while drifting sideways, so that the motion is smooth at any frame rate: every frame is
one sub-pixel affine warp of the same scene (OpenCV, bilinear), not a re-render. The clip is
written as an intermediate H.264 file (yuv420p, a low CRF so that the platform encodes that
follow lose little, and x264's ``ultrafast`` preset: the intermediate is decoded once by the
export and thrown away, so its size matters less than its encoding time on two cores).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from genhook.media import Pixels

ZOOM = 1.12
"""How much larger than the frame the scene is rendered: the push-in's total magnification."""
PAN = 0.03
"""The sideways drift, as a share of the frame's width, from one end of the clip to the other."""
INTERMEDIATE_CRF = 14
"""The intermediate's quality: visually lossless for the platform encodes made from it."""
INTERMEDIATE_PRESET = "ultrafast"
"""x264's preset for the intermediate (encoding time first; it is decoded once and removed)."""


@dataclass(frozen=True)
class RenderedClip:
    """What :func:`render_clip` wrote: its frames, length, and the poster frame's pixels."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float
    poster: Pixels


def scene_safe(
    safe: tuple[float, float], width: int, height: int, scene: tuple[int, int]
) -> tuple[float, float]:
    """The safe area (shares of width and height a crop may remove) to compose a scene of
    size ``scene`` with, so that what is inside the frame's own ``safe`` area at its closest
    (the last frame, drifted sideways) holds the subject and its title."""
    keep_x = width * (1.0 - safe[0] - PAN) / scene[0]
    keep_y = height * (1.0 - safe[1]) / scene[1]
    return (min(0.45, max(0.0, 1.0 - keep_x)), min(0.45, max(0.0, 1.0 - keep_y)))


def frame_count(duration_seconds: float, fps: float) -> int:
    """Frames in a clip of ``duration_seconds`` at ``fps`` (at least one)."""
    return max(1, round(duration_seconds * fps))


def rational_fps(fps: float) -> Fraction:
    """``fps`` as the rational a container stores (23.976 -> 24000/1001, 24 -> 24)."""
    for base in (24, 30, 60):
        if abs(fps - base * 1000 / 1001) < 0.005:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def render_clip(
    scene: Pixels,
    path: Path,
    *,
    width: int,
    height: int,
    fps: float,
    duration_seconds: float,
    direction: int = 1,
    check: Callable[[int, int], None] = lambda done, total: None,
) -> RenderedClip:
    """Write the camera move over ``scene`` (about ``ZOOM`` times ``width x height``) to
    ``path`` as H.264 MP4; ``direction`` (+1 or -1) is which way it drifts. ``check(done,
    total)`` runs every few frames (progress; it raises to stop: a cancel, the deadline).

    Even sizes only (yuv420p halves the chroma planes): an odd side is one pixel less."""
    import av
    import cv2

    width, height = width - width % 2, height - height % 2
    total = frame_count(duration_seconds, fps)
    rate = rational_fps(fps)
    scene_h, scene_w = scene.shape[:2]
    poster_at = total // 2
    poster: Pixels | None = None
    out = np.empty((height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(INTERMEDIATE_CRF), "preset": INTERMEDIATE_PRESET}
        for index in range(total):
            if index % 8 == 0:
                check(index, total)
            t = _ease(index / (total - 1) if total > 1 else 0.5)
            cv2.warpAffine(
                scene,
                _window(t, scene_w, scene_h, width, height, direction),
                (width, height),
                dst=out,
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )
            if index == poster_at:
                poster = out.copy()
            frame = av.VideoFrame.from_ndarray(out, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert poster is not None
    return RenderedClip(path, width, height, float(rate), total, total / float(rate), poster)


def _ease(t: float) -> float:
    """Nearly constant speed, a little softer at the ends (at 85 % of the mean speed there,
    not at rest: a move that comes to rest would look frozen to video QC for a moment)."""
    return 0.85 * t + 0.15 * t * t * (3.0 - 2.0 * t)


def _window(
    t: float, scene_w: int, scene_h: int, width: int, height: int, direction: int
) -> np.ndarray:
    """The affine map from a frame's pixels to the scene's at time ``t`` (0..1): the window
    shrinks from the whole scene to ``1 / ZOOM`` of it and its centre drifts by ``PAN``."""
    fit = min(scene_w / width, scene_h / height)  # the whole scene, as the frame sees it
    scale = fit / (1.0 + (ZOOM - 1.0) * t)
    drift = direction * PAN * width * scale * (t - 0.5)
    cx = scene_w / 2.0 + drift
    cy = scene_h / 2.0
    ox = cx - scale * width / 2.0
    oy = cy - scale * height / 2.0
    return np.array([[scale, 0.0, ox], [0.0, scale, oy]], dtype=np.float64)


def scene_size(width: int, height: int) -> tuple[int, int]:
    """The size to render a clip's scene at: the frame, :data:`ZOOM` times larger (and a margin
    for the drift), rounded up."""
    grow = ZOOM * (1.0 + PAN)
    return math.ceil(width * grow), math.ceil(height * ZOOM)
