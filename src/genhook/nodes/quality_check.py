"""``quality_check``: measure the generated image; retry, deliver with a warning, or fail.

Policy: while the output fails a check and retries remain, generate again with the prompt amended
for the failed checks and a new seed (unless only checks that no new generation can change failed,
such as ``missing_glyphs``). When none passed, ``on_fail: deliver_with_warning`` delivers
the best candidate and records a ``quality_warning`` (which checks failed, by how much);
``on_fail: fail`` ends the job with ``quality_check_failed``; ``on_fail: review`` goes on like
``deliver_with_warning``, and the worker then holds the job for a person (``awaiting_review``,
see :mod:`genhook.review`) instead of delivering it. A failing output is never passed on as if
it had passed.

Given a generate node's ``renders`` (one image per aspect class), the policy applies to each
image on its own (a retry regenerates only the frame that failed); the reports are named
``{node}.{frame}`` (``qc.tall``) and the node's ``renders`` output carries the chosen set.

A clip (a video generate node's result) is checked twice over: its poster frame by the image
checks (contrast, sharpness, brightness, glyphs), and the clip itself by the video checks of
:mod:`genhook.media.video_qc` (``duration_seconds`` within ``duration_tolerance`` of what was
asked, ``fps``, ``width``/``height`` at least the template's ``min_width``/``min_height``
(hosted video models make 480p or 720p whatever frame was asked; the export scales each clip
to its presets), ``black_frames``, ``frozen_seconds``, and the audio rules);
the same policy then retries, delivers with a warning, or fails.

Two content checks are off unless the params turn them on: ``near_duplicate: {max_distance}``
(the output's perceptual hash, for a clip the clip's own from
:func:`~genhook.media.video_qc.measure_video`, against ``ctx.recent_hashes``, which the worker
fills from the recent outputs of the same service, workflow and external id) and ``nsfw:
{max_score}`` (the ``nsfw`` extra; a template asking for it without the extra is refused at
load).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from genhook import metrics
from genhook.backends.base import GenerationResult
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.media.qc import measure
from genhook.media.similarity import RecentHash
from genhook.media.video_qc import AudioPolicy, VideoThresholds, evaluate_video, measure_video
from genhook.nodes.generate import generate_once
from genhook.nodes.renders import Renders
from genhook.presets import Presets
from genhook.quality import (
    ContentChecks,
    FacePolicy,
    FailedCheck,
    Thresholds,
    content_checks,
    content_problem,
    evaluate,
    prompt_fix,
    retry_may_help,
    score,
)
from genhook.seeds import stable_seed
from genhook.workflow.node import BaseNode, QualityReport, RunContext


class NearDuplicateParams(BaseModel):
    """``near_duplicate: {max_distance: 6}``: fail within 6 bits of a recent output's hash."""

    model_config = ConfigDict(extra="forbid")
    max_distance: int = Field(default=6, ge=0, le=32)


class NsfwParams(BaseModel):
    """``nsfw: {max_score: 0.5}``: fail when an NSFW label scores above 0.5 (genhook[nsfw])."""

    model_config = ConfigDict(extra="forbid")
    max_score: float = Field(default=0.5, gt=0, lt=1)


class QualityCheck(BaseNode):
    """Checks resolution, flatness, blur, exposure, (optionally) faces of ``result``, and that
    every character the backend was asked to set as text had a glyph."""

    kind = "quality_check"

    class Params(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        result: GenerationResult | Renders
        min_width: int = Field(default=0, ge=0)
        min_height: int = Field(default=0, ge=0)
        min_contrast: float = Field(default=8.0, ge=0)
        min_sharpness: float = Field(default=30.0, ge=0)
        min_brightness: float = Field(default=12.0, ge=0, le=255)
        max_brightness: float = Field(default=245.0, ge=0, le=255)
        faces: FacePolicy = "ignore"
        min_face_confidence: float = Field(default=0.5, ge=0, le=1)
        duration_tolerance: float = Field(default=0.05, ge=0, le=1)
        fps_tolerance: float = Field(default=0.01, ge=0, le=1)
        max_black_share: float = Field(default=0.1, ge=0, le=1)
        max_frozen_seconds: float = Field(default=1.0, ge=0)
        audio: AudioPolicy = "forbid_silent"
        max_retries: int = Field(default=2, ge=0, le=5)
        on_fail: Literal["deliver_with_warning", "fail", "review"] = "deliver_with_warning"
        near_duplicate: NearDuplicateParams | None = None  # off by default
        nsfw: NsfwParams | None = None  # off by default; needs genhook[nsfw]

    outputs: ClassVar[Mapping[str, Any]] = {
        "result": GenerationResult,
        "image": Pixels,
        "passed": bool,
        "renders": Renders,
    }

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """An nsfw check without the nsfw extra installed is refused at load."""
        if params.get("nsfw") is None:
            return []
        problem = content_problem(ContentChecks(nsfw_max_score=0.5))
        return [("nsfw", problem)] if problem else []

    def plan(
        self, name: str, raw: Mapping[str, Any], ctx: RunContext
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Dry run: the policy it would apply; the candidate passes through unmeasured."""
        params = self.Params.model_validate(raw)
        report = params.model_dump(exclude={"result"})
        renders = _renders(params.result)
        first = renders.primary
        outputs = {"result": first, "image": first.pixels, "passed": True, "renders": renders}
        return outputs, report

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Apply the policy to each image; record the outcomes in the run's ledger."""
        given = params.result
        if isinstance(given, GenerationResult):
            chosen, passed = self._police(name, name, params, ctx, given)
            renders = Renders((chosen,))
        else:
            outcomes = [
                self._police(name, f"{name}.{given.label(r)}", params, ctx, r)
                for r in given.results
            ]
            renders = Renders(tuple(c for c, _ in outcomes))
            passed = all(p for _, p in outcomes)
        first = renders.primary
        return {"result": first, "image": first.pixels, "passed": passed, "renders": renders}

    def _police(
        self, name: str, label: str, params: Any, ctx: RunContext, candidate: GenerationResult
    ) -> tuple[GenerationResult, bool]:
        """The policy for one image; its report is named ``label``."""
        thresholds = Thresholds(**{k: getattr(params, k) for k in Thresholds.__dataclass_fields__})
        original = candidate.request  # every retry amends this prompt, never an amended one
        best: tuple[tuple[int, float], GenerationResult, list[FailedCheck]] | None = None
        attempts = 0
        while True:
            attempts += 1
            failed = _failures(candidate, thresholds, params, ctx.recent_hashes)
            _count_checks(
                thresholds,
                failed,
                video=candidate.video is not None,
                content=_content(params).active,
            )
            if best is None or score(failed) < best[0]:
                best = (score(failed), candidate, failed)
            if not retry_may_help(failed) or attempts > params.max_retries:
                break
            if ctx.is_cancelled():
                raise GenhookError(ErrorCode.CANCELLED)
            request = original.retried(
                prompt_fix(failed, thresholds.faces),
                stable_seed(candidate.request.seed, name, attempts),
            )
            candidate = generate_once(ctx, request)
        _, chosen, failed = best
        checks = [f.to_dict() for f in failed]
        review = params.on_fail == "review"
        ctx.quality.append(QualityReport(label, not failed, attempts, checks, review=review))
        if failed and params.on_fail == "fail":
            summary = "; ".join(f.describe() for f in failed)
            raise GenhookError(
                ErrorCode.QUALITY_CHECK_FAILED,
                f"no output passed quality checks after {attempts} attempts: {summary}",
            )
        ctx.delivered.append(chosen)
        return chosen, not failed


CHECKS = ("width", "height", "contrast", "sharpness", "brightness", "missing_glyphs")
"""The checks every evaluation applies (``face_confidence`` too unless faces are ignored)."""
VIDEO_CHECKS = ("duration_seconds", "fps", "black_frames", "frozen_seconds")
"""The checks a clip's evaluation adds (the audio ones where they apply)."""


def _failures(
    candidate: GenerationResult,
    thresholds: Thresholds,
    params: Any,
    recent: Sequence[RecentHash] = (),
) -> list[FailedCheck]:
    """Every check ``candidate`` fails: the image checks on its pixels (a clip's poster), and
    for a clip the video checks on its file (which measure its width and height instead)."""
    clip = candidate.video
    image = replace(thresholds, min_width=0, min_height=0) if clip is not None else thresholds
    measured = measure(candidate.pixels, detect_faces=thresholds.faces != "ignore")
    failed = evaluate(measured, image, candidate.missing_glyphs)
    if clip is None:
        return failed + content_checks(candidate.pixels, _content(params), recent)
    try:
        video = measure_video(clip.path)
    except ValueError as exc:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"the backend's clip cannot be decoded: {exc}"
        ) from exc
    asked = candidate.request
    limits = VideoThresholds(
        duration_seconds=asked.duration_seconds,
        fps=asked.fps,
        duration_tolerance=params.duration_tolerance,
        fps_tolerance=params.fps_tolerance,
        # the template's limits: hosted video models make 480p or 720p clips whatever frame
        # was asked, and the export scales each clip to its presets
        min_width=thresholds.min_width,
        min_height=thresholds.min_height,
        max_black_share=params.max_black_share,
        max_frozen_seconds=params.max_frozen_seconds,
        audio=params.audio,
    )
    # a clip's near_duplicate compares the clip's hash (what its payload outputs carry)
    failed += content_checks(candidate.pixels, _content(params), recent, video.phash)
    return [*evaluate_video(video, limits), *failed]


def _content(params: Any) -> ContentChecks:
    """The content checks the params turned on."""
    near, nsfw = params.near_duplicate, params.nsfw
    return ContentChecks(
        near_duplicate_max_distance=near.max_distance if near is not None else None,
        nsfw_max_score=nsfw.max_score if nsfw is not None else None,
    )


def _count_checks(
    thresholds: Thresholds, failed: list[FailedCheck], *, video: bool, content: tuple[str, ...] = ()
) -> None:
    """/metrics: each check this evaluation applied, passed or failed."""
    failing = {f.check for f in failed}
    faces = ("face_confidence",) if thresholds.faces != "ignore" else ()
    for check in (*CHECKS, *faces, *(VIDEO_CHECKS if video else ()), *content):
        metrics.qc(check, check not in failing)


def _renders(given: GenerationResult | Renders) -> Renders:
    return given if isinstance(given, Renders) else Renders((given,))
