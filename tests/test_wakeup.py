"""Wake-up hints between processes: workers register, the hub broadcasts, workers report back."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from genhook.wakeup import SocketBus as Bus
from genhook.wakeup import database_identity, open_channel


def test_hub_and_workers_exchange_hints() -> None:
    """A worker says hello; the hub's `job` reaches it; its `delivery` reaches the hub."""
    key = f"sqlite:///test-{uuid.uuid4()}"
    hub = Bus(key, "hub")
    worker = Bus(key, "worker-1")
    try:
        assert hub.active and worker.active
        got_job, got_delivery, hello = threading.Event(), threading.Event(), threading.Event()
        worker.on(b"job", lambda _: got_job.set())
        hub.on(b"delivery", lambda _: got_delivery.set())
        hub.on(b"hello", lambda _: hello.set())
        worker.to_hub(b"hello")
        assert hello.wait(5)
        hub.broadcast(b"job")
        assert got_job.wait(5)
        worker.to_hub(b"delivery")
        assert got_delivery.wait(5)
    finally:
        worker.close()
        hub.close()


def test_gone_peers_are_forgotten_and_other_installs_unheard() -> None:
    """A closed worker drops out of the broadcast list; another database's hub hears nothing."""
    key = f"sqlite:///test-{uuid.uuid4()}"
    hub = Bus(key, "hub")
    other_hub = Bus(f"{key}-other", "hub")
    worker = Bus(key, "worker-2")
    heard = threading.Event()
    other_hub.on(b"hello", lambda _: heard.set())
    registered = threading.Event()
    hub.on(b"hello", lambda _: registered.set())
    worker.to_hub(b"hello")
    assert registered.wait(5)
    assert len(hub.peers) == 1
    worker.close()
    hub.broadcast(b"job")
    assert hub.peers == set()
    assert not heard.wait(0.2)
    hub.close()
    other_hub.close()


def test_relative_sqlite_urls_in_two_folders_get_two_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same `sqlite:///var/genhook.db` run from two folders names two databases, two hubs."""
    url = "sqlite:///var/genhook.db"
    hubs = []
    try:
        for folder in ("a", "b"):
            (tmp_path / folder).mkdir()
            monkeypatch.chdir(tmp_path / folder)
            assert database_identity(url) == f"sqlite:{tmp_path / folder / 'var' / 'genhook.db'}"
            hubs.append(open_channel(url, "hub"))
        first, second = hubs
        assert isinstance(first, Bus) and isinstance(second, Bus)
        assert first.address != second.address
        assert first.active and second.active, "both hubs bound: no 'wake-ups off'"
    finally:
        for hub in hubs:
            hub.close()


def test_one_database_written_two_ways_is_one_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative and an absolute URL of one file, or two spellings of one PostgreSQL database,
    name the same channel; other hosts, ports or databases do not."""
    monkeypatch.chdir(tmp_path)
    assert database_identity("sqlite:///var/g.db") == database_identity(
        f"sqlite:///{tmp_path}/var/./g.db"
    )
    pg = database_identity("postgresql://app@DB.internal/genhook")
    assert pg == database_identity("postgresql+psycopg://other:pw@db.internal:5432/genhook")
    assert pg != database_identity("postgresql://app@db.internal:5433/genhook")
    assert pg != database_identity("postgresql://app@db.internal/genhook2")


def test_a_worker_registers_as_soon_as_its_end_opens() -> None:
    """No periodic hello needed: the hub's first broadcast after a worker opens reaches it."""
    key = f"sqlite:///test-{uuid.uuid4()}"
    hub = Bus(key, "hub")
    registered = threading.Event()
    hub.on(b"hello", lambda _: registered.set())
    worker = Bus(key, "worker-3")
    try:
        got_job = threading.Event()
        worker.on(b"job", lambda _: got_job.set())
        assert registered.wait(5), "the worker said hello on its own"
        assert len(hub.peers) == 1
        hub.broadcast(b"job")
        assert got_job.wait(5)
    finally:
        worker.close()
        hub.close()
