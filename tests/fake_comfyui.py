"""A faithful fake of a ComfyUI server's HTTP and websocket API, for tests.

A real aiohttp server on 127.0.0.1 (a free port by default) with its own event loop in a
background thread, speaking the protocol of ComfyUI's ``server.py`` (``PromptServer``),
``execution.py`` (``validate_prompt``, ``PromptExecutor``, ``PromptQueue``) and ``main.py``
(``prompt_worker``), as in comfyanonymous/ComfyUI:

- ``GET /ws?clientId=<sid>``: a websocket; first ``{"type": "status", "data": {"status":
  {"exec_info": {"queue_remaining": n}}, "sid": sid}}``, then ``status`` on every queue change
  (to every socket) and, to the submitting client only, ``execution_start``,
  ``execution_cached``, ``executing`` (``{"node": id, "display_node": id, "prompt_id"}``;
  ``node: null`` once the prompt is done, after its history is written), ``progress``
  (``{"value", "max", "prompt_id", "node"}`` per sampler step, each followed by a binary
  preview frame: a 4-byte big-endian event type 1 and a 4-byte image format, then JPEG bytes),
  ``executed`` (``{"node", "display_node", "output": {"images": [...]}, "prompt_id"}``),
  ``execution_success``, ``execution_error`` (``{"prompt_id", "node_id", "node_type",
  "executed", "exception_message", "exception_type", "traceback", "current_inputs",
  "current_outputs"}``) and ``execution_interrupted``. Messages are ``{"type", "data"}`` JSON.
- ``POST /prompt`` ``{"prompt": graph, "client_id"}``: validated as ``validate_prompt`` does:
  a node without ``class_type`` or of an unknown class is ``missing_node_type`` (``node_errors``
  empty); no output node is ``prompt_no_outputs``; each output node's inputs, recursively:
  ``required_input_missing``, ``bad_linked_input``, ``return_type_mismatch``,
  ``invalid_input_type``, ``value_smaller_than_min``, ``value_bigger_than_max``,
  ``value_not_in_list``, each with ``extra_info.input_name``; any of them is HTTP 400
  ``{"error": {"type": "prompt_outputs_failed_validation", ...}, "node_errors": {id: {"errors":
  [...], "dependent_outputs": [...], "class_type"}}}``. Valid: ``{"prompt_id", "number",
  "node_errors": {}}`` and queued.
- ``GET /queue`` (``queue_running``/``queue_pending`` items ``[number, prompt_id, prompt,
  extra_data, outputs_to_execute]``), ``POST /queue`` ``{"delete": [ids]}`` / ``{"clear": true}``,
  ``POST /interrupt`` (an optional ``{"prompt_id"}`` body interrupts only that prompt, as recent
  ComfyUI does), ``GET /history/{prompt_id}`` (``{id: {"prompt", "outputs", "status":
  {"status_str", "completed", "messages"}, "meta"}}`` or ``{}``), ``GET /view?filename=&subfolder=
  &type=``, ``POST /upload/image`` (multipart ``image``, ``overwrite``, ``subfolder``, ``type``;
  answers ``{"name", "subfolder", "type"}``, renaming ``x.png`` to ``x (1).png`` unless
  ``overwrite``), ``GET /system_stats``, ``GET /object_info``, ``GET /prompt``.

The nodes it knows (their inputs as ComfyUI's ``INPUT_TYPES`` declare them): CheckpointLoaderSimple,
CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, VAEEncode, SaveImage, PreviewImage and
LoadImage. Running a prompt "samples" its KSampler for ``steps`` steps (``step_seconds`` each) and
saves real PNGs (Pillow): the size of the latent (width and height floored to multiples of 8),
``batch_size`` of them, content from the positive prompt and the seed.

For video (the nodes of ComfyUI's Wan 2.1 text-to-video example, ``comfy_extras/nodes_video.py``,
``nodes_hunyuan.py``, ``nodes_images.py``): UNETLoader, CLIPLoader, VAELoader, ModelSamplingSD3,
EmptyHunyuanLatentVideo (``width``/``height`` 16.., ``length`` 1..: a latent of ``((length - 1)
// 4) + 1`` frames, which VAEDecode turns into ``((length - 1) // 4) * 4 + 1`` frames), CreateVideo
(``images``, ``fps`` 1..120; its optional ``audio`` left out) and SaveVideo (``video``,
``filename_prefix``, ``format`` auto|mp4, ``codec`` auto|h264: a real H.264 MP4 written with
PyAV, as ``VideoFromComponents.save_to`` does), SaveWEBM (``images``, ``filename_prefix``,
``codec`` vp9|av1, ``fps``, ``crf``: a real VP9 WebM) and SaveAnimatedWEBP (``images``,
``filename_prefix``, ``fps``, ``lossless``, ``quality``, ``method``: a real animated WebP, with
Pillow). All three report their file as ``comfy_api``'s ``ui.PreviewVideo`` (and the animated
WebP helper) do: ``{"images": [{"filename", "subfolder", "type": "output"}], "animated":
[true]}``, which is also what ``/history`` holds under the node's id in ``outputs``; a
``filename_prefix`` with a folder (``video/genhook``) saves into that subfolder, as
``folder_paths.get_save_image_path`` does. ``/view`` answers each file with its content type by
extension. ``corrupt_outputs`` makes them write bytes that are no video.

Failure switches (attributes, set any time):

- ``prompt_failures``: a list of HTTP statuses the next ``POST /prompt`` calls answer (5xx
  with aiohttp's text body), one each;
- ``drop_socket_after``: after that many sampler steps, close the job's client's websocket;
- ``refuse_sockets``: answer ``/ws`` with HTTP 404 (a proxy that does not upgrade);
- ``stalled``: the queue is not worked (prompts stay pending);
- ``fail_node``: ``{"node_type": "KSampler", "exception_type": "...", "exception_message":
  "..."}``: that node raises when it runs (``execution_error``);
- ``view_failures``: that many ``/view`` requests answer HTTP 500 first;
- ``corrupt_outputs``: ``SaveImage`` writes bytes that are no image;
- ``step_seconds``: the time one sampler step takes.

Records: ``requests`` (method, path, query, JSON body), ``interrupts``, ``deleted``, ``uploads``
(name -> bytes), ``history``.

As a separate process: ``python -m tests.fake_comfyui --port 0 [--step-seconds S]`` prints
``READY <port>`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import signal
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from tests.fake_openai import render_png

CHECKPOINTS = ("sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors")
SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc")
UNETS = ("wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_t2v_14B_fp8_e4m3fn.safetensors")
TEXT_ENCODERS = ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",)
VAES = ("wan_2.1_vae.safetensors",)
CLIP_TYPES = (
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
)
CONTENT_TYPES = {
    ".png": "image/png",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}
SCHEDULERS = ("normal", "karras", "exponential", "simple")
MAX_RESOLUTION = 16384
PREVIEW_EVENT, PREVIEW_JPEG = 1, 1


@dataclass(frozen=True)
class NodeClass:
    """What ComfyUI knows of a node class: its required inputs (``INPUT_TYPES()["required"]``),
    ``RETURN_TYPES`` and ``OUTPUT_NODE``."""

    required: Mapping[str, tuple[Any, ...]]
    returns: tuple[str, ...] = ()
    output_node: bool = False


def _int(default: int, low: int, high: int, step: int = 1) -> tuple[Any, ...]:
    return ("INT", {"default": default, "min": low, "max": high, "step": step})


NODE_CLASSES: dict[str, NodeClass] = {
    "CheckpointLoaderSimple": NodeClass(
        {"ckpt_name": (list(CHECKPOINTS),)}, ("MODEL", "CLIP", "VAE")
    ),
    "CLIPTextEncode": NodeClass(
        {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}, ("CONDITIONING",)
    ),
    "EmptyLatentImage": NodeClass(
        {
            "width": _int(512, 16, MAX_RESOLUTION, 8),
            "height": _int(512, 16, MAX_RESOLUTION, 8),
            "batch_size": _int(1, 1, 4096),
        },
        ("LATENT",),
    ),
    "KSampler": NodeClass(
        {
            "model": ("MODEL",),
            "seed": _int(0, 0, 0xFFFF_FFFF_FFFF_FFFF),
            "steps": _int(20, 1, 10000),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
            "sampler_name": (list(SAMPLERS),),
            "scheduler": (list(SCHEDULERS),),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}),
        },
        ("LATENT",),
    ),
    "VAEDecode": NodeClass({"samples": ("LATENT",), "vae": ("VAE",)}, ("IMAGE",)),
    "VAEEncode": NodeClass({"pixels": ("IMAGE",), "vae": ("VAE",)}, ("LATENT",)),
    "SaveImage": NodeClass(
        {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
        output_node=True,
    ),
    "PreviewImage": NodeClass({"images": ("IMAGE",)}, output_node=True),
    "LoadImage": NodeClass({"image": ("INPUT_FILES",)}, ("IMAGE", "MASK")),
    "UNETLoader": NodeClass(
        {
            "unet_name": (list(UNETS),),
            "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],),
        },
        ("MODEL",),
    ),
    "CLIPLoader": NodeClass(
        {"clip_name": (list(TEXT_ENCODERS),), "type": (list(CLIP_TYPES),)}, ("CLIP",)
    ),
    "VAELoader": NodeClass({"vae_name": (list(VAES),)}, ("VAE",)),
    "ModelSamplingSD3": NodeClass(
        {"model": ("MODEL",), "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0})},
        ("MODEL",),
    ),
    "EmptyHunyuanLatentVideo": NodeClass(
        {
            "width": _int(848, 16, MAX_RESOLUTION, 16),
            "height": _int(480, 16, MAX_RESOLUTION, 16),
            "length": _int(25, 1, MAX_RESOLUTION, 4),
            "batch_size": _int(1, 1, 4096),
        },
        ("LATENT",),
    ),
    "CreateVideo": NodeClass(
        {"images": ("IMAGE",), "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0})},
        ("VIDEO",),
    ),
    "SaveVideo": NodeClass(
        {
            "video": ("VIDEO",),
            "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
            "format": (["auto", "mp4"],),
            "codec": (["auto", "h264"],),
        },
        output_node=True,
    ),
    "SaveAnimatedWEBP": NodeClass(
        {
            "images": ("IMAGE",),
            "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0}),
            "lossless": ("BOOLEAN", {"default": True}),
            "quality": _int(80, 0, 100),
            "method": (["default", "fastest", "slowest"],),
        },
        output_node=True,
    ),
    "SaveWEBM": NodeClass(
        {
            "images": ("IMAGE",),
            "filename_prefix": ("STRING", {"default": "ComfyUI"}),
            "codec": (["vp9", "av1"],),
            "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0}),
            "crf": ("FLOAT", {"default": 32.0, "min": 0.0, "max": 63.0}),
        },
        output_node=True,
    ),
}
"""``LoadImage``'s ``image`` is a list of the files in the input folder (the uploads)."""


@dataclass
class Task:
    """One queued prompt."""

    number: int
    prompt_id: str
    prompt: dict[str, Any]
    client_id: str | None
    outputs: list[str]
    interrupted: bool = False

    def item(self) -> list[Any]:
        extra = {"client_id": self.client_id} if self.client_id else {}
        return [self.number, self.prompt_id, self.prompt, extra, self.outputs]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    json: Any


class _Interrupted(Exception):
    pass


@dataclass
class _Latent:
    width: int
    height: int
    batch: int
    seed: int = 0
    text: str = ""
    frames: int = 0
    """A video latent's frame count once decoded (0: an image latent)."""


@dataclass
class _Images:
    pngs: list[bytes] = field(default_factory=list)
    video: _Frames | None = None


@dataclass(frozen=True)
class _Frames:
    """Decoded video frames (an IMAGE batch), described: rendered when a node saves them."""

    width: int
    height: int
    count: int
    seed: int
    text: str


@dataclass(frozen=True)
class _Video:
    """CreateVideo's VIDEO: frames and their rate."""

    frames: _Frames
    fps: float


def frame_pixels(frames: _Frames) -> Iterator[Any]:
    """The RGB frames (numpy, ``h x w x 3``) of ``frames``: a gradient and a square that move
    every frame, tinted by the seed and the prompt."""
    import zlib

    import numpy as np

    tint = zlib.crc32(f"{frames.text}|{frames.seed}".encode()) & 0xFFFFFF
    base = np.array([(tint >> 16) & 255, (tint >> 8) & 255, tint & 255], dtype=np.int32)
    w, h = frames.width, frames.height
    x = np.arange(w, dtype=np.int32)[None, :]
    y = np.arange(h, dtype=np.int32)[:, None]
    side = max(4, min(w, h) // 4)
    for i in range(frames.count):
        rgb = np.empty((h, w, 3), dtype=np.uint8)
        for c in range(3):
            rgb[..., c] = ((x * (c + 1) + y * 2 + i * 9 + base[c]) % 256).astype(np.uint8)
        left = (i * 5) % max(1, w - side)
        rgb[h // 3 : h // 3 + side, left : left + side] = 255
        yield rgb


def render_video(frames: _Frames, fps: float, container: str) -> bytes:
    """A real clip of ``frames`` at ``fps``: H.264 MP4 (``mp4``) or VP9 WebM (``webm``),
    written with PyAV as ``comfy_api``'s ``VideoFromComponents.save_to`` and ``SaveWEBM`` do."""
    from fractions import Fraction

    import av

    out = io.BytesIO()
    codec = "libx264" if container == "mp4" else "libvpx-vp9"
    with av.open(out, "w", format=container) as video:
        stream = video.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = frames.width, frames.height, "yuv420p"
        for rgb in frame_pixels(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                video.mux(packet)
        for packet in stream.encode():
            video.mux(packet)
    return out.getvalue()


def render_animated_webp(frames: _Frames, fps: float, lossless: bool, quality: int) -> bytes:
    """An animated WebP of ``frames``, written with Pillow as ``SaveAnimatedWEBP`` does
    (``save_all``, ``duration`` of ``1000 / fps`` ms)."""
    images = [Image.fromarray(rgb) for rgb in frame_pixels(frames)]
    out = io.BytesIO()
    images[0].save(
        out,
        "WEBP",
        save_all=True,
        append_images=images[1:],
        duration=int(1000.0 / fps),
        lossless=lossless,
        quality=quality,
    )
    return out.getvalue()


def save_path(prefix: str, counter: int, extension: str) -> tuple[str, str]:
    """(subfolder, filename) of a saved file, as ``folder_paths.get_save_image_path`` splits a
    ``filename_prefix`` (``video/genhook`` -> ``video``, ``genhook_00001_.mp4``)."""
    folder, _, name = prefix.rpartition("/")
    return folder, f"{name}_{counter:05}_{extension}"


class FakeComfyUI:
    """The fake server; a context manager that starts and stops it."""

    def __init__(self, *, port: int = 0, step_seconds: float = 0.0) -> None:
        self.requested_port = port
        self.step_seconds = step_seconds
        self.prompt_failures: list[int] = []
        self.drop_socket_after: int | None = None
        self.refuse_sockets = False
        self.stalled = False
        self.fail_node: dict[str, str] | None = None
        self.view_failures = 0
        self.corrupt_outputs = False
        self.requests: list[Recorded] = []
        self.interrupts: list[Any] = []
        self.deleted: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.pending: list[Task] = []
        self.running: Task | None = None
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_count = 0
        self._number = 0
        self._counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What GENHOOK_COMFYUI_URL should be set to."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeComfyUI:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="fake-comfyui", daemon=True)
            self._thread.start()
            if not self._ready.wait(10):
                raise RuntimeError("the fake ComfyUI did not start")
        return self

    def close(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/prompt", self._get_prompt)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_post("/interrupt", self._interrupt)
        app.router.add_get("/history/{prompt_id}", self._get_history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/system_stats", self._system_stats)
        app.router.add_get("/object_info", self._object_info)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.requested_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._wake = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(BaseException):
                await self._worker
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers -----------------------------------------------------------------------------

    def _record(self, request: web.Request, body: Any = None) -> None:
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body))

    def paths(self, method: str | None = None) -> list[str]:
        """The paths of the requests received (of ``method`` only, if given)."""
        return [r.path for r in self.requests if method is None or r.method == method]

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    async def _send(self, kind: str, data: Mapping[str, Any], sid: str | None) -> None:
        """``PromptServer.send_json``: to ``sid``, or to every socket when None."""
        text = json.dumps({"type": kind, "data": data})
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for ws in targets:
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.send_str(text)

    async def _queue_updated(self) -> None:
        status = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        await self._send("status", status, None)

    # -- routes ------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if self.refuse_sockets:
            return web.Response(status=404, text="404: Not Found")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets.pop(sid, None)
        self.sockets[sid] = ws
        self.socket_count += 1
        try:
            status = {"exec_info": {"queue_remaining": self.queue_remaining()}}
            await ws.send_str(
                json.dumps({"type": "status", "data": {"status": status, "sid": sid}})
            )
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
        return ws

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self._record(request, body)
        if self.prompt_failures:
            status = self.prompt_failures.pop(0)
            text = f"{status}: Server got itself in trouble"
            return web.Response(status=status, text=text)
        if not isinstance(body, dict) or "prompt" not in body:
            missing = _error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": missing, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        valid, error, outputs, node_errors = validate_prompt(prompt, self._input_files())
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        number = self._number
        self._number += 1
        prompt_id = str(uuid.uuid4())
        client_id = body.get("client_id")
        task = Task(
            number, prompt_id, prompt, client_id if isinstance(client_id, str) else None, outputs
        )
        self.pending.append(task)
        await self._queue_updated()
        assert self._wake is not None
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        self._record(request)
        running = [self.running.item()] if self.running is not None else []
        pending = [task.item() for task in self.pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete", ()):
            self.deleted.append(prompt_id)
            self.pending = [t for t in self.pending if t.prompt_id != prompt_id]
        await self._queue_updated()
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self._record(request, body)
        self.interrupts.append(body)
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        running = self.running
        if running is not None and (wanted is None or wanted == running.prompt_id):
            running.interrupted = True
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        self._record(request)
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _view(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.view_failures > 0:
            self.view_failures -= 1
            return web.Response(status=500, text="500 Internal Server Error")
        query = request.query
        name = query.get("filename", "")
        if not name or name.startswith("/") or ".." in name:
            return web.Response(status=400)
        key = (query.get("type", "output"), query.get("subfolder", ""), name)
        data = self.files.get(key)
        if data is None:
            return web.Response(status=404)
        extension = name[name.rfind(".") :].lower() if "." in name else ""
        return web.Response(
            body=data,
            content_type=CONTENT_TYPES.get(extension, "application/octet-stream"),
            headers={"Content-Disposition": f'filename="{name}"'},
        )

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        self._record(request, {k: str(v) for k, v in post.items() if k != "image"})
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        subfolder = str(post.get("subfolder") or "")
        name = image.filename
        data = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, dot, ext = name.rpartition(".")
            index = 1
            while (kind, subfolder, name) in self.files and self.files[
                (kind, subfolder, name)
            ] != data:
                name = f"{stem} ({index}).{ext}" if dot else f"{name} ({index})"
                index += 1
        self.files[(kind, subfolder, name)] = data
        if kind == "input":
            self.uploads[f"{subfolder}/{name}" if subfolder else name] = data
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def _system_stats(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 68719476736,
                    "ram_free": 34359738368,
                    "comfyui_version": "0.3.66-fake",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cu128",
                    "embedded_python": False,
                    "argv": ["main.py"],
                },
                "devices": [
                    {
                        "name": "cuda:0 Fake GPU : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": 25769803776,
                        "vram_free": 24696061952,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    async def _object_info(self, request: web.Request) -> web.Response:
        self._record(request)
        files = self._input_files()
        info = {}
        for name, spec in NODE_CLASSES.items():
            required = {
                key: ((files,) if value[0] == "INPUT_FILES" else value)
                for key, value in spec.required.items()
            }
            info[name] = {
                "input": {"required": required},
                "input_order": {"required": list(required)},
                "output": list(spec.returns),
                "output_is_list": [False] * len(spec.returns),
                "output_name": list(spec.returns),
                "name": name,
                "display_name": name,
                "description": "",
                "python_module": "nodes",
                "category": "fake",
                "output_node": spec.output_node,
            }
        return web.json_response(info)

    def _input_files(self) -> list[str]:
        return sorted(self.uploads) or ["example.png"]

    # -- the queue worker (main.py's prompt_worker) -----------------------------------------

    async def _work(self) -> None:
        assert self._wake is not None
        while True:
            if self.stalled or not self.pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.05)
                continue
            task = self.pending.pop(0)
            self.running = task
            await self._queue_updated()
            try:
                await self._execute(task)
            except Exception:  # a bug of the fake: seen in the test's output
                traceback.print_exc()
            finally:
                self.running = None
            await self._queue_updated()

    async def _execute(self, task: Task) -> None:
        sid, pid = task.client_id, task.prompt_id
        messages: list[list[Any]] = []

        async def send(kind: str, data: dict[str, Any]) -> None:
            data = {**data, "prompt_id": pid}
            if kind in (
                "execution_start",
                "execution_cached",
                "execution_success",
                "execution_error",
                "execution_interrupted",
            ):
                data["timestamp"] = int(time.time() * 1000)
                messages.append([kind, data])
            await self._send(kind, data, sid)

        await send("execution_start", {})
        await send("execution_cached", {"nodes": []})
        values: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        status = "success"
        for node_id in execution_order(task.prompt, task.outputs):
            node = task.prompt[node_id]
            await self._send(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, sid
            )
            try:
                if task.interrupted:
                    raise _Interrupted
                fail = self.fail_node
                if fail is not None and fail.get("node_type") == node["class_type"]:
                    raise RuntimeError(fail.get("exception_message", "boom"))
                values[node_id] = await self._run_node(task, node_id, node, values, outputs)
            except _Interrupted:
                status = "error"
                await send(
                    "execution_interrupted",
                    {"node_id": node_id, "node_type": node["class_type"], "executed": executed},
                )
                break
            except Exception as exc:
                status = "error"
                fail = self.fail_node or {}
                await send(
                    "execution_error",
                    {
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": executed,
                        "exception_message": str(exc),
                        "exception_type": fail.get("exception_type", type(exc).__name__),
                        "traceback": ['  File "nodes.py", line 1, in sample\n'],
                        "current_inputs": {},
                        "current_outputs": {},
                    },
                )
                break
            executed.append(node_id)
        if status == "success":
            await send("execution_success", {})
        self.history[pid] = {
            "prompt": task.item(),
            "outputs": outputs if status == "success" else {},
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {node: {"node_id": node, "display_node": node} for node in outputs},
        }
        await self._send("executing", {"node": None, "prompt_id": pid}, sid)

    async def _run_node(
        self,
        task: Task,
        node_id: str,
        node: dict[str, Any],
        values: dict[str, Any],
        outputs: dict[str, Any],
    ) -> Any:
        kind, inputs = node["class_type"], node["inputs"]

        def linked(name: str) -> Any:
            link = inputs[name]
            return values[str(link[0])]

        if kind == "CheckpointLoaderSimple":
            return inputs["ckpt_name"]
        if kind in ("UNETLoader", "CLIPLoader", "VAELoader"):
            return next(iter(inputs.values()))
        if kind == "ModelSamplingSD3":
            return linked("model")
        if kind == "EmptyHunyuanLatentVideo":
            length = int(inputs["length"])
            return _Latent(
                int(inputs["width"]) // 8 * 8,
                int(inputs["height"]) // 8 * 8,
                int(inputs["batch_size"]),
                frames=((length - 1) // 4) * 4 + 1,
            )
        if kind == "CreateVideo":
            images = linked("images")
            if images.video is None:
                raise ValueError("the fake's CreateVideo takes decoded video frames")
            return _Video(images.video, float(inputs["fps"]))
        if kind in ("SaveVideo", "SaveWEBM", "SaveAnimatedWEBP"):
            loop = asyncio.get_running_loop()
            if kind == "SaveVideo":
                video: _Video = linked("video")
                container = "mp4"
            else:
                frames_in = linked("images").video
                if frames_in is None:
                    raise ValueError(f"the fake's {kind} takes decoded video frames")
                video = _Video(frames_in, float(inputs["fps"]))
                container = "webm" if kind == "SaveWEBM" else "webp"
            if container == "webp":
                data = await loop.run_in_executor(
                    None,
                    render_animated_webp,
                    video.frames,
                    video.fps,
                    bool(inputs["lossless"]),
                    int(inputs["quality"]),
                )
            else:
                data = await loop.run_in_executor(
                    None, render_video, video.frames, video.fps, container
                )
            self._counter += 1
            sub, name = save_path(str(inputs["filename_prefix"]), self._counter, f".{container}")
            self.files[("output", sub, name)] = b"\x00not-a-video" if self.corrupt_outputs else data
            saved = [{"filename": name, "subfolder": sub, "type": "output"}]
            outputs[node_id] = {"images": saved, "animated": [True]}
            await self._send(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": outputs[node_id],
                    "prompt_id": task.prompt_id,
                },
                task.client_id,
            )
            return None
        if kind == "CLIPTextEncode":
            return str(inputs["text"])
        if kind == "EmptyLatentImage":
            return _Latent(
                int(inputs["width"]) // 8 * 8,
                int(inputs["height"]) // 8 * 8,
                int(inputs["batch_size"]),
            )
        if kind == "LoadImage":
            data = self.uploads.get(str(inputs["image"]))
            if data is None:
                raise FileNotFoundError(f"Invalid image file: {inputs['image']}")
            return _Images([data])
        if kind == "VAEEncode":
            with Image.open(io.BytesIO(linked("pixels").pngs[0])) as image:
                return _Latent(image.width // 8 * 8, image.height // 8 * 8, 1)
        if kind == "KSampler":
            latent: _Latent = linked("latent_image")
            steps = int(inputs["steps"])
            for step in range(1, steps + 1):
                if self.step_seconds:
                    await asyncio.sleep(self.step_seconds)
                if task.interrupted:
                    raise _Interrupted
                await self._send(
                    "progress",
                    {"value": step, "max": steps, "prompt_id": task.prompt_id, "node": node_id},
                    task.client_id,
                )
                await self._preview(task.client_id)
                if self.drop_socket_after is not None and step == self.drop_socket_after:
                    ws = self.sockets.pop(task.client_id or "", None)
                    if ws is not None:
                        await ws.close()
            return _Latent(
                latent.width,
                latent.height,
                latent.batch,
                int(inputs["seed"]),
                linked("positive"),
                latent.frames,
            )
        if kind == "VAEDecode":
            latent = linked("samples")
            if latent.frames:
                frames = _Frames(
                    latent.width, latent.height, latent.frames, latent.seed, latent.text
                )
                return _Images(video=frames)
            loop = asyncio.get_running_loop()
            pngs = [
                await loop.run_in_executor(
                    None,
                    render_png,
                    f"{latent.text} (seed {latent.seed + i})",
                    latent.width,
                    latent.height,
                )
                for i in range(latent.batch)
            ]
            return _Images(pngs)
        if kind in ("SaveImage", "PreviewImage"):
            images: _Images = linked("images")
            saved = []
            for png in images.pngs:
                self._counter += 1
                if kind == "SaveImage":
                    name, folder = f"{inputs['filename_prefix']}_{self._counter:05}_.png", "output"
                else:
                    name, folder = f"ComfyUI_temp_fake_{self._counter:05}_.png", "temp"
                self.files[(folder, "", name)] = b"\x89PNG-no" if self.corrupt_outputs else png
                saved.append({"filename": name, "subfolder": "", "type": folder})
            outputs[node_id] = {"images": saved}
            await self._send(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": {"images": saved},
                    "prompt_id": task.prompt_id,
                },
                task.client_id,
            )
            return None
        raise RuntimeError(f"the fake cannot run {kind}")  # pragma: no cover - validated before

    async def _preview(self, sid: str | None) -> None:
        ws = self.sockets.get(sid or "")
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_bytes(
                    struct.pack(">II", PREVIEW_EVENT, PREVIEW_JPEG) + b"\xff\xd8fake\xff\xd9"
                )


# -- execution.py's validate_prompt ----------------------------------------------------------


def validate_prompt(
    prompt: Any, input_files: list[str]
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """(valid, error, good outputs, node_errors), as ComfyUI's ``validate_prompt``."""
    if not isinstance(prompt, dict):
        return False, _error("invalid_prompt", "Prompt is not an object", ""), [], {}
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            error = _error(
                "missing_node_type",
                f"Node 'ID #{node_id}' has no class_type. The workflow may be corrupted or a "
                "custom node is missing.",
                f"Node ID '#{node_id}'",
                {"node_id": node_id, "class_type": None, "node_title": None},
            )
            return False, error, [], {}
        spec = NODE_CLASSES.get(node["class_type"])
        if spec is None:
            title = node.get("_meta", {}).get("title", node["class_type"])
            error = _error(
                "missing_node_type",
                f"Node '{title}' not found. The custom node may not be installed.",
                f"Node ID '#{node_id}'",
                {"node_id": node_id, "class_type": node["class_type"], "node_title": title},
            )
            return False, error, [], {}
        if spec.output_node:
            outputs.append(node_id)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    node_errors: dict[str, Any] = {}
    good = []
    failures: list[str] = []
    for output in outputs:
        valid = _validate_inputs(prompt, output, validated, input_files)
        if valid:
            good.append(output)
            continue
        for node_id, (ok, reasons) in validated.items():
            if not ok and reasons:
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output)
                failures += [f"{r['message']}: {r['details']}" for r in reasons]
    if not good:
        error = _error(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "\n".join(dict.fromkeys(failures)),
        )
        return False, error, [], node_errors
    return True, None, good, node_errors


def _validate_inputs(
    prompt: dict[str, Any],
    node_id: str,
    validated: dict[str, tuple[bool, list[dict[str, Any]]]],
    input_files: list[str],
) -> bool:
    if node_id in validated:
        return validated[node_id][0]
    node = prompt[node_id]
    spec = NODE_CLASSES[node["class_type"]]
    inputs = node.get("inputs") or {}
    errors: list[dict[str, Any]] = []
    valid = True
    for name, info in spec.required.items():
        kind = info[0]
        if kind == "INPUT_FILES":
            kind = input_files
        if name not in inputs:
            errors.append(
                _reason("required_input_missing", "Required input is missing", name, name)
            )
            continue
        value = inputs[name]
        if isinstance(value, list):
            if len(value) != 2:
                errors.append(
                    _reason(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        name,
                    )
                )
                continue
            source = prompt.get(str(value[0]))
            returns = NODE_CLASSES[source["class_type"]].returns if source else ()
            slot = value[1] if isinstance(value[1], int) else -1
            received = returns[slot] if 0 <= slot < len(returns) else None
            if received != kind:
                errors.append(
                    _reason(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({kind})",
                        name,
                    )
                )
                continue
            if not _validate_inputs(prompt, str(value[0]), validated, input_files):
                valid = False
            continue
        try:
            if kind == "INT":
                value = int(value)
            elif kind == "FLOAT":
                value = float(value)
            elif kind == "STRING":
                value = str(value)
        except (TypeError, ValueError) as exc:
            errors.append(
                _reason(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {kind} value",
                    f"{name}, {value}, {exc}",
                    name,
                )
            )
            continue
        options = info[1] if len(info) > 1 else {}
        if "min" in options and value < options["min"]:
            message = f"Value {value} smaller than min of {options['min']}"
            errors.append(_reason("value_smaller_than_min", message, f"{name}", name))
            continue
        if "max" in options and value > options["max"]:
            message = f"Value {value} bigger than max of {options['max']}"
            errors.append(_reason("value_bigger_than_max", message, f"{name}", name))
            continue
        if isinstance(kind, list) and value not in kind:
            listed = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
            errors.append(
                _reason(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {listed}",
                    name,
                )
            )
    ok = valid and not errors
    validated[node_id] = (ok, errors)
    return ok


def execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """Every node the outputs need, each after the nodes it links to."""
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2:
                visit(str(value[0]))
        order.append(node_id)

    for output in sorted(outputs):
        visit(output)
    return order


def _error(
    kind: str, message: str, details: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def _reason(kind: str, message: str, details: str, input_name: str) -> dict[str, Any]:
    return {
        "type": kind,
        "message": message,
        "details": details,
        "extra_info": {"input_name": input_name},
    }


def main(argv: list[str] | None = None) -> int:
    """Serve the fake until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_comfyui", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="time of a sampler step")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeComfyUI(port=args.port, step_seconds=args.step_seconds) as fake:
        print(f"READY {fake.port}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
