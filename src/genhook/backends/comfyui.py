"""The ``comfyui`` backend: an operator's own ComfyUI server, driven through its HTTP and
websocket API.

One generation:

1. Each media input of the request (``request.inputs``: a reference photo, a logo) is uploaded
   with ``POST /upload/image`` (multipart, field ``image``, ``overwrite=true``, named by its
   content hash) and the name ComfyUI answers is put into the graph where the placeholder of
   that input's name points (a ``LoadImage`` node's ``image``).
2. The graph is filled: ``prompt``, ``negative_prompt``, ``seed``, ``width``, ``height`` always
   (sizes rounded to a multiple of 8, as ComfyUI's latents are), ``checkpoint`` when the model
   is not ``graph``, and every other placeholder the request's ``options`` name (``steps``,
   ``cfg``, ...).
3. The websocket ``/ws?clientId=<uuid>`` is opened first, then ``POST /prompt`` with
   ``{"prompt": graph, "client_id": <uuid>}``; the answer's ``prompt_id`` is followed on the
   socket (``execution_start``, ``executing``, ``progress`` -> ``control.progress(value, max)``,
   ``execution_success``, ``execution_error``, ``execution_interrupted``; ``status`` carries the
   queue's length). If the socket drops (or a proxy refuses it), ``GET /history/{prompt_id}``
   and ``GET /queue`` are polled instead, every 0.25 s growing to 2 s.
4. When the prompt is done, its ``/history`` entry lists the outputs: every image of ``type``
   ``output`` (what ``SaveImage`` writes; previews are ``temp`` and left out), once each. None is
   a transient ``backend_error``; more than the one asked for: the first is used. It is fetched
   from ``/view?filename=&subfolder=&type=`` (up to 3 tries: the file exists on the server, so
   a failed download is not worth a new generation) and decoded to RGB pixels.

Video (``kind: video``) runs the same way on the video graph (``GENHOOK_COMFYUI_VIDEO_WORKFLOW``,
default: the shipped Wan 2.1 text-to-video graph ``graphs/comfyui_wan_t2v.json``: ``UNETLoader``,
``CLIPLoader`` of type ``wan``, ``VAELoader``, ``ModelSamplingSD3``, two ``CLIPTextEncode``,
``EmptyHunyuanLatentVideo``, ``KSampler``, ``VAEDecode``, ``CreateVideo``, ``SaveVideo`` as MP4
H.264). Besides the image placeholders it fills ``fps`` (the rate asked for), ``frames`` (the
clip's length in frames, ``duration x fps``) and ``length`` (the same rounded up to ``4k + 1``,
as ``EmptyHunyuanLatentVideo`` and Wan's VAE make ``((length - 1) // 4) * 4 + 1`` frames);
``width`` and ``height`` are rounded to multiples of 16 (Wan's latents are 1/8 with 2x2
patches). The video is found in the ``/history`` entry where ComfyUI reports one: ``SaveVideo``
and ``SaveWEBM`` answer ``{"images": [{filename, subfolder, type}], "animated": [true]}``
(``comfy_api``'s ``ui.PreviewVideo``), ``SaveAnimatedWEBP``/``SaveAnimatedPNG`` the same, and
VideoHelperSuite's ``VHS_VideoCombine`` ``{"gifs": [{filename, subfolder, type, format,
frame_rate}]}`` (also read under ``videos``); ``type: output`` only, once each, the first used.
It is fetched from ``/view`` into the attempt's folder and probed with PyAV
(:func:`genhook.backends.hosted.video_clip`): its size, rate, length and a poster frame, as the
hosted video backends return it (MP4, WebM, GIF and APNG decode; FFmpeg decodes no animated
WebP, so a graph ending in ``SaveAnimatedWEBP`` is refused, permanently, naming SaveVideo).
Its price is the pricing file's ``per_video_second`` of ``comfyui`` for the seconds it lasts.

The graph (``GENHOOK_COMFYUI_WORKFLOW``, default: the shipped text-to-image graph
``graphs/comfyui_txt2img.json``) is an API-format graph ("Export (API)" in ComfyUI) in either of
two forms, checked when the backend is built (a bad one makes the backend not ready, with one
line naming the file and what is wrong):

- ``{"graph": {...}, "placeholders": {"prompt": ["6", "text"], "seed": ["3", "seed"], ...}}``:
  each placeholder is ``[node id, input name]``, or a list of such pairs to fill several inputs
  with one value;
- the exported graph itself, with the inputs to fill set to ``"{{prompt}}"``, ``"{{seed}}"``...

``prompt`` is required; a marker that nothing fills when a generation runs is refused
(``backend_rejected``) rather than sent as text.

Failures become genhook's codes at this edge: connection refused or reset:
``backend_unavailable``; ``POST /prompt`` answering 400 (``node_errors``, ``missing_node_type``,
``prompt_outputs_failed_validation``): ``backend_rejected``, naming the node (id and class), the
input and ComfyUI's message; HTTP 5xx: ``backend_error``; an ``execution_error``: ``backend_error``
(transient: out of memory, a CUDA fault), except when its exception is one that says the node's
inputs are wrong (:data:`PERMANENT_EXCEPTIONS`): ``backend_rejected``; our prompt not started
while the queue ahead of it does not move for ``stall_seconds``: ``backend_timeout`` (the prompt
is deleted from the queue); past ``control.deadline`` or ``GENHOOK_COMFYUI_TIMEOUT``:
``backend_timeout`` after ``POST /interrupt``. On cancel (``control.is_cancelled()``, checked
every 0.25 s at most): ``POST /interrupt`` (with ``{"prompt_id"}``, which recent ComfyUI uses to
interrupt only that prompt; it is sent only while ours runs) or ``POST /queue {"delete":
[prompt_id]}`` while it waits, then ``cancelled``.

ComfyUI has no authentication of its own, so this backend sends no credentials. Its prices are
the pricing file's (entry ``comfyui``; 0 in the shipped file).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from genhook.backends.base import (
    AssetKind,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
    InputMedia,
    VideoClip,
)
from genhook.backends.hosted import (
    clip,
    decode,
    origin_text,
    reason,
    transport_error,
    video_clip,
)
from genhook.config import ComfyUISettings, Settings
from genhook.config_values import ConfigError
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.pricing import Pricing, load_pricing, shipped_pricing

log = logging.getLogger("genhook.backends.comfyui")

SHIPPED_GRAPH = Path(__file__).resolve().parent / "graphs" / "comfyui_txt2img.json"
SHIPPED_VIDEO_GRAPH = Path(__file__).resolve().parent / "graphs" / "comfyui_wan_t2v.json"
SHIPPED_NAMES = {
    str(SHIPPED_GRAPH): "(shipped txt2img)",
    str(SHIPPED_VIDEO_GRAPH): "(shipped Wan 2.1 text-to-video)",
}
IMAGE_VARIABLE, VIDEO_VARIABLE = "GENHOOK_COMFYUI_WORKFLOW", "GENHOOK_COMFYUI_VIDEO_WORKFLOW"
GRAPH_MODEL = "graph"
"""The model name that keeps the graph's own checkpoint."""
REQUIRED_PLACEHOLDERS = ("prompt",)
ALWAYS_FILLED = ("prompt", "negative_prompt", "seed", "width", "height")
"""Placeholders every generation fills (the others only when the request names a value)."""
CHECKPOINT = "checkpoint"
MARKER = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SEED_MASK = 0xFFFF_FFFF_FFFF_FFFF
"""KSampler's seed is 0..2**64-1."""
LATENT_STEP = 8
VIDEO_STEP = 16
"""Wan's latents are 1/8 of the frame, sampled in 2x2 patches: sides are multiples of 16."""
TEMPORAL_STEP = 4
"""Wan's (and HunyuanVideo's) VAE packs 4 frames into one latent frame, after the first."""
MIN_SIDE = 16
VIDEO_KEYS = ("gifs", "videos")
"""``/history`` output keys that hold videos only (VideoHelperSuite's VHS_VideoCombine)."""
OUTPUT_TYPE = "output"
"""The ``type`` of files that ``SaveImage`` writes (previews are ``temp``)."""
WAIT_TICK = 0.25
"""Longest wait for a websocket message before cancel and deadline are checked again."""
POLL_FIRST, POLL_MAX = 0.25, 2.0
"""The history polling interval after the socket dropped: from the first, doubling to the max."""
STALL_SECONDS = 300.0
"""How long our prompt may wait while the queue ahead of it does not move."""
VIEW_ATTEMPTS = 3
DEFAULT_FPS, DEFAULT_SECONDS = 16.0, 5.0
"""A clip's rate and length when the request names none (Wan 2.1's own)."""
STOP_TIMEOUT = 5.0
"""Seconds each interrupt or queue-delete request may take."""
VANISHED_POLLS = 5
"""Polls in a row that find our prompt neither queued, running nor done: it was deleted."""
MAX_ERRORS_QUOTED = 3
MAX_DETAIL = 600
PERMANENT_EXCEPTIONS = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "IndexError",
        "FileNotFoundError",
        "AssertionError",
        "NotImplementedError",
    }
)
"""Exception types (the last part of ComfyUI's ``exception_type``) of an ``execution_error`` that
say the node's inputs are wrong: the same graph fails again, so the job is not retried. Any
other (out of memory, CUDA errors, ``RuntimeError``) is transient."""


# -- the graph and its placeholders ----------------------------------------------------------


Target = tuple[str, str]
"""(node id, input name) of one placeholder."""


@dataclass(frozen=True)
class Graph:
    """An API-format ComfyUI graph and where its named placeholders point."""

    nodes: Mapping[str, Any]
    placeholders: Mapping[str, tuple[Target, ...]]
    source: str
    markers: frozenset[Target] = field(default_factory=frozenset)
    """Inputs that hold a ``{{name}}`` marker in the file (must be filled to be sent)."""

    def value(self, name: str) -> Any:
        """The graph's own value of placeholder ``name`` (None: no such placeholder)."""
        targets = self.placeholders.get(name)
        if not targets:
            return None
        node, key = targets[0]
        value = self.nodes[node]["inputs"].get(key)
        return None if (node, key) in self.markers else value

    def fill(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the graph with every placeholder in ``values`` set; a marker left unfilled
        is ``backend_rejected``."""
        graph: dict[str, Any] = copy.deepcopy(dict(self.nodes))
        filled: set[Target] = set()
        for name, value in values.items():
            for node, key in self.placeholders.get(name, ()):
                graph[node]["inputs"][key] = value
                filled.add((node, key))
        for node, key in sorted(self.markers - filled):
            found = MARKER.match(str(self.nodes[node]["inputs"][key]))
            marker = found.group(1) if found else key
            raise GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"the ComfyUI graph {self.source} leaves {{{{{marker}}}}} "
                f"(node {node} input {key!r}) unfilled: give it a value in the graph or pass it "
                "in the generate node's options",
            )
        return graph


def load_graph(path: Path, variable: str = IMAGE_VARIABLE) -> Graph:
    """The graph file at ``path`` (see the module docstring); :class:`ConfigError` with one
    line naming the variable, the file and what is wrong."""
    where = f"{variable}: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_graph(data, str(path), where)


def parse_graph(data: Any, source: str, where: str) -> Graph:
    """A :class:`Graph` from the file's parsed JSON; :class:`ConfigError` naming ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: accepts a JSON object (an API-format graph)")
    declared: Any = {}
    nodes: Any = data
    if "graph" in data:
        unknown = sorted(set(data) - {"graph", "placeholders"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; accepts graph, placeholders")
        nodes, declared = data["graph"], data.get("placeholders", {})
    if isinstance(nodes, dict) and isinstance(nodes.get("nodes"), list) and "links" in nodes:
        raise ConfigError(
            f"{where}: is a workflow in ComfyUI's UI format; save it with 'Export (API)'"
        )
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigError(f"{where}: the graph is empty or not an object of nodes")
    for node_id, node in nodes.items():
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("class_type"), str)
            or not isinstance(node.get("inputs"), dict)
        ):
            raise ConfigError(
                f"{where}: node {node_id!r} is not an API-format node "
                '({"class_type": ..., "inputs": {...}})'
            )
    placeholders: dict[str, list[Target]] = {}
    markers: set[Target] = set()
    for node_id, node in nodes.items():
        for key, value in node["inputs"].items():
            match = MARKER.match(value) if isinstance(value, str) else None
            if match:
                placeholders.setdefault(match.group(1), []).append((node_id, key))
                markers.add((node_id, key))
    if not isinstance(declared, dict):
        raise ConfigError(f"{where}: placeholders must be an object of name: [node id, input]")
    for name, spec in declared.items():
        if not NAME.match(str(name)):
            raise ConfigError(f"{where}: placeholder name {name!r} is not a plain name")
        for node_id, key in _targets(spec, name, where):
            node = nodes.get(node_id)
            if node is None:
                raise ConfigError(f"{where}: placeholder {name!r} names node {node_id!r}, absent")
            if key not in node["inputs"]:
                raise ConfigError(
                    f"{where}: placeholder {name!r} names input {key!r} of node {node_id!r} "
                    f"({node['class_type']}), which has no such input"
                )
            if isinstance(node["inputs"][key], list):
                raise ConfigError(
                    f"{where}: placeholder {name!r} names input {key!r} of node {node_id!r}, "
                    "a link to another node; name a value input"
                )
            placeholders.setdefault(name, []).append((node_id, key))
    for name in REQUIRED_PLACEHOLDERS:
        if name not in placeholders:
            raise ConfigError(
                f'{where}: has no placeholder {name!r} (add "placeholders": '
                f'{{"{name}": [NODE_ID, "text"]}} or set that input to "{{{{{name}}}}}")'
            )
    return Graph(
        nodes=nodes,
        placeholders={name: tuple(dict.fromkeys(t)) for name, t in placeholders.items()},
        source=SHIPPED_NAMES.get(source, source),
        markers=frozenset(markers),
    )


def _targets(spec: Any, name: str, where: str) -> list[Target]:
    """``[node, input]`` or ``[[node, input], ...]`` as (node, input) pairs."""

    def pair(item: Any) -> Target | None:
        if (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], (str, int))
            and not isinstance(item[0], bool)
            and isinstance(item[1], str)
        ):
            return str(item[0]), item[1]
        return None

    one = pair(spec)
    if one is not None:
        return [one]
    many = [pair(item) for item in spec] if isinstance(spec, list) and spec else [None]
    if any(item is None for item in many):
        raise ConfigError(
            f"{where}: placeholder {name!r} must be [node id, input name] or a list of them"
        )
    return [item for item in many if item is not None]


# -- the backend -----------------------------------------------------------------------------


class ComfyUIBackend:
    """Generates images (and videos) on a ComfyUI server by filling and submitting an
    API-format graph."""

    name = "comfyui"
    kinds: frozenset[AssetKind] = frozenset({"image", "video"})
    cpu_bound = False  # waits on a remote engine, outside the CPU gate

    def __init__(
        self,
        config: ComfyUISettings | None = None,
        pricing: Pricing | None = None,
        *,
        stall_seconds: float = STALL_SECONDS,
        poll_max: float = POLL_MAX,
    ) -> None:
        config = config or ComfyUISettings()
        self.config = config
        self.base_url = config.url.rstrip("/")
        self.timeout = config.timeout
        self.stall_seconds = stall_seconds
        self.poll_max = max(POLL_FIRST, poll_max)
        self.pricing = pricing or shipped_pricing()
        self.graph: Graph | None = None
        self.video_graph: Graph | None = None
        self._problem: str | None = None
        try:
            self.graph = load_graph(config.workflow or SHIPPED_GRAPH)
            self.video_graph = load_graph(
                config.video_workflow or SHIPPED_VIDEO_GRAPH, VIDEO_VARIABLE
            )
        except ConfigError as exc:
            self._problem = str(exc)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ComfyUIBackend:
        """The factory the backend registry calls: this backend from the process's settings."""
        path = settings.pricing_file
        return cls(
            settings.comfyui,
            load_pricing(path) if path is not None else None,
            stall_seconds=settings.comfyui.stall_timeout,
        )

    # -- the Backend protocol ----------------------------------------------------------------

    def status(self) -> BackendStatus:
        """Ready when the graph loaded (the URL always has a value); no network call."""
        if self._problem or self.graph is None or self.video_graph is None:
            return BackendStatus(False, self._problem or "no graph")
        graphs = f"graph {self.graph.source}, video graph {self.video_graph.source}"
        return BackendStatus(True, f"{self._where()}, {graphs}{self._price()}")

    def probe(self, timeout: float) -> BackendStatus:
        """Configured and answering: ``GET /system_stats`` within ``timeout`` seconds."""
        ready = self.status()
        if not ready.ready:
            return ready
        where = self._where()
        try:
            with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client:
                response = client.get(f"{self.base_url}/system_stats")
        except httpx.TimeoutException:
            return BackendStatus(False, f"{where} did not answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return BackendStatus(False, f"{where} is not reachable ({reason(exc)})")
        if response.status_code != 200:
            return BackendStatus(
                False, f"{where} answers /system_stats with HTTP {response.status_code}"
            )
        return BackendStatus(True, f"{where} answering{_engine_text(response)}{self._price()}")

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The pricing file's credits for one image of ``request.model``, or for the seconds of
        video asked for."""
        if request.kind == "video":
            seconds = request.duration_seconds or DEFAULT_SECONDS
            return self.pricing.price(self.name, request.model, "video_seconds", seconds)
        return self.pricing.price(self.name, request.model, "image", 1)

    def generate(
        self, request: GenerationRequest, control: Control | None = None
    ) -> GenerationResult:
        """One image (or clip) for ``request``, or a GenhookError whose code says if a retry
        may help."""
        graph = self.video_graph if request.kind == "video" else self.graph
        if self._problem or graph is None:
            raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"comfyui: {self._problem}")
        control = control or Control()
        started = time.perf_counter()
        run = _Run(self, graph, request, control)
        model_id = f"comfyui/{self.checkpoint_of(request)}"
        if request.kind == "video":
            clip_, poster = run.execute_video()
            return GenerationResult(
                pixels=poster,
                request=request,
                model_id=model_id,
                credit_cost=self.pricing.price(
                    self.name, request.model, "video_seconds", clip_.duration_seconds
                ),
                seconds=time.perf_counter() - started,
                video=clip_,
            )
        pixels = run.execute()
        return GenerationResult(
            pixels=pixels,
            request=request,
            model_id=model_id,
            credit_cost=self.estimate_cost(request),
            seconds=time.perf_counter() - started,
        )

    # -- the pieces --------------------------------------------------------------------------

    def graph_for(self, request: GenerationRequest) -> Graph | None:
        """The graph a generation of ``request`` fills: the video graph for a clip."""
        return self.video_graph if request.kind == "video" else self.graph

    def checkpoint_of(self, request: GenerationRequest) -> str:
        """The checkpoint a generation of ``request`` uses: the model, or the graph's own."""
        graph = self.graph_for(request)
        if request.model not in (GRAPH_MODEL, "default") or graph is None:
            return request.model
        own = graph.value(CHECKPOINT)
        return str(own) if isinstance(own, str) and own else GRAPH_MODEL

    def values(self, request: GenerationRequest) -> dict[str, Any]:
        """What the placeholders are filled with for ``request`` (uploads aside)."""
        graph = self.graph_for(request)
        assert graph is not None
        values: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed & SEED_MASK,
            "width": latent_side(request.width),
            "height": latent_side(request.height),
        }
        if request.kind == "video":
            fps = request.fps or DEFAULT_FPS
            frames = max(1, round((request.duration_seconds or DEFAULT_SECONDS) * fps))
            values.update(
                width=latent_side(request.width, VIDEO_STEP),
                height=latent_side(request.height, VIDEO_STEP),
                fps=float(fps),
                frames=frames,
                length=video_length(frames),
            )
        for key, value in request.options.items():
            if key in graph.placeholders and key not in values and key != CHECKPOINT:
                values[key] = value
        if request.model not in (GRAPH_MODEL, "default"):
            if CHECKPOINT not in graph.placeholders:
                raise GenhookError(
                    ErrorCode.BACKEND_REJECTED,
                    f"model {request.model!r} asked for, but the ComfyUI graph {graph.source} has "
                    f"no {CHECKPOINT!r} placeholder; use model: graph or add one",
                )
            values[CHECKPOINT] = request.model
        return values

    def close(self) -> None:
        """Close the HTTP client (a later generation opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def http(self) -> httpx.Client:
        """The one shared HTTP client, created on first use (httpx clients are thread-safe)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=httpx.Timeout(min(self.timeout, 60.0)),
                        headers={"User-Agent": "genhook"},
                        follow_redirects=False,
                    )
                client = self._client
        return client

    def ws_url(self, client_id: str) -> str:
        """``ws(s)://host:port[/prefix]/ws?clientId=<client_id>`` for the configured URL."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", f"clientId={client_id}", ""))

    def _where(self) -> str:
        return origin_text(self.base_url) + urlsplit(self.base_url).path

    def _price(self) -> str:
        price = self.pricing.unit_price(self.name, "*", "image")
        second = self.pricing.unit_price(self.name, "*", "video_seconds")
        text = "" if price is None else f", {price:g} credits per image"
        return text + ("" if second is None else f", {second:g} per video second")


def latent_side(side: int, step: int = LATENT_STEP) -> int:
    """``side`` rounded to the nearest multiple of ``step`` (8: ComfyUI's latents are 1/8 of
    the image; 16 for Wan's video latents), at least 16."""
    return max(MIN_SIDE, round(side / step) * step)


def video_length(frames: int) -> int:
    """The least ``4k + 1`` frames that hold ``frames``: the ``length`` a video latent of Wan
    or HunyuanVideo decodes to in full."""
    return TEMPORAL_STEP * -(-(max(1, frames) - 1) // TEMPORAL_STEP) + 1


def _engine_text(response: httpx.Response) -> str:
    """`` (ComfyUI <version>, <device>)`` from a ``/system_stats`` answer, where it says."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    system = _dict(payload.get("system"))
    devices = payload.get("devices") if isinstance(payload.get("devices"), list) else []
    version = str(system.get("comfyui_version") or "").strip()
    device = devices[0].get("name") if devices and isinstance(devices[0], dict) else None
    parts = [f"ComfyUI {version}" if version else "ComfyUI"] + ([str(device)] if device else [])
    return f" ({', '.join(parts)})"


# -- one generation --------------------------------------------------------------------------


class _Run:
    """The state of one generation: submit, follow, stop, collect."""

    def __init__(
        self, backend: ComfyUIBackend, graph: Graph, request: GenerationRequest, control: Control
    ) -> None:
        self.backend = backend
        self.graph = graph
        self.request = request
        self.control = control
        self.client = backend.http()
        self.url = backend.base_url
        own = time.monotonic() + backend.timeout
        self.deadline = own if control.deadline is None else min(own, control.deadline)
        self.bound = (
            "the run timeout"
            if control.deadline is not None and control.deadline <= own
            else (f"GENHOOK_COMFYUI_TIMEOUT ({backend.timeout:g}s)")
        )
        self.client_id = uuid.uuid4().hex
        self.prompt_id: str | None = None
        self.started = False
        self.stopped = False
        self.queue_remaining: int | None = None
        self.queue_moved = time.monotonic()
        self.absent_polls = 0

    # -- the whole run -----------------------------------------------------------------------

    def execute(self) -> Pixels:
        """The one image asked for, decoded."""
        entry = self.run()
        item = first_output(entry, self.prompt_id or "")
        return self.decode(self.view(item), item)

    def execute_video(self) -> tuple[VideoClip, Pixels]:
        """The one clip asked for, written into the attempt's folder and probed."""
        entry = self.run()
        item = first_video(entry, self.prompt_id or "")
        data = self.view(item)
        name = Path(item["filename"]).name
        path = self.control.scratch() / f"comfyui-{self.request.seed}-{name}"
        path.write_bytes(data)
        try:
            return video_clip(path, f"ComfyUI's output {item['filename']!r}")
        except GenhookError as exc:
            if path.suffix.lower() != ".webp":
                raise
            raise GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"{exc.description}: an animated WebP (SaveAnimatedWEBP) is no clip FFmpeg "
                "decodes; end the video graph in SaveVideo (MP4, H.264) or SaveWEBM",
            ) from exc

    def run(self) -> dict[str, Any] | None:
        """Fill, submit and follow the graph to its end; its ``/history`` entry."""
        values = self.backend.values(self.request)
        values.update(self.upload_inputs())
        graph = self.graph.fill(values)
        ws = self.open_socket()
        try:
            self.submit(graph)
            self.follow(ws)
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws.close()
        return self.history_entry(wait=True)

    # -- HTTP --------------------------------------------------------------------------------

    def timeout(self) -> httpx.Timeout:
        left = max(0.5, self.deadline - time.monotonic())
        return httpx.Timeout(min(left, 60.0))

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.url}{path}"
        try:
            return self.client.request(
                method, url, timeout=kwargs.pop("timeout", self.timeout()), **kwargs
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc

    def upload_inputs(self) -> dict[str, str]:
        """Each media input uploaded; the names ComfyUI gave them, by placeholder name."""
        names: dict[str, str] = {}
        for name, media in self.request.inputs.items():
            if name not in self.graph.placeholders:
                raise GenhookError(
                    ErrorCode.BACKEND_REJECTED,
                    f"the ComfyUI graph {self.graph.source} has no placeholder {name!r} for the "
                    f"input {name!r}: point one at a LoadImage node's image input",
                )
            names[name] = self.upload(name, media)
        return names

    def upload(self, name: str, media: InputMedia) -> str:
        extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
            media.content_type.split(";")[0].strip().lower(), "png"
        )
        filename = f"genhook-{media.sha256[:24]}.{extension}"
        response = self.call(
            "POST",
            "/upload/image",
            files={"image": (filename, media.data, media.content_type)},
            data={"overwrite": "true", "type": "input"},
        )
        raise_for_status(response, f"uploading the input {name!r}")
        payload = json_object(response, "/upload/image")
        uploaded = payload.get("name")
        if not isinstance(uploaded, str) or not uploaded:
            raise GenhookError(ErrorCode.BACKEND_ERROR, "ComfyUI answered an upload without a name")
        subfolder = payload.get("subfolder")
        return f"{subfolder}/{uploaded}" if isinstance(subfolder, str) and subfolder else uploaded

    def submit(self, graph: dict[str, Any]) -> None:
        response = self.call("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        if response.status_code == 400:
            raise GenhookError(ErrorCode.BACKEND_REJECTED, refusal_text(response))
        raise_for_status(response, "submitting the graph")
        prompt_id = json_object(response, "/prompt").get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise GenhookError(
                ErrorCode.BACKEND_ERROR, "ComfyUI accepted the graph without a prompt_id"
            )
        self.prompt_id = prompt_id
        self.queue_moved = time.monotonic()

    # -- the websocket -----------------------------------------------------------------------

    def open_socket(self) -> Any:
        """The websocket for our client id; None when the server (or a proxy) refuses to upgrade
        (the run polls instead). Nothing listening is ``backend_unavailable``."""
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        url = self.backend.ws_url(self.client_id)
        where = origin_text(self.url)
        try:
            return connect(
                url,
                open_timeout=min(10.0, max(0.5, self.deadline - time.monotonic())),
                close_timeout=1.0,
                max_size=None,
                compression=None,
                legacy=True,
            )
        except (InvalidHandshake, InvalidURI) as exc:
            log.info("comfyui: no websocket at %s (%s); polling /history instead", where, exc)
            return None
        except TimeoutError as exc:
            raise GenhookError(
                ErrorCode.BACKEND_UNAVAILABLE, f"could not connect to {where} in time"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise GenhookError(
                ErrorCode.BACKEND_UNAVAILABLE, f"could not connect to {where} ({reason.lower()})"
            ) from exc

    def follow(self, ws: Any) -> None:
        """Wait for our prompt to end, on the socket while it lasts, then by polling."""
        from websockets.exceptions import ConnectionClosed

        while ws is not None:
            self.check()
            try:
                raw = ws.recv(timeout=WAIT_TICK)
            except TimeoutError:
                self.check_stall()
                continue
            except ConnectionClosed:
                log.info("comfyui: websocket closed during %s; polling /history", self.prompt_id)
                break
            if isinstance(raw, str) and self.on_message(raw):
                return
            self.check_stall()
        for interval in _intervals(self.backend.poll_max):
            if self.poll():
                return
            self.sleep(interval)

    def on_message(self, raw: str) -> bool:
        """Act on one websocket message; True when our prompt has ended well."""
        try:
            message = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return False
        kind, data = message.get("type"), message["data"]
        if kind == "status":
            info = (
                data.get("status", {}).get("exec_info", {})
                if isinstance(data.get("status"), dict)
                else {}
            )
            remaining = info.get("queue_remaining") if isinstance(info, dict) else None
            if isinstance(remaining, int):
                self.note_queue(remaining)
            return False
        if data.get("prompt_id") != self.prompt_id:
            return False
        if kind in ("execution_start", "execution_cached"):
            self.started = True
        elif kind == "executing":
            self.started = True
            if data.get("node") is None:
                return True
        elif kind == "progress":
            self.started = True
            value, total = data.get("value"), data.get("max")
            if isinstance(value, int) and isinstance(total, int):
                self.control.progress(value, total, self.node_text(data.get("node")))
        elif kind == "execution_success":
            return True
        elif kind == "execution_error":
            raise execution_error(data)
        elif kind == "execution_interrupted":
            raise interrupted_error(data)
        return False

    def node_text(self, node: Any) -> str:
        spec = self.graph.nodes.get(str(node)) if node is not None else None
        return f"node {node} ({spec['class_type']})" if isinstance(spec, dict) else ""

    def note_queue(self, remaining: int) -> None:
        if self.queue_remaining is None or remaining < self.queue_remaining:
            self.queue_moved = time.monotonic()
        self.queue_remaining = remaining

    # -- polling -----------------------------------------------------------------------------

    def poll(self) -> bool:
        """One look at ``/history`` (and ``/queue`` while not done); True when done well."""
        self.check()
        entry = self.history_entry(wait=False)
        if entry is not None:
            return True
        response = self.call("GET", "/queue")
        raise_for_status(response, "reading the queue")
        queue = json_object(response, "/queue")
        running = _prompt_ids(queue.get("queue_running"))
        pending = _prompt_ids(queue.get("queue_pending"))
        self.note_queue(len(running) + len(pending))
        if self.prompt_id in running:
            self.started = True
            self.absent_polls = 0
        elif self.prompt_id in pending:
            self.absent_polls = 0
        else:
            self.absent_polls += 1
            if self.absent_polls >= VANISHED_POLLS:
                raise GenhookError(
                    ErrorCode.BACKEND_ERROR,
                    f"prompt {self.prompt_id} left ComfyUI's queue without a result (deleted "
                    "on the server?)",
                )
        self.check_stall()
        return False

    def history_entry(self, *, wait: bool) -> dict[str, Any] | None:
        """Our ``/history`` entry, with an error in it raised; None while there is none (with
        ``wait``: polled until it appears, as it follows ``execution_success`` closely)."""
        for interval in _intervals(self.backend.poll_max):
            response = self.call("GET", f"/history/{self.prompt_id}")
            raise_for_status(response, "reading the history")
            entry = json_object(response, "/history").get(self.prompt_id or "")
            if isinstance(entry, dict):
                raise_history_error(entry)
                status = entry.get("status")
                done = (
                    not isinstance(status, dict)
                    or status.get("completed")
                    or status.get("status_str") in ("success", "error")
                )
                if done:
                    return entry
            if not wait:
                return None
            self.sleep(interval)
        return None  # pragma: no cover - the intervals never end

    # -- cancel, deadline, stall ------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, checking cancel and the deadline every tick."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(WAIT_TICK, left))

    def check(self) -> None:
        """Cancelled or past the deadline: stop our prompt on the server, then raise."""
        if self.control.is_cancelled():
            self.stop()
            raise GenhookError(ErrorCode.CANCELLED)
        if time.monotonic() >= self.deadline:
            self.stop()
            raise GenhookError(
                ErrorCode.BACKEND_TIMEOUT,
                f"ComfyUI did not finish prompt {self.prompt_id} within {self.bound}",
            )

    def check_stall(self) -> None:
        """Our prompt not started while the queue ahead of it has not moved for too long."""
        if self.started or self.prompt_id is None:
            return
        waited = time.monotonic() - self.queue_moved
        if waited >= self.backend.stall_seconds:
            self.stop()
            ahead = "" if self.queue_remaining is None else f" ({self.queue_remaining} in it)"
            raise GenhookError(
                ErrorCode.BACKEND_TIMEOUT,
                f"ComfyUI's queue did not move for {waited:.0f}s{ahead}; prompt {self.prompt_id} "
                "never started (deleted from the queue)",
            )

    def stop(self) -> None:
        """Best effort: interrupt our prompt if it runs, delete it if it waits."""
        prompt_id = self.prompt_id
        if prompt_id is None or self.stopped:
            return
        self.stopped = True
        try:
            if not self.started:
                self.call("POST", "/queue", json={"delete": [prompt_id]}, timeout=STOP_TIMEOUT)
                response = self.call("GET", "/queue", timeout=STOP_TIMEOUT)
                running = _prompt_ids(json_object(response, "/queue").get("queue_running"))
                self.started = prompt_id in running
            if self.started:
                self.call("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=STOP_TIMEOUT)
        except (GenhookError, httpx.HTTPError) as exc:
            log.warning("comfyui: could not stop prompt %s: %s", prompt_id, exc)

    # -- the output --------------------------------------------------------------------------

    def view(self, item: Mapping[str, str]) -> bytes:
        """The output file's bytes from ``/view``, tried up to :data:`VIEW_ATTEMPTS` times."""
        params = {
            "filename": item["filename"],
            "subfolder": item["subfolder"],
            "type": item["type"],
        }
        failure: GenhookError | None = None
        for attempt in range(VIEW_ATTEMPTS):
            if attempt:
                self.sleep(0.2 * 2 ** (attempt - 1))
            try:
                response = self.call("GET", "/view", params=params)
            except GenhookError as exc:
                failure = exc
                continue
            if response.status_code == 200 and response.content:
                return response.content
            failure = GenhookError(
                ErrorCode.BACKEND_ERROR,
                f"fetching ComfyUI's output {item['filename']!r} from /view failed "
                f"with HTTP {response.status_code}",
            )
        assert failure is not None
        raise failure

    def decode(self, data: bytes, item: Mapping[str, str]) -> Pixels:
        return decode(data, f"ComfyUI's output {item['filename']!r}")


def _intervals(longest: float) -> Iterator[float]:
    """Polling intervals: :data:`POLL_FIRST`, doubling up to ``longest``, forever."""
    interval = POLL_FIRST
    while True:
        yield interval
        interval = min(longest, interval * 2)


def _prompt_ids(items: Any) -> set[str]:
    """The prompt ids of ``/queue``'s ``queue_running`` or ``queue_pending`` (each item is
    ``[number, prompt_id, prompt, extra_data, outputs]``)."""
    if not isinstance(items, list):
        return set()
    return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1 and item[1]}


def output_images(entry: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every saved still image of a ``/history`` entry (``type: output``), each once, in
    order; an animated output (a video) is not one."""
    return _saved(entry, video=False)


def output_videos(entry: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every saved video of a ``/history`` entry (``type: output``), each once, in order: the
    ``images`` of a node whose output says ``animated: [true]`` (SaveVideo, SaveWEBM,
    SaveAnimatedWEBP), and any ``gifs`` or ``videos`` (VideoHelperSuite)."""
    return _saved(entry, video=True)


def _saved(entry: Mapping[str, Any], *, video: bool) -> list[dict[str, str]]:
    seen: set[tuple[str, str, str]] = set()
    found: list[dict[str, str]] = []
    outputs = entry.get("outputs")
    for node_output in outputs.values() if isinstance(outputs, dict) else ():
        if not isinstance(node_output, dict):
            continue
        animated = node_output.get("animated")
        is_video = isinstance(animated, list) and bool(animated) and animated[0] is True
        items: list[Any] = []
        if is_video == video:
            images = node_output.get("images")
            items += images if isinstance(images, list) else []
        if video:
            for key in VIDEO_KEYS:
                more = node_output.get(key)
                items += more if isinstance(more, list) else []
        for item in items:
            if not isinstance(item, dict) or item.get("type") != OUTPUT_TYPE:
                continue
            name, sub = item.get("filename"), item.get("subfolder") or ""
            if not isinstance(name, str) or not name or not isinstance(sub, str):
                continue
            saved_key = (name, sub, OUTPUT_TYPE)
            if saved_key not in seen:
                seen.add(saved_key)
                found.append({"filename": name, "subfolder": sub, "type": OUTPUT_TYPE})
    return found


def first_output(entry: Mapping[str, Any] | None, prompt_id: str) -> dict[str, str]:
    """The one image asked for: the first saved one; none is a transient ``backend_error``."""
    images = output_images(entry or {})
    if not images:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR,
            f"ComfyUI finished prompt {prompt_id} without saving an image (1 asked for; "
            "previews and temporary files do not count)",
        )
    if len(images) > 1:
        log.info("comfyui: prompt %s saved %d images; using the first", prompt_id, len(images))
    return images[0]


def first_video(entry: Mapping[str, Any] | None, prompt_id: str) -> dict[str, str]:
    """The one clip asked for: the first saved video; none is a transient ``backend_error``."""
    videos = output_videos(entry or {})
    if not videos:
        stills = len(output_images(entry or {}))
        also = f"; it saved {stills} still image(s)" if stills else ""
        raise GenhookError(
            ErrorCode.BACKEND_ERROR,
            f"ComfyUI finished prompt {prompt_id} without saving a video (1 asked for{also}; "
            "save it with SaveVideo, SaveWEBM or VHS_VideoCombine, not as previews)",
        )
    if len(videos) > 1:
        log.info("comfyui: prompt %s saved %d videos; using the first", prompt_id, len(videos))
    return videos[0]


# -- ComfyUI's errors ------------------------------------------------------------------------


def raise_for_status(response: httpx.Response, doing: str) -> None:
    """Translate a non-200 answer (other than /prompt's 400) into its GenhookError."""
    status = response.status_code
    if status == 200:
        return
    body = clip(" ".join(response.text.split()))
    detail = f"HTTP {status}" + (f": {body}" if body else "")
    if status >= 500:
        raise GenhookError(ErrorCode.BACKEND_ERROR, f"ComfyUI failed {doing} ({detail})")
    if status == 429:
        raise GenhookError(ErrorCode.BACKEND_RATE_LIMITED, f"ComfyUI is rate limited ({detail})")
    if status in (401, 403, 404, 405):
        raise GenhookError(
            ErrorCode.BACKEND_NOT_CONFIGURED,
            f"{origin_text(str(response.request.url))} does not take {doing} as ComfyUI does "
            f"({detail}); is GENHOOK_COMFYUI_URL a ComfyUI server?",
        )
    raise GenhookError(ErrorCode.BACKEND_REJECTED, f"ComfyUI refused {doing} ({detail})")


def refusal_text(response: httpx.Response) -> str:
    """``POST /prompt``'s 400 in words: the error, then each node's errors (id, class, input,
    message, details), as ComfyUI's ``validate_prompt`` reports them."""
    try:
        payload = response.json()
    except ValueError:
        return f"ComfyUI refused the graph (HTTP 400: {clip(' '.join(response.text.split()))})"
    payload = payload if isinstance(payload, dict) else {}
    error = payload.get("error")
    parts: list[str] = []
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("type") or "invalid prompt")
        extra = _dict(error.get("extra_info"))
        node_id, class_type = extra.get("node_id"), extra.get("class_type")
        if node_id is not None:
            parts.append(
                f"node {node_id}" + (f" ({class_type})" if class_type else "") + f": {message}"
            )
        else:
            details = str(error.get("details") or "").strip()
            parts.append(message + (f" ({details.splitlines()[0]})" if details else ""))
    elif error:
        parts.append(str(error))
    node_errors = payload.get("node_errors")
    quoted = 0
    for node_id, report in node_errors.items() if isinstance(node_errors, dict) else ():
        if not isinstance(report, dict):
            continue
        class_type = report.get("class_type") or "?"
        for item in report.get("errors") or ():
            if not isinstance(item, dict) or quoted >= MAX_ERRORS_QUOTED:
                continue
            extra = _dict(item.get("extra_info"))
            name = extra.get("input_name")
            where = f"node {node_id} ({class_type})" + (f" input {name!r}" if name else "")
            details = str(item.get("details") or "").strip()
            text = f"{where}: {item.get('message') or item.get('type')}"
            parts.append(text + (f" [{details}]" if details else ""))
            quoted += 1
    text = "; ".join(parts) or "invalid prompt"
    text = f"ComfyUI refused the graph: {text}"
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def execution_error(data: Mapping[str, Any]) -> GenhookError:
    """An ``execution_error`` message (or history status message) as a GenhookError."""
    node, node_type = data.get("node_id"), data.get("node_type")
    exception = str(data.get("exception_type") or "Exception")
    message = " ".join(str(data.get("exception_message") or "").split())
    text = clip(f"ComfyUI node {node} ({node_type}) failed: {exception}: {message}")
    last = exception.rsplit(".", 1)[-1]
    code = ErrorCode.BACKEND_REJECTED if last in PERMANENT_EXCEPTIONS else ErrorCode.BACKEND_ERROR
    return GenhookError(code, text)


def interrupted_error(data: Mapping[str, Any]) -> GenhookError:
    """Our prompt interrupted on the server by someone else (we raise ``cancelled`` ourselves
    before we would see our own interrupt): transient."""
    node, node_type = data.get("node_id"), data.get("node_type")
    return GenhookError(
        ErrorCode.BACKEND_ERROR,
        f"ComfyUI's run was interrupted on the server at node {node} ({node_type})",
    )


def raise_history_error(entry: Mapping[str, Any]) -> None:
    """A ``/history`` entry whose status is ``error``: its ``execution_error`` (or
    ``execution_interrupted``) message as a GenhookError."""
    status = entry.get("status")
    if not isinstance(status, dict) or status.get("status_str") != "error":
        return
    for message in status.get("messages") or ():
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            if message[0] == "execution_error":
                raise execution_error(message[1])
            if message[0] == "execution_interrupted":
                raise interrupted_error(message[1])
    raise GenhookError(ErrorCode.BACKEND_ERROR, "ComfyUI reports the run failed, with no message")


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def json_object(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError as exc:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"ComfyUI answered {path} with a body that is not JSON"
        ) from exc
    if not isinstance(payload, dict):
        raise GenhookError(ErrorCode.BACKEND_ERROR, f"ComfyUI answered {path} with no JSON object")
    return payload
