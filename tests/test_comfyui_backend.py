"""The ``comfyui`` backend against a faithful fake of ComfyUI's HTTP and websocket API."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from genhook.backends.base import (
    BackendRegistry,
    Control,
    GenerationRequest,
    InputMedia,
    Progress,
)
from genhook.backends.comfyui import (
    SHIPPED_GRAPH,
    SHIPPED_VIDEO_GRAPH,
    ComfyUIBackend,
    first_video,
    latent_side,
    output_images,
    output_videos,
    video_length,
)
from genhook.config import ComfyUISettings, Settings
from genhook.config_values import ConfigError
from genhook.errors import ErrorCode, GenhookError
from genhook.media.qc import measure
from tests.conftest import SAMPLES, CliResult
from tests.fake_comfyui import FakeComfyUI

ENV_VARS = (
    "GENHOOK_COMFYUI_URL",
    "GENHOOK_COMFYUI_WORKFLOW",
    "GENHOOK_COMFYUI_VIDEO_WORKFLOW",
    "GENHOOK_COMFYUI_TIMEOUT",
)
MakeBackend = Callable[..., ComfyUIBackend]


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "prompt": "Handmade ceramic mug with steam on a wooden table",
        "negative_prompt": "blurry, watermark",
        "width": 200,
        "height": 150,
        "seed": 7,
        "model": "graph",
        "backend": "comfyui",
        "options": {"steps": 4},
    }
    return GenerationRequest(**{**base, **changes})


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as server:
        yield server


@pytest.fixture
def make_backend(fake: FakeComfyUI) -> Iterator[MakeBackend]:
    made: list[ComfyUIBackend] = []

    def make(
        workflow: Path | None = None, url: str | None = None, timeout: float = 30.0, **kw: Any
    ) -> ComfyUIBackend:
        config = ComfyUISettings(url=url or fake.url, workflow=workflow, timeout=timeout)
        backend = ComfyUIBackend(config, **kw)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def submitted(fake: FakeComfyUI) -> list[dict[str, Any]]:
    return [r.json["prompt"] for r in fake.requests if r.path == "/prompt" and r.method == "POST"]


def write_graph(tmp_path: Path, data: Any, name: str = "graph.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SHIPPED_GRAPH.read_text(encoding="utf-8"))
    return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


# -- success ---------------------------------------------------------------------------------


def test_generates_the_image_and_reports_progress(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    """The shipped graph filled and submitted after the socket opened; progress step of steps;
    the saved PNG decoded at the latent's size (sides rounded to multiples of 8)."""
    seen: list[Progress] = []
    result = make_backend().generate(request(), Control(on_progress=seen.append))
    assert result.pixels.shape == (latent_side(150), latent_side(200), 3) == (152, 200, 3)
    assert result.model_id == "comfyui/sd_xl_base_1.0.safetensors"
    assert result.credit_cost == 0.0
    assert [(p.step, p.total) for p in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "KSampler" in seen[0].message
    paths = fake.paths()
    assert paths.index("/ws") < paths.index("/prompt")
    (graph,) = submitted(fake)
    assert graph["6"]["inputs"]["text"] == request().prompt
    assert graph["7"]["inputs"]["text"] == "blurry, watermark"
    assert graph["3"]["inputs"]["seed"] == 7 and graph["3"]["inputs"]["steps"] == 4
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (200, 152)
    assert graph["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    client = next(r for r in fake.requests if r.path == "/ws").query["clientId"]
    assert next(r for r in fake.requests if r.path == "/prompt").json["client_id"] == client
    views = [r for r in fake.requests if r.path == "/view"]
    assert len(views) == 1 and views[0].query["type"] == "output"


def test_the_image_depends_on_the_seed_and_passes_quality_measures(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend()
    a = backend.generate(request(seed=1, width=256, height=256), Control())
    b = backend.generate(request(seed=2, width=256, height=256), Control())
    assert a.pixels.tobytes() != b.pixels.tobytes()
    stats = measure(a.pixels)
    assert stats.contrast > 20 and stats.sharpness > 100


def test_a_model_name_sets_the_checkpoint(fake: FakeComfyUI, make_backend: MakeBackend) -> None:
    result = make_backend().generate(request(model="v1-5-pruned-emaonly.safetensors"), Control())
    assert submitted(fake)[0]["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert result.model_id == "comfyui/v1-5-pruned-emaonly.safetensors"


def test_status_and_probe(fake: FakeComfyUI, make_backend: MakeBackend) -> None:
    backend = make_backend()
    status = backend.status()
    assert status.ready and fake.url in status.detail and "shipped" in status.detail
    assert fake.requests == []  # status makes no request
    probe = backend.probe(2.0)
    assert probe.ready and "ComfyUI 0.3.66-fake" in probe.detail
    assert fake.paths() == ["/system_stats"]
    down = make_backend(url=f"http://127.0.0.1:{free_port()}").probe(1.0)
    assert not down.ready and "not reachable" in down.detail


def test_registry_builds_it_from_the_entry_point(fake: FakeComfyUI) -> None:
    settings = Settings.from_env({"GENHOOK_COMFYUI_URL": fake.url})
    backend = BackendRegistry.from_entry_points(settings).get("comfyui")
    assert isinstance(backend, ComfyUIBackend) and backend.base_url == fake.url
    assert backend.kinds == frozenset({"image", "video"})


# -- refusals and failures -------------------------------------------------------------------


def test_node_errors_are_permanent_and_name_the_node_and_input(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(options={"steps": 0}), Control())
    error = caught.value
    assert error.code is ErrorCode.BACKEND_REJECTED and not error.retryable
    assert "node 3 (KSampler) input 'steps'" in error.description
    assert "Value 0 smaller than min of 1" in error.description


def test_an_unknown_checkpoint_is_refused_naming_it(make_backend: MakeBackend) -> None:
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(model="nope.safetensors"), Control())
    assert caught.value.code is ErrorCode.BACKEND_REJECTED
    text = caught.value.description
    assert "node 4 (CheckpointLoaderSimple) input 'ckpt_name'" in text and "nope" in text


def test_a_missing_node_type_is_refused_naming_the_class(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    data = shipped()
    data["graph"]["8"]["class_type"] = "VAEDecodeTiledMagic"
    backend = make_backend(write_graph(tmp_path, data))
    with pytest.raises(GenhookError) as caught:
        backend.generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_REJECTED
    assert "node 8 (VAEDecodeTiledMagic)" in caught.value.description
    assert "not found" in caught.value.description


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_on_prompt_is_a_transient_backend_error(
    fake: FakeComfyUI, make_backend: MakeBackend, status: int
) -> None:
    fake.prompt_failures = [status]
    backend = make_backend()
    with pytest.raises(GenhookError) as caught:
        backend.generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_ERROR and caught.value.retryable
    assert f"HTTP {status}" in caught.value.description
    assert backend.generate(request(), Control()).pixels.shape[0] == 152  # the next one works


def test_nothing_listening_is_backend_unavailable(make_backend: MakeBackend) -> None:
    backend = make_backend(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GenhookError) as caught:
        backend.generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE and caught.value.retryable
    assert "could not connect" in caught.value.description


@pytest.mark.parametrize(
    ("exception_type", "code"),
    [
        ("torch.OutOfMemoryError", ErrorCode.BACKEND_ERROR),
        ("RuntimeError", ErrorCode.BACKEND_ERROR),
        ("ValueError", ErrorCode.BACKEND_REJECTED),
    ],
)
def test_an_execution_error_keeps_the_engines_message(
    fake: FakeComfyUI, make_backend: MakeBackend, exception_type: str, code: ErrorCode
) -> None:
    fake.fail_node = {
        "node_type": "KSampler",
        "exception_type": exception_type,
        "exception_message": "Allocation on device 0 would exceed allowed memory",
    }
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(), Control())
    assert caught.value.code is code
    text = caught.value.description
    assert "node 3 (KSampler)" in text and exception_type in text and "Allocation" in text


def test_an_execution_error_is_found_by_polling_too(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.refuse_sockets = True
    fake.fail_node = {"node_type": "VAEDecode", "exception_type": "RuntimeError"}
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_ERROR
    assert "node 8 (VAEDecode)" in caught.value.description


# -- the socket drops, the queue stalls -------------------------------------------------------


def test_a_dropped_socket_falls_back_to_polling_the_history(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.step_seconds = 0.02
    fake.drop_socket_after = 2
    seen: list[Progress] = []
    result = make_backend().generate(
        request(options={"steps": 8}), Control(on_progress=seen.append)
    )
    assert result.pixels.shape == (152, 200, 3)
    assert [p.step for p in seen][:2] == [1, 2]
    assert fake.paths().count("/history/" + fake.history.popitem()[0]) >= 1
    assert fake.socket_count == 1


def test_a_server_without_websocket_is_polled_from_the_start(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    """With no socket the backend polls at once: ``/history`` and, while the prompt is not
    done, ``/queue``. The fake holds the prompt pending until the backend has read ``/queue``
    (a prompt that ended before the first poll would need no ``/queue`` read at all)."""
    fake.refuse_sockets = True
    fake.stalled = True
    released = threading.Event()

    def release_once_the_queue_is_read() -> None:
        deadline = time.monotonic() + 20
        while "/queue" not in fake.paths("GET") and time.monotonic() < deadline:
            time.sleep(0.01)
        released.set()
        fake.stalled = False

    threading.Thread(target=release_once_the_queue_is_read, daemon=True).start()
    result = make_backend().generate(request(), Control())
    assert released.is_set()
    assert result.pixels.shape == (152, 200, 3)
    gets = fake.paths("GET")
    assert gets[0] == "/ws" and gets[1].startswith("/history/")
    assert "/queue" in gets and fake.socket_count == 0


def test_a_stalled_queue_is_a_timeout_and_the_prompt_is_deleted(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.stalled = True
    with pytest.raises(GenhookError) as caught:
        make_backend(stall_seconds=0.5).generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_TIMEOUT and caught.value.retryable
    assert "queue did not move" in caught.value.description
    assert len(fake.deleted) == 1 and fake.pending == [] and fake.interrupts == []


def test_a_stalled_queue_is_noticed_while_polling_too(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.stalled = True
    fake.refuse_sockets = True
    with pytest.raises(GenhookError) as caught:
        make_backend(stall_seconds=0.5).generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_TIMEOUT
    assert len(fake.deleted) == 1


def test_past_the_deadline_the_run_is_interrupted(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.step_seconds = 0.1
    seen = threading.Event()
    with pytest.raises(GenhookError) as caught:
        make_backend(timeout=1.0).generate(
            request(options={"steps": 1000}), Control(on_progress=lambda p: seen.set())
        )
    assert seen.is_set()
    assert caught.value.code is ErrorCode.BACKEND_TIMEOUT
    assert "GENHOOK_COMFYUI_TIMEOUT" in caught.value.description
    assert len(fake.interrupts) == 1


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_mid_run_interrupts_our_prompt(fake: FakeComfyUI, make_backend: MakeBackend) -> None:
    fake.step_seconds = 0.05
    cancelled = threading.Event()
    control = Control(on_progress=lambda p: cancelled.set(), is_cancelled=cancelled.is_set)
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(options={"steps": 1000}), control)
    assert caught.value.code is ErrorCode.CANCELLED
    assert len(fake.interrupts) == 1 and fake.deleted == []
    prompt_id = fake.interrupts[0]["prompt_id"]
    entry = history_of(fake, prompt_id)
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]


def history_of(fake: FakeComfyUI, prompt_id: str) -> dict[str, Any]:
    """The fake's history entry of ``prompt_id``, waited for (the run ends soon after an
    interrupt, at its next step)."""
    pause = threading.Event()
    for _ in range(400):
        entry = fake.history.get(prompt_id)
        if entry is not None:
            return entry
        pause.wait(0.05)
    raise AssertionError(f"no history for {prompt_id}")


def test_cancel_while_queued_deletes_the_prompt(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.stalled = True
    control = Control(is_cancelled=lambda: bool(fake.pending))
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(), control)
    assert caught.value.code is ErrorCode.CANCELLED
    assert len(fake.deleted) == 1 and fake.interrupts == [] and fake.pending == []


# -- outputs ---------------------------------------------------------------------------------


def test_a_view_that_fails_once_is_retried(fake: FakeComfyUI, make_backend: MakeBackend) -> None:
    fake.view_failures = 1
    result = make_backend().generate(request(), Control())
    assert result.pixels.shape == (152, 200, 3)
    assert fake.paths().count("/view") == 2


def test_a_view_that_keeps_failing_is_a_transient_error(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.view_failures = 10
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_ERROR and "/view" in caught.value.description
    assert fake.paths().count("/view") == 3


def test_an_output_that_is_no_image_is_a_transient_error(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    fake.corrupt_outputs = True
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_ERROR
    text = caught.value.description
    assert "ComfyUI's output" in text and "undecodable image" in text and "openai" not in text


def operator_graph(batch: int = 2) -> dict[str, Any]:
    """The operator's own graph: two images saved, one previewed, cfg a placeholder too."""
    data = shipped()
    graph = data["graph"]
    graph["5"]["inputs"]["batch_size"] = batch
    graph["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    data["placeholders"]["cfg"] = ["3", "cfg"]
    data["placeholders"]["seed"] = [["3", "seed"]]
    return data


def test_an_operator_graph_with_more_outputs_gives_the_first_saved_one(
    tmp_path: Path, fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    backend = make_backend(write_graph(tmp_path, operator_graph()))
    result = backend.generate(request(options={"steps": 2, "cfg": 5.5}), Control())
    (graph,) = submitted(fake)
    assert graph["3"]["inputs"]["cfg"] == 5.5
    views = [r.query for r in fake.requests if r.path == "/view"]
    assert len(views) == 1 and views[0]["type"] == "output"
    entry = next(iter(fake.history.values()))
    first = entry["outputs"]["9"]["images"][0]["filename"]
    assert views[0]["filename"] == first
    assert result.pixels.shape == (152, 200, 3)


def test_a_graph_that_saves_nothing_is_a_transient_error(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    data = operator_graph(batch=1)
    del data["graph"]["9"]  # only the preview is left
    with pytest.raises(GenhookError) as caught:
        make_backend(write_graph(tmp_path, data)).generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_ERROR
    assert "without saving an image" in caught.value.description


def test_a_marker_graph_is_filled(
    tmp_path: Path, fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    graph = shipped()["graph"]
    graph["6"]["inputs"]["text"] = "{{prompt}}"
    graph["3"]["inputs"]["seed"] = "{{ seed }}"
    graph["3"]["inputs"]["steps"] = "{{steps}}"
    backend = make_backend(write_graph(tmp_path, graph))
    assert backend.status().ready
    backend.generate(request(seed=99), Control())
    sent = submitted(fake)[0]
    assert sent["6"]["inputs"]["text"] == request().prompt
    assert sent["3"]["inputs"]["seed"] == 99 and sent["3"]["inputs"]["steps"] == 4
    assert sent["7"]["inputs"]["text"] == ""  # no negative placeholder: the graph's own
    with pytest.raises(GenhookError) as caught:
        backend.generate(request(options={}), Control())
    assert caught.value.code is ErrorCode.BACKEND_REJECTED
    assert "{{steps}}" in caught.value.description


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{oops", "not JSON"),
        ({"graph": {"1": {"class_type": "SaveImage", "inputs": {}}}}, "no placeholder 'prompt'"),
        ({"graph": shipped()["graph"], "placeholders": {"prompt": ["66", "text"]}}, "'66'"),
        ({"graph": shipped()["graph"], "placeholders": {"prompt": ["6", "txt"]}}, "'txt'"),
        ({"graph": shipped()["graph"], "placeholders": {"prompt": ["6", "clip"]}}, "a link"),
        ({"graph": shipped()["graph"], "placeholders": {"prompt": "6.text"}}, "[node id, input"),
        ({"nodes": [], "links": [], "version": 0.4}, "Export (API)"),
        ({"graph": {}, "oops": 1}, "unknown key 'oops'"),
    ],
)
def test_a_bad_graph_file_is_refused_in_one_line(
    tmp_path: Path, make_backend: MakeBackend, content: Any, words: str
) -> None:
    path = write_graph(tmp_path, content, "mine.json")
    backend = make_backend(path)
    status = backend.status()
    assert not status.ready
    assert status.detail.startswith(f"GENHOOK_COMFYUI_WORKFLOW: {path}")
    assert words in status.detail and "\n" not in status.detail
    with pytest.raises(GenhookError) as caught:
        backend.generate(request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED


def test_backends_list_shows_a_bad_graph_not_ready(
    tmp_path: Path, genhook: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    path = write_graph(tmp_path, {"graph": {"1": {"class_type": "SaveImage", "inputs": {}}}})
    result = genhook("backends", "list", "--offline", env={"GENHOOK_COMFYUI_WORKFLOW": str(path)})
    assert result.code == 0, result.stderr
    row = next(r for r in result.json if r["backend"] == "comfyui")
    assert row["ready"] is False and "no placeholder 'prompt'" in row["detail"]


# -- media inputs ----------------------------------------------------------------------------


def img2img_graph() -> dict[str, Any]:
    data = shipped()
    graph = data["graph"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"]["latent_image"] = ["11", 0]
    graph["3"]["inputs"]["denoise"] = 0.6
    del graph["5"]
    placeholders = data["placeholders"]
    del placeholders["width"], placeholders["height"]
    placeholders["reference"] = ["10", "image"]
    return data


def media(width: int, height: int) -> InputMedia:
    data = png_bytes(width, height)
    digest = hashlib.sha256(data).hexdigest()
    return InputMedia("https://shop.example/p.png", "image/png", data, digest, width, height)


def test_an_image_input_is_uploaded_and_loaded(
    tmp_path: Path, fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    reference = media(96, 64)
    backend = make_backend(write_graph(tmp_path, img2img_graph()))
    result = backend.generate(request(inputs={"reference": reference}), Control())
    (name,) = fake.uploads
    assert fake.uploads[name] == reference.data and name.endswith(".png")
    upload = next(r for r in fake.requests if r.path == "/upload/image")
    assert upload.json["overwrite"] == "true"
    assert submitted(fake)[0]["10"]["inputs"]["image"] == name
    assert result.pixels.shape == (64, 96, 3)  # the size of the reference, through VAEEncode
    assert fake.paths().index("/upload/image") < fake.paths().index("/prompt")


def test_an_input_the_graph_has_no_placeholder_for_is_refused(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(inputs={"logo": media(32, 32)}), Control())
    assert caught.value.code is ErrorCode.BACKEND_REJECTED
    assert "'logo'" in caught.value.description
    assert fake.requests == []


# -- end to end ------------------------------------------------------------------------------


def test_product_image_runs_end_to_end_on_comfyui(
    tmp_path: Path,
    fake: FakeComfyUI,
    genhook: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`genhook run product-image` with GENHOOK_IMAGE_BACKEND=comfyui: every output decodes
    at its size, the metadata names the graph's checkpoint, and it cost 0 credits."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    env = {"GENHOOK_IMAGE_BACKEND": "comfyui", "GENHOOK_COMFYUI_URL": fake.url}
    sample = SAMPLES / "product-image" / "linen-shirt.json"
    out = tmp_path / "assets"
    result = genhook("run", "product-image", "--input", str(sample), "--out", str(out), env=env)
    assert result.code == 0, result.stderr + result.stdout
    payload = result.json
    assert payload["status"] == "success"
    assert payload["metadata"]["model_id"] == "comfyui/sd_xl_base_1.0.safetensors"
    assert payload["metadata"]["credit_cost"] == 0.0
    assert payload["outputs"]
    for output in payload["outputs"]:
        path = out / output["filename_suggestion"]
        with Image.open(path) as image:
            image.load()
            assert image.size == (output["width"], output["height"])
    prompts = submitted(fake)
    assert prompts and all(p["6"]["inputs"]["text"] for p in prompts)
    assert len({p["3"]["inputs"]["seed"] for p in prompts}) >= 1


def test_an_interrupt_from_someone_else_is_a_transient_error(
    fake: FakeComfyUI, make_backend: MakeBackend
) -> None:
    """Someone pressed Cancel in ComfyUI's own UI: the attempt fails, to be tried again."""
    fake.step_seconds = 0.02
    pressed = threading.Event()

    def press(progress: Progress) -> None:
        if not pressed.is_set():
            pressed.set()
            httpx.post(f"{fake.url}/interrupt", timeout=5)

    with pytest.raises(GenhookError) as caught:
        make_backend().generate(request(options={"steps": 1000}), Control(on_progress=press))
    assert caught.value.code is ErrorCode.BACKEND_ERROR and caught.value.retryable
    assert "interrupted on the server" in caught.value.description
    assert fake.interrupts == [{}]  # only the outside one; genhook did not send its own


def test_backends_list_probes_comfyui(
    fake: FakeComfyUI, genhook: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    result = genhook("backends", "list", env={"GENHOOK_COMFYUI_URL": fake.url})
    assert result.code == 0, result.stderr
    row = next(r for r in result.json if r["backend"] == "comfyui")
    assert row["ready"] is True and "answering" in row["detail"]
    assert row["kinds"] == ["image", "video"]
    assert "/system_stats" in fake.paths()


# -- through the service ---------------------------------------------------------------------


def test_the_service_runs_and_cancels_on_comfyui(tmp_path: Path, fake: FakeComfyUI) -> None:
    """`genhook serve` with GENHOOK_IMAGE_BACKEND=comfyui: a product-image trigger is delivered
    signed and successful; a second one cancelled while ComfyUI samples is interrupted there."""
    from tests.acceptance.harness import Genhook, Receiver, verify, wait_for

    trigger = json.loads((SAMPLES / "product-image" / "linen-shirt.json").read_text("utf-8"))
    receiver = Receiver().start()
    g = Genhook(tmp_path, GENHOOK_IMAGE_BACKEND="comfyui", GENHOOK_COMFYUI_URL=fake.url)
    try:
        g.serve(workers=1)
        body = {**trigger, "callback_url": receiver.url}
        job_id = g.trigger("product-image", body).json()["job_id"]
        (call,) = receiver.wait_job(job_id)
        payload = verify(g.secret, call)
        assert payload["status"] == "success", payload
        assert payload["metadata"]["model_id"] == "comfyui/sd_xl_base_1.0.safetensors"
        assert payload["outputs"] and fake.interrupts == []
        fake.step_seconds = 0.2  # 25 steps: 5 s of sampling per image
        running = g.trigger("product-image", {**body, "product_id": "SKU-124"}).json()["job_id"]
        wait_for(lambda: fake.running is not None, 60, "ComfyUI to start sampling")
        assert g.http.post(f"/v1/jobs/{running}/cancel").status_code == 202
        done = g.wait_status(running, {"cancelled", "succeeded", "failed"})
        assert done["status"] == "cancelled"
        wait_for(lambda: fake.interrupts, 30, "the interrupt to reach ComfyUI")
        entry = history_of(fake, fake.interrupts[0]["prompt_id"])
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
    finally:
        g.close()
        receiver.stop()


# -- video -----------------------------------------------------------------------------------


def video_request(**changes: Any) -> GenerationRequest:
    return request(kind="video", width=120, height=214, duration_seconds=1.0, fps=12.0, **changes)


@pytest.fixture
def video_backend(fake: FakeComfyUI) -> Iterator[Callable[..., ComfyUIBackend]]:
    """Backends on the fake with a video graph of the test's (None: the shipped one)."""
    made: list[ComfyUIBackend] = []

    def make(
        _fake: FakeComfyUI, video_workflow: Path | None = None, pricing: Any = None
    ) -> ComfyUIBackend:
        config = ComfyUISettings(url=_fake.url, video_workflow=video_workflow, timeout=30.0)
        made.append(ComfyUIBackend(config, pricing))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def shipped_video() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SHIPPED_VIDEO_GRAPH.read_text(encoding="utf-8"))
    return data


def test_the_shipped_video_graph_uses_only_comfyui_core_nodes() -> None:
    """Every node of the shipped Wan 2.1 graph is one the fake knows as ComfyUI core declares
    it, every value input in range, and it validates as ComfyUI's validate_prompt would."""
    from tests.fake_comfyui import NODE_CLASSES, validate_prompt

    graph = shipped_video()["graph"]
    assert {n["class_type"] for n in graph.values()} <= set(NODE_CLASSES)
    assert {n["class_type"] for n in graph.values()} >= {
        "UNETLoader",
        "CLIPLoader",
        "VAELoader",
        "EmptyHunyuanLatentVideo",
        "KSampler",
        "VAEDecode",
        "CreateVideo",
        "SaveVideo",
    }
    graph["6"]["inputs"]["text"] = "a mug"
    valid, error, outputs, node_errors = validate_prompt(graph, ["example.png"])
    assert valid, (error, node_errors)
    assert outputs == ["50"]


def test_generates_a_video_on_the_shipped_video_graph(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    """kind: video fills the video graph (prompt, seed, sides rounded to 16, length 4k + 1
    holding the frames asked, fps), follows the sampler's progress, fetches the MP4 SaveVideo
    reported under images/animated from /view (in its subfolder) into the attempt's folder, and
    returns it probed: size, rate, frames, length, a poster frame of its size; priced by the
    pricing file per video second."""
    from genhook.media.video_qc import measure_video
    from genhook.pricing import load_pricing

    prices = tmp_path / "pricing.yaml"
    prices.write_text('comfyui:\n  "*": {per_image: 0, per_video_second: 2.0}\n', "utf-8")
    backend = video_backend(fake, pricing=load_pricing(prices))
    seen: list[Progress] = []
    workdir = tmp_path / "attempt"
    result = backend.generate(video_request(), Control(on_progress=seen.append, workdir=workdir))
    (graph,) = submitted(fake)
    latent = graph["40"]["inputs"]
    assert (latent["width"], latent["height"], latent["length"]) == (128, 208, 13)
    assert graph["49"]["inputs"]["fps"] == 12.0
    assert graph["6"]["inputs"]["text"] == video_request().prompt
    assert graph["7"]["inputs"]["text"] == "blurry, watermark"
    assert graph["3"]["inputs"]["seed"] == 7 and graph["3"]["inputs"]["steps"] == 4
    assert [(p.step, p.total) for p in seen][-4:] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    views = [r.query for r in fake.requests if r.path == "/view"]
    assert views == [{"filename": "genhook_00001_.mp4", "subfolder": "video", "type": "output"}]
    clip = result.video
    assert clip is not None and clip.path.parent == workdir and clip.path.suffix == ".mp4"
    assert (clip.width, clip.height, clip.fps, clip.frames) == (128, 208, 12.0, 13)
    assert clip.duration_seconds == pytest.approx(13 / 12, abs=0.01) and not clip.has_audio
    assert result.pixels.shape == (208, 128, 3) and result.pixels.std() > 10
    assert result.model_id == "comfyui/wan2.1_t2v_1.3B_fp16.safetensors"
    assert result.credit_cost == pytest.approx(2.0 * clip.duration_seconds)
    assert backend.estimate_cost(video_request()) == pytest.approx(2.0)
    m = measure_video(clip.path)
    assert (m.codec, m.width, m.height, m.frames) == ("h264", 128, 208, 13)
    assert m.frozen_seconds == 0.0 and m.black_share == 0.0


@pytest.mark.parametrize(
    ("frames", "length"), [(1, 1), (2, 5), (12, 13), (24, 25), (25, 25), (81, 81), (96, 97)]
)
def test_the_video_length_is_the_least_4k_plus_1_holding_the_frames(
    frames: int, length: int
) -> None:
    assert video_length(frames) == length
    assert ((length - 1) // 4) * 4 + 1 == length >= frames  # what Wan's VAE decodes to


def test_a_model_name_sets_the_video_graphs_model(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    backend = video_backend(fake)
    model = "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
    result = backend.generate(video_request(model=model), Control(workdir=tmp_path))
    assert submitted(fake)[0]["37"]["inputs"]["unet_name"] == model
    assert result.model_id == f"comfyui/{model}"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model": "wan2.2_t2v_5B.safetensors"}, ["node 37 (UNETLoader) input 'unet_name'"]),
        ({"fps": 240.0}, ["node 49 (CreateVideo) input 'fps'", "bigger than max of 120"]),
    ],
)
def test_video_node_errors_are_permanent_and_name_the_node_and_input(
    fake: FakeComfyUI,
    tmp_path: Path,
    video_backend: Callable[..., ComfyUIBackend],
    changes: dict[str, Any],
    words: list[str],
) -> None:
    """ComfyUI refuses the filled video graph with HTTP 400 and ``node_errors`` (a model its
    ``models/diffusion_models`` folder lacks, a rate past CreateVideo's max): a permanent
    ``backend_rejected`` naming the node, its class and the input; nothing is queued."""
    base = {"kind": "video", "width": 120, "height": 214, "duration_seconds": 1.0, "fps": 12.0}
    with pytest.raises(GenhookError) as caught:
        video_backend(fake).generate(request(**{**base, **changes}), Control(workdir=tmp_path))
    error = caught.value
    assert error.code is ErrorCode.BACKEND_REJECTED and not error.retryable
    for word in words:
        assert word in error.description
    assert fake.history == {} and fake.pending == []


def webm_graph() -> dict[str, Any]:
    """An operator's own video graph, markers in place: SaveWEBM (VP9) straight from the
    decoded frames, and the exact frame count where no 4k + 1 rounding is wanted."""
    graph = shipped_video()["graph"]
    graph["6"]["inputs"]["text"] = "{{prompt}}"
    graph["3"]["inputs"]["seed"] = "{{seed}}"
    graph["40"]["inputs"].update(width="{{width}}", height="{{height}}", length="{{length}}")
    del graph["49"], graph["50"]
    graph["60"] = {
        "class_type": "SaveWEBM",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "mine",
            "codec": "vp9",
            "fps": "{{fps}}",
            "crf": 32.0,
        },
    }
    return graph


def test_an_operators_video_graph_saving_webm(fake: FakeComfyUI, tmp_path: Path) -> None:
    """GENHOOK_COMFYUI_VIDEO_WORKFLOW: an operator's marker graph ending in SaveWEBM; its VP9
    WebM is found under images/animated, fetched and probed like any clip."""
    path = write_graph(tmp_path, webm_graph(), "video.json")
    settings = Settings.from_env(
        {"GENHOOK_COMFYUI_URL": fake.url, "GENHOOK_COMFYUI_VIDEO_WORKFLOW": str(path)}
    )
    assert settings.comfyui.video_workflow == path
    backend = BackendRegistry.from_entry_points(settings).get("comfyui")
    assert isinstance(backend, ComfyUIBackend)
    status = backend.status()
    assert status.ready and str(path) in status.detail
    result = backend.generate(video_request(seed=11), Control(workdir=tmp_path / "a"))
    (graph,) = submitted(fake)
    assert graph["60"]["inputs"]["fps"] == 12.0 and graph["3"]["inputs"]["seed"] == 11
    clip = result.video
    assert clip is not None and clip.path.suffix == ".webm"
    assert (clip.width, clip.height, clip.fps, clip.frames) == (128, 208, 12.0, 13)
    import av

    with av.open(str(clip.path)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
    backend.close()


def test_a_video_graph_ending_in_an_animated_webp_is_refused_naming_savevideo(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    """ComfyUI's first Wan example saved with SaveAnimatedWEBP: ComfyUI reports the file as a
    video (images/animated), but FFmpeg decodes no animated WebP: a permanent refusal that
    says what to use instead, not a retry that would fail the same way."""
    graph = webm_graph()
    graph["60"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "ComfyUI",
            "fps": "{{fps}}",
            "lossless": False,
            "quality": 80,
            "method": "default",
        },
    }
    path = write_graph(tmp_path, graph, "webp.json")
    with pytest.raises(GenhookError) as caught:
        video_backend(fake, path).generate(video_request(), Control(workdir=tmp_path / "a"))
    assert caught.value.code is ErrorCode.BACKEND_REJECTED and not caught.value.retryable
    assert "SaveVideo" in caught.value.description
    (entry,) = fake.history.values()
    (saved,) = entry["outputs"]["60"]["images"]
    assert entry["outputs"]["60"]["animated"] == [True] and saved["filename"].endswith(".webp")
    with Image.open(io.BytesIO(fake.files[("output", "", saved["filename"])])) as webp:
        assert webp.format == "WEBP" and webp.n_frames == 13


def test_a_video_graph_saving_only_stills_is_a_transient_error(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    """A "video" graph that saves PNGs (the image graph given as the video one): no video in
    the history, so no clip, said so."""
    path = write_graph(tmp_path, shipped(), "stills.json")
    with pytest.raises(GenhookError) as caught:
        video_backend(fake, path).generate(video_request(), Control(workdir=tmp_path))
    assert caught.value.code is ErrorCode.BACKEND_ERROR
    assert "without saving a video" in caught.value.description
    assert "1 still image" in caught.value.description


def test_a_video_that_does_not_decode_is_a_transient_error(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    fake.corrupt_outputs = True
    with pytest.raises(GenhookError) as caught:
        video_backend(fake).generate(video_request(), Control(workdir=tmp_path))
    assert caught.value.code is ErrorCode.BACKEND_ERROR
    assert "undecodable video" in caught.value.description


def test_a_bad_video_graph_file_makes_the_backend_not_ready(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    path = write_graph(tmp_path, {"graph": {"1": {"class_type": "SaveVideo", "inputs": {}}}})
    backend = video_backend(fake, path)
    status = backend.status()
    assert not status.ready
    assert status.detail.startswith(f"GENHOOK_COMFYUI_VIDEO_WORKFLOW: {path}")
    assert "no placeholder 'prompt'" in status.detail
    with pytest.raises(GenhookError) as caught:
        backend.generate(video_request(), Control(workdir=tmp_path))
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED


def test_a_missing_video_graph_file_is_refused_by_the_settings(tmp_path: Path) -> None:
    missing = {"GENHOOK_COMFYUI_VIDEO_WORKFLOW": str(tmp_path / "none.json")}
    with pytest.raises(ConfigError, match=r"GENHOOK_COMFYUI_VIDEO_WORKFLOW: .* is not a file"):
        Settings.from_env(missing)


def test_videos_are_read_where_comfyui_reports_them() -> None:
    """``images`` with ``animated: [true]`` (SaveVideo, SaveWEBM, SaveAnimatedWEBP), ``gifs``
    (VideoHelperSuite's VHS_VideoCombine) and ``videos``; previews (temp) left out, each file
    once; still images are not videos and videos not still images."""
    entry = {
        "outputs": {
            "9": {"images": [{"filename": "still.png", "subfolder": "", "type": "output"}]},
            "50": {
                "images": [{"filename": "a.mp4", "subfolder": "video", "type": "output"}],
                "animated": [True],
            },
            "51": {
                "images": [{"filename": "p.webp", "subfolder": "", "type": "temp"}],
                "animated": [True],
            },
            "52": {
                "gifs": [
                    {
                        "filename": "AnimateDiff_00001.mp4",
                        "subfolder": "",
                        "type": "output",
                        "format": "video/h264-mp4",
                        "frame_rate": 8.0,
                    },
                    {"filename": "AnimateDiff_00001.png", "subfolder": "", "type": "temp"},
                ]
            },
            "53": {"videos": [{"filename": "a.mp4", "subfolder": "video", "type": "output"}]},
            "54": {"images": [{"filename": "one.webp", "subfolder": "", "type": "output"}],
                   "animated": [False]},
        }
    }  # fmt: skip
    assert [v["filename"] for v in output_videos(entry)] == ["a.mp4", "AnimateDiff_00001.mp4"]
    assert [i["filename"] for i in output_images(entry)] == ["still.png", "one.webp"]
    assert first_video(entry, "p")["subfolder"] == "video"


def test_cancel_mid_video_interrupts_our_prompt(
    fake: FakeComfyUI, tmp_path: Path, video_backend: Callable[..., ComfyUIBackend]
) -> None:
    fake.step_seconds = 0.1
    cancelled = threading.Event()
    seen: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress)
        if progress.step >= 1 and progress.total == 4:
            cancelled.set()

    control = Control(on_progress=on_progress, is_cancelled=cancelled.is_set, workdir=tmp_path)
    with pytest.raises(GenhookError) as caught:
        video_backend(fake).generate(video_request(), control)
    assert caught.value.code is ErrorCode.CANCELLED
    assert fake.interrupts and fake.interrupts[0].get("prompt_id")
    assert not any(r.path == "/view" for r in fake.requests)


def test_product_video_runs_end_to_end_on_comfyui(
    tmp_path: Path,
    fake: FakeComfyUI,
    genhook: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`genhook run product-video` with GENHOOK_VIDEO_BACKEND=comfyui (the shipped workflow,
    made small): one clip at 24 fps on the Wan graph, its 25 frames (4k + 1) within the length
    tolerance, so every quality check passes; each preset an H.264 MP4 at 24 fps with its
    poster; 0 credits (the shipped price of comfyui)."""
    import av

    from tests.test_video_pipeline import SMALL, TRIGGER, path_of, small_install

    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    env = small_install(tmp_path)
    env |= {"GENHOOK_VIDEO_BACKEND": "comfyui", "GENHOOK_COMFYUI_URL": fake.url}
    out = tmp_path / "out"
    trigger = json.dumps({**TRIGGER, "target_platform": "short_video_pack"})
    result = genhook("run", "product-video", "--input", trigger, "--out", str(out), env=env)
    assert result.code == 0, result.stderr + result.stdout
    payload = result.json
    assert payload["status"] == "success" and payload["quality_warning"] is None, payload
    assert payload["metadata"]["model_id"] == "comfyui/wan2.1_t2v_1.3B_fp16.safetensors"
    assert payload["metadata"]["credit_cost"] == 0.0
    (graph,) = submitted(fake)  # one tall clip for both 9:16 presets
    assert graph["40"]["inputs"]["length"] == 25 and graph["49"]["inputs"]["fps"] == 24.0
    assert "Ceramic Pour-Over Mug" in graph["6"]["inputs"]["text"]
    assert [o["platform_code"] for o in payload["outputs"]] == ["tiktok_video", "instagram_reel"]
    for output in payload["outputs"]:
        with av.open(str(path_of(output["asset_url"]))) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            size = (stream.codec_context.width, stream.codec_context.height)
            assert size == SMALL[output["platform_code"]]
            assert float(stream.average_rate) == 24.0
        assert output["fps"] == 24.0
        assert output["duration_seconds"] == pytest.approx(25 / 24, abs=0.01)
        with Image.open(path_of(output["poster_url"])) as poster:
            poster.load()
            assert poster.size == SMALL[output["platform_code"]]
