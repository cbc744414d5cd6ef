"""Retention on both stores, with an injected clock: per-service retention, what a purge removes
(every row that belongs to a job, and its asset files), what it keeps (jobs still owing a
callback, jobs not old enough, other services' jobs), bounded batches, concurrent purgers on
PostgreSQL, a crash between the rows and the files, reruns, dry runs, and what the URLs of a
purged job answer."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.paths import shipped_dir
from genhook.retention import Purger
from genhook.runtime import Runtime
from genhook.status import DeliveryOutcome, JobStatus
from genhook.storage import LocalStorage
from genhook.store import migrate
from genhook.store.records import Delivery
from genhook.store.retention import PURGED_TABLES
from genhook.store.schema import (
    attempts,
    deliveries,
    delivery_attempts,
    events,
    job_rollups,
    jobs,
    purged_jobs,
    services,
)
from genhook.store.store import Store
from genhook.workflow.result import Asset
from tests.conftest import CliResult
from tests.databases import database_url

DAY = 86400.0
HOOK = "https://hooks.example.com/in"


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = ManualClock()
    store.delivery_per_endpoint = 10_000
    store.delivery_per_service = 10_000
    return store


class Files:
    """A LocalStorage under tmp_path that can be told to refuse deletions (a storage outage)."""

    def __init__(self, root: Path) -> None:
        self.local = LocalStorage(root, "http://genhook.test")
        self.refuse = False
        self.deleted: list[str] = []

    def delete_job(self, job_id: str) -> None:
        if self.refuse:
            raise OSError("storage unavailable")
        self.local.delete_job(job_id)
        self.deleted.append(job_id)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path / "assets")


def purger(store: Store, storage: Any, default: float = 30 * DAY, **kw: Any) -> Purger:
    kw.setdefault("pause", 0)
    return Purger(store, storage, default_seconds=default, **kw)


def service(store: Store, retention: str | None = None) -> str:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    return store.create_service(name, retention=retention)["service_id"]


def ended_job(
    store: Store,
    service_id: str,
    *,
    callback: str | None = HOOK,
    delivered: bool = True,
    idempotency_key: str | None = None,
    storage: Files | None = None,
) -> str:
    """A job run through the store's real path: accepted, claimed, an attempt, finished (its
    payload outboxed to ``callback``), and its callback delivered (an attempt logged)."""
    job, created = store.submit(
        service_id=service_id,
        workflow_id="tiny",
        workflow_version=1,
        trigger={"item_id": "x"},
        external_id="x",
        callback_url=callback,
        idempotency_key=idempotency_key,
        request_hash="h" if idempotency_key else None,
    )
    assert created
    claimed = store.claim("w", 30)
    assert claimed is not None and claimed.id == job.id
    if storage is not None:
        storage.local.put(job.id, asset(job.id))
    done = store.finish(
        job.id,
        "w",
        status=JobStatus.SUCCEEDED,
        payload={"job_id": job.id, "event": "job.completed"},
        error=None,
        credit_cost=1.0,
        work_seconds=0.5,
    )
    assert done is JobStatus.SUCCEEDED
    if callback is not None and delivered:
        deliver(store, lease(store, job.id))
    return job.id


def lease(store: Store, job_id: str) -> Delivery:
    """The job's callback, leased by outbox "o" (its attempt logged as sending)."""
    [leased] = [d for d in store.claim_deliveries(100, 30, "o") if d.job_id == job_id]
    return leased


def deliver(store: Store, leased: Delivery) -> None:
    """Record a 200 for the leased attempt: the callback is delivered."""
    assert store.record_delivery(
        leased.id,
        number=leased.attempt,
        status_code=200,
        error=None,
        duration_ms=3.0,
        outcome=DeliveryOutcome.DELIVERED,
        next_attempt_at=None,
        owner="o",
    )


def asset(job_id: str) -> Asset:
    return Asset(b"\xff\xd8bytes", f"{job_id[-6:]}.jpg", "image/jpeg", "jpeg", 1, 1, "t", "", "")


def rows_of(store: Store, job_id: str) -> dict[str, int]:
    """How many rows of every job-owned table still hold ``job_id``."""
    with store._read() as conn:

        def n(table: sa.Table, where: Any) -> int:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(where)
                ).scalar_one()
            )

        their = sa.select(deliveries.c.id).where(deliveries.c.job_id == job_id)
        return {
            "jobs": n(jobs, jobs.c.id == job_id),
            "job_attempts": n(attempts, attempts.c.job_id == job_id),
            "job_events": n(events, events.c.job_id == job_id),
            "deliveries": n(deliveries, deliveries.c.job_id == job_id),
            "delivery_attempts": n(delivery_attempts, delivery_attempts.c.delivery_id.in_(their)),
        }


def tombstones(store: Store) -> dict[str, Any]:
    with store._read() as conn:
        return {r.job_id: r for r in conn.execute(sa.select(purged_jobs))}


# -- what goes, what stays ----------------------------------------------------------------------


def test_a_purge_removes_every_row_of_the_job_and_its_files(clocked: Store, files: Files) -> None:
    """Past its retention, a job goes with its attempts, events, deliveries and their attempt
    log, its payload and idempotency key (the key then makes a new job), and its asset folder;
    a tombstone takes its place; roll-ups and the service stay."""
    sid = service(clocked, "1h")
    job_id = ended_job(clocked, sid, idempotency_key="k-1", storage=files)
    before = rows_of(clocked, job_id)
    assert all(before[t] >= 1 for t in PURGED_TABLES), before
    assert (files.local.root / job_id).is_dir()
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    report = purger(clocked, files).run_once()
    assert report.removed == before
    assert rows_of(clocked, job_id) == dict.fromkeys(PURGED_TABLES, 0)
    assert not (files.local.root / job_id).exists()
    assert files.local.path(job_id, asset(job_id).filename) is None
    assert report.assets_deleted == 1 and report.assets_failed == 0
    stone = tombstones(clocked)[job_id]
    assert stone.service_id == sid and stone.assets_deleted_at is not None
    assert clocked.purged_job(job_id) is not None and clocked.job(job_id) is None
    with clocked._read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_rollups)).scalar_one() >= 1
        assert conn.execute(sa.select(services.c.id).where(services.c.id == sid)).scalar_one()
    again, created = clocked.submit(
        service_id=sid,
        workflow_id="tiny",
        workflow_version=1,
        trigger={"item_id": "x"},
        external_id="x",
        callback_url=None,
        idempotency_key="k-1",
        request_hash="h",
    )
    assert created and again.id != job_id


def test_each_service_keeps_its_jobs_for_its_own_retention(clocked: Store, files: Files) -> None:
    """A service with --retention 1h loses its jobs after an hour; one without keeps them for
    the default (here 1 day); a job that ended later is kept until its own time comes."""
    short, default = service(clocked, "1h"), service(clocked)
    old_short, old_default = ended_job(clocked, short), ended_job(clocked, default)
    clocked.clock.advance(1800)  # type: ignore[attr-defined]
    young_short = ended_job(clocked, short)
    clocked.clock.advance(1801)  # type: ignore[attr-defined]
    p = purger(clocked, files, default=DAY)
    assert p.run_once().removed["jobs"] == 1
    assert clocked.job(old_short) is None
    assert clocked.job(young_short) is not None and clocked.job(old_default) is not None
    clocked.clock.advance(1800)  # type: ignore[attr-defined]
    assert p.run_once().removed["jobs"] == 1
    assert clocked.job(young_short) is None and clocked.job(old_default) is not None
    clocked.clock.advance(DAY)  # type: ignore[attr-defined]
    report = p.run_once()
    assert report.removed["jobs"] == 1 and clocked.job(old_default) is None
    names = {s.id: s.name for s in clocked.list_services()}
    assert report.services == {names[default]: 1}


def test_retention_can_be_changed_and_cleared(clocked: Store) -> None:
    """update_service sets and clears a service's retention; a bad value is refused."""
    sid = service(clocked, "2d")
    svc = next(s for s in clocked.list_services() if s.id == sid)
    assert svc.retention == "2d"
    assert clocked.update_service(svc.name, retention="12h").retention == "12h"
    assert [p.seconds for p in clocked.retention_policies(30 * DAY) if p.service_id == sid] == [
        12 * 3600
    ]
    assert clocked.update_service(svc.name, retention=None).retention is None
    assert [p.own for p in clocked.retention_policies(30 * DAY) if p.service_id == sid] == [False]
    for bad in ("0s", "soon", "-1d"):
        with pytest.raises(ValueError):
            clocked.update_service(svc.name, retention=bad)


def test_a_job_owing_a_callback_is_kept_until_it_is_delivered(clocked: Store, files: Files) -> None:
    """A pending delivery (or one being sent) keeps its job past its retention; delivered,
    the next pass purges it. Jobs not yet ended are never candidates."""
    sid = service(clocked, "1h")
    waiting = ended_job(clocked, sid, delivered=False)
    queued, _ = clocked.submit(
        service_id=sid,
        workflow_id="tiny",
        workflow_version=1,
        trigger={"item_id": "q"},
        external_id=None,
        callback_url=None,
    )
    clocked.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    p = purger(clocked, files)
    assert p.run_once().removed["jobs"] == 0
    assert clocked.job(waiting) is not None and clocked.job(queued.id) is not None
    leased = lease(clocked, waiting)
    assert p.run_once().removed["jobs"] == 0  # sending: still owed
    deliver(clocked, leased)
    assert p.run_once().removed["jobs"] == 1
    assert clocked.job(waiting) is None and clocked.job(queued.id) is not None


def test_a_replayed_delivery_keeps_its_job(clocked: Store, files: Files) -> None:
    """A manual resend makes the delivery pending again: its job waits for it."""
    sid = service(clocked, "1h")
    job_id = ended_job(clocked, sid)
    [delivery] = clocked.deliveries(job_id)
    clocked.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    assert clocked.replay(delivery.id)
    assert purger(clocked, files).run_once().removed["jobs"] == 0
    assert clocked.job(job_id) is not None


# -- batches, reruns, dry runs, crashes --------------------------------------------------------


def test_batches_are_bounded_and_paused_between(clocked: Store, files: Files) -> None:
    """Ten expired jobs with a batch of 3: each transaction takes at most 3 (oldest first), a
    pass takes four batches with a pause between each two."""
    sid = service(clocked, "1h")
    ids = []
    for _ in range(10):
        ids.append(ended_job(clocked, sid, callback=None))
        clocked.clock.advance(1)  # type: ignore[attr-defined]
    clocked.clock.advance(3600)  # type: ignore[attr-defined]
    cutoff = clocked.clock.now() - 3600
    first = clocked.purge_batch(sid, cutoff, 3)
    assert first["job_ids"] == ids[:3] and first["jobs"] == 3
    pauses: list[float] = []
    report = purger(clocked, files, batch=3, pause=0.25, sleep=pauses.append).run_once()
    assert report.batches == 3 and report.removed["jobs"] == 7
    assert pauses == [0.25, 0.25]
    assert all(clocked.job(i) is None for i in ids)


def test_a_rerun_removes_nothing_more(clocked: Store, files: Files) -> None:
    sid = service(clocked, "1h")
    for _ in range(3):
        ended_job(clocked, sid)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    p = purger(clocked, files)
    assert p.run_once().removed["jobs"] == 3
    stones = tombstones(clocked)
    again = p.run_once()
    assert again.removed == dict.fromkeys(PURGED_TABLES, 0) and again.batches == 0
    assert again.assets_deleted == 0
    assert tombstones(clocked) == stones


def test_a_dry_run_counts_and_changes_nothing(clocked: Store, files: Files) -> None:
    sid = service(clocked, "1h")
    ids = [ended_job(clocked, sid, storage=files) for _ in range(2)]
    ended_job(clocked, sid, delivered=False)  # owed: not counted
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    expected = {t: sum(rows_of(clocked, i)[t] for i in ids) for t in PURGED_TABLES}
    dry = purger(clocked, files).run_once(dry_run=True)
    assert dry.dry_run and dry.removed == expected and dry.removed["jobs"] == 2
    assert all(clocked.job(i) is not None for i in ids) and tombstones(clocked) == {}
    assert all((files.local.root / i).is_dir() for i in ids)
    assert purger(clocked, files).run_once().removed == expected


def test_assets_left_by_a_failed_deletion_are_deleted_by_the_next_pass(
    clocked: Store, files: Files
) -> None:
    """The rows' transaction commits first; a storage that refuses (or a process that dies
    before the files go) leaves the tombstone marked to do, and the next pass deletes them."""
    sid = service(clocked, "1h")
    job_id = ended_job(clocked, sid, storage=files)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    files.refuse = True
    report = purger(clocked, files).run_once()
    assert report.removed["jobs"] == 1 and report.assets_failed == 1
    assert clocked.job(job_id) is None and (files.local.root / job_id).is_dir()
    assert clocked.assets_to_delete(10) == [job_id]
    files.refuse = False
    report = purger(clocked, files).run_once()
    assert report.removed["jobs"] == 0 and report.assets_deleted == 1
    assert not (files.local.root / job_id).exists() and clocked.assets_to_delete(10) == []


def test_a_crash_after_the_commit_leaves_a_to_do_not_an_orphan(
    clocked: Store, files: Files
) -> None:
    """The process dies right after a batch commits (before any file is deleted): the next
    pass, in another process, finds the tombstone and deletes the files."""
    sid = service(clocked, "1h")
    job_id = ended_job(clocked, sid, storage=files)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    assert clocked.purge_batch(sid, clocked.clock.now() - 3600, 500)["job_ids"] == [job_id]
    assert (files.local.root / job_id).is_dir()  # ...and here it died
    assert purger(clocked, files).run_once().assets_deleted == 1
    assert not (files.local.root / job_id).exists()


def test_tombstones_are_forgotten_after_a_year(clocked: Store, files: Files) -> None:
    sid = service(clocked, "1h")
    job_id = ended_job(clocked, sid)
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    p = purger(clocked, files)
    p.run_once()
    clocked.clock.advance(364 * DAY)  # type: ignore[attr-defined]
    assert p.run_once().tombstones_forgotten == 0
    clocked.clock.advance(2 * DAY)  # type: ignore[attr-defined]
    assert p.run_once().tombstones_forgotten == 1
    assert clocked.purged_job(job_id) is None


# -- many purgers at once (PostgreSQL) ---------------------------------------------------------


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


def test_concurrent_purgers_remove_each_job_once(pg_url: str, tmp_path: Path) -> None:
    """Four processes' purgers (each its own store and pool) at once over 240 expired jobs:
    every job is removed by exactly one of them (the counts add up to 240, one tombstone
    each), and none waited for another."""
    setup = Store(pg_url, ManualClock())
    setup.migrate()
    sid = service(setup, "1h")
    for _ in range(240):
        ended_job(setup, sid, callback=None)
    setup.close()
    clock = ManualClock(1_800_000_000.0 + 7200)
    stores = [Store(pg_url, clock) for _ in range(4)]
    reports: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))
    storage = Files(tmp_path / "assets")

    def run(store: Store) -> None:
        try:
            barrier.wait()
            reports.append(purger(store, storage, batch=7).run_once())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert time.monotonic() - started < 60
        assert sum(r.removed["jobs"] for r in reports) == 240
        assert sum(r.batches for r in reports) >= 240 // 7
        assert len(tombstones(stores[0])) == 240
        with stores[0]._read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 0
        assert set(storage.deleted) == set(tombstones(stores[0]))
    finally:
        for s in stores:
            s.close()


def test_a_job_row_locked_elsewhere_is_skipped_not_waited_for(pg_url: str, files: Files) -> None:
    """FOR UPDATE SKIP LOCKED: while another transaction holds one job's row, a pass purges
    the others at once and leaves that one for the next pass."""
    store = Store(pg_url, ManualClock())
    store.migrate()
    try:
        sid = service(store, "1h")
        held, free = ended_job(store, sid), ended_job(store, sid)
        store.clock.advance(3601)  # type: ignore[attr-defined]
        with store.engine.connect() as other, other.begin():
            other.execute(sa.select(jobs.c.id).where(jobs.c.id == held).with_for_update())
            started = time.monotonic()
            report = purger(store, files).run_once()
            assert time.monotonic() - started < 5
            assert report.removed["jobs"] == 1
            assert store.job(free) is None and store.job(held) is not None
        assert purger(store, files).run_once().removed["jobs"] == 1
        assert store.job(held) is None
    finally:
        store.close()


def test_a_delivery_locked_elsewhere_keeps_its_job_for_the_next_pass(
    pg_url: str, files: Files
) -> None:
    """A delivery row held by another transaction (an outbox recording it, a replay) is not
    waited for: its job stays until the next pass."""
    store = Store(pg_url, ManualClock())
    store.migrate()
    try:
        sid = service(store, "1h")
        job_id = ended_job(store, sid)
        store.clock.advance(3601)  # type: ignore[attr-defined]
        with store.engine.connect() as other, other.begin():
            other.execute(
                sa.select(deliveries.c.id).where(deliveries.c.job_id == job_id).with_for_update()
            )
            assert purger(store, files).run_once().removed["jobs"] == 0
        assert purger(store, files).run_once().removed["jobs"] == 1
    finally:
        store.close()


# -- what the URLs of a purged job answer ------------------------------------------------------


def test_a_purged_job_and_its_assets_answer_410(store: Store, tmp_path: Path) -> None:
    """GET /v1/jobs/{id} (and its cancel, retry, events and deliveries): 410 job_expired
    (another service: 403; never made: 404); GET /assets/{id}/{file}: 410 asset_expired (never
    made: 404)."""
    settings = Settings(
        data_dir=tmp_path, database_url=store.url, workflows_dir=shipped_dir("workflows")
    ).resolved()
    clock = ManualClock()
    runtime = Runtime.build(settings, clock=clock)
    runtime.store.delivery_per_endpoint = runtime.store.delivery_per_service = 10_000
    try:
        made = runtime.store.create_service("shop", retention="1h")
        other = runtime.store.create_service("crm")
        files = Files(Path(settings.storage_url.removeprefix("file://")))
        job_id = ended_job(runtime.store, made["service_id"], storage=files)
        name = asset(job_id).filename
        client = TestClient(create_app(runtime))
        auth = {"Authorization": f"Bearer {made['api_key']}"}
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
        assert client.get(f"/assets/{job_id}/{name}").status_code == 200
        clock.advance(3601)
        Purger.for_runtime(runtime).run_once()
        gone = client.get(f"/v1/jobs/{job_id}", headers=auth)
        assert gone.status_code == 410, gone.text
        assert gone.json()["error_code"] == ErrorCode.JOB_EXPIRED
        theirs = client.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {other['api_key']}"}
        )
        assert theirs.status_code == 403
        never = client.get("/v1/jobs/job_00000000000000000000000000", headers=auth)
        assert never.status_code == 404
        for method, path in (  # every route about the job answers alike
            ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("POST", f"/v1/jobs/{job_id}/retry"),
            ("GET", f"/v1/jobs/{job_id}/events"),
            ("GET", f"/v1/deliveries?job_id={job_id}"),
        ):
            answer = client.request(method, path, headers=auth)
            assert answer.status_code == 410, (path, answer.text)
            assert answer.json()["error_code"] == ErrorCode.JOB_EXPIRED, path
        expired = client.get(f"/assets/{job_id}/{name}")
        assert expired.status_code == 410, expired.text
        assert expired.json()["error_code"] == ErrorCode.ASSET_EXPIRED
        assert client.head(f"/assets/{job_id}/{name}").status_code == 410
        assert client.get(f"/assets/job_00000000000000000000000000/{name}").status_code == 404
    finally:
        runtime.store.close()


def test_the_error_codes_are_gone_codes() -> None:
    from genhook.api.errors import STATUS

    assert STATUS[ErrorCode.JOB_EXPIRED] == STATUS[ErrorCode.ASSET_EXPIRED] == 410
    assert not GenhookError(ErrorCode.JOB_EXPIRED).retryable


# -- the migration and the command line --------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_0007_upgrades_and_downgrades_with_services_in_place(kind: str, tmp_path: Path) -> None:
    """A database at 0006 with a service upgrades to 0007 (its retention NULL: the default),
    and back."""
    with database_url(kind, tmp_path) as url:
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                command.upgrade(migrate.alembic_config(conn), "0006")
                conn.execute(
                    sa.text(
                        "INSERT INTO services (id, name, api_key_hash, api_key_prefix,"
                        " webhook_secret, created_at) VALUES ('svc_1', 'old', 'h', 'p', 's', 1)"
                    )
                )
            with engine.begin() as conn:
                command.upgrade(migrate.alembic_config(conn), "head")
                assert conn.execute(sa.text("SELECT retention FROM services")).all() == [(None,)]
                assert conn.execute(sa.text("SELECT count(*) FROM purged_jobs")).scalar() == 0
            with engine.begin() as conn:
                command.downgrade(migrate.alembic_config(conn), "0006")
                names = sa.inspect(conn).get_table_names()
                assert "purged_jobs" not in names
                cols = {c["name"] for c in sa.inspect(conn).get_columns("services")}
                assert "retention" not in cols
            with engine.begin() as conn:
                command.upgrade(migrate.alembic_config(conn), "head")
        finally:
            engine.dispose()


def test_the_command_line_sets_retention_and_purges(
    genhook: Callable[..., CliResult], tmp_path: Path
) -> None:
    """services create/update --retention; `genhook purge --dry-run` counts, `genhook purge`
    removes and prints JSON counts, a rerun removes nothing."""
    made = genhook("services", "create", "shop", "--retention", "1s")
    assert made.code == 0, made.stderr
    bad = genhook("services", "update", "shop", "--retention", "soon")
    assert bad.code == 2 and "--retention" in bad.stderr
    listed = genhook("services", "list").json
    assert listed[0]["retention"] == "1s"
    store = Store(f"sqlite:///{tmp_path / 'var' / 'genhook.db'}")
    try:
        job_id = ended_job(store, made.json["service_id"], callback=None)
    finally:
        store.close()
    time.sleep(1.2)
    dry = genhook("purge", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True and dry.json["jobs"] == 1
    done = genhook("purge")
    assert done.code == 0, done.stderr
    assert done.json["jobs"] == 1 and done.json["services"] == {"shop": 1}
    assert done.json["removed"]["job_attempts"] == 1
    assert genhook("purge").json["jobs"] == 0
    store = Store(f"sqlite:///{tmp_path / 'var' / 'genhook.db'}")
    try:
        assert store.purged_job(job_id) is not None
    finally:
        store.close()
    cleared = genhook("services", "update", "shop", "--retention", "none")
    assert cleared.code == 0 and cleared.json["retention"] is None


def test_a_stopped_purger_leaves_the_rest_for_the_next_pass(clocked: Store, files: Files) -> None:
    """Stopped during a pass (the process shuts down): it stops after the batch in hand, and
    the files it had not deleted yet are deleted by the next pass."""
    sid = service(clocked, "1h")
    ids = [ended_job(clocked, sid, callback=None, storage=files) for _ in range(4)]
    clocked.clock.advance(3601)  # type: ignore[attr-defined]
    p = purger(clocked, files, batch=2)

    class Stopping(Files):
        def delete_job(self, job_id: str) -> None:
            super().delete_job(job_id)
            p.stop()  # the shutdown arrives while the first file is deleted

    stopping = Stopping(files.local.root)
    p.storage = stopping
    report = p.run_once()
    assert report.batches == 1 and report.removed["jobs"] == 2 and report.assets_deleted == 1
    assert [clocked.job(i) is None for i in ids] == [True, True, False, False]
    assert clocked.assets_to_delete(10) == [ids[1]]
    report = purger(clocked, files).run_once()
    assert report.assets_deleted == 3 and report.removed["jobs"] == 2
    assert not any((files.local.root / i).exists() for i in ids)
