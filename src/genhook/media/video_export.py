"""Platform video export: one source clip to several H.264 MP4 presets, decoded once.

:func:`export_video` demuxes and decodes the source once (any file PyAV can read) and streams
every decoded frame to one encoder per :class:`VideoTarget`; no more than a few frames per target
are held at any time, whatever the clip's length. Each target gets, in its own thread:

* the fit, in libavfilter (C, outside the GIL): ``crop`` -- centre crop to the target's aspect,
  then scale; ``pad`` -- scale to fit inside the box, then centre on ``background``
  (letterbox or pillarbox); scaling is swscale's bicubic, the same as ``ffmpeg -vf scale``;
* libx264, ``yuv420p``, the target's CRF, a keyframe every :data:`GOP_SECONDS` seconds, the
  source's frame rate kept (constant frame rate, frames numbered from the first);
* MP4 with ``movflags=+faststart`` (the ``moov`` box before ``mdat``, so a player can start
  before the whole file has arrived);
* the audio, if the source has any: AAC packets copied as they are, any other codec decoded
  once and encoded to AAC per target;
* a poster: the frame at :data:`POSTER_SECONDS` (or the middle of a shorter clip), as JPEG;
* the source's perceptual hash (:class:`~genhook.media.similarity.ClipHasher`, fed by this same
  decode: 32 ms of CPU for a 4 s 1080x1920 clip, where decoding it a second time would cost
  0.4 s), the same on every target of one source, and the same as video QC's of that clip.

Each file is written under a temporary name beside its final one and renamed when complete; on any
failure every file this call made is removed and :class:`~genhook.errors.GenhookError` with
``EXPORT_FAILED`` is raised, with a message naming the source or the target.

The x264 preset: :data:`DEFAULT_X264_PRESET` (``veryfast``), chosen by measurement
(``bench/video_export.py``, ``docs/benchmarks.md``): on two cores the encoders are nearly all of the
cost. One 5 s 1080p clip to the four platform presets at CRF 23 took 14.4 s of CPU and 7.3 MiB
at veryfast; ``faster`` 21.2 s (1.5x) for 6.9 MiB, ``medium`` 40.2 s (2.8x) for 6.8 MiB: 6% smaller
files for three times the encode; ``ultrafast`` 6.3 s but 13.5 MiB (1.9x the bytes, no B-frames,
no mb-tree), ``superfast`` 15.7 s and 56.6 MiB on that grainy clip. Scaling is not the cost:
libavfilter's crop + bicubic scale to 1080x1920 took 1.3 ms of CPU a frame, against 4.9 ms for
numpy slicing + ``cv2.resize`` on the planes (copies in and out of PyAV included).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.filter import Graph
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from genhook.errors import ErrorCode, GenhookError
from genhook.media.similarity import ClipHasher

__all__ = [
    "DEFAULT_X264_PRESET",
    "GOP_SECONDS",
    "POSTER_SECONDS",
    "EncodedVideo",
    "VideoTarget",
    "export_video",
    "fit_geometry",
]

DEFAULT_X264_PRESET = "veryfast"
"""The libx264 preset :func:`export_video` uses unless told otherwise (see the module docstring)."""
GOP_SECONDS = 2.0
"""Largest distance between keyframes, in seconds (platforms ask for 2-4 s; seeking stays quick)."""
POSTER_SECONDS = 1.0
"""When the poster frame is taken; a clip shorter than twice this gives its middle frame."""
POSTER_QUALITY = 88
"""JPEG quality of the posters."""
QUEUE_FRAMES = 4
"""Frames waiting per target at most: bounds memory, lets the decoder run a little ahead."""
X264_THREADS = 0
"""``threads`` for each libx264 encoder; 0: the cores shared out among the targets, at least one
each (on 2 cores, four targets get one thread each, one target gets two). Measured on 2 cores with
the four presets: one thread each used 2-4% less CPU than x264's own choice (3 per encoder, 12 in
all) and gave 1% smaller files, the wall time no worse."""

Fit = Literal["crop", "pad"]


@dataclass(frozen=True)
class VideoTarget:
    """One platform video preset: the exact output size, how to fit the source, the quality."""

    code: str
    width: int
    height: int
    fit: Fit
    crf: int
    background: str
    """``#rrggbb``, for the bars of ``fit: pad``."""
    poster_format: str = "jpeg"


@dataclass(frozen=True)
class EncodedVideo:
    """One encoded target, as written."""

    code: str
    path: Path
    poster_path: Path
    width: int
    height: int
    fps: float
    duration_seconds: float
    frames: int
    bytes: int
    phash: str | None = None
    """The source clip's perceptual hash (every target of one source carries the same)."""


@dataclass(frozen=True)
class Geometry:
    """How a source frame becomes a target frame: an optional crop, a scale, an optional pad."""

    crop: tuple[int, int, int, int] | None
    """``(width, height, x, y)`` of the part of the source kept (``fit: crop``)."""
    scaled: tuple[int, int]
    """The size the (cropped) picture is scaled to."""
    pad: tuple[int, int] | None
    """``(x, y)`` of the scaled picture on the target canvas (``fit: pad``)."""


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def fit_geometry(src_width: int, src_height: int, target: VideoTarget) -> Geometry:
    """The crop/scale/pad that fits a ``src_width`` x ``src_height`` frame to ``target``.

    Every size and offset is even (4:2:0 chroma); a crop or pad is centred to within one pixel.
    """
    width, height = target.width, target.height
    if target.fit == "crop":
        if src_width * height > width * src_height:  # source wider: cut the sides
            crop_w, crop_h = min(src_width, _even(src_height * width / height)), src_height
        else:  # source taller (or the same aspect): cut top and bottom
            crop_w, crop_h = src_width, min(src_height, _even(src_width * height / width))
        x = ((src_width - crop_w) // 2) & ~1
        y = ((src_height - crop_h) // 2) & ~1
        return Geometry((crop_w, crop_h, x, y), (width, height), None)
    if src_width * height > width * src_height:  # source wider: bars top and bottom
        scaled = (width, min(height, _even(width * src_height / src_width)))
    else:
        scaled = (min(width, _even(height * src_width / src_height)), height)
    pad = (((width - scaled[0]) // 2) & ~1, ((height - scaled[1]) // 2) & ~1)
    return Geometry(None, scaled, pad)


def _filter_chain(geometry: Geometry, target: VideoTarget) -> list[tuple[str, str]]:
    chain: list[tuple[str, str]] = []
    if geometry.crop is not None:
        chain.append(("crop", "{}:{}:{}:{}".format(*geometry.crop)))
    chain.append(("scale", f"{geometry.scaled[0]}:{geometry.scaled[1]}:flags=bicubic"))
    if geometry.pad is not None:
        colour = "0x" + target.background.lstrip("#")
        x, y = geometry.pad
        chain.append(("pad", f"{target.width}:{target.height}:{x}:{y}:color={colour}"))
    chain.append(("setsar", "1"))
    chain.append(("format", "yuv420p"))
    return chain


class _Failure(Exception):
    """Internal: a failure already phrased for the caller."""


@dataclass
class _Source:
    container: InputContainer
    video: VideoStream
    audio: AudioStream | None
    fps: Fraction
    width: int
    height: int
    poster_index: int
    copy_audio: bool


def _open_source(source: Path) -> _Source:
    try:
        container = av.open(str(source), "r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise _Failure(f"the source {source.name} cannot be read as video: {reason}") from exc
    try:
        if not container.streams.video:
            raise _Failure(f"the source {source.name} has no video stream")
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        rate = video.average_rate or video.guessed_rate or video.base_rate
        if not rate or rate <= 0 or not video.width or not video.height:
            raise _Failure(f"the source {source.name} has no frame rate or no frame size")
        fps = Fraction(rate).limit_denominator(1001)
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = None
        if video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        poster_at = POSTER_SECONDS
        if duration is not None and duration < 2 * POSTER_SECONDS:
            poster_at = duration / 2
        # AAC is copied as it is only with its AudioSpecificConfig in extradata (MP4, MOV,
        # Matroska); ADTS AAC (MPEG-TS, .aac) has none and is re-encoded instead.
        copy_audio = (
            audio is not None
            and audio.codec_context.name == "aac"
            and bool(audio.codec_context.extradata)
        )
        return _Source(
            container,
            video,
            audio,
            fps,
            video.width,
            video.height,
            int(poster_at * fps),
            copy_audio,
        )
    except BaseException:
        container.close()
        raise


_END = object()


def _own_copy(frame: AudioFrame) -> AudioFrame:
    """A private copy of a decoded audio frame: encoding rebases a frame's time in place, and
    every target's thread gets the same decoded frame."""
    copy = AudioFrame.from_ndarray(
        frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
    )
    copy.sample_rate = frame.sample_rate
    copy.pts = frame.pts
    copy.time_base = frame.time_base
    return copy


class _TargetEncoder:
    """One target's filter graph, encoders and muxer, fed through a bounded queue by its thread."""

    def __init__(
        self,
        src: _Source,
        target: VideoTarget,
        path: Path,
        poster_path: Path,
        x264_preset: str,
        threads: int,
    ) -> None:
        self.src = src
        self.threads = threads
        self.target = target
        self.path = path
        self.poster_path = poster_path
        self.tmp_path = path.with_name(f".{path.name}.part")
        self.tmp_poster = poster_path.with_name(f".{poster_path.name}.part")
        self.x264_preset = x264_preset
        self.queue: queue.Queue[object] = queue.Queue(QUEUE_FRAMES)
        self.error: BaseException | None = None
        self.frames = 0
        self.last: VideoFrame | None = None
        self.poster_taken = False
        self.thread = threading.Thread(
            target=self._run, name=f"video-export-{target.code}", daemon=True
        )

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._encode()
        except BaseException as exc:  # reported by the caller's thread
            self.error = exc
            while self.queue.get() is not _END:  # drain, so the decoder never blocks on us
                pass

    def _items(self) -> Iterator[object]:
        while (item := self.queue.get()) is not _END:
            yield item

    def _encode(self) -> None:
        src, target = self.src, self.target
        graph: Graph | None = None

        with av.open(
            str(self.tmp_path), "w", format="mp4", options={"movflags": "+faststart"}
        ) as out:
            vstream = out.add_stream("libx264", rate=src.fps)
            vstream.width, vstream.height, vstream.pix_fmt = target.width, target.height, "yuv420p"
            ctx = vstream.codec_context
            ctx.time_base = 1 / src.fps
            ctx.gop_size = max(1, round(GOP_SECONDS * src.fps))
            ctx.options = {
                "crf": str(target.crf),
                "preset": self.x264_preset,
                "threads": str(self.threads),
            }
            astream = None
            if src.audio is not None:
                if src.copy_audio:
                    astream = out.add_stream_from_template(src.audio)
                else:
                    astream = out.add_stream("aac", rate=src.audio.codec_context.sample_rate)
                    astream.codec_context.layout = src.audio.codec_context.layout

            for item in self._items():
                if isinstance(item, VideoFrame):
                    if graph is None:
                        graph = self._graph(item)
                    graph.vpush(item)
                    self._drain(graph, vstream, out)
                elif isinstance(item, Packet):
                    assert astream is not None
                    item.stream = astream
                    out.mux(item)
                elif isinstance(item, AudioFrame):
                    assert astream is not None
                    out.mux(astream.encode(_own_copy(item)))
            if graph is not None:
                graph.vpush(None)
                self._drain(graph, vstream, out)
            if self.last is not None and not self.poster_taken:  # shorter than announced
                self._poster(self.last)
            self.last = None
            out.mux(vstream.encode(None))
            if astream is not None and not src.copy_audio:
                out.mux(astream.encode(None))
        if self.frames == 0:
            raise _Failure(f"the source {src.container.name} has no decodable video frames")

    def _graph(self, first: VideoFrame) -> Graph:
        """The target's filter graph, for frames like the source's first one."""
        graph = Graph()
        graph.threads = 1
        buffer = graph.add_buffer(
            width=first.width,
            height=first.height,
            format=first.format,
            time_base=first.time_base or self.src.video.time_base or Fraction(1, 1000),
        )
        nodes = [buffer]
        geometry = fit_geometry(first.width, first.height, self.target)
        for name, args in _filter_chain(geometry, self.target):
            nodes.append(graph.add(name, args))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        return graph

    def _drain(self, graph: Graph, vstream: av.VideoStream, out: OutputContainer) -> None:
        while True:
            try:
                frame = graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            frame.pts = self.frames
            frame.time_base = 1 / self.src.fps
            if self.frames == self.src.poster_index:
                self._poster(frame)
            self.last = frame
            self.frames += 1
            out.mux(vstream.encode(frame))

    def _poster(self, frame: VideoFrame) -> None:
        if self.target.poster_format.lower() not in {"jpeg", "jpg"}:
            raise _Failure(f"poster format {self.target.poster_format!r} is not supported")
        Image.fromarray(frame.to_ndarray(format="rgb24")).save(
            self.tmp_poster, "JPEG", quality=POSTER_QUALITY, optimize=True, subsampling=2
        )
        self.poster_taken = True

    # --- the caller's side --------------------------------------------------------------------

    def put(self, item: object) -> None:
        self.queue.put(item)

    def finish(self) -> EncodedVideo:
        """After the thread has ended: the files renamed to their final names, the record."""
        if self.error is not None:
            raise self.error
        if not self.tmp_poster.exists():
            raise _Failure("no poster frame")  # pragma: no cover - the poster is always taken
        os.replace(self.tmp_path, self.path)
        os.replace(self.tmp_poster, self.poster_path)
        fps = float(self.src.fps)
        return EncodedVideo(
            code=self.target.code,
            path=self.path,
            poster_path=self.poster_path,
            width=self.target.width,
            height=self.target.height,
            fps=fps,
            duration_seconds=self.frames / fps,
            frames=self.frames,
            bytes=self.path.stat().st_size,
        )

    def remove_files(self) -> None:
        for path in (self.tmp_path, self.tmp_poster, self.path, self.poster_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _check_targets(targets: Sequence[VideoTarget]) -> None:
    for target in targets:
        if target.width < 2 or target.height < 2 or target.width % 2 or target.height % 2:
            raise _Failure(
                f"target {target.code}: {target.width}x{target.height} is not an even size"
            )
        if target.fit not in ("crop", "pad"):
            raise _Failure(f"target {target.code}: fit {target.fit!r} is not crop or pad")
        if not 0 <= target.crf <= 51:
            raise _Failure(f"target {target.code}: crf {target.crf} is not within 0-51")


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _feed(src: _Source, encoders: list[_TargetEncoder], hasher: ClipHasher) -> None:
    """Demux and decode the source once, handing every frame (or audio packet) to each encoder
    and every video frame to ``hasher``."""
    streams: list[av.stream.Stream] = [src.video]
    if src.audio is not None:
        streams.append(src.audio)
    for packet in src.container.demux(*streams):
        if any(e.error is not None for e in encoders):
            return
        if packet.stream is src.video:
            for frame in packet.decode():
                if isinstance(frame, VideoFrame):
                    hasher.add(frame)
                for encoder in encoders:
                    encoder.put(frame)
        elif packet.dts is not None:  # audio; a flush packet has no dts
            if src.copy_audio:
                for encoder in encoders:
                    encoder.put(packet)
            else:
                for frame in packet.decode():
                    for encoder in encoders:
                        encoder.put(frame)


def export_video(
    source: Path,
    targets: Sequence[VideoTarget],
    out_dir: Path,
    *,
    stem_for: Callable[[VideoTarget], str],
    x264_preset: str = DEFAULT_X264_PRESET,
) -> list[EncodedVideo]:
    """Encode ``source`` once per target into ``out_dir``: ``<stem>.mp4`` and ``<stem>.jpg``.

    Returns one :class:`EncodedVideo` per target, in order. Raises
    :class:`~genhook.errors.GenhookError` (``EXPORT_FAILED``) when the source does not decode or
    an encode fails, and then leaves none of this call's files behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    encoders: list[_TargetEncoder] = []
    src: _Source | None = None
    try:
        _check_targets(targets)
        src = _open_source(source)
        threads = X264_THREADS or max(1, -(-_cores() // max(1, len(targets))))
        for target in targets:
            stem = stem_for(target)
            mp4, jpg = out_dir / f"{stem}.mp4", out_dir / f"{stem}.jpg"
            encoders.append(_TargetEncoder(src, target, mp4, jpg, x264_preset, threads))
        for encoder in encoders:
            encoder.thread.start()
        hasher = ClipHasher(float(src.fps))
        try:
            _feed(src, encoders, hasher)
        finally:
            for encoder in encoders:
                if encoder.thread.is_alive():
                    encoder.put(_END)
            for encoder in encoders:
                encoder.thread.join()
        made = hasher.value()
        return [replace(encoder.finish(), phash=made) for encoder in encoders]
    except BaseException as exc:
        for encoder in encoders:
            encoder.remove_files()
        if isinstance(exc, GenhookError):
            raise
        if isinstance(exc, _Failure):
            raise GenhookError(ErrorCode.EXPORT_FAILED, str(exc)) from exc
        if isinstance(exc, (av.error.FFmpegError, OSError, ValueError, TypeError)):
            raise GenhookError(
                ErrorCode.EXPORT_FAILED, f"video export of {source.name} failed: {exc}"
            ) from exc
        raise
    finally:
        if src is not None:
            src.container.close()
