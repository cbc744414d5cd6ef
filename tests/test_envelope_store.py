"""The store's parts of the trigger envelope, on SQLite and PostgreSQL (injected clock):
``deadline`` (the claim never starts a job past it; the sweep ends the waiting ones
``expired``), and the non-terminal callbacks ``job.started`` / ``job.progress`` in the outbox
(throttled, superseded, dropped once the job ended)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from genhook.contract.envelope import parse_envelope
from genhook.errors import ErrorCode, GenhookError
from genhook.status import JobStatus
from genhook.store.schema import deliveries, job_rollups, services
from genhook.store.store import Store
from tests.conftest import new_service

URL = "http://127.0.0.1:9/hooks"
META = {"order": "A-7", "tags": ["x", 1]}


def _submit(store: Store, sid: str, **envelope: Any) -> str:
    checked = parse_envelope({"callback_url": URL, "client_metadata": META, **envelope})
    job, _ = store.submit(
        service_id=sid,
        workflow_id="tiny",
        workflow_version=1,
        trigger={"item_id": "A"},
        external_id="A",
        callback_url=checked.callback_url,
        envelope=checked.stored(),
    )
    return job.id


def _deliveries(store: Store, job_id: str) -> list[Any]:
    with store._read() as conn:
        return list(
            conn.execute(
                sa.select(deliveries.c.kind, deliveries.c.status, deliveries.c.body)
                .where(deliveries.c.job_id == job_id)
                .order_by(deliveries.c.created_at, deliveries.c.id)
            )
        )


def _retry(store: Store, job_id: str, delay: float) -> JobStatus | None:
    """Worker w1's attempt of ``job_id`` failed transiently: again after ``delay`` s."""
    return store.retry(
        job_id,
        "w1",
        error=GenhookError(ErrorCode.BACKEND_ERROR),
        delay=delay,
        credit_cost=0,
        work_seconds=1,
        cancelled={"status": "failed"},
    )


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def test_a_job_not_started_by_its_deadline_ends_expired(flow: Store) -> None:
    sid = new_service(flow, "shop")
    job_id = _submit(flow, sid, deadline=_iso(flow.clock.now() + 10))
    flow.clock.advance(11)  # type: ignore[attr-defined]
    assert flow.claim("w1", 30) is None  # never started past it, even before the sweep
    assert flow.sweep_deadlines() == 1
    assert flow.sweep_deadlines() == 0
    job = flow.job(job_id)
    assert job is not None and job.status is JobStatus.EXPIRED
    assert job.error_code == "deadline_expired" and job.first_claimed_at is None
    assert job.result is not None
    assert job.result["status"] == "failed" and job.result["event"] == "job.failed"
    assert job.result["error"]["error_code"] == "deadline_expired"
    assert job.result["client_metadata"] == META
    assert job.result["metadata"]["attempts"] == 0 and job.result["metadata"]["credit_cost"] == 0
    [(kind, status, body)] = _deliveries(flow, job_id)
    assert (kind, status) == ("callback", "pending")
    assert json.loads(body) == job.result
    assert flow.events(job_id)[-1].status is JobStatus.EXPIRED
    with flow._read() as conn:
        waiting = conn.execute(sa.select(services.c.waiting).where(services.c.id == sid))
        assert waiting.scalar_one() == 0
        expired = conn.execute(sa.select(sa.func.sum(job_rollups.c.expired))).scalar_one()
        assert expired == 1


def test_a_deadline_still_ahead_or_met_does_not_expire(flow: Store) -> None:
    sid = new_service(flow, "shop")
    ahead = _submit(flow, sid, deadline=_iso(flow.clock.now() + 60))
    assert flow.sweep_deadlines() == 0
    claimed = flow.claim("w1", 30)
    assert claimed is not None and claimed.id == ahead
    # it started in time: a retry after the deadline is not bound by it
    assert _retry(flow, ahead, 100) is JobStatus.RETRYING
    flow.clock.advance(120)  # type: ignore[attr-defined]
    assert flow.sweep_deadlines() == 0
    again = flow.claim("w1", 30)
    assert again is not None and again.id == ahead and again.attempts == 2


def test_the_sweep_ends_many_in_bounded_batches(flow: Store) -> None:
    sid = new_service(flow, "shop")
    ids = [_submit(flow, sid, deadline=_iso(flow.clock.now() + 1)) for _ in range(7)]
    flow.clock.advance(2)  # type: ignore[attr-defined]
    assert len(flow.expire_due(limit=3)) == 3
    assert flow.sweep_deadlines(limit=3) == 4
    statuses = {flow.job(j).status for j in ids}  # type: ignore[union-attr]
    assert statuses == {JobStatus.EXPIRED}


def test_started_and_progress_callbacks_when_asked(flow: Store) -> None:
    sid = new_service(flow, "shop")
    job_id = _submit(flow, sid, callback_events=["job.started", "job.progress"])
    job = flow.claim("w1", 30)
    assert job is not None and job.client_metadata == META
    [(kind, status, body)] = _deliveries(flow, job_id)
    started = json.loads(body)
    assert (kind, status) == ("job.started", "pending")
    assert started["event"] == "job.started" and started["status"] == "running"
    assert started["client_metadata"] == META and started["attempt"] == 1
    assert started["external_id"] == "A" and "progress" not in started

    step = {"step": 3, "total": 10, "percent": 30.0}
    assert flow.record_progress("w1", [(job_id, step)]) == 1
    flow.clock.advance(1)  # type: ignore[attr-defined]
    assert flow.record_progress("w1", [(job_id, {**step, "step": 5})]) == 1  # the SSE event
    rows = _deliveries(flow, job_id)
    assert [r.kind for r in rows] == ["job.started", "job.progress"]  # throttled: 2 s apart
    assert json.loads(rows[1].body)["progress"] == {"step": 3, "steps": 10}
    flow.clock.advance(1.5)  # type: ignore[attr-defined]
    flow.record_progress("w1", [(job_id, {**step, "step": 8})])
    rows = _deliveries(flow, job_id)
    assert [(r.kind, r.status) for r in rows] == [
        ("job.started", "pending"),
        ("job.progress", "dropped"),  # the newer one replaced it before it was sent
        ("job.progress", "pending"),
    ]
    assert json.loads(rows[2].body)["progress"] == {"step": 8, "steps": 10}

    flow.finish(
        job_id,
        "w1",
        status=JobStatus.SUCCEEDED,
        payload={"event": "job.completed", "job_id": job_id},
        error=None,
        credit_cost=0,
        work_seconds=3,
    )
    rows = _deliveries(flow, job_id)
    assert [(r.kind, r.status) for r in rows] == [
        ("job.started", "dropped"),  # never sent after the terminal one
        ("job.progress", "dropped"),
        ("job.progress", "dropped"),
        ("callback", "pending"),
    ]


def test_only_the_terminal_callback_unless_asked(flow: Store) -> None:
    sid = new_service(flow, "shop")
    job_id = _submit(flow, sid)
    assert flow.claim("w1", 30) is not None
    flow.record_progress("w1", [(job_id, {"step": 1, "total": 2})])
    assert _deliveries(flow, job_id) == []
    flow.finish(
        job_id,
        "w1",
        status=JobStatus.SUCCEEDED,
        payload={"event": "job.completed"},
        error=None,
        credit_cost=0,
        work_seconds=1,
    )
    assert [r.kind for r in _deliveries(flow, job_id)] == ["callback"]


def test_a_cancelled_retrying_job_drops_its_waiting_progress(flow: Store) -> None:
    sid = new_service(flow, "shop")
    job_id = _submit(flow, sid, callback_events=["job.progress"])
    assert flow.claim("w1", 30) is not None
    flow.record_progress("w1", [(job_id, {"step": 1, "total": 4})])
    assert _retry(flow, job_id, 60) is JobStatus.RETRYING
    assert flow.cancel(job_id, lambda job: {"event": "job.failed", "job_id": job.id}) == (
        JobStatus.CANCELLED
    )
    assert [(r.kind, r.status) for r in _deliveries(flow, job_id)] == [
        ("job.progress", "dropped"),
        ("callback", "pending"),
    ]
