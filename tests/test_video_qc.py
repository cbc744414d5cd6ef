"""Video QC driven by real clips (made here with PyAV) that fail it: black, frozen, short, at the
wrong rate, silent; and the quality policy (retry, deliver with a warning, fail) applied to
clips as to images, through a workflow run."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from genhook.backends.base import (
    AssetKind,
    BackendRegistry,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
    VideoClip,
)
from genhook.engine import Engine
from genhook.media import Pixels
from genhook.media.video_qc import (
    VideoThresholds,
    evaluate_video,
    measure_video,
)
from genhook.presets import load_presets
from genhook.pricing import Pricing
from genhook.sinks import DirectorySink

W, H = 96, 64
Painter = Callable[[int], Pixels]


def moving(index: int) -> Pixels:
    """A textured scene sliding sideways: every frame differs from the last."""
    y, x = np.mgrid[0:H, 0:W]
    shift = 3 * index
    value = 128 + 90 * np.sin((x + shift) / 5.0) * np.cos(y / 7.0)
    base = np.clip(value, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.stack([base, np.roll(base, 7, 1), 255 - base], axis=-1))


def black(index: int) -> Pixels:
    return np.zeros((H, W, 3), dtype=np.uint8)


def frozen(index: int) -> Pixels:
    return moving(0)


def black_middle(index: int) -> Pixels:
    """Moving, with its middle third black (a fade to black mid-clip)."""
    return black(index) if 8 <= index < 16 else moving(index)


def make_clip(
    path: Path,
    paint: Painter,
    *,
    seconds: float = 1.0,
    fps: int = 24,
    audio: str | None = None,
) -> Path:
    """An H.264 MP4 of ``seconds`` at ``fps`` painted by ``paint``; ``audio``: None (no
    track), ``"silent"`` (all-zero AAC samples) or ``"tone"`` (a 440 Hz sine)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=48000)
            sound.layout = "mono"
        frames = round(seconds * fps)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(paint(index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if sound is not None:
            _write_audio(container, sound, seconds, audio == "tone")
    return path


def _write_audio(container: Any, sound: Any, seconds: float, tone: bool) -> None:
    rate, chunk = 48000, 1024
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        samples = 0.5 * np.sin(2 * math.pi * 440 * t) if tone else np.zeros(n, np.float32)
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1).astype(np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in sound.encode(frame):
            container.mux(packet)
    for packet in sound.encode(None):
        container.mux(packet)


def checks(path: Path, **limits: Any) -> dict[str, dict[str, Any]]:
    thresholds = VideoThresholds(**{"duration_seconds": 1.0, "fps": 24.0, **limits})
    return {f.check: f.to_dict() for f in evaluate_video(measure_video(path), thresholds)}


def test_a_moving_clip_of_the_asked_length_and_rate_passes(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "ok.mp4", moving)
    m = measure_video(path)
    assert (m.width, m.height, m.frames, m.codec, m.pix_fmt) == (W, H, 24, "h264", "yuv420p")
    assert m.fps == 24.0 and m.duration_seconds == pytest.approx(1.0)
    assert m.black_share == 0.0 and m.frozen_seconds == 0.0 and not m.has_audio
    assert m.samples < m.frames, "a sample of the frames is looked at, not each one"
    assert checks(path, min_width=W, min_height=H) == {}


def test_a_black_clip_fails_black_frames_and_frozen(tmp_path: Path) -> None:
    """1.5 s of black: every sample black, and the picture frozen from the first sample to
    the last (1.33 s of 1.5: samples every 1/6 s)."""
    failed = checks(make_clip(tmp_path / "black.mp4", black, seconds=1.5), duration_seconds=1.5)
    assert set(failed) == {"black_frames", "frozen_seconds"}
    assert failed["black_frames"]["measured"] == 1.0
    assert failed["black_frames"]["threshold"] == 0.1
    assert failed["black_frames"]["comparison"] == "<="
    assert failed["frozen_seconds"]["measured"] == pytest.approx(1.333, abs=0.01)


def test_black_frames_are_counted_as_a_share(tmp_path: Path) -> None:
    """A third of the clip black: measured about 1/3, over the 10 % limit; allowed at 50 %."""
    path = make_clip(tmp_path / "fade.mp4", black_middle)
    failed = checks(path, max_frozen_seconds=5)
    assert failed["black_frames"]["measured"] == pytest.approx(1 / 3, abs=0.1)
    assert "black_frames" not in checks(path, max_black_share=0.5, max_frozen_seconds=5)


def test_a_frozen_clip_fails_frozen_seconds_only(tmp_path: Path) -> None:
    """The same picture for 2 s: frozen for most of the clip (the encoder still refines the
    picture over its first frames), not black."""
    failed = checks(make_clip(tmp_path / "frozen.mp4", frozen, seconds=2), duration_seconds=2)
    assert set(failed) == {"frozen_seconds"}
    assert 1.2 <= failed["frozen_seconds"]["measured"] <= 2.0
    assert failed["frozen_seconds"]["threshold"] == 1.0
    assert not checks(
        make_clip(tmp_path / "frozen.mp4", frozen, seconds=2),
        duration_seconds=2,
        max_frozen_seconds=3,
    )


def test_a_short_clip_fails_duration_with_its_measured_length(tmp_path: Path) -> None:
    """Asked for 2 s, made 1 s: duration_seconds 1.0 against at least 1.9 (5 % tolerance)."""
    failed = checks(make_clip(tmp_path / "short.mp4", moving), duration_seconds=2.0)
    assert set(failed) == {"duration_seconds"}
    assert failed["duration_seconds"]["measured"] == pytest.approx(1.0)
    assert failed["duration_seconds"]["threshold"] == pytest.approx(1.9)
    assert failed["duration_seconds"]["comparison"] == ">="
    assert failed["duration_seconds"]["shortfall"] == pytest.approx(0.4737, abs=0.001)
    long = checks(make_clip(tmp_path / "long.mp4", moving, seconds=2.0), duration_seconds=1.0)
    assert long["duration_seconds"]["comparison"] == "<="


def test_a_clip_at_another_rate_or_smaller_fails_fps_and_size(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "30.mp4", moving, fps=30)
    failed = checks(path, min_width=2 * W, min_height=H)
    assert failed["fps"]["measured"] == 30.0 and failed["fps"]["comparison"] == "<="
    assert failed["width"]["measured"] == W and failed["width"]["threshold"] == 2 * W
    assert "height" not in failed and "duration_seconds" not in failed


def test_a_silent_audio_track_fails_and_a_tone_passes(tmp_path: Path) -> None:
    silent = make_clip(tmp_path / "silent.mp4", moving, audio="silent")
    m = measure_video(silent)
    assert m.has_audio and m.audio_peak_dbfs is not None and m.audio_peak_dbfs < -60
    failed = checks(silent)
    assert set(failed) == {"audio_level"}
    assert failed["audio_level"]["threshold"] == -60.0
    assert failed["audio_level"]["measured"] <= -60.0 and failed["audio_level"]["shortfall"] > 0
    assert checks(silent, audio="any") == {}
    tone = make_clip(tmp_path / "tone.mp4", moving, audio="tone")
    assert measure_video(tone).audio_peak_dbfs == pytest.approx(-6.0, abs=1.5)
    assert checks(tone) == {}
    assert checks(make_clip(tmp_path / "none.mp4", moving), audio="require") == {
        "audio_present": {
            "check": "audio_present",
            "measured": 0.0,
            "threshold": 1.0,
            "comparison": ">=",
            "shortfall": 1.0,
        }
    }


def test_a_file_that_is_no_video_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="not a readable video"):
        measure_video(junk)


# -- the policy, through a workflow run ------------------------------------------------------

TEMPLATE = textwrap.dedent(
    """\
    id: video-qc-test
    input:
      required: [name]
      properties:
        name: {{type: string}}
    nodes:
      clip:
        kind: generate
        with:
          kind: video
          backend: clips
          model: m1
          prompt: "a clip of ${{input.name}}"
          duration_seconds: 1
          fps: 24
          aspect_classes: single
          width: {w}
          height: {h}
      qc:
        kind: quality_check
        with:
          result: ${{clip.renders}}
          min_contrast: 0
          min_sharpness: 0
          min_brightness: 0
          max_retries: {retries}
          on_fail: {on_fail}
    outputs:
      assets: []
    """
)
CLIPS_PRICING = Pricing.from_mapping(
    {"clips": {"*": {"per_video_second": 2.0}}}, "the test video engine's pricing"
)


@dataclass
class ClipsBackend:
    """A remote video engine's answers, faked: the n-th call returns the n-th clip file (the
    last repeats), as a hosted engine's output downloaded into the attempt's folder would be.
    It reports the clip it returns as what it is (size, rate, frames) and its middle frame as
    the poster, as a backend built on the engine's file does."""

    clips: list[Path]
    name: str = "clips"
    kinds: frozenset[AssetKind] = frozenset({"video"})
    requests: list[GenerationRequest] = field(default_factory=list)

    def status(self) -> BackendStatus:
        return BackendStatus(True, "test video engine")

    def probe(self, timeout: float) -> BackendStatus:
        return self.status()

    def estimate_cost(self, request: GenerationRequest) -> float:
        return 0.0

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        self.requests.append(request)
        path = self.clips[min(len(self.requests), len(self.clips)) - 1]
        m = measure_video(path)
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        clip = VideoClip(path, m.width, m.height, m.fps, m.duration_seconds, m.frames)
        poster = np.ascontiguousarray(frames[len(frames) // 2])
        return GenerationResult(poster, request, f"clips/{request.model}", 0.0, video=clip)


def run_policy(
    tmp_path: Path, clips: list[Path], *, retries: int = 1, on_fail: str = "deliver_with_warning"
) -> tuple[Engine, dict[str, Any], ClipsBackend]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    text = TEMPLATE.format(w=W, h=H, retries=retries, on_fail=on_fail)
    (flows / "qc.yaml").write_text(text, encoding="utf-8")
    backend = ClipsBackend(clips)
    backends = BackendRegistry()
    backends.register(backend)
    engine = Engine.load(flows, presets=load_presets(), backends=backends, pricing=CLIPS_PRICING)
    outcome = engine.execute(
        engine.workflow("video-qc-test"), {"name": "Mug"}, DirectorySink(tmp_path / "out")
    )
    return engine, outcome.payload.to_json(), backend


def test_a_black_clip_is_generated_again_and_the_good_one_delivered(tmp_path: Path) -> None:
    bad = make_clip(tmp_path / "black.mp4", black)
    good = make_clip(tmp_path / "good.mp4", moving)
    _, payload, backend = run_policy(tmp_path, [bad, good])
    assert payload["status"] == "success" and payload["quality_warning"] is None
    assert len(backend.requests) == 2
    first, second = backend.requests
    assert first.seed != second.seed and second.kind == "video"
    assert (second.duration_seconds, second.fps) == (1.0, 24.0)
    assert payload["metadata"]["generations"] == 2
    assert payload["metadata"]["credit_cost"] == pytest.approx(4.0)  # 2 x 1 s at 2 credits/s


def test_a_frozen_clip_that_stays_frozen_is_delivered_with_a_warning(tmp_path: Path) -> None:
    still = make_clip(tmp_path / "frozen.mp4", frozen, seconds=2.5)
    _, payload, backend = run_policy(tmp_path, [still])
    assert payload["status"] == "success"
    assert len(backend.requests) == 2  # the first, and one retry
    warning = payload["quality_warning"]
    by_check = {c["check"]: c for c in warning["failed_checks"]}
    assert set(by_check) == {"frozen_seconds", "duration_seconds"}  # 2.5 s made, 1 s asked
    assert by_check["frozen_seconds"]["node"] == "qc.image"  # the frameless clip of node qc
    assert by_check["frozen_seconds"]["measured"] > 1.0
    assert by_check["frozen_seconds"]["threshold"] == 1.0
    assert by_check["duration_seconds"]["measured"] == pytest.approx(2.5)
    assert "frozen_seconds" in warning["message"]


def test_a_short_clip_fails_the_job_when_the_policy_says_fail(tmp_path: Path) -> None:
    short = make_clip(tmp_path / "short.mp4", moving, seconds=0.5)
    _, payload, backend = run_policy(tmp_path, [short], retries=0, on_fail="fail")
    assert payload["status"] == "failed" and len(backend.requests) == 1
    error = payload["error"]
    assert error["error_code"] == "quality_check_failed"
    assert "duration_seconds 0.5" in error["error_description"]


def test_a_backend_that_makes_no_video_is_refused_for_a_clip(tmp_path: Path) -> None:
    """A video node on an image-only engine fails before it is called, with why."""
    flows = tmp_path / "flows"
    flows.mkdir()
    text = TEMPLATE.format(w=W, h=H, retries=0, on_fail="fail").replace(
        "backend: clips", "backend: procedural"
    )
    (flows / "qc.yaml").write_text(text, encoding="utf-8")
    from genhook.backends.procedural import ProceduralBackend

    only_images = ProceduralBackend()
    only_images.kinds = frozenset({"image"})
    backends = BackendRegistry()
    backends.register(only_images)
    engine = Engine.load(flows, presets=load_presets(), backends=backends)
    outcome = engine.execute(
        engine.workflow("video-qc-test"), {"name": "Mug"}, DirectorySink(tmp_path / "out")
    )
    error = outcome.payload.to_json()["error"]
    assert error["error_code"] == "backend_not_configured"
    assert "makes no video" in error["error_description"]
