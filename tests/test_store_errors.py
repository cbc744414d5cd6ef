"""Database failures are mapped once, at the store's edge, to ``store_unavailable`` (503).

Real databases made to fail as they do in production: a SQLite file that cannot grow
(``PRAGMA max_page_count`` gives SQLITE_FULL, as a full disk does), and a PostgreSQL database
that refuses connections (connections disallowed and the open ones terminated, as in an
outage). The API is driven in process through ``httpx.ASGITransport``, which re-raises any
exception that escapes the app: none may.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from genhook.store.base import WRITE_FAILURE_MEMORY
from genhook.store.store import Store
from tests.databases import PG_ADMIN, database_url

TRIGGER = {
    "product_id": "SKU-1",
    "product_name": "Linen Shirt",
    "target_style": "lifestyle",
    "target_platform": "instagram_feed",
}


def submit(store: Store, service_id: str, n: int) -> str:
    job, _ = store.submit(
        service_id=service_id,
        workflow_id="wf",
        workflow_version=1,
        trigger={"n": n, "pad": "x" * 500},
        external_id=str(n),
        callback_url=None,
    )
    return str(job.id)


def fill_up(store: Store) -> None:
    """From now on the SQLite file cannot grow: each new connection gets a page limit at the
    file's current size (SQLite clamps a lower limit to it), as if the disk were full."""
    store.engine.dispose()

    @sa.event.listens_for(store.engine, "connect")
    def _full(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA max_page_count = 1")


def test_a_full_sqlite_database_is_store_unavailable_and_loses_nothing(tmp_path: Path) -> None:
    clock = ManualClock()
    store = Store(f"sqlite:///{tmp_path / 'genhook.db'}", clock)
    store.migrate()
    service = store.create_service("shop")["service_id"]
    before = [submit(store, service, n) for n in range(5)]
    assert store.health().ok
    fill_up(store)
    with pytest.raises(GenhookError) as full:
        for n in range(500):
            submit(store, service, n)
    assert full.value.code is ErrorCode.STORE_UNAVAILABLE
    assert full.value.retryable and full.value.retry_after
    assert isinstance(full.value.__cause__, sa.exc.OperationalError)
    assert all(store.job(job_id) is not None for job_id in before), "reads still answer"
    health = store.health()
    assert health.answers and not health.writable
    assert health.reason and "full" in health.reason
    store.close()


def test_a_failed_write_keeps_health_down_for_a_while(tmp_path: Path) -> None:
    """A rolled-back probe cannot see every full disk: a real write that failed counts too."""
    clock = ManualClock()
    url = f"sqlite:///{tmp_path / 'genhook.db'}"
    store = Store(url, clock)
    store.migrate()
    service = store.create_service("shop")["service_id"]
    # a write that the database refuses, as a full disk does (the limit is this connection's)
    with pytest.raises(GenhookError), store._write() as conn:
        conn.exec_driver_sql("PRAGMA max_page_count = 1")
        for _ in range(200):
            conn.exec_driver_sql(f"INSERT INTO store_probe (data) VALUES (zeroblob({4096 * 4}))")
    store.engine.dispose()  # fresh connections: the probe itself now finds room
    health = store.health()
    assert health.answers and not health.writable
    assert health.reason and health.reason.startswith("a write failed")
    clock.advance(WRITE_FAILURE_MEMORY + 1)
    assert store.health().ok
    assert submit(store, service, 1)
    store.close()


def test_integrity_errors_are_not_store_unavailable(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'genhook.db'}")
    store.migrate()
    store.create_service("shop")
    with pytest.raises(ValueError, match="already exists"):
        store.create_service("shop")
    store.close()


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


def refuse_connections(url: str, allow: bool) -> None:
    """Stop (or restart) the database answering: new connections refused, open ones cut."""
    name = sa.make_url(url).database
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


def test_a_postgresql_outage_is_store_unavailable_and_recovers(pg_url: str) -> None:
    store = Store(pg_url)
    store.migrate()
    service = store.create_service("shop")["service_id"]
    job_id = submit(store, service, 1)
    refuse_connections(pg_url, allow=False)
    try:
        for call in (lambda: store.job(job_id), lambda: submit(store, service, 2)):
            with pytest.raises(GenhookError) as down:
                call()
            assert down.value.code is ErrorCode.STORE_UNAVAILABLE
        health = store.health()
        assert not health.answers and not health.writable
    finally:
        refuse_connections(pg_url, allow=True)
    assert store.job(job_id) is not None
    assert submit(store, service, 3)
    store.close()


def test_a_read_only_postgresql_is_not_healthy(pg_url: str) -> None:
    """A server that answers reads but refuses writes (a standby, a read-only switch)."""
    name = sa.make_url(pg_url).database
    store = Store(pg_url)
    store.migrate()
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    store.engine.dispose()
    try:
        health = store.health()
        assert health.answers and not health.writable
        assert health.reason and "read-only" in health.reason
        with pytest.raises(GenhookError) as refused:
            store.create_service("shop")
        assert refused.value.code is ErrorCode.STORE_UNAVAILABLE
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        admin.dispose()
        store.close()


# -- through the API, in process ------------------------------------------------------------------


def api_runtime(tmp_path: Path, url: str | None = None) -> Runtime:
    settings = Settings(
        data_dir=tmp_path,
        workflows_dir=shipped_dir("workflows"),
        **({"database_url": url} if url else {}),
    ).resolved()
    return Runtime.build(settings, clock=ManualClock())


async def call(runtime: Runtime, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as client:
        return await client.request(method, path, **kwargs)


def with_a_job(tmp_path: Path) -> tuple[Runtime, dict[str, str], str]:
    """A runtime, a service's auth header, and one job accepted through the API."""
    runtime = api_runtime(tmp_path)
    key = runtime.store.create_service("shop")["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    accepted = anyio.run(
        lambda: call(
            runtime, "POST", "/v1/workflows/product-image/runs", json=TRIGGER, headers=auth
        )
    )
    assert accepted.status_code == 202
    return runtime, auth, accepted.json()["job_id"]


def test_the_api_answers_503_with_retry_after_when_the_store_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, auth, job_id = with_a_job(tmp_path)
    assert anyio.run(lambda: call(runtime, "GET", "/healthz")).status_code == 200
    fill_up(runtime.store)
    caplog.set_level(logging.WARNING)
    answers = [
        anyio.run(
            lambda n=n: call(
                runtime,
                "POST",
                "/v1/workflows/product-image/runs",
                json={**TRIGGER, "product_id": f"SKU-{n}", "product_name": "y" * 110},
                headers=auth,
            )
        )
        for n in range(60)
    ]
    refused = [r for r in answers if r.status_code != 202]
    assert refused, "the full database refused no write"
    for r in refused:
        assert r.status_code == 503, r.text
        assert r.json()["error_code"] == "store_unavailable"
        assert int(r.headers["retry-after"]) >= 1
    lines = [rec for rec in caplog.records if "store unavailable" in rec.getMessage()]
    assert len(lines) == len(refused), "one log line per failed request"
    assert all(rec.exc_info is None for rec in caplog.records), "no traceback in the logs"
    health = anyio.run(lambda: call(runtime, "GET", "/healthz"))
    assert health.status_code == 503
    assert health.json()["database"] is True and health.json()["writable"] is False
    job = anyio.run(lambda: call(runtime, "GET", f"/v1/jobs/{job_id}", headers=auth))
    assert job.status_code == 200, "an accepted job is still there"
    runtime.store.close()


def test_an_unexpected_error_is_a_500_answer_not_a_raised_exception(tmp_path: Path) -> None:
    """Nothing escapes the app (httpx.ASGITransport would re-raise it, as uvicorn would reset
    the connection): a database failure that is a bug, not an outage, answers 500."""
    runtime, auth, job_id = with_a_job(tmp_path)
    with runtime.store._write() as conn:  # a schema the code does not expect
        conn.exec_driver_sql("ALTER TABLE job_attempts RENAME TO job_attempts_gone")
    r = anyio.run(lambda: call(runtime, "GET", f"/v1/jobs/{job_id}", headers=auth))
    assert r.status_code == 500
    assert r.json()["error_code"] == "internal_error"
    assert "job_attempts" not in r.text, "no internals in the answer"
    runtime.store.close()


# -- SQL parameters stay out of errors and files stay private ------------------------------------


def test_sql_parameters_never_appear_in_errors(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'genhook.db'}")
    store.migrate()
    store.create_service("shop")
    with pytest.raises(ValueError) as dup:
        store.create_service("shop")
    text = str(dup.value.__cause__)
    assert "whsec_" not in text and "gh_" not in text
    assert "parameters hidden" in text
    store.close()


def test_services_create_failure_prints_no_secret(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("genhook"))
    env = {**os.environ, "GENHOOK_DATA_DIR": str(tmp_path / "var")}
    first = subprocess.run(
        [exe, "services", "create", "shop"], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [exe, "services", "create", "shop"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode != 0
    assert "whsec_" not in again.stdout + again.stderr


def test_the_database_and_its_folder_are_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    store = Store(f"sqlite:///{data / 'genhook.db'}")
    store.migrate()
    store.create_service("shop")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("genhook.db", "genhook.db-wal", "genhook.db-shm"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    store.close()


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "genhook.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    path.chmod(0o644)
    Store(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_turn_statement_on_a_dead_connection_is_a_mapped_error(kind: str, tmp_path: Path) -> None:
    """The outbox's turn runs its hot statements on the driver's own cursor; a connection that
    the server ended (or that was closed under it) fails already when the cursor is made, and
    that must come out as SQLAlchemy's error (which the store's edge maps to
    ``store_unavailable``), with the connection invalidated, never the driver's own raw error."""
    from genhook.store.deliveries import _driver_call

    with database_url(kind, tmp_path) as url:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                conn.connection.dbapi_connection.close()  # type: ignore[union-attr]
                with pytest.raises(sa.exc.DBAPIError):
                    _driver_call(conn, "SELECT 1", lambda cursor: cursor.execute("SELECT 1"))
        finally:
            engine.dispose()
