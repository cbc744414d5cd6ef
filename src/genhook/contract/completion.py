"""The completion payload, schema version 1: the one builder that the CLI and the service share.

The JSON Schema published at ``/v1/schemas/completion-v1.json`` and in ``docs/schemas/`` is
generated from these models (``make schema``), never written by hand.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from genhook.errors import GenhookError
from genhook.storage import url_expires_at
from genhook.workflow.result import RunResult


class _Model(BaseModel):
    # No additionalProperties: false in the published schema: adding a field is non-breaking,
    # so receivers that validate against v1 must keep accepting payloads with new fields.
    model_config = ConfigDict(protected_namespaces=())


TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
"""What ``timestamp`` looks like (checked even by validators that skip ``format``)."""

VIDEO_FIELDS = ("duration_seconds", "fps", "poster_url")
"""What every output of ``asset_type`` ``video`` carries, and no image."""


def _absent(value: object) -> bool:
    return value is None


def _video_rule(schema: dict[str, Any]) -> None:
    """In the published schema: a video output requires its length, rate and poster (as a
    number, a number and a URL), and no output carries them as null."""
    props = schema.get("properties", {})
    for name in VIDEO_FIELDS:
        prop = props.get(name)
        if prop is not None:  # the value's own branch of anyOf [value, null], constraints kept
            branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
            prop.pop("default", None)
            prop.update(branches[0] if branches else {})
    schema["allOf"] = [
        {
            "if": {"properties": {"asset_type": {"const": "video"}}, "required": ["asset_type"]},
            "then": {"required": list(VIDEO_FIELDS)},
        }
    ]


class OutputAsset(_Model):
    """One delivered file."""

    asset_url: str = Field(
        description="Where to fetch the bytes (http(s), or file:// from `genhook run`)."
    )
    asset_type: Literal["image", "video"]
    format: str = Field(description="jpeg, webp, png, avif (images); mp4, webm (video).")
    width: int
    height: int
    platform_code: str = Field(description="The platform preset this file was made for.")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the bytes.")
    alt_text: str
    filename_suggestion: str = Field(description="Lowercase ASCII slug, at most 100 characters.")
    caption: str
    duration_seconds: float | None = Field(
        None,
        ge=0,
        exclude_if=_absent,
        description="Video only (required there): the clip's length in seconds.",
    )
    fps: float | None = Field(
        None,
        gt=0,
        exclude_if=_absent,
        description="Video only (required there): frames per second.",
    )
    poster_url: str | None = Field(
        None,
        exclude_if=_absent,
        description="Video only (required there): a still image of the clip, at its size "
        "(JPEG), fetched like asset_url.",
    )
    phash: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        exclude_if=_absent,
        description="The 64-bit perceptual hash (16 hex digits) of the image this output was "
        "cut from (every output of one image carries the same), or of the clip a video output "
        "was cut from; the near_duplicate check compares it.",
    )

    url_expires_at: datetime | None = Field(
        None,
        exclude_if=_absent,
        description="Only where asset_url is a presigned URL (S3 storage with "
        "GENHOOK_S3_URL_MODE presigned): when it stops working, RFC 3339, UTC, with a Z. "
        "Fetch the bytes before then.",
        json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN},
    )
    poster_url_expires_at: datetime | None = Field(
        None,
        exclude_if=_absent,
        description="Video only, where poster_url is a presigned URL: when it stops working.",
        json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN},
    )

    model_config = ConfigDict(json_schema_extra=lambda schema: _video_rule(schema))

    @field_serializer("url_expires_at", "poster_url_expires_at")
    def _zulu(self, value: datetime | None) -> str | None:
        return None if value is None else zulu(value)

    @model_validator(mode="after")
    def _video_fields(self) -> OutputAsset:
        """A video carries its length, rate and poster; an image none of them."""
        given = [f for f in VIDEO_FIELDS if getattr(self, f) is not None]
        if self.asset_type == "video" and len(given) != len(VIDEO_FIELDS):
            missing = [f for f in VIDEO_FIELDS if f not in given]
            raise ValueError(f"a video output carries {', '.join(missing)}")
        if self.asset_type == "image" and given:
            raise ValueError(f"an image output carries no {', '.join(given)}")
        return self


class Seo(_Model):
    """The job's SEO text (every output carries its own copy too)."""

    alt_text: str
    filename_suggestion: str
    caption: str


class Metadata(_Model):
    """How the outputs were made."""

    prompt_used: str | None = Field(description="The prompt of the delivered output.")
    negative_prompt: str | None = None
    model_id: str | None
    credit_cost: float = Field(description="Credits spent on all generations of the job.")
    processing_time_seconds: float = Field(
        description="The time workers spent on the job, summed over its attempts, each from "
        "its claim to its end; waiting in the queue or between attempts is not in it."
    )
    attempts: int = Field(description="Job attempts (transient-failure retries included).")
    seed: int | None
    generations: int = Field(0, description="Backend calls, quality-check retries included.")


class FailedCheckOut(_Model):
    """A quality check that a delivered output failed."""

    node: str = Field(description="The quality_check node of the workflow that measured it.")
    check: str
    measured: float
    threshold: float
    comparison: Literal[">=", "<="]
    shortfall: float = Field(description="Relative distance from the threshold (0.25 = 25 %).")
    characters: list[str] | None = Field(
        None, description="Check missing_glyphs only: the characters no font could draw."
    )
    resembles: str | None = Field(
        None, description="Check near_duplicate only: the job whose output this one resembles."
    )
    labels: dict[str, float] | None = Field(
        None, description="Check nsfw only: the NSFW labels found, with their scores."
    )


class QualityWarning(_Model):
    """Present when the workflow's policy delivered the best output that did not pass QC."""

    message: str
    failed_checks: list[FailedCheckOut]


class ErrorInfo(_Model):
    """Why a job failed."""

    error_code: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", description="A stable code from docs/error-codes.md."
    )
    error_description: str
    field: str | None = Field(description="The trigger field at fault, as sent; null if none.")


_CONSISTENT = (
    {
        "if": {"properties": {"event": {"const": "job.completed"}}},
        "then": {"properties": {"status": {"const": "success"}, "error": {"type": "null"}}},
    },
    {
        "if": {"properties": {"event": {"const": "job.failed"}}},
        "then": {
            "properties": {
                "status": {"const": "failed"},
                "outputs": {"maxItems": 0},
                "error": {"not": {"type": "null"}},  # so an ErrorInfo (see its anyOf)
            }
        },
    },
)
"""The rules between fields, in the published schema: ``job.completed`` goes with ``success``
and no error; ``job.failed`` with ``failed``, no outputs and an error."""


def _published_rules(schema: dict[str, Any]) -> None:
    """Add to the generated schema what pydantic does not say: ``schema_version`` is required
    (it has a default here, but every payload carries it), and the rules between fields."""
    schema["required"] = ["schema_version", *schema.get("required", [])]
    schema["allOf"] = copy.deepcopy(list(_CONSISTENT))


class CompletionPayload(_Model):
    """POSTed to ``callback_url`` when a job ends; also the ``result`` of ``GET /v1/jobs/{id}``."""

    schema_version: Literal["1"] = "1"
    event: Literal["job.completed", "job.failed"]
    job_id: str
    workflow_id: str
    status: Literal["success", "failed"]
    external_id: str | None
    outputs: list[OutputAsset]
    seo: Seo | None
    metadata: Metadata
    quality_warning: QualityWarning | None
    error: ErrorInfo | None
    timestamp: datetime = Field(
        description="When the job ended: RFC 3339, UTC, with a Z.",
        json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN},
    )
    test: bool = Field(
        default=False,
        description="True for a sandbox (--test) service's job: made on the procedural backend "
        "at 0 credits, whatever the workflow names.",
    )
    client_metadata: dict[str, Any] | None = Field(
        default=None,
        description="The trigger's client_metadata, echoed unchanged; null when it sent none.",
    )

    model_config = ConfigDict(json_schema_extra=_published_rules)

    @model_validator(mode="after")
    def _consistent(self) -> CompletionPayload:
        """``event``, ``status``, ``outputs`` and ``error`` agree (see ``_CONSISTENT``)."""
        failed = self.event == "job.failed"
        if (self.status == "failed") != failed:
            raise ValueError(f"event {self.event} with status {self.status}")
        if failed and (self.outputs or self.error is None):
            raise ValueError("a job.failed payload has no outputs and an error")
        if not failed and self.error is not None:
            raise ValueError("a job.completed payload has no error")
        return self

    @field_serializer("timestamp")
    def _zulu(self, value: datetime) -> str:
        return zulu(value)

    def to_json(self) -> dict[str, Any]:
        """The payload as JSON-ready data."""
        return self.model_dump(mode="json")


def zulu(value: datetime) -> str:
    """RFC 3339 in UTC with a Z (fractions of a second only where there are any)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def failure_payload(
    *,
    job_id: str,
    workflow_id: str,
    external_id: str | None,
    error: GenhookError,
    attempts: int = 1,
    processing_time_seconds: float = 0.0,
    credit_cost: float = 0.0,
    generations: int = 0,
    timestamp: datetime | None = None,
    test: bool = False,
    client_metadata: dict[str, Any] | None = None,
) -> CompletionPayload:
    """The ``job.failed`` payload: no outputs, the error with its code and field."""
    return CompletionPayload(
        event="job.failed",
        job_id=job_id,
        workflow_id=workflow_id,
        status="failed",
        external_id=external_id,
        outputs=[],
        seo=None,
        metadata=Metadata(
            prompt_used=None,
            model_id=None,
            credit_cost=credit_cost,
            processing_time_seconds=round(processing_time_seconds, 3),
            attempts=attempts,
            seed=None,
            generations=generations,
        ),
        quality_warning=None,
        error=ErrorInfo(
            error_code=error.code.value, error_description=error.description, field=error.field
        ),
        timestamp=timestamp or now(),
        test=test,
        client_metadata=client_metadata,
    )


class JobTotals(Protocol):
    """What a failed payload carries over from a job: a stored job or a claimed one."""

    @property
    def id(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def external_id(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def processing_seconds(self) -> float: ...
    @property
    def credit_cost(self) -> float: ...


def job_failure_payload(job: JobTotals, error: GenhookError) -> CompletionPayload:
    """The failed payload of a stored job that ends without running (cancelled, refused,
    expired): its attempts, working time and credits so far carried over from the job, and its
    trigger's ``client_metadata`` (where the job record carries one)."""
    return failure_payload(
        client_metadata=getattr(job, "client_metadata", None),
        job_id=job.id,
        workflow_id=job.workflow_id,
        external_id=job.external_id,
        error=error,
        attempts=job.attempts,
        processing_time_seconds=job.processing_seconds,
        credit_cost=job.credit_cost,
        test=bool(getattr(job, "sandbox", False)),  # a sandbox service's job
    )


def quality_warning(result: RunResult) -> QualityWarning | None:
    """The warning for every quality check that a delivered output failed, or None."""
    failing = [q for q in result.quality if not q.passed]
    if not failing:
        return None
    checks = [FailedCheckOut(node=q.node, **f) for q in failing for f in q.failed_checks]
    names = ", ".join(sorted({c.check for c in checks}))
    tries = ", ".join(f"{q.node}: {q.attempts}" for q in failing)
    return QualityWarning(
        message=f"delivered the best output although it failed: {names} (attempts {tries})",
        failed_checks=checks,
    )


def success_payload(
    *,
    job_id: str,
    workflow_id: str,
    external_id: str | None,
    result: RunResult,
    asset_urls: list[str],
    attempts: int = 1,
    processing_time_seconds: float = 0.0,
    credit_before: float = 0.0,
    timestamp: datetime | None = None,
) -> CompletionPayload:
    """The ``job.completed`` payload for a run whose assets were stored at ``asset_urls``."""
    outputs = _outputs(result, asset_urls)
    # the output a quality check chose, else (no quality check) the first generation
    primary = next(iter(result.delivered or result.generations), None)
    seo = None
    if result.seo is not None:
        first = outputs[0].filename_suggestion if outputs else f"{result.seo.stem}"
        seo = Seo(
            alt_text=result.seo.alt_text, caption=result.seo.caption, filename_suggestion=first
        )
    return CompletionPayload(
        event="job.completed",
        job_id=job_id,
        workflow_id=workflow_id,
        status="success",
        external_id=external_id,
        outputs=outputs,
        seo=seo,
        metadata=Metadata(
            prompt_used=primary.request.prompt if primary else None,
            negative_prompt=primary.request.negative_prompt if primary else None,
            model_id=primary.model_id if primary else None,
            credit_cost=round(credit_before + result.credit_cost, 6),
            processing_time_seconds=round(processing_time_seconds, 3),
            attempts=attempts,
            seed=primary.request.seed if primary else None,
            generations=len(result.generations),
        ),
        quality_warning=quality_warning(result),
        error=None,
        timestamp=timestamp or now(),
    )


def _outputs(result: RunResult, asset_urls: list[str]) -> list[OutputAsset]:
    """The payload's outputs: each asset with its URL, a video with its poster's URL (a poster
    is stored as an asset of its own, and is not an output)."""
    url_of = {id(a): url for a, url in zip(result.assets, asset_urls, strict=True)}
    posters = {id(p) for a in result.assets if (p := getattr(a, "poster", None)) is not None}
    outputs = []
    for a in result.assets:
        if id(a) in posters:
            continue
        video: dict[str, Any] = {}
        if a.asset_type == "video":
            poster = getattr(a, "poster", None)
            poster_url = url_of.get(id(poster)) if poster is not None else None
            video = {
                "duration_seconds": getattr(a, "duration_seconds", None),
                "fps": getattr(a, "fps", None),
                "poster_url": poster_url,
                "poster_url_expires_at": url_expires_at(poster_url) if poster_url else None,
            }
        outputs.append(
            OutputAsset(
                asset_url=url_of[id(a)],
                url_expires_at=url_expires_at(url_of[id(a)]),
                asset_type=a.asset_type,
                format=a.format,
                width=a.width,
                height=a.height,
                platform_code=a.platform_code,
                bytes=len(a.data),
                sha256=a.sha256,
                alt_text=a.alt_text,
                filename_suggestion=a.filename,
                caption=a.caption,
                phash=a.phash,
                **video,
            )
        )
    return outputs
