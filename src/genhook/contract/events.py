"""The non-terminal callback events, schema version 1: ``job.started`` and ``job.progress``.

A trigger asks for them in its envelope (``callback_events``); they go to its ``callback_url``
signed, retried and logged exactly like the completion payload (each its own ``webhook-id``),
but carry no outputs: only where the job stands. The terminal events (``job.completed``,
``job.failed``) are the completion payload itself (:mod:`genhook.contract.completion`).

The body, beside the completion payload's own names::

    {"schema_version": "1", "event": "job.progress", "job_id", "workflow_id",
     "status": "running", "external_id", "client_metadata", "attempt",
     "progress": {"step", "steps"}, "timestamp"}

``progress`` only in ``job.progress``; ``"test": true`` too for a sandbox service's job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from genhook.contract.completion import TIMESTAMP_PATTERN, zulu

STARTED = "job.started"
PROGRESS = "job.progress"
NON_TERMINAL = (STARTED, PROGRESS)
"""The events a trigger may ask for on top of the terminal ones (always sent)."""


def _absent(value: object) -> bool:
    return value is None


class EventProgress(BaseModel):
    """How far the job's current generation is: ``step`` of ``steps``."""

    step: int = Field(ge=0)
    steps: int = Field(ge=1)


class EventPayload(BaseModel):
    """POSTed to ``callback_url`` when a job's first attempt starts (``job.started``) and, at
    most once every 2 s, while a backend reports progress (``job.progress``)."""

    model_config = ConfigDict(protected_namespaces=())

    schema_version: Literal["1"] = "1"
    event: Literal["job.started", "job.progress"]
    job_id: str
    workflow_id: str
    status: Literal["running"] = Field(
        "running", description="The job's status when the event was recorded."
    )
    external_id: str | None
    client_metadata: dict[str, Any] | None = Field(
        description="The trigger's client_metadata, echoed unchanged; null when it sent none."
    )
    attempt: int = Field(ge=1, description="The attempt that is running (1 for the first).")
    progress: EventProgress | None = Field(
        None, exclude_if=_absent, description="job.progress only."
    )
    timestamp: datetime = Field(
        description="When genhook recorded the event: RFC 3339, UTC, with a Z.",
        json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN},
    )
    test: bool = Field(False, description="True for a sandbox (--test) service's job.")

    @field_serializer("timestamp")
    def _zulu(self, value: datetime) -> str:
        return zulu(value)

    def to_json(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return self.model_dump(mode="json")


def event_payload(
    event: str,
    *,
    job_id: str,
    workflow_id: str,
    external_id: str | None,
    client_metadata: dict[str, Any] | None,
    attempt: int,
    at: float,
    progress: dict[str, Any] | None = None,
    test: bool = False,
) -> dict[str, Any]:
    """The body of one non-terminal event recorded at ``at`` (epoch seconds); ``progress`` is
    the worker's progress detail (``step``, ``total``)."""
    shown = None
    if progress is not None:
        steps = max(1, int(progress.get("total") or progress.get("steps") or 1))
        shown = EventProgress(step=min(max(0, int(progress.get("step") or 0)), steps), steps=steps)
    return EventPayload(
        event=STARTED if event == STARTED else PROGRESS,
        job_id=job_id,
        workflow_id=workflow_id,
        external_id=external_id,
        client_metadata=client_metadata,
        attempt=max(1, attempt),
        progress=shown,
        timestamp=datetime.fromtimestamp(at, UTC),
        test=test,
    ).to_json()
