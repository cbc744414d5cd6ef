"""Wake-up hints between processes: workers register, the hub broadcasts, workers report back."""

from __future__ import annotations

import threading
import uuid

from genhook.wakeup import Bus


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
