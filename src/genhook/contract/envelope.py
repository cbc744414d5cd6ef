"""The trigger envelope: the fields of a trigger that are about delivery, not about the workflow.

A trigger body is split once, at the edge (the API, ``genhook run``), into the workflow's input
and its envelope (:func:`split_trigger`); the envelope is checked once (:func:`parse_envelope`)
and stored beside the input, never inside it. So a workflow never sees an envelope field, a
template cannot declare one (:data:`RESERVED`), and nothing in the envelope changes the seed or
what is generated.

All five fields are checked, stored and acted on:

- ``callback_url``: where every callback of the job goes (:mod:`genhook.delivery`).
- ``callback_events``: ``job.started`` and ``job.progress`` (at most one every 2 s) are outboxed
  when asked (:mod:`genhook.store.callbacks`, bodies in :mod:`genhook.contract.events`); the
  terminal ``job.completed`` / ``job.failed`` always are.
- ``client_metadata``: echoed unchanged as ``client_metadata`` in every payload (completion,
  failure, refusal, the non-terminal events) and in ``GET /v1/jobs/{job_id}``.
- ``priority``: the order within the service's own share of the claim (``jobs.priority``).
- ``deadline``: a job not started by then ends ``expired`` (``deadline_expired``), never
  started late (:mod:`genhook.store.expiry`; ``jobs.deadline``).

The SSRF check of the callback's target (what it resolves to) is not here: it needs the resolver
and the deployment's policy, and lives in :mod:`genhook.delivery.ssrf`, called by the API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from genhook.errors import ErrorCode, InvalidInput

RESERVED = ("callback_url", "callback_events", "client_metadata", "priority", "deadline")
"""Top-level names reserved in every trigger; a template cannot declare them as inputs."""

MAX_URL_LENGTH = 2048
MAX_METADATA_BYTES = 1024
TERMINAL_EVENTS = ("job.completed", "job.failed")
EVENTS = ("job.started", "job.progress", *TERMINAL_EVENTS)
PRIORITIES = ("low", "normal", "high")

SCHEMA_PROPERTIES: dict[str, Any] = {
    "callback_url": {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "description": "Where genhook POSTs the signed completion payload (http or https, a "
        "public address).",
    },
    "callback_events": {
        "type": "array",
        "items": {"enum": list(EVENTS)},
        "uniqueItems": True,
        "description": "Which events to POST to callback_url: job.started (the first attempt "
        "starts), job.progress (at most one every 2 s while a backend reports progress); the "
        "terminal job.completed and job.failed are always sent.",
    },
    "client_metadata": {
        "type": "object",
        "description": f"Any JSON object of at most {MAX_METADATA_BYTES} bytes, stored with "
        "the job and echoed unchanged as client_metadata in every payload.",
    },
    "priority": {
        "enum": list(PRIORITIES),
        "default": "normal",
        "description": "Order within the calling service's own share, never ahead of another "
        "service's jobs.",
    },
    "deadline": {
        "type": "string",
        "format": "date-time",
        "description": "ISO 8601 time (with offset) by which the job must have started; a job "
        "still waiting past it ends expired (error_code deadline_expired).",
    },
}
"""The envelope as JSON Schema properties, for the published ``input_schema``."""


@dataclass(frozen=True)
class Envelope:
    """A checked envelope. ``deadline`` is epoch seconds (UTC)."""

    callback_url: str | None = None
    callback_events: tuple[str, ...] = TERMINAL_EVENTS
    client_metadata: dict[str, Any] | None = None
    priority: str = "normal"
    deadline: float | None = None

    def stored(self) -> dict[str, Any]:
        """What the job's ``envelope`` column keeps (``callback_url`` has its own column)."""
        return {
            "callback_events": list(self.callback_events),
            "client_metadata": self.client_metadata,
            "priority": self.priority,
            "deadline": self.deadline,
        }


def split_trigger(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(input, envelope)``: the body's reserved names apart from the workflow's fields."""
    envelope = {k: v for k, v in body.items() if k in RESERVED}
    return {k: v for k, v in body.items() if k not in RESERVED}, envelope


def parse_envelope(raw: Mapping[str, Any]) -> Envelope:
    """Check the envelope's fields (in :data:`RESERVED` order); :class:`InvalidInput` on the
    first fault. ``null`` is the same as absent."""
    url = raw.get("callback_url")
    return Envelope(
        callback_url=None if url is None else check_callback_url(url),
        callback_events=_events(raw.get("callback_events")),
        client_metadata=_metadata(raw.get("client_metadata")),
        priority=_priority(raw.get("priority")),
        deadline=_deadline(raw.get("deadline")),
    )


def usable_metadata(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """For a refused trigger: its ``client_metadata`` if that field alone is valid, else None
    (the failed payload echoes what it can)."""
    try:
        return _metadata(raw.get("client_metadata"))
    except InvalidInput:
        return None


def check_callback_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host; else invalid input."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(ErrorCode.INVALID_CALLBACK_URL, why, field="callback_url")

    if not isinstance(url, str):
        raise bad("callback_url must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"callback_url is {len(url)} characters, over the limit of {MAX_URL_LENGTH}")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise bad("callback_url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise bad("callback_url must use http or https")
    if not parts.hostname:
        raise bad("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("callback_url must not carry credentials")
    if port == 0:
        raise bad("callback_url has port 0")
    return url


def _events(value: Any) -> tuple[str, ...]:
    if value is None:
        return TERMINAL_EVENTS
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(
            ErrorCode.INVALID_TYPE,
            "'callback_events' must be a list of event names",
            field="callback_events",
        )
    unknown = [v for v in value if v not in EVENTS]
    if unknown:
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            f"'callback_events' holds {unknown[0][:40]!r}, not one of: {', '.join(EVENTS)}",
            field="callback_events",
        )
    chosen = set(value) | set(TERMINAL_EVENTS)
    return tuple(e for e in EVENTS if e in chosen)


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(
            ErrorCode.INVALID_TYPE,
            "'client_metadata' must be a JSON object",
            field="client_metadata",
        )
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            f"'client_metadata' is {size} bytes as compact JSON, over the limit of "
            f"{MAX_METADATA_BYTES}",
            field="client_metadata",
        )
    return value


def _priority(value: Any) -> str:
    if value is None:
        return "normal"
    if value not in PRIORITIES:
        shown = repr(value)[:40]
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            f"'priority' = {shown} is not one of: {', '.join(PRIORITIES)}",
            field="priority",
        )
    return str(value)


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            ErrorCode.INVALID_TYPE, "'deadline' must be an ISO 8601 time string", field="deadline"
        )
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            f"'deadline' = {value[:40]!r} is not an ISO 8601 time (like 2026-11-28T12:00:00Z)",
            field="deadline",
        ) from None
    if when.tzinfo is None:
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            "'deadline' needs a UTC offset (Z or +01:00): a local time is ambiguous",
            field="deadline",
        )
    return when.astimezone(UTC).timestamp()
