"""export_video on real clips made here with PyAV: every output decoded and checked."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from genhook.errors import ErrorCode, GenhookError
from genhook.media.video_export import (
    EncodedVideo,
    Geometry,
    VideoTarget,
    export_video,
    fit_geometry,
)

W, H, FPS, SECONDS = 320, 240, 24, 2
MAGENTA = (255, 0, 255)


def marked_frame(index: int) -> npt.NDArray[np.uint8]:
    """Bands red | green | blue across (x < 80, 80-239, >= 240), white top 24 rows, black bottom
    24 rows, and a small moving square so that the encoder sees motion."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :80] = (255, 0, 0)
    img[:, 80:240] = (0, 255, 0)
    img[:, 240:] = (0, 0, 255)
    img[:24] = 255
    img[-24:] = 0
    x = 90 + 2 * index
    img[100:120, x : x + 20] = (255, 255, 0)
    return img


def make_clip(
    path: Path, *, audio: str | None = "aac", fps: int = FPS, seconds: float = SECONDS
) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "crf": "12"}
        sound = out.add_stream(audio, rate=48000) if audio else None
        if sound is not None:
            sound.codec_context.layout = "stereo"
        for i in range(int(fps * seconds)):
            frame = av.VideoFrame.from_ndarray(marked_frame(i), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            rate, size, t = 48000, 960, 0
            while t < seconds * rate:
                tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(t, t + size) / rate)
                samples = np.stack([tone, tone]).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, t
                out.mux(sound.encode(frame))
                t += size
            out.mux(sound.encode(None))


TARGETS = [
    VideoTarget("tall", 180, 320, "crop", 23, "#000000", "jpeg"),
    VideoTarget("square", 240, 240, "pad", 23, "#ff00ff", "jpeg"),
    VideoTarget("wide", 320, 180, "crop", 23, "#000000", "jpeg"),
]


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order (ISO/IEC 14496-12 box headers)."""
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def decode_rgb(path: Path, index: int) -> npt.NDArray[np.uint8]:
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path.name} has no frame {index}")


def check_video(encoded: EncodedVideo, target: VideoTarget, *, audio: bool) -> None:
    assert (encoded.code, encoded.width, encoded.height) == (
        target.code,
        target.width,
        target.height,
    )
    assert encoded.path.stat().st_size == encoded.bytes > 0
    boxes = top_level_boxes(encoded.path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart
    with av.open(str(encoded.path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (target.width, target.height)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == Fraction(FPS)
        assert c.duration is not None
        assert abs(c.duration / av.time_base - SECONDS) <= 1 / FPS
        if audio:
            assert len(c.streams.audio) == 1
            sound = c.streams.audio[0]
            assert sound.codec_context.name == "aac"
            assert sound.duration is not None and sound.time_base is not None
            assert abs(float(sound.duration * sound.time_base) - SECONDS) < 0.1
        else:
            assert not c.streams.audio
        frames = sum(1 for _ in c.decode(stream))
    assert frames == encoded.frames == FPS * SECONDS
    assert encoded.fps == FPS
    assert abs(encoded.duration_seconds - SECONDS) <= 1 / FPS
    with Image.open(encoded.poster_path) as poster:
        assert poster.format == "JPEG"
        assert poster.size == (target.width, target.height)
        poster.load()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    make_clip(path)
    return path


@pytest.fixture(scope="module")
def exported(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> list[EncodedVideo]:
    out = tmp_path_factory.mktemp("out")
    return export_video(clip, TARGETS, out, stem_for=lambda t: f"job-{t.code}")


def test_every_target_decodes_to_its_preset(exported: list[EncodedVideo]) -> None:
    assert [e.code for e in exported] == [t.code for t in TARGETS]
    for encoded, target in zip(exported, TARGETS, strict=True):
        assert encoded.path.name == f"job-{target.code}.mp4"
        assert encoded.poster_path.name == f"job-{target.code}.jpg"
        check_video(encoded, target, audio=True)
    out_dir = exported[0].path.parent
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        name for e in exported for name in (e.path.name, e.poster_path.name)
    )  # no temporary files left


def close(pixel: npt.NDArray[np.uint8], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - colour) <= tol))


def test_crop_keeps_the_centre(exported: list[EncodedVideo]) -> None:
    tall, _, wide = exported
    # 9:16 from 4:3: the middle 136 columns (92-227), all inside the green band
    frame = decode_rgb(tall.path, 0)
    mid = frame[200]
    assert close(mid[5], (0, 255, 0)) and close(mid[-5], (0, 255, 0))
    assert close(frame[5, 90], (255, 255, 255))  # full height kept: the white top band
    # 16:9 from 4:3: rows 30-209 kept, so no white top band and no black bottom band
    frame = decode_rgb(wide.path, 0)
    assert close(frame[3, 160], (0, 255, 0)) and close(frame[-3, 160], (0, 255, 0))
    assert close(frame[90, 20], (255, 0, 0)) and close(frame[90, -20], (0, 0, 255))


def test_pad_letterboxes_on_the_background(exported: list[EncodedVideo]) -> None:
    square = exported[1]
    frame = decode_rgb(square.path, 0)
    # 4:3 into 240x240: scaled to 240x180 at y 30; magenta bars above and below
    assert close(frame[10, 120], MAGENTA) and close(frame[-10, 120], MAGENTA)
    assert close(frame[35, 120], (255, 255, 255))  # the source's top band, just under the bar
    assert close(frame[120, 20], (255, 0, 0)) and close(frame[120, 120], (0, 255, 0))
    assert close(frame[120, 220], (0, 0, 255))
    with Image.open(square.poster_path) as poster:
        pixels = np.asarray(poster.convert("RGB"))
    assert close(pixels[10, 120], MAGENTA) and close(pixels[120, 20], (255, 0, 0))


def test_geometry_is_even_and_centred() -> None:
    assert fit_geometry(320, 240, TARGETS[0]) == Geometry((136, 240, 92, 0), (180, 320), None)
    assert fit_geometry(320, 240, TARGETS[1]) == Geometry(None, (240, 180), (0, 30))
    assert fit_geometry(1920, 1080, VideoTarget("p", 1080, 1350, "pad", 23, "#fff", "jpeg")) == (
        Geometry(None, (1080, 608), (0, 370))
    )


def test_non_aac_audio_is_transcoded_and_silent_sources_stay_silent(tmp_path: Path) -> None:
    opus = tmp_path / "opus.mkv"
    make_clip(opus, audio="libopus")
    mute = tmp_path / "mute.mp4"
    make_clip(mute, audio=None)
    target = TARGETS[2]
    (with_sound,) = export_video(opus, [target], tmp_path / "a", stem_for=lambda t: "v")
    check_video(with_sound, target, audio=True)
    (silent,) = export_video(mute, [target], tmp_path / "b", stem_for=lambda t: "v")
    check_video(silent, target, audio=False)


def test_undecodable_source_is_export_failed_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    out = tmp_path / "out"
    with pytest.raises(GenhookError) as caught:
        export_video(bad, TARGETS, out, stem_for=lambda t: t.code)
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    assert "bad.mp4" in caught.value.description
    assert list(out.iterdir()) == []


def test_audio_only_source_is_export_failed(tmp_path: Path) -> None:
    song = tmp_path / "song.m4a"
    with av.open(str(song), "w") as out:
        sound = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    with pytest.raises(GenhookError) as caught:
        export_video(song, TARGETS, tmp_path / "out", stem_for=lambda t: t.code)
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    assert "no video stream" in caught.value.description


def test_encode_failure_mid_export_removes_every_file(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    with pytest.raises(GenhookError) as caught:
        export_video(clip, TARGETS, out, stem_for=lambda t: t.code, x264_preset="no-such-preset")
    assert caught.value.code is ErrorCode.EXPORT_FAILED
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_targets_are_export_failed(clip: Path, tmp_path: Path) -> None:
    odd = VideoTarget("odd", 181, 320, "crop", 23, "#000000", "jpeg")
    with pytest.raises(GenhookError, match="odd: 181x320 is not an even size"):
        export_video(clip, [odd], tmp_path, stem_for=lambda t: t.code)
    assert list(tmp_path.iterdir()) == []


def test_poster_is_the_frame_at_one_second(exported: list[EncodedVideo]) -> None:
    wide = exported[2]  # 320x180 cut from rows 30-209: one source pixel per output pixel
    with Image.open(wide.poster_path) as poster:
        pixels = np.asarray(poster.convert("RGB"))
    # the yellow square is at x 90 + 2 * frame: 138-157 at frame 24 (1 s), 90-109 at frame 0
    assert close(pixels[80, 148], (255, 255, 0))
    assert close(pixels[80, 100], (0, 255, 0))


def test_adts_aac_in_mpeg_ts_is_reencoded(tmp_path: Path) -> None:
    ts = tmp_path / "clip.ts"
    make_clip(ts, audio="aac")
    target = TARGETS[0]
    (encoded,) = export_video(ts, [target], tmp_path / "out", stem_for=lambda t: "v")
    check_video(encoded, target, audio=True)
    with av.open(str(encoded.path)) as c:
        assert sum(1 for _ in c.decode(audio=0)) > 0
