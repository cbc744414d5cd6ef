"""The ``procedural`` backend: offline, deterministic, fast. The embedded default.

It costs what the pricing file says (the shipped file: 0 credits; 0 too where a file does not
name it).

It composes a real image from the prompt and style (palette background, lighting, shapes, the
subject's name set in type) and labels it honestly as a procedural render. It is what lets every
workflow run end to end with no GPU and no account. A request's ``frame`` keeps the subject and
title inside the safe area that later crops leave whole, or, on white, renders the object alone
on pure white with no text.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from genhook.backends.base import (
    AssetKind,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
)
from genhook.errors import ErrorCode, GenhookError
from genhook.pricing import Pricing, load_pricing, shipped_pricing

if TYPE_CHECKING:
    from genhook.config import Settings

DEFAULT_PALETTE = ["#1d3557", "#457b9d", "#a8dadc", "#f1faee"]
MAX_SIDE = 4096


class ProceduralBackend:
    """Renders compositions with numpy and Pillow; priced by the pricing file (0 as shipped)."""

    name = "procedural"
    kinds: frozenset[AssetKind] = frozenset({"image"})
    models = ("procedural-v1",)

    def __init__(self, pricing: Pricing | None = None) -> None:
        self.pricing = pricing or shipped_pricing()

    @classmethod
    def from_settings(cls, settings: Settings) -> ProceduralBackend:
        """The factory the backend registry calls: priced by the settings' pricing file."""
        path = settings.pricing_file
        return cls(load_pricing(path) if path is not None else None)

    def status(self) -> BackendStatus:
        """Always ready: nothing to configure or reach."""
        return BackendStatus(True, "offline renderer, models: " + ", ".join(self.models))

    def probe(self, timeout: float) -> BackendStatus:
        """Always answering: it runs in this process."""
        return self.status()

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The pricing file's credits for one image (0 as shipped)."""
        return self.pricing.price(self.name, request.model, "image", 1)

    def generate(
        self, request: GenerationRequest, control: Control | None = None
    ) -> GenerationResult:
        """Render ``request`` deterministically for its seed (in one step: no progress to
        report, and a cancel lands between generations)."""
        from genhook.media.procedural import glyph_audit, render

        if request.model not in self.models:
            raise GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"procedural backend has no model {request.model!r} (has {list(self.models)})",
            )
        if not (16 <= request.width <= MAX_SIDE and 16 <= request.height <= MAX_SIDE):
            raise GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"size {request.width}x{request.height} outside 16..{MAX_SIDE} pixels",
            )
        style, frame = request.style, request.frame
        started = time.perf_counter()
        with glyph_audit() as missing:
            pixels = render(
                prompt=request.prompt,
                subject=request.subject,
                palette=style.palette if style else DEFAULT_PALETTE,
                lighting=style.lighting if style else "softbox",
                width=request.width,
                height=request.height,
                seed=request.seed,
                label=f"procedural render · seed {request.seed}",
                on_white=frame.on_white if frame else False,
                safe=(frame.safe_x, frame.safe_y) if frame else (0.0, 0.0),
            )
        return GenerationResult(
            pixels=pixels,
            request=request,
            model_id=f"procedural/{request.model}",
            credit_cost=self.estimate_cost(request),
            seconds=time.perf_counter() - started,
            missing_glyphs=tuple(sorted(missing)),
        )
