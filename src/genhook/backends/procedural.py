"""The ``procedural`` backend: offline, deterministic, fast. The embedded default.

It costs what the pricing file says (the shipped file: 0 credits; 0 too where a file does not
name it).

It composes a real image from the prompt and style (palette background, lighting, shapes, the
subject's name set in type) and labels it honestly as a procedural render. It is what lets every
workflow run end to end with no GPU and no account. A request's ``frame`` keeps the subject and
title inside the safe area that later crops leave whole, or, on white, renders the object alone
on pure white with no text.

For ``kind: video`` it renders a real clip (``duration_seconds``, default
:data:`DEFAULT_SECONDS`, at ``fps``, default :data:`DEFAULT_FPS`): the same composition, rendered
once larger than the frame, under a slow push-in and drift (:mod:`genhook.media.video_render`),
written as an intermediate H.264 MP4 into the attempt's folder; its poster (the middle frame) is
the result's pixels. Progress is reported per frame and a cancel stops it between frames.
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
    VideoClip,
)
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.pricing import Pricing, load_pricing, shipped_pricing

if TYPE_CHECKING:
    from genhook.config import Settings

DEFAULT_PALETTE = ["#1d3557", "#457b9d", "#a8dadc", "#f1faee"]
MAX_SIDE = 4096
DEFAULT_SECONDS = 4.0
"""A clip's length where the request asks for none."""
DEFAULT_FPS = 24.0
"""A clip's frame rate where the request asks for none."""
MAX_SECONDS = 60.0
MAX_FPS = 60.0


class ProceduralBackend:
    """Renders compositions with numpy and Pillow; priced by the pricing file (0 as shipped)."""

    name = "procedural"
    kinds: frozenset[AssetKind] = frozenset({"image", "video"})
    cpu_bound = True  # renders in this process: under the worker's CPU gate
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
        """The pricing file's credits for one image, or a clip's seconds (0 as shipped)."""
        if request.kind == "video":
            seconds = clip_timing(request)[0]
            return self.pricing.price(self.name, request.model, "video_seconds", seconds)
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
        video = request.kind == "video"
        width, height = request.width, request.height
        safe = (frame.safe_x, frame.safe_y) if frame else (0.0, 0.0)
        if video:
            from genhook.media.video_render import scene_safe, scene_size

            seconds, fps = clip_timing(request)  # refuses a length or rate out of range first
            width, height = scene_size(request.width, request.height)
            safe = scene_safe(safe, request.width, request.height, (width, height))
        with glyph_audit() as missing:
            pixels = render(
                prompt=request.prompt,
                subject=request.subject,
                palette=style.palette if style else DEFAULT_PALETTE,
                lighting=style.lighting if style else "softbox",
                width=width,
                height=height,
                seed=request.seed,
                label=f"procedural render · seed {request.seed}",
                on_white=frame.on_white if frame else False,
                safe=safe,
            )
        clip = None
        if video:
            clip = _clip(pixels, request, control or Control(), seconds, fps)
            pixels = clip[1]
        return GenerationResult(
            pixels=pixels,
            request=request,
            model_id=f"procedural/{request.model}",
            credit_cost=self.estimate_cost(request),
            seconds=time.perf_counter() - started,
            missing_glyphs=tuple(sorted(missing)),
            video=clip[0] if clip else None,
        )


def clip_timing(request: GenerationRequest) -> tuple[float, float]:
    """The clip's (seconds, fps): what ``request`` asks for, else the defaults; out of range
    (more than a minute, over 60 fps) is refused (``backend_rejected``)."""
    seconds = request.duration_seconds or DEFAULT_SECONDS
    fps = request.fps or DEFAULT_FPS
    if not (0 < seconds <= MAX_SECONDS and 1 <= fps <= MAX_FPS):
        raise GenhookError(
            ErrorCode.BACKEND_REJECTED,
            f"procedural video of {seconds:g} s at {fps:g} fps: it makes up to "
            f"{MAX_SECONDS:g} s at 1..{MAX_FPS:g} fps",
        )
    return seconds, fps


def _clip(
    scene: Pixels, request: GenerationRequest, control: Control, seconds: float, fps: float
) -> tuple[VideoClip, Pixels]:
    """The camera move over ``scene``, written into the attempt's folder; and its poster."""
    from genhook.media.video_render import render_clip

    def check(done: int, total: int) -> None:
        control.check()
        control.progress(done, total, "rendering frames")

    path = control.scratch() / f"procedural-{request.seed}-{request.width}x{request.height}.mp4"
    made = render_clip(
        scene,
        path,
        width=request.width,
        height=request.height,
        fps=fps,
        duration_seconds=seconds,
        direction=1 if request.seed % 2 == 0 else -1,
        check=check,
    )
    control.progress(made.frames, made.frames, "rendered")
    clip = VideoClip(
        path=made.path,
        width=made.width,
        height=made.height,
        fps=made.fps,
        duration_seconds=made.duration_seconds,
        frames=made.frames,
    )
    return clip, made.poster
