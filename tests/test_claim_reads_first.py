"""A claim with nothing to take opens no write transaction (SQLite), and reading first hides no
work: a due job, a lease that ran out, another service's job beside a paused one (both dialects).

SQLite has one write lock per database: a worker that took it on every idle poll and after every
job made the accept path and the outbox's claim wait behind it. Here another connection holds
the lock (as a second process would) while the store claims, with no busy timeout: a claim that
tries to write fails at once with ``store_unavailable``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.store.schema import services
from genhook.store.store import Store
from tests.databases import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_url(request.param, tmp_path) as url:
        opened = Store(url, ManualClock())
        opened.migrate()
        yield opened
        opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store whose connections give up at once on a held write lock (no busy wait)."""
    opened = Store(f"sqlite:///{tmp_path / 'genhook.db'}", ManualClock())
    opened.migrate()
    sa.event.listen(opened.engine, "connect", _no_busy_wait)
    opened.engine.pool.dispose()
    yield opened
    opened.close()


def _no_busy_wait(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def submit(store: Store, service_id: str, item: str) -> str:
    job, _ = store.submit(
        service_id=service_id,
        workflow_id="wf",
        workflow_version=1,
        trigger={"item": item},
        external_id=item,
        callback_url=None,
    )
    return str(job.id)


@contextlib.contextmanager
def write_lock_held(store: Store) -> Iterator[None]:
    """SQLite's write lock taken by another connection, as another process would."""
    path = store.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def pause(store: Store, service_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            services.update().where(services.c.id == service_id).values(paused_at=store.clock.now())
        )


def test_an_idle_claim_does_not_write(sqlite_store: Store) -> None:
    """No job at all, a retry not yet due, a paused service's jobs: the claim answers None
    while another connection holds the write lock."""
    store = sqlite_store
    clock = store.clock
    assert isinstance(clock, ManualClock)
    service = store.create_service("shop")["service_id"]
    with write_lock_held(store):
        assert store.claim("w1", 30) is None
    job_id = submit(store, service, "A1")
    job = store.claim("w1", 30)
    assert job is not None and job.id == job_id
    error = GenhookError(ErrorCode.BACKEND_ERROR, "HTTP 503")
    ended = store.retry(
        job_id, "w1", error=error, delay=60, credit_cost=0, work_seconds=1, cancelled={}
    )
    assert ended == "retrying"
    with write_lock_held(store):
        assert store.claim("w2", 30) is None, "the retry is not due for a minute"
    clock.advance(61)
    pause(store, service)
    with write_lock_held(store):
        assert store.claim("w2", 30) is None, "the only service with jobs is paused"
    with store.engine.begin() as conn:
        conn.execute(services.update().values(paused_at=None))
    again = store.claim("w2", 30)
    assert again is not None and again.id == job_id and again.attempts == 2


def test_a_due_claim_still_writes(sqlite_store: Store) -> None:
    """The read is only a first look: with a job due, the claim needs the write lock (here it
    is held elsewhere, so the claim fails), and takes the job once the lock is free."""
    store = sqlite_store
    service = store.create_service("shop")["service_id"]
    submit(store, service, "A1")
    with write_lock_held(store), pytest.raises(GenhookError) as raised:
        store.claim("w1", 30)
    assert raised.value.code is ErrorCode.STORE_UNAVAILABLE
    assert store.claim("w1", 30) is not None


def test_reading_first_hides_no_work(store: Store) -> None:
    """A due job is claimed; a lease that ran out is taken over with nothing queued; beside a
    paused service with jobs waiting, another service's job is claimed."""
    clock = store.clock
    assert isinstance(clock, ManualClock)
    shop = store.create_service("shop")["service_id"]
    blog = store.create_service("blog")["service_id"]
    first = submit(store, shop, "A1")
    job = store.claim("w1", 30)
    assert job is not None and job.id == first
    assert store.claim("w2", 30) is None
    clock.advance(31)  # w1 stopped renewing: its lease ran out
    taken = store.claim("w2", 30)
    assert taken is not None and taken.id == first and taken.attempts == 2
    submit(store, shop, "A2")
    pause(store, shop)
    assert store.claim("w3", 30) is None
    other = submit(store, blog, "B1")
    claimed = store.claim("w3", 30)
    assert claimed is not None and claimed.id == other
