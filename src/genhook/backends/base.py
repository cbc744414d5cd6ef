"""The generation backend Protocol, its request and result, and the backend registry.

A backend turns a :class:`GenerationRequest` into pixels (or a video clip). Its
``generate(request, control)`` gets a :class:`Control`: it reports progress there (step of
steps), asks it whether the job was cancelled (and then stops its engine's work: interrupts
the run, deletes the queued prompt, cancels the prediction), and keeps within its deadline (the
run timeout; past it, ``backend_timeout``). A plugin written before ``control`` existed, with
``generate(request)`` alone, still works (:func:`call_generate`). It signals failures only with
:class:`genhook.errors.GenhookError`, whose code says whether the failure is transient
(``backend_unavailable``, ``backend_timeout``, ``backend_rate_limited``, ``backend_error``:
retried on the job's retry schedule) or permanent (``backend_rejected``,
``backend_not_configured``). Heavy imports (SDKs, torch) belong inside the backend's methods.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.media.aspect import Frame
from genhook.plugins import Registry, load_group_tolerant
from genhook.presets import StylePreset

if TYPE_CHECKING:
    from genhook.config import Settings

AssetKind = Literal["image", "video"]
PROBE_TIMEOUT = 3.0
"""Seconds a readiness probe may take (``genhook backends list``)."""


@dataclass(frozen=True)
class InputMedia:
    """An input fetched by URL for a generation (a reference photo, a logo): its bytes,
    checked (size cap, content type, decoded), and where it came from."""

    url: str
    content_type: str
    data: bytes = field(repr=False)
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class VideoClip:
    """A generated video: a file on local disk (the worker's attempt folder) and what it is."""

    path: Path
    width: int
    height: int
    fps: float
    duration_seconds: float
    frames: int
    has_audio: bool = False


@dataclass(frozen=True)
class Progress:
    """How far one generation is: ``step`` of ``total`` (engine steps, or a percentage)."""

    step: int
    total: int
    message: str = ""


@dataclass
class Control:
    """What a running generation may use of its job: where its progress goes, whether the job
    was cancelled, and the deadline by which it must end (``time.monotonic()``, None: none)."""

    on_progress: Callable[[Progress], None] = lambda progress: None
    is_cancelled: Callable[[], bool] = lambda: False
    deadline: float | None = None
    workdir: Path | None = None
    """A folder of the attempt's own for files a backend makes (a downloaded or rendered
    video); it is removed with the attempt. None: :meth:`scratch` makes a temporary one."""

    def scratch(self) -> Path:
        """The folder to write files into: :attr:`workdir`, made on first use."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="genhook-gen-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    def progress(self, step: int, total: int, message: str = "") -> None:
        """Report ``step`` of ``total``; a failing listener never stops the generation."""
        with contextlib.suppress(Exception):  # progress is advisory
            self.on_progress(Progress(max(0, step), max(1, total), message))

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left before the deadline (at least 0), no more than ``cap``; None: unbounded."""
        if self.deadline is None:
            return cap
        left = max(0.0, self.deadline - time.monotonic())
        return left if cap is None else min(cap, left)

    def check(self) -> None:
        """Raise ``cancelled`` if the job was cancelled, ``backend_timeout`` past the deadline."""
        if self.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise GenhookError(ErrorCode.BACKEND_TIMEOUT, "the generation ran past the run timeout")


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a backend needs to make one image."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    seed: int
    model: str
    subject: str = ""
    style: StylePreset | None = None
    kind: AssetKind = "image"
    options: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "procedural"
    frame: Frame | None = None
    """The aspect class, backdrop and safe area the image is composed for (None: as sized)."""
    inputs: Mapping[str, InputMedia] = field(default_factory=dict)
    """Media inputs fetched by URL (e.g. ``reference``: a product photo for image-to-image),
    by the generate node's parameter name; each backend passes them on its engine's way."""
    duration_seconds: float = 0.0
    """For ``kind: video``: the clip's length asked for."""
    fps: float = 0.0
    """For ``kind: video``: frames per second asked for."""

    def retried(self, prompt_suffix: str, seed: int) -> GenerationRequest:
        """The same request with a modified prompt and a new seed (a quality-check retry)."""
        prompt = f"{self.prompt}, {prompt_suffix}" if prompt_suffix else self.prompt
        return replace(self, prompt=prompt, seed=seed)


@dataclass(frozen=True)
class GenerationResult:
    """One generated image and what it cost (the run charges it by the pricing file)."""

    pixels: Pixels
    request: GenerationRequest
    model_id: str
    credit_cost: float
    seconds: float = 0.0
    missing_glyphs: tuple[str, ...] = ()
    """Characters the backend was asked to set as text but had no glyph for (the procedural
    renderer knows; a remote engine reports none). Quality checks fail ``missing_glyphs``."""
    video: VideoClip | None = None
    """For a video: the clip (``pixels`` is then its poster frame)."""


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can serve now, and why not."""

    ready: bool
    detail: str


class Backend(Protocol):
    """A generation backend."""

    name: str
    kinds: frozenset[AssetKind]

    def status(self) -> BackendStatus:
        """Configured? Answered from the settings alone, with no network call."""
        ...

    def probe(self, timeout: float) -> BackendStatus:
        """Configured and answering now: one short check of the engine, within ``timeout`` s."""
        ...

    def estimate_cost(self, request: GenerationRequest) -> float:
        """Credits one generation of ``request`` will cost. genhook prices every run and dry
        run by the pricing file (:mod:`genhook.pricing`), not by this answer; the built-ins
        answer from that file too."""
        ...

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        """Make the image (or clip), or raise GenhookError (transient or permanent by its
        code); report progress, honour cancel and the deadline through ``control``."""
        ...


class BackendRegistry(Registry[Backend]):
    """Backends by name: built-ins and plugins from the ``genhook.backends`` entry point group.

    Each entry point names a factory. One with a ``from_settings`` class method is built from
    the process's :class:`~genhook.config.Settings` (so that no backend reads the environment
    itself); any other is called with no arguments.
    """

    group = "genhook.backends"

    @classmethod
    def from_entry_points(cls, settings: Settings | None = None) -> Self:
        """Every installed backend, built from ``settings`` (defaults: nothing configured)."""
        from genhook.config import Settings

        settings = settings or Settings()
        registry = cls()
        for name, factory, error in load_group_tolerant(cls.group):
            if error is None:
                try:
                    backend = build_backend(factory, settings)
                except Exception as exc:  # a factory that cannot build from these settings
                    error = exc
            if error is not None:
                backend = UnavailableBackend(name, f"cannot be loaded: {error}")
            registry.register(backend, name=name)
        return registry

    def get(self, name: str) -> Backend:
        """The backend ``name``; a permanent error if this install has none of that name."""
        backend = self.find(name)
        if backend is None:
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED, f"no generation backend named {name!r}"
            )
        return backend


class UnavailableBackend:
    """Stands in for an installed backend that cannot be loaded (its own dependencies are
    missing, its factory failed): listed, never ready, and every generation refused with why."""

    kinds: frozenset[AssetKind] = frozenset()

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason[:300]

    def status(self) -> BackendStatus:
        """Not ready, with the reason."""
        return BackendStatus(False, self.reason)

    def probe(self, timeout: float) -> BackendStatus:
        """Not ready, with the reason (nothing to ask)."""
        return self.status()

    def estimate_cost(self, request: GenerationRequest) -> float:
        """Nothing: it never generates."""
        return 0.0

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        """Refused: ``backend_not_configured`` with the reason."""
        raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"backend {self.name!r} {self.reason}")


def build_backend(factory: Any, settings: Settings) -> Backend:
    """A backend from its entry point's ``factory``: ``from_settings(settings)`` if it has one."""
    build = getattr(factory, "from_settings", None)
    backend: Backend = build(settings) if callable(build) else factory()
    return backend


_TAKES_CONTROL: dict[type, bool] = {}


def call_generate(
    backend: Backend, request: GenerationRequest, control: Control | None = None
) -> GenerationResult:
    """``backend.generate(request, control)``; a plugin whose ``generate`` takes the request
    alone is called so (it then reports no progress and is cancelled between generations)."""
    control = control or Control()
    kind = type(backend)
    takes = _TAKES_CONTROL.get(kind)
    if takes is None:
        try:
            params = inspect.signature(backend.generate).parameters.values()
        except (TypeError, ValueError):
            params = ()  # type: ignore[assignment]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        _TAKES_CONTROL[kind] = takes
    control.check()
    if takes:
        return backend.generate(request, control)
    return backend.generate(request)  # type: ignore[call-arg]


def probe(backend: Backend, timeout: float = PROBE_TIMEOUT) -> BackendStatus:
    """``backend.probe(timeout)``; a plugin without ``probe`` answers from ``status()``."""
    check = getattr(backend, "probe", None)
    if not callable(check):
        return backend.status()
    try:
        result = check(timeout)
    except Exception as exc:  # a plugin's probe must not take the listing down
        return BackendStatus(False, f"the probe failed: {exc!r}")
    return result if isinstance(result, BackendStatus) else backend.status()
