"""Several jobs ended in one transaction (``Store.finish_many``, what the worker's
:class:`~genhook.worker.Finisher` calls) and the one-statement batch claim, on SQLite and
PostgreSQL: each job ends as a single ``finish`` would end it (its own lease checked, a cancel
asked first winning, its payload outboxed once, its attempt, event and roll-up); a job whose lease
was lost is skipped; a batch whose transaction fails keeps nothing, and the Finisher then ends
each job alone; a batch claim writes each job's attempt and ``running`` event; a worker runs a
metadata-only workflow's jobs in its claiming loop and ends them together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.config import Settings
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import utc_day
from genhook.presets import Presets
from genhook.status import JobStatus
from genhook.storage import LocalStorage
from genhook.store.accounting import ledger
from genhook.store.admit import Admission
from genhook.store.jobs import Finish
from genhook.store.schema import attempts, deliveries, events, job_rollups, jobs
from genhook.store.store import Store
from genhook.worker import Finisher, Worker
from tests.conftest import new_service

HOOK = "http://127.0.0.1:9/hook"


def _submit(store: Store, service_id: str, n: int, callback_url: str | None = HOOK) -> list[str]:
    return [
        str(
            store.submit(
                service_id=service_id,
                workflow_id="product-image",
                workflow_version=1,
                trigger={"product_name": f"x{i}"},
                external_id=None,
                callback_url=callback_url,
                admission=Admission(),
            )[0].id
        )
        for i in range(n)
    ]


def _ending(job_id: str, status: JobStatus = JobStatus.SUCCEEDED, **kw: Any) -> Finish:
    error = None if status is JobStatus.SUCCEEDED else GenhookError(ErrorCode.BACKEND_ERROR)
    return Finish(
        job_id,
        kw.pop("worker", "w1"),
        status=status,
        payload={"job_id": job_id, "status": "success" if error is None else "failed"},
        error=error,
        credit_cost=0.0,
        work_seconds=0.5,
        cancelled={"job_id": job_id, "status": "failed", "error_code": "cancelled"},
        **kw,
    )


def _rows(store: Store, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    with store._read() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).where(*where)).mappings()]


def _job(store: Store, job_id: str) -> dict[str, Any]:
    return _rows(store, jobs, jobs.c.id == job_id)[0]


def test_each_job_of_a_batch_ends_as_a_single_finish_ends_it(store: Store) -> None:
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 5)
    claimed = store.claim_many("w1", 30, 5)
    assert sorted(j.id for j in claimed) == sorted(ids)
    statuses = store.finish_many(
        [_ending(ids[0]), _ending(ids[1], JobStatus.FAILED), *(_ending(i) for i in ids[2:])]
    )
    assert statuses == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
        JobStatus.SUCCEEDED,
        JobStatus.SUCCEEDED,
    ]
    for job_id, status in zip(ids, statuses, strict=True):
        row = _job(store, job_id)
        assert row["status"] == status and row["lease_owner"] is None
        assert row["result"]["job_id"] == job_id and row["processing_seconds"] == 0.5
        assert row["finished_at"] is not None
        (attempt,) = _rows(store, attempts, attempts.c.job_id == job_id)
        assert attempt["outcome"] == status and attempt["ended_at"] is not None
        logged = _rows(store, events, events.c.job_id == job_id)
        ended = [e for e in logged if e["status"] == status]
        assert len(ended) == 1 and ended[0]["detail"]["job_id"] == job_id
        (outbox,) = _rows(store, deliveries, deliveries.c.job_id == job_id)
        assert outbox["url"] == HOOK and f'"job_id":"{job_id}"'.encode() in outbox["body"]
    assert ErrorCode.BACKEND_ERROR.value == _job(store, ids[1])["error_code"]
    (rollup,) = _rows(store, job_rollups, job_rollups.c.service_id == svc)
    assert (rollup["completed"], rollup["failed"]) == (4, 1)
    assert rollup["generation_seconds"] == pytest.approx(2.5)
    assert (rollup["qc_checked"], rollup["qc_passed"]) == (4, 4)


def test_a_batch_with_credits_to_book_adds_its_roll_up_after_the_ledger(store: Store) -> None:
    """One job spent credits (its ledger is booked first, as by a single finish): the roll-up
    of the whole batch is added after it, once."""
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 3, callback_url=None)
    store.claim_many("w1", 30, 3)
    spent = _ending(ids[1])
    spent = Finish(**{**spent.__dict__, "credit_cost": 1.5})
    assert store.finish_many([_ending(ids[0]), spent, _ending(ids[2])]) == [JobStatus.SUCCEEDED] * 3
    (rollup,) = _rows(store, job_rollups, job_rollups.c.service_id == svc)
    assert (rollup["completed"], rollup["credits"]) == (3, pytest.approx(1.5))
    assert _job(store, ids[1])["credit_cost"] == pytest.approx(1.5)
    with store._read() as conn:
        booked = ledger(conn, svc, utc_day(store.clock.now()))
    assert booked is not None and booked.spent == pytest.approx(1.5)


def test_a_lost_lease_is_skipped_and_a_cancel_asked_first_wins(store: Store) -> None:
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 3)
    store.claim_many("w1", 30, 3)
    with store._write() as conn:  # another worker took the first over
        conn.execute(jobs.update().where(jobs.c.id == ids[0]).values(lease_owner="w2"))
    store.cancel(ids[1], lambda job: {"job_id": job.id, "status": "failed"})
    statuses = store.finish_many([_ending(i) for i in ids])
    assert statuses == [None, JobStatus.CANCELLED, JobStatus.SUCCEEDED]
    lost = _job(store, ids[0])
    assert lost["status"] == JobStatus.RUNNING and lost["lease_owner"] == "w2"
    assert lost["result"] is None
    assert _rows(store, deliveries, deliveries.c.job_id == ids[0]) == []
    (attempt,) = _rows(store, attempts, attempts.c.job_id == ids[0])
    assert attempt["ended_at"] is None  # the new holder's to close
    cancelled = _job(store, ids[1])
    assert cancelled["status"] == JobStatus.CANCELLED
    assert cancelled["result"]["error_code"] == "cancelled"  # the cancelled payload
    (outbox,) = _rows(store, deliveries, deliveries.c.job_id == ids[1])
    assert b'"error_code":"cancelled"' in outbox["body"]
    assert _job(store, ids[2])["status"] == JobStatus.SUCCEEDED
    (rollup,) = _rows(store, job_rollups, job_rollups.c.service_id == svc)
    assert (rollup["completed"], rollup["cancelled"]) == (1, 1)


def _raising() -> Callable[[], None]:
    def publish() -> None:
        raise OSError("disk full")

    return publish


def test_a_failed_batch_keeps_nothing_and_the_finisher_ends_each_alone(store: Store) -> None:
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 3)
    store.claim_many("w1", 30, 3)
    published: list[str] = []
    endings = [
        _ending(ids[0], publish=lambda: published.append(ids[0])),
        _ending(ids[1], publish=_raising()),
        _ending(ids[2]),
    ]
    with pytest.raises(OSError):
        store.finish_many(endings)
    for job_id in ids:  # all or nothing: every job still runs on w1's lease
        row = _job(store, job_id)
        assert row["status"] == JobStatus.RUNNING and row["lease_owner"] == "w1"
        assert _rows(store, deliveries, deliveries.c.job_id == job_id) == []
    assert _rows(store, job_rollups, job_rollups.c.completed > 0) == []

    finisher = Finisher(store)
    batches: list[list[JobStatus | None]] = []
    finisher.on_batch = batches.append
    finisher._commit(batch := [finisher_item(e) for e in endings])
    assert [item.status for item in batch] == [JobStatus.SUCCEEDED, None, JobStatus.SUCCEEDED]
    assert isinstance(batch[1].error, OSError)
    assert _job(store, ids[1])["status"] == JobStatus.RUNNING  # its lease runs out: retried
    assert {_job(store, i)["status"] for i in (ids[0], ids[2])} == {JobStatus.SUCCEEDED}
    # published in each failed batch too (the test's, the Finisher's): a no-op after a rollback
    assert published.count(ids[0]) == 3
    assert finisher.ended == 2 and batches == [[JobStatus.SUCCEEDED, None, JobStatus.SUCCEEDED]]


def finisher_item(ending: Finish) -> Any:
    from genhook.worker import _Ending

    return _Ending(ending)


def test_threads_ending_at_once_share_transactions(store: Store) -> None:
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 12, callback_url=None)
    store.claim_many("w1", 30, 12)
    finisher = Finisher(store)
    results: dict[str, JobStatus | None] = {}
    go = threading.Barrier(len(ids))

    def end(job_id: str) -> None:
        go.wait()
        results[job_id] = finisher.finish(_ending(job_id))

    threads = [threading.Thread(target=end, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: JobStatus.SUCCEEDED for i in ids}
    assert finisher.ended == 12 and 1 <= finisher.batches <= 12
    (rollup,) = _rows(store, job_rollups, job_rollups.c.service_id == svc)
    assert rollup["completed"] == 12


def test_a_batch_claim_opens_each_attempt_and_its_running_event(store: Store) -> None:
    svc = new_service(store, "shop")
    ids = _submit(store, svc, 6, callback_url=None)
    claimed = store.claim_many("w1", 30, 4)
    assert [j.id for j in claimed] == ids[:4]  # the fair order: by eligible_at, then id
    for job in claimed:
        assert job.attempts == 1 and not job.cancel_requested
        (attempt,) = _rows(store, attempts, attempts.c.job_id == job.id)
        assert attempt["number"] == 1 and attempt["worker"] == "w1"
        running = [
            e for e in _rows(store, events, events.c.job_id == job.id) if e["status"] == "running"
        ]
        assert [e["detail"] for e in running] == [{"attempt": 1}]
        row = _job(store, job.id)
        assert row["status"] == JobStatus.RUNNING and row["lease_owner"] == "w1"
    with store._read() as conn:
        waiting = conn.execute(sa.text("SELECT waiting FROM services WHERE id = :s"), {"s": svc})
        assert waiting.scalar_one() == 2
    assert [j.id for j in store.claim_many("w2", 30, 8)] == ids[4:]
    assert store.claim_many("w3", 30, 8) == []


NOOP = """\
id: noop
description: one metadata node, no generation
input:
  required: [n]
  properties:
    n: {type: string}
nodes:
  meta:
    kind: metadata
    with:
      alt_text: "item {{ input.n }}"
      caption: "item {{ input.n }}"
      filename: "item-{{ input.n }}"
outputs:
  assets: []
  seo: ${meta.seo}
"""


def _noop_worker(store: Store, tmp_path: Path, presets: Presets, concurrency: int) -> Worker:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "noop.yaml").write_text(NOOP, encoding="utf-8")
    engine = Engine.load(tmp_path / "flows", presets=presets)
    settings = Settings(data_dir=tmp_path).resolved()
    storage = LocalStorage(tmp_path / "assets", "http://genhook.test")
    return Worker(store, engine, storage, settings, name="w1", concurrency=concurrency)


def test_quick_jobs_run_in_the_claiming_loop_and_end_together(
    store: Store, tmp_path: Path, presets: Presets
) -> None:
    """A metadata-only workflow runs inline (no job thread): a batch of 8 claimed at once ends
    in one finishing transaction, each job with its payload, attempt and callback; a job
    handed back with a cancel asked stops before its first step, cancelled."""
    worker = _noop_worker(store, tmp_path, presets, concurrency=8)
    assert worker.engine.runs_inline(worker.engine.workflows["noop"])
    svc = new_service(store, "shop")

    def submit(n: int) -> str:
        job, _ = store.submit(
            service_id=svc,
            workflow_id="noop",
            workflow_version=1,
            trigger={"n": str(n)},
            external_id=None,
            callback_url=HOOK,
        )
        return str(job.id)

    ids = [submit(n) for n in range(8)]
    cancelled = ids[3]
    store.claim_many("w0", 30, 8)  # w0 claims them all, then shuts down: a cancel comes first
    store.cancel(cancelled, lambda job: {"job_id": job.id, "status": "failed"})
    assert store.hand_back("w0", ids) == ids
    threads = threading.active_count()
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,))
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while any(store.job(i).status not in ("succeeded", "cancelled") for i in ids):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the jobs did not end"
            time.sleep(0.02)
        # the loop and the lease keeper, no job thread
        assert threading.active_count() <= threads + 2
    finally:
        stop.set()
        loop.join()
    assert worker._threads == 0
    assert worker.finisher.batches == 1 and worker.finisher.ended == 8
    for job_id in ids:
        job = store.job(job_id)
        assert job is not None
        if job_id == cancelled:
            assert job.status == "cancelled" and job.result is not None
            assert job.result["error"]["error_code"] == "cancelled"
        else:
            assert job.status == "succeeded" and job.result is not None
            assert job.result["seo"]["alt_text"].startswith("item ")
        (outbox,) = _rows(store, deliveries, deliveries.c.job_id == job_id)
        assert outbox["status"] == "pending"
        tries = store.attempts(job_id)
        assert [a.outcome for a in tries] == ["handed_back", job.status]


def test_a_workflow_that_generates_is_not_run_inline(presets: Presets) -> None:
    engine = Engine.load(None, presets=presets)
    assert not engine.runs_inline(engine.workflows["product-image"])
