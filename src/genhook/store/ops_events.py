"""Operator events: logged in ``operator_events`` and, when ``GENHOOK_ALERT_URL`` is set,
outboxed as an ``alert`` delivery in the same transaction as the change they report.

The body is the contract's ``{"event", "service", "timestamp", "details"}``, encoded once; the
outbox signs it with ``GENHOOK_ALERT_SECRET`` (Standard Webhooks) and retries it like a callback.
Every call site passes the connection of the transaction that made the change, so an event is
sent if and only if its change committed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from genhook.contract.wire import encode_payload
from genhook.ids import new_id
from genhook.status import DeliveryStatus
from genhook.store.schema import deliveries, operator_events

log = logging.getLogger("genhook.ops")


class OperatorEvent(StrEnum):
    """The contract's operator events."""

    BUDGET_THRESHOLD = "budget.threshold"
    SERVICE_PAUSED = "service.paused"
    SERVICE_RESUMED = "service.resumed"
    BACKEND_UNHEALTHY = "backend.unhealthy"
    BACKEND_RECOVERED = "backend.recovered"
    DELIVERY_EXHAUSTED = "delivery.exhausted"
    ENDPOINT_DISABLED = "endpoint.disabled"
    SCHEDULE_FAILED = "schedule.failed"


ALERT = "alert"
"""``deliveries.kind`` of an operator event (a job's callback is ``callback``)."""


def endpoint_of(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit of the endpoint breaker and in-flight caps."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def iso(ts: float) -> str:
    """Epoch seconds as the contract's UTC timestamp (``2026-11-28T12:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_event(
    conn: sa.Connection,
    *,
    event: OperatorEvent,
    service: str | None,
    details: Mapping[str, Any],
    now: float,
    alert_url: str | None,
) -> str:
    """Log ``event`` (``service`` is the service's name, None for a backend's event) and outbox
    it to ``alert_url`` when one is configured; returns the event's id (its ``webhook-id``)."""
    event_id = new_id("evt")
    body = {
        "event": str(event),
        "service": service,
        "timestamp": iso(now),
        "details": dict(details),
    }
    conn.execute(
        operator_events.insert().values(
            id=event_id, event=str(event), service=service, at=now, details=dict(details)
        )
    )
    log.warning("operator event %s service=%s details=%s", event, service, dict(details))
    if alert_url:
        conn.execute(
            deliveries.insert().values(
                id=event_id,
                job_id=None,
                service_id=None,
                kind=ALERT,
                endpoint=endpoint_of(alert_url),
                url=alert_url,
                body=encode_payload(body),
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return event_id
