"""``generate``: images from a backend, one per aspect class its presets need, or one for all.

``aspect_classes: per_class`` (the default when ``platforms`` is given) makes one image per frame
that the presets need (see :mod:`genhook.media.aspect`): each composed for its own frame with a
safe area that later crops leave whole, and on pure white for ``on_white`` presets. Each has
about ``width x height`` pixels, shaped to its class and grown where a preset needs more, and
costs what one image costs. ``single`` makes one ``width x height`` image for every preset
(cheaper with a paid engine; crops to far-off ratios then cut into it, and the export's
salience check says so). Backend errors keep their code (transient or not). Each generation is
charged by the pricing file (:mod:`genhook.pricing`) for what it made.

``kind: video`` asks for a clip of ``duration_seconds`` at ``fps`` per frame instead (priced
per second of video; ``backend: default`` is then ``GENHOOK_VIDEO_BACKEND``); its platforms
must be video presets (``format: mp4``), and an image node's must be image presets: a template
naming the other kind is refused when it loads, a trigger choosing one with
``unknown_platform``.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genhook.backends.base import (
    AssetKind,
    Control,
    GenerationRequest,
    GenerationResult,
    call_generate,
)
from genhook.backends.defaults import DEFAULT
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.media import Pixels
from genhook.media.aspect import PlannedFrame, plan_frames, ratio_text
from genhook.nodes.renders import Renders
from genhook.nodes.targets import resolve_targets, unknown_targets
from genhook.presets import Presets, StylePreset
from genhook.pricing import Pricing
from genhook.seeds import stable_seed
from genhook.workflow.node import BaseNode, RunContext

AspectMode = Literal["per_class", "single"]
DEFAULT_SECONDS = 4.0
"""A video's length where the node names none."""
DEFAULT_FPS = 24.0
"""A video's frame rate where the node names none."""


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
        kind: AssetKind = "image"
        duration_seconds: float = Field(default=DEFAULT_SECONDS, gt=0, le=60)
        fps: float = Field(default=DEFAULT_FPS, ge=1, le=60)
        inputs: dict[str, str | None] = {}
        """Media inputs by name, each a URL wired from an ``x-media`` trigger field (e.g.
        ``reference: ${input.reference_image_url}``; an optional field not given is left out):
        fetched when the node runs (never in a dry run) and handed to the backend."""

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
        kind = params.get("kind", "image")
        if kind in ("image", "video"):
            problems += [
                ("platforms", m) for m in kind_mismatches(params.get("platforms"), presets, kind)
            ]
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
        if ctx.sandbox:  # a sandbox service's job: what generate_once will run, free
            requests = [replace(r, backend=SANDBOX_BACKEND, model=SANDBOX_MODEL) for r in requests]
        costs = [request_cost(ctx.prices, r) for r in requests]  # priced, no backend built
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
            "asset_kind": primary.kind,
            **(
                {"duration_seconds": primary.duration_seconds, "fps": primary.fps}
                if primary.kind == "video"
                else {}
            ),
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
        from genhook.media.fetch import fetch_inputs  # workers only: the API never fetches

        results: list[GenerationResult] = []
        inputs = fetch_inputs(ctx, params.inputs)
        for request in self.requests(name, params, ctx, self.frames(params, ctx)):
            if ctx.is_cancelled():
                raise GenhookError(ErrorCode.CANCELLED)
            results.append(generate_once(ctx, replace(request, inputs=inputs)))
        renders = Renders(tuple(results))
        return {"result": renders.primary, "image": renders.primary.pixels, "renders": renders}

    @staticmethod
    def frames(params: Any, ctx: RunContext) -> list[PlannedFrame] | None:
        """The frames to generate, or None for one image as sized (``single``)."""
        mode = params.aspect_classes or ("single" if params.platforms is None else "per_class")
        if mode == "single":
            return None
        presets = resolve_targets(params.platforms, ctx.presets)
        wrong = [p.code for p in presets if p.asset_type != params.kind]
        if wrong:
            raise InvalidInput(
                ErrorCode.UNKNOWN_PLATFORM,
                f"{_kind_problem(wrong, params.kind)}; choose {_kind_word(params.kind)} presets",
                field="platforms",
            )
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
            prompt=fold_notes(params.prompt, ctx.review_notes),
            negative_prompt=negative,
            width=params.width,
            height=params.height,
            seed=params.seed if params.seed is not None else stable_seed(ctx.base_seed, name),
            model=params.model,
            subject=params.subject,
            style=style,
            options=params.options,
            backend=params.backend,
            kind=params.kind,
            duration_seconds=params.duration_seconds if params.kind == "video" else 0.0,
            fps=params.fps if params.kind == "video" else 0.0,
        )
        return ctx.defaults.request(request)


def fold_notes(prompt: str, notes: Sequence[str]) -> str:
    """``prompt`` with the reviewers' notes of a rejected job's earlier outputs folded in, each
    once, in order (``prompt, note 1, note 2``), as a quality-check retry amends it."""
    kept = [n for n in dict.fromkeys(n.strip() for n in notes) if n]
    return ", ".join([prompt, *kept]) if kept else prompt


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
    if request.kind not in getattr(backend, "kinds", frozenset({"image"})):
        raise GenhookError(
            ErrorCode.BACKEND_NOT_CONFIGURED,
            f"backend {request.backend!r} makes no {request.kind} "
            f"(it makes: {', '.join(sorted(getattr(backend, 'kinds', ()))) or 'nothing'})",
        )
    request_cost(ctx.prices, request)  # refuses an unpriced backend/model before spending
    if request.kind == "video" and ctx.workdir is None:
        ctx.workdir = run_folder(ctx)
    control = Control(ctx.on_progress, ctx.is_cancelled, ctx.deadline, ctx.workdir)
    result = call_generate(backend, request, control)
    if request.kind == "video" and result.video is None:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"backend {request.backend!r} returned no video for a clip"
        )
    cost = 0.0 if ctx.sandbox else result_cost(ctx.prices, result)
    result = replace(result, credit_cost=cost)
    if result.video is None:
        result = fit_up(result)
    ctx.generations.append(result)
    return result


MAX_UPSCALE = 3.0
"""The most an image smaller than asked is enlarged (Lanczos) to cover the size asked."""


def fit_up(result: GenerationResult) -> GenerationResult:
    """An image smaller than its request (an engine with fixed sizes: OpenAI's 1536x1024, a
    ~1-megapixel FLUX) enlarged to cover the size asked, by at most :data:`MAX_UPSCALE`, so the
    frame's presets can be cut from it; more than that is left as made, and the quality check's
    size limits then fail it, as they should."""
    height, width = result.pixels.shape[:2]
    asked_w, asked_h = result.request.width, result.request.height
    scale = max(asked_w / width, asked_h / height)
    if scale <= 1.0 or scale > MAX_UPSCALE:
        return result
    import cv2

    size = (max(asked_w, round(width * scale)), max(asked_h, round(height * scale)))
    pixels = cv2.resize(np.ascontiguousarray(result.pixels), size, interpolation=cv2.INTER_LANCZOS4)
    return replace(result, pixels=np.asarray(pixels, dtype=np.uint8))


def request_cost(prices: Pricing, request: GenerationRequest) -> float:
    """Credits one generation of ``request`` would cost: an image, or its asked seconds of
    video, priced by the pricing file (unpriced: ``backend_not_configured``)."""
    if request.kind == "video":
        seconds = request.duration_seconds
        return prices.price(request.backend, request.model, "video_seconds", seconds)
    return prices.estimate_cost(request)


def result_cost(prices: Pricing, result: GenerationResult) -> float:
    """Credits one generation cost: an image, or the seconds of video it made."""
    request = result.request
    if request.kind == "video" and result.video is not None:
        seconds = result.video.duration_seconds
        return prices.price(request.backend, request.model, "video_seconds", seconds)
    return prices.charge(result)


def kind_mismatches(value: Any, presets: Presets, kind: str) -> list[str]:
    """Why the literal targets in ``value`` do not fit a ``kind`` node: video presets for an
    image, image presets for a video (empty when they all fit, or are references)."""
    wrong: list[str] = []
    for target in value if isinstance(value, list) else [value]:
        found = presets.resolve_platforms(target) if isinstance(target, str) else None
        wrong += [p.code for p in found or () if p.asset_type != kind and p.code not in wrong]
    return [_kind_problem(wrong, kind)] if wrong else []


def _kind_problem(codes: list[str], kind: str) -> str:
    other = "video" if kind == "image" else "image"
    return f"{other} presets {codes} for a{'n' if kind == 'image' else ''} {kind} output"


def _kind_word(kind: str) -> str:
    return "video (format: mp4)" if kind == "video" else "image"


def run_folder(ctx: RunContext) -> Path:
    """A folder for a run's clips where the caller gave none (``genhook run``, a test): made
    once per run and removed with the run's context (its files are read into the assets before
    the run ends)."""
    folder = Path(tempfile.mkdtemp(prefix="genhook-run-"))
    weakref.finalize(ctx, shutil.rmtree, folder, True)
    return folder
