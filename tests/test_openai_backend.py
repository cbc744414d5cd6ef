"""The ``openai`` backend against a faithful fake of OpenAI's Images API over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from genhook.backends.base import BackendRegistry, Control, GenerationRequest
from genhook.backends.openai_images import OpenAIImagesBackend
from genhook.config import ConfigError, Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.media.qc import measure
from tests.conftest import CliResult
from tests.fake_openai import FAKE_API_KEY, GENERATIONS_PATH, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
ENV_VARS = (
    "GENHOOK_OPENAI_BASE_URL",
    "GENHOOK_OPENAI_API_KEY",
    "OPENAI_API_KEY",
    "GENHOOK_OPENAI_TIMEOUT",
    "GENHOOK_PRICING_FILE",
)

MakeBackend = Callable[..., OpenAIImagesBackend]


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "prompt": "Handmade ceramic mug with steam on a wooden table",
        "negative_prompt": "",
        "width": 640,
        "height": 480,
        "seed": 7,
        "model": "dall-e-3",
    }
    return GenerationRequest(**{**base, **changes})


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def make_backend(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeBackend]:
    """Set the environment (pointing at the fake, with its key); build the backend from the
    settings read from it, as the backend registry does."""
    made: list[OpenAIImagesBackend] = []

    def make(**env: str | None) -> OpenAIImagesBackend:
        for name in ENV_VARS:
            monkeypatch.delenv(name, raising=False)
        settings: dict[str, str | None] = {
            "GENHOOK_OPENAI_BASE_URL": fake.base_url,
            "GENHOOK_OPENAI_API_KEY": FAKE_API_KEY,
            **env,
        }
        for name, value in settings.items():
            if value is not None:
                monkeypatch.setenv(name, value)
        backend = OpenAIImagesBackend.from_settings(Settings.from_env())
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def failure(backend: OpenAIImagesBackend, req: GenerationRequest | None = None) -> GenhookError:
    with pytest.raises(GenhookError) as info:
        backend.generate(req or request())
    return info.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the happy path --------------------------------------------------------------------------


def test_generates_pixels_of_the_requested_size_with_the_documented_request(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """One POST /v1/images/generations with Bearer key and WxH size gives RGB pixels of it."""
    result = make_backend().generate(request())
    assert result.pixels.shape == (480, 640, 3)
    assert result.pixels.dtype == np.uint8
    assert result.pixels.flags.c_contiguous
    assert result.model_id == "openai/dall-e-3"
    assert result.credit_cost == 4.0
    assert result.seconds > 0
    [sent] = fake.requests
    assert sent.method == "POST"
    assert sent.path == GENERATIONS_PATH
    assert sent.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "dall-e-3",
        "prompt": "Handmade ceramic mug with steam on a wooden table",
        "n": 1,
        "size": "640x480",
        "response_format": "b64_json",
    }


def test_fake_images_pass_genhook_quality_measures(make_backend: MakeBackend) -> None:
    """A generated image decodes to real content: contrast > 20 and sharpness > 100."""
    measured = measure(make_backend().generate(request(width=1024, height=1024)).pixels)
    assert measured.contrast > 20
    assert measured.sharpness > 100


def test_negative_prompt_is_appended_as_avoid_only_when_given(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """A non-empty negative prompt is appended as 'Avoid: ...'; an empty one adds nothing."""
    backend = make_backend()
    backend.generate(request(prompt="a red bicycle", negative_prompt="text, watermark"))
    backend.generate(request(prompt="a red bicycle", negative_prompt="  "))
    first, second = (r.json["prompt"] for r in fake.requests)
    assert first == "a red bicycle\n\nAvoid: text, watermark"
    assert second == "a red bicycle"


def test_known_options_are_forwarded_and_others_are_not(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """quality, style and user from the options reach the API; unknown options stay home."""
    options = {"quality": "hd", "style": "natural", "user": "tenant-42", "steps": 30}
    make_backend().generate(request(options=options))
    body = fake.requests[0].json
    assert (body["quality"], body["style"], body["user"]) == ("hd", "natural", "tenant-42")
    assert "steps" not in body


def test_gpt_image_models_are_not_sent_response_format(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """gpt-image-* models refuse response_format, so it is left out and they still work."""
    result = make_backend().generate(request(model="gpt-image-1"))
    assert result.model_id == "openai/gpt-image-1"
    assert "response_format" not in fake.requests[0].json
    assert result.pixels.shape == (480, 640, 3)


def test_url_answers_are_downloaded_with_the_same_client(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """An answer with a url item (some gateways) is fetched and decoded."""
    fake.script(["url"])
    result = make_backend().generate(request(width=320, height=200))
    assert result.pixels.shape == (200, 320, 3)
    generation, download = fake.requests
    assert generation.path == GENERATIONS_PATH
    assert download.method == "GET"
    assert download.path.startswith("/_fake/images/")


def test_api_key_is_not_sent_to_a_foreign_image_host(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """A url on another origin is downloaded without the Authorization header."""
    with FakeOpenAI() as image_host:
        url = image_host.publish("a lighthouse", 300, 150)
        fake.script([{"url": url}])
        result = make_backend().generate(request())
        [download] = image_host.requests
    assert result.pixels.shape == (150, 300, 3)
    assert "authorization" not in download.headers


def test_an_image_of_another_size_is_returned_as_it_came(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """When the API returns a different size, the pixels keep that size."""
    fake.script([{"size": "512x512"}])
    result = make_backend().generate(request(width=1080, height=1350))
    assert fake.requests[0].json["size"] == "1080x1350"
    assert result.pixels.shape == (512, 512, 3)


def test_credits_per_image_come_from_the_pricing_file(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    """GENHOOK_PRICING_FILE sets both the estimate and the reported cost, per model."""
    prices = tmp_path / "pricing.yaml"
    prices.write_text('openai:\n  "*": {per_image: 4.0}\n  dall-e-3: {per_image: 2.5}\n')
    backend = make_backend(GENHOOK_PRICING_FILE=str(prices))
    assert backend.estimate_cost(request()) == 2.5
    assert backend.generate(request()).credit_cost == 2.5
    assert backend.estimate_cost(request(model="gpt-image-1")) == 4.0
    assert backend.status().detail.endswith(", 4 credits per image")


def test_one_backend_serves_concurrent_generations(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """Several threads generating through one backend all get their own image."""
    backend = make_backend()
    sizes = [(96 + 16 * i, 64 + 8 * i) for i in range(6)]
    shapes: dict[int, tuple[int, ...]] = {}

    def one(i: int) -> None:
        width, height = sizes[i]
        shapes[i] = backend.generate(
            request(width=width, height=height, prompt=f"p{i}")
        ).pixels.shape

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sizes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert shapes == {i: (h, w, 3) for i, (w, h) in enumerate(sizes)}
    assert len(fake.generations) == len(sizes)


# -- status and configuration ----------------------------------------------------------------


def test_status_is_ready_with_a_key_and_makes_no_request(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """With a key configured the backend is ready, and asking costs no network call."""
    backend = make_backend()
    status = backend.status()
    assert status.ready is True
    assert FAKE_API_KEY not in status.detail
    assert backend.kinds == frozenset({"image"})
    assert backend.name == "openai"
    assert fake.requests == []


def test_missing_key_is_not_ready_and_refuses_without_a_request(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """No GENHOOK_OPENAI_API_KEY: not ready, and generate is backend_not_configured offline."""
    backend = make_backend(GENHOOK_OPENAI_API_KEY=None)
    status = backend.status()
    assert status.ready is False
    assert status.detail == "GENHOOK_OPENAI_API_KEY is not set"
    error = failure(backend)
    assert error.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert not error.retryable
    assert fake.requests == []


def test_invalid_numbers_in_the_environment_are_configuration_errors(
    make_backend: MakeBackend,
) -> None:
    """A timeout that is not a positive duration is refused when the settings are read."""
    with pytest.raises(ConfigError, match="GENHOOK_OPENAI_TIMEOUT"):
        make_backend(GENHOOK_OPENAI_TIMEOUT="soon")


def test_registry_loads_it_from_the_entry_point(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """The installed entry point genhook.backends:openai constructs this backend."""
    make_backend()  # sets the environment
    backend = BackendRegistry.from_entry_points(Settings.from_env()).get("openai")
    assert isinstance(backend, OpenAIImagesBackend)
    assert backend.status().ready is True


@pytest.mark.parametrize("with_key", [False, True])
def test_backends_list_shows_openai_ready_only_with_a_key(
    genhook: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, with_key: bool
) -> None:
    """`backends list --offline` lists openai, ready exactly when GENHOOK_OPENAI_API_KEY is set."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    env = {"GENHOOK_OPENAI_API_KEY": "sk-x"} if with_key else {}
    result = genhook("backends", "list", "--offline", env=env)
    assert result.code == 0, result.stderr
    rows = {row["backend"]: row for row in result.json}
    assert rows["openai"]["kinds"] == ["image"]
    assert rows["openai"]["ready"] is with_key
    if not with_key:
        assert rows["openai"]["detail"] == "GENHOOK_OPENAI_API_KEY is not set"


def test_probe_is_ready_when_the_engine_answers_and_takes_the_key(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """The probe is one GET /v1/models with the key, and says ready when the engine takes it."""
    status = make_backend().probe(3.0)
    assert status.ready is True, status.detail
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/v1/models")]
    assert fake.requests[0].headers["authorization"] == f"Bearer {FAKE_API_KEY}"


def test_probe_reports_a_refused_key(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """A key the engine refuses (401) is not ready: 'key refused'."""
    status = make_backend(GENHOOK_OPENAI_API_KEY="sk-wrong").probe(3.0)
    assert status.ready is False
    assert "key refused" in status.detail and "sk-wrong" not in status.detail


def test_probe_reports_nothing_listening_quickly(make_backend: MakeBackend) -> None:
    """Nothing on the port: not ready, 'not reachable' with the cause, well within the bound."""
    port = free_port()
    started = time.monotonic()
    status = make_backend(GENHOOK_OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1").probe(3.0)
    assert status.ready is False
    assert "not reachable" in status.detail and "refused" in status.detail
    assert time.monotonic() - started < 3


def test_probe_is_bounded_by_its_timeout(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """An engine that accepts the connection and never answers is 'did not answer' in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        status = make_backend(GENHOOK_OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1").probe(0.5)
    assert status.ready is False and "did not answer within 0.5s" in status.detail
    assert time.monotonic() - started < 2.5


def test_backends_list_probes_the_engine(
    fake: FakeOpenAI, genhook: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backends list` says ready only for an engine that answers now, with the reason when
    not; `--offline` answers from the configuration alone."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    cases = [
        (
            {"GENHOOK_OPENAI_BASE_URL": fake.base_url, "GENHOOK_OPENAI_API_KEY": FAKE_API_KEY},
            "answering",
        ),
        (
            {"GENHOOK_OPENAI_BASE_URL": fake.base_url, "GENHOOK_OPENAI_API_KEY": "sk-no"},
            "key refused",
        ),
        (
            {"GENHOOK_OPENAI_BASE_URL": closed, "GENHOOK_OPENAI_API_KEY": FAKE_API_KEY},
            "not reachable",
        ),
    ]
    for env, reason in cases:
        ready = reason == "answering"
        result = genhook("backends", "list", env=env)
        assert result.code == 0, result.stderr
        rows = {row["backend"]: row for row in result.json}
        assert rows["openai"]["ready"] is ready, rows["openai"]
        assert reason in rows["openai"]["detail"]
        assert rows["openai"]["checked"] is True
        assert rows["procedural"]["ready"] is True
        offline = {
            row["backend"]: row for row in genhook("backends", "list", "--offline", env=env).json
        }
        assert offline["openai"]["ready"] is True and offline["openai"]["checked"] is False


# -- error mapping ---------------------------------------------------------------------------


def test_503_is_a_transient_backend_error(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """HTTP 503 (overloaded) becomes backend_error, retryable, and the next try can succeed."""
    fake.script(["503", "ok"])
    backend = make_backend()
    error = failure(backend)
    assert error.code is ErrorCode.BACKEND_ERROR
    assert error.retryable
    assert error.retry_after is None
    assert "overloaded" in error.description
    assert backend.generate(request()).pixels.shape == (480, 640, 3)


def test_503_with_retry_after_carries_it(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """A Retry-After on a 503 is passed on as retry_after."""
    fake.script([{"status": 503, "retry_after": 7}])
    error = failure(make_backend())
    assert (error.code, error.retry_after) == (ErrorCode.BACKEND_ERROR, 7.0)


def test_500_is_a_transient_backend_error(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """HTTP 500 becomes backend_error, retryable."""
    fake.script(["500"])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_ERROR
    assert error.retryable


def test_429_is_rate_limited_with_retry_after(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """HTTP 429 with Retry-After: 3 becomes backend_rate_limited with retry_after 3.0."""
    fake.script([{"status": 429, "retry_after": 3}])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_RATE_LIMITED
    assert error.retryable
    assert error.retry_after == 3.0
    assert "rate_limit_exceeded" in error.description


def test_exhausted_quota_is_rejected_not_rate_limited(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """A 429 with code insufficient_quota is a billing stop, so it is not retried."""
    fake.script(["insufficient_quota"])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_REJECTED
    assert not error.retryable
    assert "insufficient_quota" in error.description


def test_content_policy_is_rejected_with_its_code(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """A safety-system refusal is backend_rejected, not retried, naming the API's code."""
    fake.script(["content_policy"])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_REJECTED
    assert not error.retryable
    assert "content_policy_violation" in error.description
    assert "safety system" in error.description


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_client_errors_are_rejected(
    fake: FakeOpenAI, make_backend: MakeBackend, status: int
) -> None:
    """HTTP 400/403/404/422 become backend_rejected with the API's message and code."""
    fake.script([{"status": status, "error": {"message": "nope", "code": "some_code"}}])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_REJECTED
    assert not error.retryable
    assert f"HTTP {status}" in error.description
    assert "some_code" in error.description
    assert "nope" in error.description


def test_a_refused_key_is_not_configured(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """HTTP 401 for a wrong key becomes backend_not_configured ('API key refused')."""
    error = failure(make_backend(GENHOOK_OPENAI_API_KEY="sk-wrong"))
    assert error.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert not error.retryable
    assert "API key refused" in error.description
    assert "sk-wrong" not in str(error)
    assert fake.requests[0].headers["authorization"] == "Bearer sk-wrong"


def test_a_slow_answer_times_out(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """An answer slower than GENHOOK_OPENAI_TIMEOUT becomes backend_timeout, promptly."""
    fake.script([{"delay": 5}])
    backend = make_backend(GENHOOK_OPENAI_TIMEOUT="0.3")
    started = time.monotonic()
    error = failure(backend)
    assert error.code is ErrorCode.BACKEND_TIMEOUT
    assert error.retryable
    assert time.monotonic() - started < 3


def test_a_closed_port_is_unavailable(make_backend: MakeBackend) -> None:
    """Nothing listening at the base URL becomes backend_unavailable, retryable."""
    port = free_port()
    error = failure(make_backend(GENHOOK_OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1"))
    assert error.code is ErrorCode.BACKEND_UNAVAILABLE
    assert error.retryable


def test_a_dropped_connection_is_transient(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """A connection closed without an answer is a transient failure, and the next try works."""
    fake.script(["drop", "ok"])
    backend = make_backend()
    error = failure(backend)
    assert error.code is ErrorCode.BACKEND_UNAVAILABLE
    assert error.retryable
    assert backend.generate(request()).pixels.shape == (480, 640, 3)


@pytest.mark.parametrize("answer", ["garbage", "empty", "bad_image"])
def test_malformed_answers_are_backend_errors(
    fake: FakeOpenAI, make_backend: MakeBackend, answer: str
) -> None:
    """A 200 with non-JSON, no data, or bytes that are no image is a transient backend_error."""
    fake.script([answer])
    error = failure(make_backend())
    assert error.code is ErrorCode.BACKEND_ERROR
    assert error.retryable


# -- the fake itself, as acceptance tests use it ---------------------------------------------


def test_fake_validates_requests_like_the_real_api(fake: FakeOpenAI) -> None:
    """The fake answers 400 invalid_request_error for a missing prompt or a malformed size."""
    auth = {"Authorization": f"Bearer {FAKE_API_KEY}"}
    url = fake.base_url + "/images/generations"
    with httpx.Client() as client:
        missing = client.post(url, json={"model": "dall-e-3", "size": "64x64"}, headers=auth)
        bad_size = client.post(url, json={"prompt": "a cat", "size": "big"}, headers=auth)
        no_key = client.post(url, json={"prompt": "a cat"})
        gpt_image = client.post(
            url,
            json={"prompt": "a cat", "model": "gpt-image-1", "response_format": "b64_json"},
            headers=auth,
        )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "prompt"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert bad_size.status_code == 400
    assert bad_size.json()["error"]["param"] == "size"
    assert no_key.status_code == 401
    assert set(no_key.json()["error"]) == {"message", "type", "param", "code"}
    assert gpt_image.status_code == 400
    assert gpt_image.json()["error"]["code"] == "unknown_parameter"


def test_fake_runs_as_a_process_scripted_at_run_time(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    """`python -m tests.fake_openai` prints READY <port> and obeys /_fake/script and requests."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", "0", "--script", "503,ok"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == "READY"
        origin = f"http://127.0.0.1:{int(ready[1])}"
        backend = make_backend(GENHOOK_OPENAI_BASE_URL=f"{origin}/v1")
        assert failure(backend).code is ErrorCode.BACKEND_ERROR
        assert backend.generate(request()).pixels.shape == (480, 640, 3)
        with httpx.Client(base_url=origin) as admin:
            queued = admin.post("/_fake/script", json=["content_policy"])
            assert queued.json() == {"queued": 1}
            assert failure(backend).code is ErrorCode.BACKEND_REJECTED
            recorded = admin.get("/_fake/requests").json()
        assert [r["behaviour"] for r in recorded] == ["503", "ok", "content_policy"]
        assert all(r["json"]["size"] == "640x480" for r in recorded)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == ""


def test_a_cancelled_job_is_not_sent(fake: FakeOpenAI, make_backend: MakeBackend) -> None:
    """A job cancelled before the request goes out: cancelled, and nothing reaches the API."""
    with pytest.raises(GenhookError) as info:
        make_backend().generate(request(), Control(is_cancelled=lambda: True))
    assert info.value.code is ErrorCode.CANCELLED
    assert fake.requests == []


def test_the_request_is_bounded_by_the_runs_deadline(
    fake: FakeOpenAI, make_backend: MakeBackend
) -> None:
    """With 0.3 s left of the run, a 5 s answer is backend_timeout (not the 120 s setting)."""
    fake.script([{"delay": 5}])
    with pytest.raises(GenhookError) as info:
        make_backend().generate(request(), Control(deadline=time.monotonic() + 0.3))
    assert info.value.code is ErrorCode.BACKEND_TIMEOUT
