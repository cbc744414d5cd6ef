"""Retention of batches, on both stores with an injected clock: a purge pass also removes the
``batches`` row of a batch whose jobs are all purged (and its batch callback's delivery and
attempt log) once it ended longer ago than its service's retention, leaving a tombstone so that
``GET /v1/batches/{id}`` answers ``410 batch_expired``; a batch with a job still kept (owing a
callback), a batch callback still owed, or a batch not old enough stays."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.paths import shipped_dir
from genhook.retention import Purger
from genhook.runtime import Runtime
from genhook.status import JobStatus
from genhook.store.batches import callback_id
from genhook.store.schema import batches, deliveries, delivery_attempts, purged_batches
from genhook.store.store import Store
from tests.databases import database_url
from tests.test_admit import _item
from tests.test_retention import DAY, Files, deliver, purger, service

HOOK = "http://127.0.0.1:9/batch-hook"


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = ManualClock()
    store.delivery_per_endpoint = store.delivery_per_service = 10_000
    return store


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path / "assets")


def batch_of(store: Store, sid: str, batch_id: str, n: int, *, callback: str | None = HOOK) -> None:
    """A batch of ``n`` jobs (and one refused item) of service ``sid``."""
    items: list[Any] = [_item(store, sid, i) for i in range(n)]
    items.append(InvalidInput(ErrorCode.INVALID_TYPE, "wrong", field="x"))
    store.submit_batch(
        batch_id=batch_id,
        service_id=sid,
        workflow_id="product-image",
        items=items,
        callback_url=callback,
    )


def end_all(store: Store) -> None:
    while (job := store.claim("w", 30)) is not None:
        store.finish(
            job.id,
            "w",
            status=JobStatus.SUCCEEDED,
            payload={"job_id": job.id, "status": "success"},
            error=None,
            credit_cost=0.0,
            work_seconds=0.1,
        )


def deliver_batch_callback(store: Store, batch_id: str) -> None:
    [leased] = [d for d in store.claim_deliveries(100, 30, "o") if d.id == callback_id(batch_id)]
    deliver(store, leased)


def rows(store: Store, batch_id: str) -> dict[str, int]:
    with store._read() as conn:

        def n(table: sa.Table, where: Any) -> int:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(where)
                ).scalar_one()
            )

        return {
            "batches": n(batches, batches.c.id == batch_id),
            "deliveries": n(deliveries, deliveries.c.batch_id == batch_id),
            "delivery_attempts": n(
                delivery_attempts, delivery_attempts.c.delivery_id == callback_id(batch_id)
            ),
            "tombstones": n(purged_batches, purged_batches.c.batch_id == batch_id),
        }


def test_a_batch_goes_with_its_jobs_once_its_callback_is_delivered(
    clocked: Store, files: Files
) -> None:
    """Past retention, the jobs go; the batch stays while its callback is owed, then goes with
    its delivery and attempt log, a tombstone in its place; the dry run counted it first."""
    sid = service(clocked, "1h")
    batch_of(clocked, sid, "bat_a", 3)
    end_all(clocked)
    assert rows(clocked, "bat_a") == {
        "batches": 1,
        "deliveries": 1,
        "delivery_attempts": 0,
        "tombstones": 0,
    }
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    first = purger(clocked, files).run_once()
    assert first.removed["jobs"] == 3
    assert rows(clocked, "bat_a")["batches"] == 1  # its callback is still owed
    assert clocked.batch("bat_a") is not None and clocked.purged_batch("bat_a") is None
    deliver_batch_callback(clocked, "bat_a")
    dry = purger(clocked, files).run_once(dry_run=True).as_dict()
    assert dry["removed"]["batches"] == 1 and dry["removed"]["jobs"] == 0
    assert rows(clocked, "bat_a")["batches"] == 1  # a dry run changes nothing
    report = purger(clocked, files).run_once().as_dict()
    assert report["removed"]["batches"] == 1
    assert report["removed"]["deliveries"] == 1 and report["removed"]["delivery_attempts"] == 1
    assert rows(clocked, "bat_a") == {
        "batches": 0,
        "deliveries": 0,
        "delivery_attempts": 0,
        "tombstones": 1,
    }
    assert clocked.batch("bat_a") is None
    stone = clocked.purged_batch("bat_a")
    assert stone is not None and stone.service_id == sid
    assert purger(clocked, files).run_once().as_dict()["removed"]["batches"] == 0


def test_a_batch_is_kept_while_a_job_of_it_is_kept(clocked: Store, files: Files) -> None:
    """A job of the batch still owing its own callback keeps the batch too."""
    sid = service(clocked, "1h")
    batch_of(clocked, sid, "bat_b", 2, callback=None)
    with clocked._write() as conn:  # one job's callback is owed: that job is kept
        job_id = clocked.batch("bat_b").items[0]["job_id"]  # type: ignore[union-attr]
        conn.execute(
            deliveries.insert(),
            {
                "id": "msg_owed",
                "job_id": job_id,
                "service_id": sid,
                "kind": "callback",
                "endpoint": "127.0.0.1:9",
                "url": "http://127.0.0.1:9/hook",
                "body": b"{}",
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": clocked.clock.now() + 10 * DAY,
                "created_at": clocked.clock.now(),
            },
        )
    end_all(clocked)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    report = purger(clocked, files).run_once().as_dict()
    assert report["removed"]["jobs"] == 1 and report["removed"]["batches"] == 0
    assert rows(clocked, "bat_b")["batches"] == 1


def test_a_batch_not_old_enough_or_open_stays_and_one_without_jobs_goes(
    clocked: Store, files: Files
) -> None:
    """An open batch (a job still queued) and a batch ended within the retention stay; a batch
    that created no job (every item refused) goes once it ended longer ago than the
    retention; another service's (a longer retention) stays."""
    sid, other = service(clocked, "1h"), service(clocked, "30d")
    clocked.submit_batch(
        batch_id="bat_none",
        service_id=sid,
        workflow_id="product-image",
        items=[InvalidInput(ErrorCode.INVALID_TYPE, "wrong", field="x")],
        callback_url=None,
    )
    batch_of(clocked, other, "bat_other", 0, callback=None)
    batch_of(clocked, sid, "bat_open", 1, callback=None)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    report = purger(clocked, files).run_once().as_dict()
    assert report["removed"]["batches"] == 1
    assert rows(clocked, "bat_none")["tombstones"] == 1
    assert rows(clocked, "bat_open")["batches"] == rows(clocked, "bat_other")["batches"] == 1
    end_all(clocked)  # bat_open ends now: its retention starts now
    clocked.clock.advance(1800)  # type: ignore[attr-defined]
    assert purger(clocked, files).run_once().as_dict()["removed"]["batches"] == 0
    clocked.clock.advance(1801)  # type: ignore[attr-defined]
    assert purger(clocked, files).run_once().as_dict()["removed"]["batches"] == 1
    assert rows(clocked, "bat_open")["batches"] == 0


def test_batch_tombstones_are_forgotten_after_a_year(clocked: Store, files: Files) -> None:
    sid = service(clocked, "1h")
    batch_of(clocked, sid, "bat_old", 0, callback=None)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    purger(clocked, files).run_once()
    assert clocked.purged_batch("bat_old") is not None
    clocked.clock.advance(366 * DAY)  # type: ignore[attr-defined]
    purger(clocked, files).run_once()
    assert clocked.purged_batch("bat_old") is None


@pytest.fixture
def runtime(store: Store, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path, database_url=store.url, workflows_dir=shipped_dir("workflows")
    ).resolved()
    built = Runtime.build(settings, clock=ManualClock())
    try:
        yield built
    finally:
        built.store.close()


def test_a_purged_batch_answers_410_batch_expired(runtime: Runtime) -> None:
    """GET /v1/batches/{id} of a purged batch: 410 batch_expired to its service, 403 to
    another, 404 for a batch that never existed."""
    made = runtime.store.create_service("shop", retention="1h")
    other = runtime.store.create_service("crm")
    batch_of(runtime.store, made["service_id"], "bat_http", 0, callback=None)
    client = TestClient(create_app(runtime))
    auth = {"Authorization": f"Bearer {made['api_key']}"}
    assert client.get("/v1/batches/bat_http", headers=auth).status_code == 200
    runtime.clock.advance(3601)  # type: ignore[attr-defined]
    assert Purger.for_runtime(runtime).run_once().as_dict()["removed"]["batches"] == 1
    gone = client.get("/v1/batches/bat_http", headers=auth)
    assert gone.status_code == 410, gone.text
    assert gone.json()["error_code"] == ErrorCode.BATCH_EXPIRED
    theirs = client.get(
        "/v1/batches/bat_http", headers={"Authorization": f"Bearer {other['api_key']}"}
    )
    assert theirs.status_code == 403
    assert client.get("/v1/batches/bat_never", headers=auth).status_code == 404
    assert not GenhookError(ErrorCode.BATCH_EXPIRED).retryable


def test_concurrent_purgers_remove_each_batch_once(tmp_path: Path, files: Files) -> None:
    """PostgreSQL: four stores' purgers at once (batches of 7) over 40 expired batches, some
    with jobs and delivered callbacks: each batch is removed by exactly one of them."""
    with database_url("postgresql", tmp_path) as url:
        setup = Store(url, ManualClock())
        setup.migrate()
        setup.delivery_per_endpoint = setup.delivery_per_service = 10_000
        sid = service(setup, "1h")
        for n in range(40):
            batch_of(setup, sid, f"bat_{n:02d}", n % 3, callback=HOOK if n % 4 == 0 else None)
        end_all(setup)
        leased = setup.claim_deliveries(100, 30, "o")
        assert len(leased) == 10  # the callbacks of the batches with a URL
        for delivery in leased:
            deliver(setup, delivery)
        setup.close()
        clock = ManualClock(1_800_000_000.0 + 7200)
        stores = [Store(url, clock) for _ in range(4)]
        reports: list[Any] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(stores))

        def run(store: Store) -> None:
            try:
                barrier.wait()
                reports.append(purger(store, files, batch=7).run_once())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert not errors, errors
            assert sum(r.batches_removed for r in reports) == 40
            with stores[0]._read() as conn:
                count = sa.select(sa.func.count())
                assert conn.execute(count.select_from(batches)).scalar_one() == 0
                assert conn.execute(count.select_from(purged_batches)).scalar_one() == 40
        finally:
            for s in stores:
                s.close()


def test_the_dry_run_counts_a_batch_only_when_its_jobs_would_go(
    clocked: Store, files: Files
) -> None:
    """A rate-limited service's job that the rate window still reads is kept by the pass (its
    retention a minute, its window an hour), so its batch is kept too, and the dry run says
    so; once the job has left the window both go, and the dry run counted them first."""
    sid = clocked.create_service("hourly", retention="1m", rate_limit="2/h")["service_id"]
    batch_of(clocked, sid, "bat_window", 1, callback=None)
    end_all(clocked)
    assert clocked.batch("bat_window").ended_at is not None  # type: ignore[union-attr]
    clocked.clock.advance(61)  # type: ignore[attr-defined]
    dry = purger(clocked, files).run_once(dry_run=True).as_dict()
    assert (dry["removed"]["jobs"], dry["removed"]["batches"]) == (0, 0)
    report = purger(clocked, files).run_once().as_dict()
    assert (report["removed"]["jobs"], report["removed"]["batches"]) == (0, 0)
    clocked.clock.advance(3600)  # type: ignore[attr-defined]
    dry = purger(clocked, files).run_once(dry_run=True).as_dict()
    assert (dry["removed"]["jobs"], dry["removed"]["batches"]) == (1, 1)
    report = purger(clocked, files).run_once().as_dict()
    assert (report["removed"]["jobs"], report["removed"]["batches"]) == (1, 1)
