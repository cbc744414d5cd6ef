"""The ``fal`` backend against a faithful fake of fal's queue API over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from genhook.backends.base import BackendRegistry, Control, GenerationRequest, Progress
from genhook.backends.fal import NIL_ID, FalBackend
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from tests.conftest import SAMPLES, CliResult
from tests.fake_fal import FAKE_KEY, FakeFal

ENV = (
    "GENHOOK_FAL_BASE_URL",
    "GENHOOK_FAL_KEY",
    "FAL_KEY",
    "GENHOOK_FAL_TIMEOUT",
    "GENHOOK_FAL_MODEL",
    "GENHOOK_PRICING_FILE",
)
Make = Callable[..., FalBackend]


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "prompt": "Handmade ceramic mug on a wooden table",
        "negative_prompt": "blurry",
        "width": 1024,
        "height": 768,
        "seed": 11,
        "model": "fal-ai/flux/schnell",
        "backend": "fal",
    }
    return GenerationRequest(**{**base, **changes})


@pytest.fixture
def fake() -> Iterator[FakeFal]:
    with FakeFal() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def make(fake: FakeFal, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    made: list[FalBackend] = []

    def build(**env: str | None) -> FalBackend:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        values = {"GENHOOK_FAL_BASE_URL": fake.base_url, "GENHOOK_FAL_KEY": FAKE_KEY, **env}
        for name, value in values.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        backend = FalBackend.from_settings(Settings.from_env())
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def failure(backend: FalBackend, req: GenerationRequest | None = None, **kw: Any) -> GenhookError:
    with pytest.raises(GenhookError) as info:
        backend.generate(req or request(), Control(**kw))
    return info.value


def test_an_image_through_the_queue(fake: FakeFal, make: Make) -> None:
    """POST /{model} with Key auth; status polled with logs=1 at the app's path (no subpath);
    the result's image downloaded and decoded; progress from queue and logs."""
    seen: list[Progress] = []
    result = make().generate(request(), Control(on_progress=seen.append))
    [submitted] = fake.recorded("POST", "/fal-ai/flux/schnell")
    assert submitted.headers["authorization"] == f"Key {FAKE_KEY}"
    assert submitted.json == {
        "prompt": "Handmade ceramic mug on a wooden table",
        "seed": 11,
        "image_size": {"width": 1024, "height": 768},
        "num_images": 1,
    }
    polls = fake.recorded("GET", "/fal-ai/flux/requests/")
    assert any(r.path.endswith("/status?logs=1") for r in polls)
    assert result.pixels.shape == (38, 51, 3)
    assert result.model_id == "fal/fal-ai/flux/schnell" and result.credit_cost == 1.0
    assert any(p.message.startswith("queued") for p in seen)
    assert seen[-1].step == seen[-1].total == 4


def test_a_model_with_a_negative_prompt_gets_it(fake: FakeFal, make: Make) -> None:
    make().generate(
        request(model="fal-ai/fast-sdxl", options={"num_inference_steps": 2}), Control()
    )
    [submitted] = fake.recorded("POST", "/fal-ai/fast-sdxl")
    assert submitted.json["negative_prompt"] == "blurry"
    assert submitted.json["num_inference_steps"] == 2


def test_429_is_rate_limited_with_retry_after(fake: FakeFal, make: Make) -> None:
    fake.script({"status": 429, "retry_after": 3})
    error = failure(make())
    assert (error.code, error.retry_after) == (ErrorCode.BACKEND_RATE_LIMITED, 3.0)


def test_5xx_is_transient(fake: FakeFal, make: Make) -> None:
    fake.script({"status": 503})
    error = failure(make())
    assert error.code is ErrorCode.BACKEND_ERROR and error.retryable


def test_a_validation_error_is_rejected_naming_the_input(fake: FakeFal, make: Make) -> None:
    fake.invalid = "image_size"
    error = failure(make())
    assert error.code is ErrorCode.BACKEND_REJECTED and not error.retryable
    assert "input 'image_size'" in error.description


def test_a_refused_key_is_not_configured_and_never_quoted(
    fake: FakeFal, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    error = failure(make(GENHOOK_FAL_KEY="fal-wrong:secret"))
    assert error.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert "fal-wrong:secret" not in str(error)
    ok = make()
    ok.generate(request(), Control())
    fake.script({"status": 500})
    failure(ok)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert FAKE_KEY not in text and "fal-wrong:secret" not in text


def test_no_key_is_not_ready(fake: FakeFal, make: Make) -> None:
    backend = make(GENHOOK_FAL_KEY=None)
    assert backend.status().ready is False and "GENHOOK_FAL_KEY" in backend.status().detail
    assert failure(backend).code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert fake.requests == []


def test_probe_asks_the_status_of_a_nil_request(fake: FakeFal, make: Make) -> None:
    """404 for the nil id with the key taken: ready; a refused key: not."""
    backend = make()
    assert backend.status().ready and fake.requests == []
    assert backend.probe(3.0).ready
    [probe] = fake.requests
    assert probe.path == f"/fal-ai/flux/requests/{NIL_ID}/status"
    assert make(GENHOOK_FAL_KEY="nope").probe(3.0).ready is False


def test_a_request_that_never_finishes_times_out_and_is_cancelled(
    fake: FakeFal, make: Make
) -> None:
    fake.outcome = "stuck"
    error = failure(make(GENHOOK_FAL_TIMEOUT="1"))
    assert error.code is ErrorCode.BACKEND_TIMEOUT
    assert len(fake.cancels) == 1
    assert fake.recorded("PUT", "/fal-ai/flux/requests/")


def test_cancel_mid_run_cancels_the_request(fake: FakeFal, make: Make) -> None:
    fake.outcome = "stuck"
    flag = threading.Event()
    threading.Timer(0.5, flag.set).start()
    error = failure(make(), is_cancelled=flag.is_set)
    assert error.code is ErrorCode.CANCELLED
    assert len(fake.cancels) == 1


def test_an_output_url_that_fails_once_is_fetched_again(fake: FakeFal, make: Make) -> None:
    fake.fail_files_once = True
    assert make().generate(request(), Control()).pixels.size
    assert len(fake.recorded("GET", "/_files/")) == 2


def test_a_video_model_gives_a_probed_clip(fake: FakeFal, make: Make, tmp_path: Path) -> None:
    req = request(
        kind="video", model="fal-ai/wan/v2.2-a14b/text-to-video", width=1080, height=1080,
        duration_seconds=3.0, fps=16.0,
    )  # fmt: skip
    result = make().generate(req, Control(workdir=tmp_path))
    [submitted] = fake.recorded("POST", "/fal-ai/wan/")
    body = submitted.json
    assert (body["aspect_ratio"], body["num_frames"], body["frames_per_second"]) == ("1:1", 48, 16)
    assert body["negative_prompt"] == "blurry"
    clip = result.video
    assert clip is not None and clip.path.parent == tmp_path
    assert (clip.width, clip.height, clip.frames) == (64, 48, 12)
    assert result.pixels.shape == (48, 64, 3)


def test_registry_builds_it_from_the_entry_point(make: Make) -> None:
    make()
    backend = BackendRegistry.from_entry_points(Settings.from_env()).get("fal")
    assert isinstance(backend, FalBackend) and backend.status().ready


def test_product_image_runs_end_to_end_on_fal(
    genhook: Callable[..., CliResult], tmp_path: Path
) -> None:
    with FakeFal(image_scale=1.0) as fake:
        env = {
            "GENHOOK_IMAGE_BACKEND": "fal",
            "GENHOOK_FAL_BASE_URL": fake.base_url,
            "GENHOOK_FAL_KEY": FAKE_KEY,
            "GENHOOK_DATA_DIR": str(tmp_path / "var"),
        }
        sample = SAMPLES / "product-image" / "linen-shirt.json"
        out = tmp_path / "o"
        result = genhook("run", "product-image", "--input", str(sample), "--out", str(out), env=env)
        assert result.code == 0, result.stderr + result.stdout
        payload = result.json
        assert payload["status"] == "success"
        assert payload["metadata"]["model_id"] == "fal/fal-ai/flux/schnell"
        files = list(out.rglob("*.*"))
        assert files
        for path in files:
            with Image.open(path) as image:
                image.load()
        assert FAKE_KEY not in json.dumps(payload)
