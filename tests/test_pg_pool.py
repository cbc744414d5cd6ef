"""PostgreSQL pools sized per role, and statement, lock and pool timeouts that end in the store's
clear ``store_unavailable`` instead of a hang. On the machine's PostgreSQL, a fresh database per
test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.store import db
from genhook.store.schema import services
from genhook.store.store import Store
from tests.databases import PG_ADMIN, database_url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def plan() -> Iterator[None]:
    """Restore the process's pool plan after a test that sets one."""
    before = db._plan
    yield
    db.configure(before)


def _store(url: str, plan: db.PoolPlan) -> Store:
    db.configure(plan)
    store = Store(url)
    store.migrate()
    return store


@pytest.mark.parametrize(
    ("role", "concurrency", "expected"),
    [("api", 1, 44), ("worker", 1, 4), ("worker", 16, 19), ("sender", 64, 4)],
)
def test_each_role_sizes_its_pool(
    pg_url: str, plan: None, role: str, concurrency: int, expected: int
) -> None:
    """The pool the engine has is what the role can use at once: the API's threads, one
    connection per job of a worker plus its loop, lease keeper and health server, a sender's
    outbox (its requests in flight hold none)."""
    assert db.pool_size(role, concurrency) == expected
    store = _store(pg_url, db.PoolPlan(size=db.pool_size(role, concurrency)))
    try:
        assert db.pool_limit(store.engine) == expected
        assert store.engine.pool.size() == min(expected, db.KEPT_CONNECTIONS)
        assert store.engine.pool._pre_ping is False  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_connection_ended_while_it_rested_is_replaced_before_use(
    pg_url: str, plan: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection that rested past db.PING_AFTER_IDLE is pinged at its checkout: one
    the server ended meanwhile is replaced, and the transaction runs on a new one; one used a
    moment ago is not pinged (a busy process saves the round trip)."""
    store = _store(pg_url, db.PoolPlan(size=2))
    pings: list[int] = []
    real_ping = store.engine.dialect.do_ping
    monkeypatch.setattr(store.engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(3):
            with store._read() as conn:
                pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert pings == []  # in use a moment ago each time
        with admin.connect() as c:
            c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)
        with store._read() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
        assert pings
    finally:
        admin.dispose()
        store.close()


def test_the_settings_read_the_pool_and_timeouts() -> None:
    """GENHOOK_DB_POOL_SIZE overrides the role's size; the timeouts are durations, 0 is none;
    a bad value is one line naming its variable."""
    settings = Settings.from_env(
        {
            "GENHOOK_DB_POOL_SIZE": "7",
            "GENHOOK_DB_POOL_TIMEOUT": "2s",
            "GENHOOK_DB_STATEMENT_TIMEOUT": "1500ms",
            "GENHOOK_DB_LOCK_TIMEOUT": "0",
            "GENHOOK_DB_IDLE_TRANSACTION_TIMEOUT": "45s",
        }
    )
    assert settings.db_pool_size == 7
    assert settings.db_pool_timeout == 2.0
    assert settings.db_statement_timeout == 1.5
    assert settings.db_lock_timeout == 0.0
    assert settings.db_idle_transaction_timeout == 45.0
    defaults = Settings.from_env({})
    assert (defaults.db_pool_size, defaults.db_statement_timeout) == (None, 30.0)
    assert defaults.db_idle_transaction_timeout == 120.0
    with pytest.raises(ValueError, match="GENHOOK_DB_POOL_SIZE"):
        Settings.from_env({"GENHOOK_DB_POOL_SIZE": "0"})


def test_a_statement_past_the_timeout_is_cancelled_and_reported(pg_url: str, plan: None) -> None:
    store = _store(pg_url, db.PoolPlan(size=4, statement_timeout=0.3))
    try:
        with store._read() as conn:
            timeout = conn.execute(sa.text("SHOW statement_timeout")).scalar()
            lock = conn.execute(sa.text("SHOW lock_timeout")).scalar()
        assert (timeout, lock) == ("300ms", "10s")
        started = time.monotonic()
        with pytest.raises(GenhookError) as caught, store._read() as conn:
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 2.0  # cancelled by the server, not waited out
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert "GENHOOK_DB_STATEMENT_TIMEOUT" in caught.value.description
        assert caught.value.retry_after is not None
        assert store.health().ok  # the connection went back to the pool usable
    finally:
        store.close()


def test_a_lock_held_elsewhere_past_the_lock_timeout_is_reported(pg_url: str, plan: None) -> None:
    """A row locked by another session: the store's update waits GENHOOK_DB_LOCK_TIMEOUT, then
    gets store_unavailable naming it."""
    store = _store(pg_url, db.PoolPlan(size=4, lock_timeout=0.3))
    service_id = store.create_service("locked")["service_id"]
    other = sa.create_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg"))
    try:
        with other.connect() as holder, holder.begin():
            holder.execute(
                sa.select(services.c.id).where(services.c.id == service_id).with_for_update()
            )
            started = time.monotonic()
            with pytest.raises(GenhookError) as caught, store._write() as conn:
                conn.execute(
                    services.update().where(services.c.id == service_id).values(queue_limit=5)
                )
            assert time.monotonic() - started < 2.0
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert "GENHOOK_DB_LOCK_TIMEOUT" in caught.value.description
    finally:
        other.dispose()
        store.close()


def test_an_exhausted_pool_is_store_unavailable_after_the_pool_timeout(
    pg_url: str, plan: None
) -> None:
    """Every connection of a pool of 1 in use: the next caller waits the pool timeout, then
    gets store_unavailable naming GENHOOK_DB_POOL_TIMEOUT (not a hang)."""
    store = _store(pg_url, db.PoolPlan(size=1, timeout=0.3))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store._read() as conn:
            conn.execute(sa.text("SELECT 1"))
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(GenhookError) as caught:
            store.job("job_missing")
        assert 0.25 < time.monotonic() - started < 2.0
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert "GENHOOK_DB_POOL_TIMEOUT" in caught.value.description
    finally:
        release.set()
        thread.join(10)
        store.close()


def test_the_urls_own_options_still_win(pg_url: str, plan: None) -> None:
    """An operator's ``?options=-c statement_timeout=...`` in the URL overrides the setting."""
    url = sa.make_url(pg_url).update_query_dict({"options": "-c statement_timeout=1234"})
    store = _store(url.render_as_string(hide_password=False), db.PoolPlan(size=2))
    try:
        with store._read() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "1234ms"
    finally:
        store.close()


def test_a_transaction_left_idle_is_ended_and_its_locks_come_free(pg_url: str, plan: None) -> None:
    """A process that stops inside a transaction (frozen, its host gone quiet) does not hold
    its locks for ever: past GENHOOK_DB_IDLE_TRANSACTION_TIMEOUT the server ends its session,
    another session gets the row, and the stopped one's next statement is store_unavailable
    naming the setting; the store writes again on a fresh connection afterwards."""
    store = _store(pg_url, db.PoolPlan(size=4, idle_in_transaction_timeout=0.5))
    service_id = store.create_service("idle")["service_id"]
    other = sa.create_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg"))
    try:
        with pytest.raises(GenhookError) as caught, store._write() as conn:
            assert conn.execute(sa.text("SHOW idle_in_transaction_session_timeout")).scalar() == (
                "500ms"
            )
            conn.execute(
                sa.select(services.c.id).where(services.c.id == service_id).with_for_update()
            )
            time.sleep(1.5)  # stopped inside the transaction, holding the row
            with other.connect() as taker, taker.begin():
                taker.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
                got = taker.execute(
                    sa.select(services.c.id).where(services.c.id == service_id).with_for_update()
                ).scalar()
                assert got == service_id  # the lock came free with the ended session
            conn.execute(sa.select(services.c.id))
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert "GENHOOK_DB_IDLE_TRANSACTION_TIMEOUT" in caught.value.description
        assert store.create_service("after")["service_id"]  # a fresh connection writes
    finally:
        other.dispose()
        store.close()
