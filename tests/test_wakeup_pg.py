"""Wake-ups over PostgreSQL LISTEN/NOTIFY: processes on any machine hear each other's hints in
milliseconds; two databases never cross; a dropped connection comes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from genhook.wakeup import PgNotifyBus, SocketBus, open_channel
from tests.databases import database_url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


def _open(url: str, role: str) -> PgNotifyBus:
    bus = open_channel(url, role)
    assert isinstance(bus, PgNotifyBus)
    assert bus.wait_listening(10), "LISTEN did not start"
    return bus


def test_hubs_and_workers_hear_each_other(pg_url: str) -> None:
    """A hub's broadcast reaches every worker; a worker's hint reaches every hub; the sender
    is named; a URL written another way (driver suffix, host by address) is the same install."""
    other_spelling = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    hub = _open(pg_url, "hub")
    second_hub = _open(other_spelling, "hub")
    workers = [_open(pg_url, "worker-a"), _open(other_spelling, "worker-b")]
    try:
        jobs = [threading.Event() for _ in workers]
        for worker, seen in zip(workers, jobs, strict=True):
            worker.on(b"job", lambda _sender, seen=seen: seen.set())
        deliveries: list[bytes] = []
        heard = threading.Event(), threading.Event()
        hub.on(b"delivery", lambda sender: (deliveries.append(sender), heard[0].set()))
        second_hub.on(b"delivery", lambda _sender: heard[1].set())
        hub.broadcast(b"job")
        assert all(seen.wait(5) for seen in jobs)
        workers[0].to_hub(b"delivery")
        assert heard[0].wait(5) and heard[1].wait(5)
        assert deliveries[0].startswith(b"worker-a:")
    finally:
        for bus in (*workers, hub, second_hub):
            bus.close()


def test_two_databases_never_cross(tmp_path: Path, pg_url: str) -> None:
    """Another database on the same server hears none of this install's hints."""
    with database_url("postgresql", tmp_path / "other") as other_url:
        mine, theirs = _open(pg_url, "worker-1"), _open(other_url, "worker-2")
        hub = _open(pg_url, "hub")
        try:
            got, leaked = threading.Event(), threading.Event()
            mine.on(b"job", lambda _: got.set())
            theirs.on(b"job", lambda _: leaked.set())
            hub.broadcast(b"job")
            assert got.wait(5)
            assert not leaked.wait(0.3)
        finally:
            for bus in (mine, theirs, hub):
                bus.close()


def test_a_dropped_listener_comes_back(pg_url: str) -> None:
    """The server ends the listening connection; the bus listens again and hints flow."""
    worker, hub = _open(pg_url, "worker-1"), _open(pg_url, "hub")
    try:
        got = threading.Event()
        worker.on(b"job", lambda _: got.set())
        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            ended = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            ).scalar_one()
        admin.dispose()
        assert ended >= 1
        # the listener notices on its next wait (at most 0.5 s), then reconnects
        for _ in range(100):
            hub.broadcast(b"job")
            if got.wait(0.1):
                break
        assert got.is_set(), "no hint after the listening connection was ended"
        assert worker.active
    finally:
        worker.close()
        hub.close()


def test_sqlite_keeps_the_socket_bus(tmp_path: Path) -> None:
    """The embedded default stays on abstract sockets (one machine, no database round trip)."""
    bus = open_channel(f"sqlite:///{tmp_path / 'genhook.db'}", "hub")
    try:
        assert isinstance(bus, SocketBus)
    finally:
        bus.close()
