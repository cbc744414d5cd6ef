"""/healthz and /readyz of every role: the health server of `genhook worker` and `genhook sender`
answers with the API's checks and JSON, on a real store (SQLite and PostgreSQL) and over real
HTTP on loopback; readiness says shutting_down at once; a busy health port is one line, exit 2.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genhook.health import HealthServer, Shutdown, healthz, readiness
from genhook.store.base import Health
from genhook.store.store import Store
from tests.acceptance.harness import GENHOOK, Genhook, free_port, wait_for
from tests.acceptance.test_shutdown import start
from tests.fake_openai import FAKE_API_KEY


class _Runtime:
    """What the checks read of a runtime when they look at no backend."""

    catalog: Any = None


@pytest.fixture
def server() -> Iterator[HealthServer]:
    health = HealthServer("127.0.0.1", 0)
    yield health
    health.close()


def test_the_health_server_answers_the_apis_checks_on_a_real_store(
    store: Store, server: HealthServer
) -> None:
    """healthz: the API's body; readyz of a sender (no backend needed): ready with the store's
    answer; once the shutdown begins, 503 shutting_down without asking the store."""
    shutdown = Shutdown(30)
    checked = {"store": store}  # swapped for a store that must not be asked, below

    def ready() -> Any:
        return readiness(
            _Runtime(),  # type: ignore[arg-type]
            checked["store"],
            role="sender",
            backends=False,
            storage=False,
            shutdown=shutdown,
        )

    server.start(lambda: healthz(store), ready)
    base = f"http://127.0.0.1:{server.port}"
    answer = httpx.get(f"{base}/healthz", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"status": "ok", "database": True, "writable": True}
    answer = httpx.get(f"{base}/readyz", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {
        "role": "sender",
        "store": {"ok": True, "reason": None},
        "status": "ready",
    }
    assert httpx.head(f"{base}/readyz", timeout=10).status_code == 200
    missing = httpx.get(f"{base}/v1/jobs", timeout=10)
    assert missing.status_code == 404 and missing.json()["error_code"] == "not_found"

    checked["store"] = _DownStore(asked=False)  # type: ignore[assignment]
    shutdown.begin()
    started = time.monotonic()
    answer = httpx.get(f"{base}/readyz", timeout=10)
    assert time.monotonic() - started < 0.5
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "reason": "shutting_down", "role": "sender"}


class _DownStore:
    """A store whose database does not answer (its health as the real store reports it);
    ``asked=False``: one that must not be asked at all."""

    def __init__(self, asked: bool = True) -> None:
        self.asked = asked

    def health(self) -> Health:
        assert self.asked, "the store was asked while shutting down"
        return Health(False, False, "OperationalError: connection refused")

    def breakers(self) -> dict[str, Any]:
        raise AssertionError("not asked when the store is down")


def test_a_store_that_does_not_answer_is_503_with_the_reason(server: HealthServer) -> None:
    down = Store(f"postgresql://genhook@127.0.0.1:{free_port()}/none")  # nothing listens there
    try:
        server.start(
            lambda: healthz(down),
            lambda: readiness(_Runtime(), _DownStore(), role="worker"),  # type: ignore[arg-type]
        )
        base = f"http://127.0.0.1:{server.port}"
        answer = httpx.get(f"{base}/healthz", timeout=20)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "unavailable" and body["database"] is False
        assert "OperationalError" in body["reason"]
        answer = httpx.get(f"{base}/readyz", timeout=20)
        assert answer.status_code == 503
        assert answer.json()["reason"].startswith("store: OperationalError")
    finally:
        down.close()


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def test_each_role_serves_the_same_routes_and_json(tmp_path: Path) -> None:
    """`serve --workers 0`, `worker --health-port` and `sender` with GENHOOK_HEALTH_PORT: the
    same /healthz body, and /readyz bodies of the same shape (the sender's without backends);
    SIGTERM: each exits 0."""
    g = Genhook(tmp_path / "g")
    try:
        g.serve(workers=0)
        worker_port, sender_port = free_port(), free_port()
        worker = start(g, "worker", "worker", "--health-port", str(worker_port))
        sender = start(g, "sender", "sender", GENHOOK_HEALTH_PORT=str(sender_port))
        bodies = {}
        for role, base in (
            ("api", g.base),
            ("worker", f"http://127.0.0.1:{worker_port}"),
            ("sender", f"http://127.0.0.1:{sender_port}"),
        ):
            ready = wait_for(
                lambda b=base: (r := _get(f"{b}/readyz")) is not None and r, 60, f"{role} readyz"
            )
            assert ready.status_code == 200, ready.text
            health = httpx.get(f"{base}/healthz", timeout=10)
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "database": True, "writable": True}
            bodies[role] = ready.json()
        assert bodies["api"]["role"] == "api" and bodies["worker"]["role"] == "worker"
        assert bodies["worker"].keys() == bodies["api"].keys()
        assert bodies["worker"]["backends"]["procedural"]["ready"] is True
        assert set(bodies["sender"]) == {"role", "store", "status"}
        for proc in (worker, sender):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, g.logs()
    finally:
        g.close()


def test_a_worker_with_no_ready_backend_is_not_ready(tmp_path: Path) -> None:
    """Only a workflow on an OpenAI server that nothing answers for: the worker's /readyz is
    503 naming the backend; /healthz stays 200 (alive, not ready)."""
    dead = free_port()
    g = Genhook(
        tmp_path / "g",
        GENHOOK_OPENAI_BASE_URL=f"http://127.0.0.1:{dead}/v1",
        GENHOOK_OPENAI_API_KEY=FAKE_API_KEY,
    )
    try:
        for path in (g.tmp / "flows").glob("*.yaml"):
            if path.name != "remote-image.yaml":
                path.unlink()
        port = free_port()
        start(g, "worker", "worker", "--health-port", str(port))
        base = f"http://127.0.0.1:{port}"
        answer = wait_for(lambda: _get(f"{base}/readyz"), 60, "worker readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "unavailable" and body["role"] == "worker"
        assert "openai" in body["reason"] and "no backend is ready" in body["reason"]
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        g.close()


def test_a_busy_health_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    g = Genhook(tmp_path / "g")
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            for command in ("worker", "sender"):
                proc = subprocess.run(
                    [GENHOOK, command, "--health-port", str(port)],
                    env=g.env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert proc.returncode == 2, proc.stderr
                lines = proc.stderr.strip().splitlines()
                assert len(lines) == 1, proc.stderr
                assert f"127.0.0.1:{port}" in lines[0] and "address already in use" in lines[0]
    finally:
        g.close()


def test_the_apis_readyz_says_shutting_down_once_its_shutdown_begins(tmp_path: Path) -> None:
    """The API's routes use the same checks: ready, then 503 shutting_down (role api) from the
    moment `serve`'s shutdown begins, while /healthz stays 200."""
    from genhook.api.app import create_app
    from genhook.config import Settings
    from genhook.paths import shipped_dir
    from genhook.runtime import Runtime

    settings = Settings(data_dir=tmp_path, workflows_dir=shipped_dir("workflows")).resolved()
    runtime = Runtime.build(settings)
    app = create_app(runtime)
    shutdown = Shutdown(30)
    app.state.shutdown = shutdown

    async def scenario() -> list[tuple[int, Any]]:
        seen = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            for step in ("before", "after"):
                if step == "after":
                    shutdown.begin()
                for route in ("/readyz", "/healthz"):
                    answer = await c.get(route)
                    seen.append((answer.status_code, answer.json()))
        return seen

    try:
        import anyio

        (ready, healthy, stopping, still) = anyio.run(scenario)
    finally:
        runtime.store.close()
    assert ready[0] == 200 and ready[1]["role"] == "api" and ready[1]["status"] == "ready"
    assert healthy == (200, {"status": "ok", "database": True, "writable": True})
    assert stopping == (503, {"status": "unavailable", "reason": "shutting_down", "role": "api"})
    assert still[0] == 200
