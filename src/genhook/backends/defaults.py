"""What ``backend: default`` and ``model: default`` mean: one variable moves every workflow.

A generate node that names ``backend: default`` (every shipped workflow does, and a node that
names no backend means the same) runs on ``GENHOOK_IMAGE_BACKEND`` for images and
``GENHOOK_VIDEO_BACKEND`` for video; ``model: default`` (or no model) is that backend's own
default model (``GENHOOK_OPENAI_MODEL``, ``GENHOOK_REPLICATE_MODEL``, ...). The names are
resolved from the settings alone, so the API, which builds no backend, prices and plans with
the same answer a worker runs with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genhook.backends.base import AssetKind, GenerationRequest
    from genhook.config import Settings

DEFAULT = "default"
"""The name a generate node gives for "whatever this install is set to use"."""

SHIPPED_MODELS: Mapping[tuple[str, str], str] = {
    ("procedural", "image"): "procedural-v1",
    ("procedural", "video"): "procedural-v1",
    ("comfyui", "image"): "graph",  # the graph's own checkpoint
    ("comfyui", "video"): "graph",  # the video graph's own model
    ("diffusers", "image"): "local",  # the pipeline in GENHOOK_DIFFUSERS_MODEL_DIR
}
"""Default models that no setting changes (the configurable ones come from the settings)."""


@dataclass(frozen=True)
class BackendDefaults:
    """The default backend per kind of asset, and each backend's default model per kind."""

    image: str = "procedural"
    video: str = "procedural"
    models: Mapping[tuple[str, str], str] = field(default_factory=lambda: dict(SHIPPED_MODELS))

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendDefaults:
        """The defaults of this process's settings."""
        models = dict(SHIPPED_MODELS)
        models[("openai", "image")] = settings.openai.model
        models[("replicate", "image")] = settings.replicate.model
        models[("replicate", "video")] = settings.replicate.video_model
        models[("fal", "image")] = settings.fal.model
        models[("fal", "video")] = settings.fal.video_model
        return cls(settings.image_backend, settings.video_backend, models)

    def backend(self, name: Any, kind: str = "image") -> Any:
        """``name``, or the default backend for ``kind`` where it is ``default`` or None."""
        if name is None or name == DEFAULT:
            return self.video if kind == "video" else self.image
        return name

    def model(self, backend: Any, model: Any, kind: str = "image") -> Any:
        """``model``, or ``backend``'s default for ``kind`` where it is ``default`` or None
        (left as ``default`` for a backend with none known: the pricing check names it)."""
        if model is None or model == DEFAULT:
            return self.models.get((str(backend), kind), DEFAULT)
        return model

    def resolve(self, backend: Any, model: Any, kind: str = "image") -> tuple[Any, Any]:
        """(backend, model) with every ``default`` replaced."""
        chosen = self.backend(backend, kind)
        return chosen, self.model(chosen, model, kind)

    def params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A generate node's raw parameters with literal defaults resolved (a reference such
        as ``${input.backend}`` is left for the run to resolve)."""
        kind = params.get("kind", "image")
        kind = kind if isinstance(kind, str) else "image"
        out = dict(params)
        backend, model = params.get("backend"), params.get("model")
        if backend is None or isinstance(backend, str):
            out["backend"] = self.backend(backend, kind)
            chosen = out["backend"]
            literal = isinstance(chosen, str) and "${" not in chosen
            if (model is None or isinstance(model, str)) and literal:
                out["model"] = self.model(chosen, model, kind)
        return out

    def request(
        self, request: GenerationRequest, kind: AssetKind | None = None
    ) -> GenerationRequest:
        """``request`` with its backend and model resolved (for values wired from a trigger)."""
        backend, model = self.resolve(request.backend, request.model, kind or request.kind)
        if (backend, model) == (request.backend, request.model):
            return request
        return replace(request, backend=backend, model=model)
