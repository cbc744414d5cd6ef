"""A job's non-terminal callback events in the outbox: ``job.started`` and ``job.progress``.

Each is outboxed in the transaction of the state change it reports, when the trigger asked for
it (the envelope's ``callback_events``) and has a ``callback_url``: ``job.started`` in the claim
that starts the job's first attempt, ``job.progress`` in the write of a progress event, at most
one every :data:`PROGRESS_SECONDS` per job (counted from the outbox itself, so a retry's new
attempt or another worker does not reset it). They are deliveries like the completion payload's
(signed with the service's secret, the same schedule and log, a ``webhook-id`` each), told apart
by their ``kind`` (``job.started``, ``job.progress``; the completion payload's is ``callback``).

Ordering: a receiver must never learn of a job's progress after its end. So the transaction
that ends a job drops its non-terminal deliveries that are still waiting (status ``dropped``,
never sent), and a newer ``job.progress`` drops an older one still waiting (a slow receiver gets
the latest, not a backlog). What the outbox has already taken to send is not recalled: such an
event may still land a moment after the terminal one, and carries its own ``timestamp``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from genhook.contract.events import NON_TERMINAL, PROGRESS, STARTED, event_payload
from genhook.contract.wire import encode_payload
from genhook.ids import new_id
from genhook.status import DeliveryStatus
from genhook.store.ops_events import endpoint_of
from genhook.store.records import Job, envelope_metadata
from genhook.store.schema import deliveries, jobs

PROGRESS_SECONDS = 2.0
"""At most one ``job.progress`` callback per job this often."""
ENDED = "the job ended before this event was sent: dropped, never delivered"
SUPERSEDED = "a later job.progress of the job replaced it before it was sent"

_PENDING_EVENTS = (
    deliveries.update()
    .where(
        deliveries.c.job_id == sa.bindparam("jid"),
        deliveries.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        deliveries.c.status == DeliveryStatus.PENDING,
    )
    .values(status=DeliveryStatus.DROPPED, last_error=sa.bindparam("why"))
)


def asked(envelope: Mapping[str, Any] | None, event: str) -> bool:
    """Did the trigger (its stored envelope) ask for ``event``?"""
    chosen = None if envelope is None else envelope.get("callback_events")
    return isinstance(chosen, list) and event in chosen


def asks_any(envelope: Mapping[str, Any] | None) -> bool:
    """Did the trigger ask for any non-terminal event?"""
    return any(asked(envelope, event) for event in NON_TERMINAL)


def announces_start(job: Job | None) -> bool:
    """Is ``job`` (as claimed) the first attempt of a job whose trigger asked for
    ``job.started``? Not one claimed only to be refused at once (``budget_exceeded``)."""
    return (
        job is not None
        and job.attempts == 1
        and job.refusal is None
        and job.callback_url is not None
        and asked(job.envelope, STARTED)
    )


def outbox_event(
    conn: sa.Connection,
    *,
    job_id: str,
    service_id: str,
    url: str,
    kind: str,
    body: bytes,
    now: float,
) -> str:
    """Queue one delivery of ``body`` to ``url``; its id (the ``webhook-id``)."""
    delivery_id = new_id("msg")
    conn.execute(
        deliveries.insert(),
        {
            "id": delivery_id,
            "job_id": job_id,
            "service_id": service_id,
            "kind": kind,
            "endpoint": endpoint_of(url),
            "url": url,
            "body": body,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    return delivery_id


def announce_start(conn: sa.Connection, job: Job | None, now: float) -> Job | None:
    """In the claim's transaction: outbox ``job.started`` for a job's first attempt when its
    trigger asked for it; returns ``job`` as it is."""
    if job is None or not announces_start(job) or job.callback_url is None:
        return job
    _outbox_for(conn, STARTED, job, now)
    return job


def outbox_progress(
    conn: sa.Connection, progress: Sequence[tuple[str, Mapping[str, Any]]], now: float
) -> int:
    """In the transaction that records progress events: a ``job.progress`` callback for each
    job among ``progress`` (job id, detail; the last detail of a job counts) whose trigger
    asked for it, unless one went to the outbox less than :data:`PROGRESS_SECONDS` ago. An
    older one still waiting is dropped for the new one. How many were outboxed."""
    latest = {job_id: detail for job_id, detail in progress}
    if not latest:
        return 0
    rows = conn.execute(
        sa.select(
            jobs.c.id,
            jobs.c.service_id,
            jobs.c.workflow_id,
            jobs.c.external_id,
            jobs.c.callback_url,
            jobs.c.envelope,
            jobs.c.sandbox,
            jobs.c.attempts,
        ).where(jobs.c.id.in_(list(latest)), jobs.c.callback_url.is_not(None))
    ).all()
    wanted = [r for r in rows if asked(r.envelope, PROGRESS)]
    if not wanted:
        return 0
    last = dict(
        conn.execute(
            sa.select(deliveries.c.job_id, sa.func.max(deliveries.c.created_at))
            .where(deliveries.c.job_id.in_([r.id for r in wanted]), deliveries.c.kind == PROGRESS)
            .group_by(deliveries.c.job_id)
        ).all()
    )
    sent = 0
    for row in wanted:
        before = last.get(row.id)
        if before is not None and now - float(before) < PROGRESS_SECONDS:
            continue
        conn.execute(_PENDING_EVENTS, {"jid": row.id, "kinds": [PROGRESS], "why": SUPERSEDED})
        _outbox_for(conn, PROGRESS, row, now, progress=dict(latest[row.id]))
        sent += 1
    return sent


def _outbox_for(
    conn: sa.Connection, event: str, job: Any, now: float, progress: dict[str, Any] | None = None
) -> None:
    """Outbox ``event`` of ``job`` (a claimed :class:`Job` or a ``jobs`` row: the same names)
    to its callback URL."""
    body = event_payload(
        event,
        job_id=job.id,
        workflow_id=job.workflow_id,
        external_id=job.external_id,
        client_metadata=envelope_metadata(job.envelope),
        attempt=int(job.attempts),
        at=now,
        progress=progress,
        test=bool(job.sandbox),
    )
    outbox_event(
        conn,
        job_id=job.id,
        service_id=job.service_id,
        url=job.callback_url,
        kind=event,
        body=encode_payload(body),
        now=now,
    )


def drop_pending_events(conn: sa.Connection, job_id: str) -> None:
    """In the transaction that ends a job: its non-terminal deliveries still waiting are
    dropped (never sent after the terminal one)."""
    conn.execute(_PENDING_EVENTS, {"jid": job_id, "kinds": list(NON_TERMINAL), "why": ENDED})
