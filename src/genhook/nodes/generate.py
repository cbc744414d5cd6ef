"""``generate``: images from a backend, one per aspect class its presets need, or one for all.

``aspect_classes: per_class`` (the default when ``platforms`` is given) makes one image per frame
that the presets need (see :mod:`genhook.media.aspect`): each composed for its own frame with a
safe area that later crops leave whole, and on pure white for ``on_white`` presets. Each has
about ``width x height`` pixels, shaped to its class and grown where a preset needs more, and
costs what one image costs. ``single`` makes one ``width x height`` image for every preset
(cheaper with a paid engine; crops to far-off ratios then cut into it, and the export's
salience check says so). Backend errors keep their code (transient or not). Each generation is
charged by the pricing file (:mod:`genhook.pricing`) for what it made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genhook.backends.base import Control, GenerationRequest, GenerationResult, call_generate
from genhook.backends.defaults import DEFAULT
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.media.aspect import PlannedFrame, plan_frames, ratio_text
from genhook.nodes.renders import Renders
from genhook.nodes.targets import resolve_targets, unknown_targets
from genhook.presets import Presets, StylePreset
from genhook.seeds import stable_seed
from genhook.workflow.node import BaseNode, RunContext

AspectMode = Literal["per_class", "single"]


# what a sandbox service's generations run on (the procedural backend's model, named here so
# that the API, which plans with this module, loads no backend; a test holds the two together)
SANDBOX_BACKEND = "procedural"
SANDBOX_MODEL = "procedural-v1"


class Generate(BaseNode):
    """Builds one :class:`GenerationRequest` per frame and asks the named backend for each."""

    kind = "generate"

    class Params(BaseModel):
        model_config = ConfigDict(protected_namespaces=())

        prompt: str
        negative_prompt: str = ""
        backend: str = DEFAULT
        model: str = DEFAULT
        subject: str = ""
        style: StylePreset | None = None
        width: int = Field(default=1024, ge=16, le=4096)
        height: int = Field(default=1024, ge=16, le=4096)
        seed: int | None = Field(default=None, ge=0)
        options: dict[str, Any] = {}
        platforms: str | list[str] | None = None
        aspect_classes: AspectMode | None = None

    outputs: ClassVar[Mapping[str, Any]] = {
        "result": GenerationResult,
        "image": Pixels,
        "renders": Renders,
    }

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """Literal platform codes must exist; ``per_class`` needs ``platforms`` to plan from."""
        problems: list[tuple[str, str]] = []
        unknown = unknown_targets(params.get("platforms"), presets)
        if unknown:
            problems.append(("platforms", f"unknown platform presets {unknown}"))
        if params.get("aspect_classes") == "per_class" and params.get("platforms") is None:
            problems.append(
                (
                    "aspect_classes",
                    "per_class makes one image per aspect class that the presets need: name "
                    "them in platforms (e.g. ${input.target_platform}), or choose single",
                )
            )
        return problems

    def plan(
        self, name: str, raw: Mapping[str, Any], ctx: RunContext
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Dry run: the requests it would send, per class, and their credits; no generation."""
        params = self.Params.model_validate(raw)
        frames = self.frames(params, ctx)
        requests = self.requests(name, params, ctx, frames)
        costs = [ctx.prices.estimate_cost(r) for r in requests]  # priced, no backend built
        primary = requests[0]
        report = {
            "backend": primary.backend,
            "model": primary.model,
            "prompt": primary.prompt,
            "negative_prompt": primary.negative_prompt,
            "width": primary.width,
            "height": primary.height,
            "seed": primary.seed,
            "style": primary.style.key if primary.style else None,
            "aspect_classes": "single" if frames is None else "per_class",
            "classes": [] if frames is None else _classes(frames, costs),
            "generations": len(requests),
            "credit_estimate": round(sum(costs), 6),
        }
        placeholders = Renders(
            tuple(
                GenerationResult(
                    pixels=_blank(r.width, r.height),
                    request=r,
                    model_id=f"{r.backend}/{r.model}",
                    credit_cost=0.0,
                )
                for r in requests
            )
        )
        first = placeholders.primary
        return {"result": first, "image": first.pixels, "renders": placeholders}, report

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """The seed is the template's, else stable for (job seed, node name): every frame of
        one run shares it, so that the outputs show the same composition."""
        results: list[GenerationResult] = []
        for request in self.requests(name, params, ctx, self.frames(params, ctx)):
            if ctx.is_cancelled():
                raise GenhookError(ErrorCode.CANCELLED)
            results.append(generate_once(ctx, request))
        renders = Renders(tuple(results))
        return {"result": renders.primary, "image": renders.primary.pixels, "renders": renders}

    @staticmethod
    def frames(params: Any, ctx: RunContext) -> list[PlannedFrame] | None:
        """The frames to generate, or None for one image as sized (``single``)."""
        mode = params.aspect_classes or ("single" if params.platforms is None else "per_class")
        if mode == "single":
            return None
        presets = resolve_targets(params.platforms, ctx.presets)
        return plan_frames(presets, params.width * params.height)

    def requests(
        self, name: str, params: Any, ctx: RunContext, frames: list[PlannedFrame] | None
    ) -> list[GenerationRequest]:
        """One request per frame (the same prompt and seed), or the one request as sized."""
        base = self.request(name, params, ctx)
        if frames is None:
            return [base]
        return [replace(base, width=f.width, height=f.height, frame=f.frame) for f in frames]

    def request(self, name: str, params: Any, ctx: RunContext) -> GenerationRequest:
        """The backend request for these parameters, at ``width x height``, frameless (a
        ``default`` backend or model resolved by the install's settings)."""
        style: StylePreset | None = params.style
        negative = params.negative_prompt
        if style and style.negative:
            extra = ", ".join(style.negative)
            negative = f"{negative}, {extra}" if negative else extra
        request = GenerationRequest(
            prompt=params.prompt,
            negative_prompt=negative,
            width=params.width,
            height=params.height,
            seed=params.seed if params.seed is not None else stable_seed(ctx.base_seed, name),
            model=params.model,
            subject=params.subject,
            style=style,
            options=params.options,
            backend=params.backend,
        )
        return ctx.defaults.request(request)


def _classes(frames: list[PlannedFrame], costs: list[float]) -> list[dict[str, Any]]:
    """The dry run's view of each frame: class, size, safe area, presets and credits."""
    return [
        {
            "class": f.frame.aspect,
            "ratio": ratio_text(f.frame.ratio),
            "on_white": f.frame.on_white,
            "width": f.width,
            "height": f.height,
            "safe_area": {"x": f.frame.safe_x, "y": f.frame.safe_y},
            "presets": [p.code for p in f.presets],
            "credit_estimate": cost,
        }
        for f, cost in zip(frames, costs, strict=True)
    ]


def _blank(width: int, height: int) -> Pixels:
    """A stand-in image of the right shape for dry runs, in no memory: one black pixel seen at
    every position (read-only; never encoded or delivered)."""
    return np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (height, width, 3))


def generate_once(ctx: RunContext, request: GenerationRequest) -> GenerationResult:
    """Call the request's backend once and record the result in the run's ledger, charged by
    the pricing file for what it made (whatever the backend itself reported).

    An unpriced backend or model is refused (``backend_not_configured``) before the engine is
    called: a paid engine is never run for free."""
    if ctx.sandbox:  # a sandbox service: the offline renderer, free, whatever the node names
        request = replace(request, backend=SANDBOX_BACKEND, model=SANDBOX_MODEL)
    request = ctx.defaults.request(request)  # a default wired from the trigger
    backend = ctx.backends.get(request.backend)
    ctx.prices.estimate_cost(request)  # refuses an unpriced backend/model before spending
    control = Control(ctx.on_progress, ctx.is_cancelled, ctx.deadline, ctx.workdir)
    result = call_generate(backend, request, control)
    cost = 0.0 if ctx.sandbox else ctx.prices.charge(result)
    result = replace(result, credit_cost=cost)
    ctx.generations.append(result)
    return result
