"""The generation backend Protocol, its request and result, and the backend registry.

A backend turns a :class:`GenerationRequest` into pixels. It signals failures only with
:class:`genhook.errors.GenhookError`, whose code says whether the failure is transient
(``backend_unavailable``, ``backend_timeout``, ``backend_rate_limited``, ``backend_error``:
retried on the job's retry schedule) or permanent (``backend_rejected``,
``backend_not_configured``). Heavy imports (SDKs, torch) belong inside the backend's methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.media.aspect import Frame
from genhook.plugins import Registry, load_group
from genhook.presets import StylePreset

if TYPE_CHECKING:
    from genhook.config import Settings

AssetKind = Literal["image", "video"]
PROBE_TIMEOUT = 3.0
"""Seconds a readiness probe may take (``genhook backends list``)."""


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

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Make the image, or raise GenhookError (transient or permanent by its code)."""
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
        for name, factory in load_group(cls.group):
            registry.register(build_backend(factory, settings), name=name)
        return registry

    def get(self, name: str) -> Backend:
        """The backend ``name``; a permanent error if this install has none of that name."""
        backend = self.find(name)
        if backend is None:
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED, f"no generation backend named {name!r}"
            )
        return backend


def build_backend(factory: Any, settings: Settings) -> Backend:
    """A backend from its entry point's ``factory``: ``from_settings(settings)`` if it has one."""
    build = getattr(factory, "from_settings", None)
    backend: Backend = build(settings) if callable(build) else factory()
    return backend


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
