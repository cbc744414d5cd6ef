"""The ``replicate`` backend against a faithful fake of Replicate's predictions API over HTTP."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from genhook.backends.base import (
    BackendRegistry,
    Control,
    GenerationRequest,
    InputMedia,
    Progress,
)
from genhook.backends.replicate import ReplicateBackend
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from tests.conftest import SAMPLES, CliResult
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate

ENV = (
    "GENHOOK_REPLICATE_BASE_URL",
    "GENHOOK_REPLICATE_API_TOKEN",
    "REPLICATE_API_TOKEN",
    "GENHOOK_REPLICATE_TIMEOUT",
    "GENHOOK_REPLICATE_MODEL",
    "GENHOOK_PRICING_FILE",
)
Make = Callable[..., ReplicateBackend]


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "prompt": "Handmade ceramic mug on a wooden table",
        "negative_prompt": "blurry",
        "width": 1080,
        "height": 1350,
        "seed": 7,
        "model": "black-forest-labs/flux-schnell",
        "backend": "replicate",
    }
    return GenerationRequest(**{**base, **changes})


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with FakeReplicate() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def make(fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    made: list[ReplicateBackend] = []

    def build(**env: str | None) -> ReplicateBackend:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        values = {
            "GENHOOK_REPLICATE_BASE_URL": fake.base_url,
            "GENHOOK_REPLICATE_API_TOKEN": FAKE_TOKEN,
            **env,
        }
        for name, value in values.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        backend = ReplicateBackend.from_settings(Settings.from_env())
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def failure(
    backend: ReplicateBackend, req: GenerationRequest | None = None, **kw: Any
) -> GenhookError:
    with pytest.raises(GenhookError) as info:
        backend.generate(req or request(), Control(**kw))
    return info.value


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_an_image_through_a_flux_model(fake: FakeReplicate, make: Make) -> None:
    """POST /v1/models/{owner}/{name}/predictions with Bearer, Prefer: wait=N and the FLUX
    input (aspect_ratio, output_format, no negative_prompt); the output PNG decoded."""
    result = make().generate(request(), Control())
    [created] = fake.recorded("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")
    assert created.headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert created.headers["prefer"].startswith("wait=")
    assert created.json == {
        "input": {
            "prompt": "Handmade ceramic mug on a wooden table",
            "seed": 7,
            "aspect_ratio": "4:5",
            "output_format": "png",
            "num_outputs": 1,
        }
    }
    assert result.pixels.ndim == 3 and result.pixels.shape[2] == 3
    assert abs(result.pixels.shape[1] / result.pixels.shape[0] - 0.8) < 0.05
    assert result.model_id == "replicate/black-forest-labs/flux-schnell"
    assert result.credit_cost == 1.0


def test_other_models_get_width_height_negative_prompt_options_and_inputs(
    fake: FakeReplicate, make: Make
) -> None:
    """A model outside the table takes width/height and negative_prompt; options pass through;
    an image input travels as a data URI."""
    data = b"\x89PNG fake bytes"  # the backend passes it on as it is
    media = InputMedia("https://example.com/p.png", "image/png", data, "x", 4, 4)
    req = request(
        model="stability-ai/sdxl:39ed52f2",
        width=256,
        height=192,
        options={"num_inference_steps": 4},
        inputs={"image": media},
    )
    make().generate(req, Control())
    [created] = fake.recorded("POST", "/v1/predictions")
    assert created.json["version"] == "39ed52f2"
    body = created.json["input"]
    assert (body["width"], body["height"], body["negative_prompt"]) == (256, 192, "blurry")
    assert body["num_inference_steps"] == 4
    assert body["image"].startswith("data:image/png;base64,")


def test_without_prefer_wait_it_polls_and_reports_progress_from_the_logs(
    fake: FakeReplicate, make: Make
) -> None:
    """An answer still `starting` is polled at urls.get; tqdm lines become progress."""
    fake.honour_wait = False
    fake.run_seconds = 1.0
    seen: list[Progress] = []
    result = make().generate(request(), Control(on_progress=seen.append))
    assert result.pixels.size
    assert fake.recorded("GET", "/v1/predictions/")
    assert seen and all(p.total == 4 for p in seen)
    assert seen[-1].step == 4


def test_429_is_rate_limited_with_retry_after(fake: FakeReplicate, make: Make) -> None:
    fake.script({"status": 429, "retry_after": 2})
    error = failure(make())
    assert (error.code, error.retry_after) == (ErrorCode.BACKEND_RATE_LIMITED, 2.0)


def test_5xx_is_a_transient_backend_error(fake: FakeReplicate, make: Make) -> None:
    fake.script({"status": 500})
    error = failure(make())
    assert error.code is ErrorCode.BACKEND_ERROR and error.retryable


def test_422_is_rejected_naming_the_input(fake: FakeReplicate, make: Make) -> None:
    """The model's own validation (an aspect_ratio FLUX lacks, through options) names it."""
    error = failure(make(), request(options={"aspect_ratio": "7:3"}))
    assert error.code is ErrorCode.BACKEND_REJECTED and not error.retryable
    assert "input 'aspect_ratio'" in error.description


def test_a_refused_token_is_not_configured_and_never_quoted(
    fake: FakeReplicate, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make(GENHOOK_REPLICATE_API_TOKEN="r8_wrong-secret")
    error = failure(backend)
    assert error.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert "r8_wrong-secret" not in str(error)
    ok = make()
    ok.generate(request(), Control())
    fake.script({"status": 500})
    failure(ok)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert FAKE_TOKEN not in text and "r8_wrong-secret" not in text


def test_no_token_is_not_ready_and_refuses_offline(fake: FakeReplicate, make: Make) -> None:
    backend = make(GENHOOK_REPLICATE_API_TOKEN=None)
    assert backend.status().ready is False
    assert "GENHOOK_REPLICATE_API_TOKEN" in backend.status().detail
    assert failure(backend).code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert fake.requests == []


def test_status_needs_no_network_and_probe_gets_the_account(
    fake: FakeReplicate, make: Make
) -> None:
    backend = make()
    assert backend.status().ready and fake.requests == []
    assert backend.probe(3.0).ready
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/v1/account")]
    assert make(GENHOOK_REPLICATE_API_TOKEN="bad").probe(3.0).ready is False


def test_a_prediction_that_never_ends_times_out_and_is_cancelled(
    fake: FakeReplicate, make: Make
) -> None:
    """Past GENHOOK_REPLICATE_TIMEOUT: backend_timeout, and the prediction is cancelled."""
    fake.outcome = "stuck"
    fake.honour_wait = False
    error = failure(make(GENHOOK_REPLICATE_TIMEOUT="1"))
    assert error.code is ErrorCode.BACKEND_TIMEOUT
    assert len(fake.cancels) == 1


def test_cancel_mid_run_cancels_the_prediction(fake: FakeReplicate, make: Make) -> None:
    """A job cancelled while it polls: cancelled, and POST urls.cancel reached the engine."""
    fake.outcome = "stuck"
    fake.honour_wait = False
    flag = threading.Event()
    threading.Timer(0.6, flag.set).start()
    error = failure(make(), is_cancelled=flag.is_set)
    assert error.code is ErrorCode.CANCELLED
    assert len(fake.cancels) == 1


def test_cancel_while_prefer_wait_holds_the_request(fake: FakeReplicate, make: Make) -> None:
    """Cancelled during the held request: the job stops at once; the prediction is cancelled
    as soon as its id comes back."""
    fake.outcome = "stuck"
    flag = threading.Event()
    threading.Timer(0.3, flag.set).start()
    started = time.monotonic()
    error = failure(make(GENHOOK_REPLICATE_TIMEOUT="3"), is_cancelled=flag.is_set)
    assert error.code is ErrorCode.CANCELLED
    assert time.monotonic() - started < 2.5
    assert eventually(lambda: len(fake.cancels) == 1)


def test_failing_polls_are_waited_out(fake: FakeReplicate, make: Make) -> None:
    """503s while polling do not fail the job: the prediction runs on and is collected."""
    fake.honour_wait = False
    fake.fail_polls = 2
    assert make().generate(request(), Control()).pixels.size
    assert fake.fail_polls == 0


def test_the_bound_ends_a_held_request_and_the_prediction_is_cancelled(
    fake: FakeReplicate, make: Make
) -> None:
    """The run's deadline passing while Prefer: wait holds: backend_timeout at once, and the
    prediction cancelled when its id comes back."""
    fake.outcome = "stuck"
    started = time.monotonic()
    error = failure(make(GENHOOK_REPLICATE_TIMEOUT="10"), deadline=time.monotonic() + 0.5)
    assert error.code is ErrorCode.BACKEND_TIMEOUT
    assert time.monotonic() - started < 5
    assert eventually(lambda: len(fake.cancels) == 1, 15)


def test_an_output_url_that_fails_once_is_fetched_again(fake: FakeReplicate, make: Make) -> None:
    fake.fail_files_once = True
    assert make().generate(request(), Control()).pixels.size
    assert len(fake.recorded("GET", "/_files/")) == 2


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("NSFW content detected. Try running it again, or try a different prompt.", "rejected"),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", "error"),
    ],
)
def test_a_failed_prediction_is_judged_by_its_error(
    fake: FakeReplicate, make: Make, error: str, code: str
) -> None:
    fake.outcome, fake.error = "failed", error
    got = failure(make())
    assert got.code is (
        ErrorCode.BACKEND_REJECTED if code == "rejected" else ErrorCode.BACKEND_ERROR
    )
    assert error.split(".")[0] in got.description


def test_a_video_model_gives_a_probed_clip(fake: FakeReplicate, make: Make, tmp_path: Path) -> None:
    """kind video on a Wan model: num_frames/frames_per_second/aspect_ratio/resolution sent;
    the MP4 downloaded into the attempt's folder and probed; priced per second."""
    req = request(
        kind="video", model="wan-video/wan-2.2-t2v-fast", width=1080, height=1920,
        duration_seconds=2.0, fps=12.0,
    )  # fmt: skip
    result = make().generate(req, Control(workdir=tmp_path))
    [created] = fake.recorded("POST", "/v1/models/wan-video/")
    body = created.json["input"]
    assert (body["aspect_ratio"], body["resolution"]) == ("9:16", "720p")
    assert (body["num_frames"], body["frames_per_second"]) == (24, 12)
    assert body["negative_prompt"] == "blurry"
    clip = result.video
    assert clip is not None and clip.path.parent == tmp_path and clip.path.is_file()
    assert (clip.width, clip.height, clip.frames, clip.has_audio) == (64, 48, 12, False)
    assert abs(clip.fps - 12) < 0.01 and abs(clip.duration_seconds - 1.0) < 0.1
    assert result.pixels.shape == (48, 64, 3)
    assert result.credit_cost == pytest.approx(10.0 * clip.duration_seconds)


def test_registry_builds_it_from_the_entry_point(make: Make) -> None:
    make()
    backend = BackendRegistry.from_entry_points(Settings.from_env()).get("replicate")
    assert isinstance(backend, ReplicateBackend) and backend.status().ready


def test_product_image_runs_end_to_end_on_replicate(
    genhook: Callable[..., CliResult], tmp_path: Path
) -> None:
    """`genhook run product-image` with GENHOOK_IMAGE_BACKEND=replicate: exit 0, every output
    decoded."""
    with FakeReplicate(image_scale=1.0) as fake:
        env = {
            "GENHOOK_IMAGE_BACKEND": "replicate",
            "GENHOOK_REPLICATE_BASE_URL": fake.base_url,
            "GENHOOK_REPLICATE_API_TOKEN": FAKE_TOKEN,
            "GENHOOK_DATA_DIR": str(tmp_path / "var"),
        }
        sample = SAMPLES / "product-image" / "linen-shirt.json"
        result = genhook(
            "run", "product-image", "--input", str(sample), "--out", str(tmp_path / "o"), env=env
        )
        assert result.code == 0, result.stderr + result.stdout
        payload = result.json
        assert payload["status"] == "success"
        assert payload["metadata"]["model_id"] == "replicate/black-forest-labs/flux-schnell"
        assert fake.recorded("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")
        files = list((tmp_path / "o").rglob("*.*"))
        assert files
        for path in files:
            with Image.open(path) as image:
                image.load()
        assert json.dumps(payload).find(FAKE_TOKEN) == -1
