"""``generate``: one image from a backend. Backend errors keep their code (transient or not)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genhook.backends.base import GenerationRequest, GenerationResult
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.presets import StylePreset
from genhook.seeds import stable_seed
from genhook.workflow.node import BaseNode, RunContext


class Generate(BaseNode):
    """Builds a :class:`GenerationRequest` and asks the named backend for it."""

    kind = "generate"

    class Params(BaseModel):
        model_config = ConfigDict(protected_namespaces=())

        prompt: str
        negative_prompt: str = ""
        backend: str = "procedural"
        model: str = "procedural-v1"
        subject: str = ""
        style: StylePreset | None = None
        width: int = Field(default=1024, ge=16, le=4096)
        height: int = Field(default=1024, ge=16, le=4096)
        seed: int | None = Field(default=None, ge=0)
        options: dict[str, Any] = {}

    outputs: ClassVar[Mapping[str, Any]] = {"result": GenerationResult, "image": Pixels}

    def plan(
        self, name: str, raw: Mapping[str, Any], ctx: RunContext
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Dry run: the request it would send and its credit estimate; no generation."""
        request = self.request(name, self.Params.model_validate(raw), ctx)
        backend = ctx.backends.get(raw.get("backend") or "procedural")
        report = {
            "backend": backend.name,
            "model": request.model,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "seed": request.seed,
            "style": request.style.key if request.style else None,
            "credit_estimate": backend.estimate_cost(request),
        }
        placeholder = GenerationResult(
            pixels=_blank(request.width, request.height),
            request=request,
            model_id=f"{backend.name}/{request.model}",
            credit_cost=0.0,
        )
        return {"result": placeholder, "image": placeholder.pixels}, report

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """The seed is the template's, else stable for (job seed, node name)."""
        if ctx.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        result = generate_once(ctx, self.request(name, params, ctx))
        return {"result": result, "image": result.pixels}

    def request(self, name: str, params: Any, ctx: RunContext) -> GenerationRequest:
        """The backend request for these parameters."""
        style: StylePreset | None = params.style
        negative = params.negative_prompt
        if style and style.negative:
            extra = ", ".join(style.negative)
            negative = f"{negative}, {extra}" if negative else extra
        return GenerationRequest(
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


def _blank(width: int, height: int) -> Pixels:
    """A tiny stand-in image for dry runs (never encoded or delivered)."""
    return np.zeros((min(height, 8), min(width, 8), 3), dtype=np.uint8)


def generate_once(ctx: RunContext, request: GenerationRequest) -> GenerationResult:
    """Call the request's backend once and record the result (and its cost) in the ledger."""
    result = ctx.backends.get(request.backend).generate(request)
    ctx.generations.append(result)
    return result
