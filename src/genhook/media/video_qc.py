"""Video quality checks: length, frame rate, size, black and frozen frames, silent audio.

:func:`measure_video` decodes a clip once with PyAV (H.264 needs every frame decoded) but looks
closely only at a sample of them: about :data:`SAMPLE_FPS` frames a second, each shrunk to a
:data:`THUMB_WIDTH`-pixel-wide grey thumbnail by the decoder's own scaler. On those it measures

- the share of *black* frames: a sampled frame whose mean luma (0-255, full range) is under
  :data:`BLACK_LUMA`;
- the longest *frozen* span: consecutive samples whose mean absolute difference is under
  :data:`FROZEN_DIFF` grey levels (identical or near-identical pictures), in seconds from the
  first of them to the last;
- for a clip with an audio track, its peak level in dBFS (a track that is there but silent);
- its perceptual hash (:class:`~genhook.media.similarity.ClipHasher`, from the same decode),
  which the ``near_duplicate`` check compares with recent outputs' hashes.

:func:`evaluate_video` turns the measurements into failed checks like the image checks do
(:class:`~genhook.quality.FailedCheck`: measured, limit, comparison, shortfall): checks
``duration_seconds``, ``fps``, ``width``, ``height``, ``black_frames``, ``frozen_seconds``,
``audio_present`` (only where audio is required) and ``audio_level`` (only where a track is
present and silence is not allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from genhook.media.similarity import ClipHasher
from genhook.quality import FailedCheck, _above, _below

SAMPLE_FPS = 6.0
"""Frames a second looked at (the rest are decoded and dropped)."""
THUMB_WIDTH = 160
"""Width of the grey thumbnail each sampled frame is measured on."""
BLACK_LUMA = 16.0
"""A sampled frame darker than this mean luma (full range 0-255) counts as black."""
FROZEN_DIFF = 0.25
"""Consecutive samples closer than this mean absolute difference (grey levels) are frozen."""
SILENCE_DBFS = -60.0
"""An audio track whose peak stays below this level is silent."""
AudioPolicy = Literal["any", "require", "forbid_silent"]


@dataclass(frozen=True)
class VideoMeasurements:
    """What :func:`measure_video` found in one clip."""

    width: int
    height: int
    fps: float
    frames: int
    duration_seconds: float
    codec: str
    pix_fmt: str
    samples: int
    black_share: float
    frozen_seconds: float
    has_audio: bool
    audio_peak_dbfs: float | None
    """The audio track's peak level (None: no audio track; -inf: digital silence)."""
    phash: str | None = None
    """The clip's perceptual hash (:func:`genhook.media.similarity.video_phash`'s)."""


@dataclass(frozen=True)
class VideoThresholds:
    """What a clip must meet. ``duration_seconds``/``fps`` are what was asked (0: unchecked);
    the duration may be off by ``duration_tolerance`` of it, or one frame, whichever is more."""

    duration_seconds: float = 0.0
    fps: float = 0.0
    duration_tolerance: float = 0.05
    fps_tolerance: float = 0.01
    min_width: int = 0
    min_height: int = 0
    max_black_share: float = 0.1
    max_frozen_seconds: float = 1.0
    audio: AudioPolicy = "forbid_silent"


def measure_video(path: Path, sample_fps: float = SAMPLE_FPS) -> VideoMeasurements:
    """Decode ``path`` once and measure it (see the module docstring); a file PyAV cannot
    open or that has no video stream raises ``ValueError``."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise ValueError(f"not a readable video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        thumb_h = max(2, round(THUMB_WIDTH * height / max(1, width)))
        every = max(1, round(fps / sample_fps)) if fps else 1
        frames, first, last = 0, None, None
        lumas: list[float] = []
        times: list[float] = []
        previous: np.ndarray | None = None
        diffs: list[float] = []
        hasher = ClipHasher(fps)
        for frame in container.decode(stream):
            hasher.add(frame)
            t = float(frame.time) if frame.time is not None else frames / (fps or 1.0)
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
            if frames % every == 0:
                grey = frame.reformat(width=THUMB_WIDTH, height=thumb_h, format="gray")
                plane = grey.to_ndarray().astype(np.int16)
                lumas.append(float(plane.mean()))
                times.append(t)
                if previous is not None:
                    diffs.append(float(np.abs(plane - previous).mean()))
                previous = plane
            frames += 1
        pix_fmt = stream.codec_context.pix_fmt or ""
        codec = stream.codec_context.name
        has_audio = bool(container.streams.audio)
    duration = 0.0
    if first is not None and last is not None:
        duration = last - first + (1.0 / fps if fps else 0.0)
    return VideoMeasurements(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration_seconds=round(duration, 4),
        codec=codec,
        pix_fmt=pix_fmt,
        samples=len(lumas),
        black_share=round(sum(1 for v in lumas if v < BLACK_LUMA) / len(lumas), 4)
        if lumas
        else 1.0,
        frozen_seconds=round(_longest_frozen(times, diffs), 4),
        has_audio=has_audio,
        audio_peak_dbfs=audio_peak(path) if has_audio else None,
        phash=hasher.value(),
    )


def _longest_frozen(times: list[float], diffs: list[float]) -> float:
    """The longest span of consecutive samples that barely differ (``diffs[i]`` is between
    samples ``i`` and ``i + 1``), from the first sample of the run to its last."""
    longest, start = 0.0, None
    for i, diff in enumerate(diffs):
        if diff < FROZEN_DIFF:
            start = i if start is None else start
            longest = max(longest, times[i + 1] - times[start])
        else:
            start = None
    return longest


def audio_peak(path: Path) -> float:
    """The first audio track's peak level in dBFS (-inf for digital silence)."""
    import av

    peak = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if samples.size == 0:
                continue
            if np.issubdtype(samples.dtype, np.integer):
                scale = float(2 ** (8 * samples.dtype.itemsize - 1))
                value = float(np.abs(samples.astype(np.float64)).max()) / scale
            else:
                value = float(np.abs(samples).max())
            peak = max(peak, value)
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def _silent(peak_dbfs: float) -> FailedCheck | None:
    """``audio_level``: a track whose peak stays under :data:`SILENCE_DBFS` (its shortfall
    relative to the limit's distance from full scale; digital silence as -120 dBFS, a finite,
    JSON-safe figure)."""
    level = max(peak_dbfs, -120.0)
    if level >= SILENCE_DBFS:
        return None
    short = (SILENCE_DBFS - level) / abs(SILENCE_DBFS)
    return FailedCheck("audio_level", round(level, 2), SILENCE_DBFS, ">=", round(short, 4))


def evaluate_video(m: VideoMeasurements, t: VideoThresholds) -> list[FailedCheck]:
    """Every check ``m`` fails under ``t`` (empty: it passed)."""
    found: list[FailedCheck | None] = [
        _below("width", m.width, t.min_width),
        _below("height", m.height, t.min_height),
    ]
    if t.duration_seconds > 0:
        frame = 1.0 / t.fps if t.fps > 0 else 0.0
        slack = max(t.duration_seconds * t.duration_tolerance, frame)
        found.append(_below("duration_seconds", m.duration_seconds, t.duration_seconds - slack))
        found.append(_above("duration_seconds", m.duration_seconds, t.duration_seconds + slack))
    if t.fps > 0:
        slack = t.fps * t.fps_tolerance
        found.append(_below("fps", m.fps, round(t.fps - slack, 4)))
        found.append(_above("fps", m.fps, round(t.fps + slack, 4)))
    found.append(_above("black_frames", m.black_share, t.max_black_share))
    found.append(_above("frozen_seconds", m.frozen_seconds, t.max_frozen_seconds))
    if t.audio == "require":
        found.append(_below("audio_present", 1.0 if m.has_audio else 0.0, 1.0))
    if m.has_audio and t.audio != "any" and m.audio_peak_dbfs is not None:
        found.append(_silent(m.audio_peak_dbfs))
    return [f for f in found if f is not None]
