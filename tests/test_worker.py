"""Workers on a real SQLite store with an injected clock: retries, leases, cancel, idempotency."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data as skdata

from genhook.backends.base import BackendRegistry
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError
from genhook.presets import Presets
from genhook.storage import LocalStorage
from genhook.store.store import Store
from genhook.worker import Worker
from tests.databases import database_url
from tests.fakes import ScriptedBackend

FLOW = textwrap.dedent(
    """\
    id: remote
    external_id: item_id
    input:
      required: [item_id]
      properties:
        item_id: {type: string}
    nodes:
      image:
        kind: generate
        with:
          backend: scripted
          model: m1
          prompt: "photo of ${input.item_id}"
          width: 256
          height: 256
      export:
        kind: export
        with:
          image: ${image.image}
          platforms: avatar
    outputs:
      assets:
        - ${export.assets}
    """
)

PHOTO = np.ascontiguousarray(skdata.astronaut())


class World:
    """A store, an engine with a scripted remote backend, workers, and a hand-moved clock."""

    def __init__(self, tmp: Path, presets: Presets, script: list[Any], url: str) -> None:
        (tmp / "flows").mkdir()
        (tmp / "flows" / "remote.yaml").write_text(FLOW, encoding="utf-8")
        self.clock = ManualClock()
        self.store = Store(url, self.clock)
        self.store.migrate()
        self.backend = ScriptedBackend(script)
        backends = BackendRegistry()
        backends.register(self.backend)
        self.engine = Engine.load(tmp / "flows", presets=presets, backends=backends)
        self.settings = Settings(data_dir=tmp).resolved()
        self.storage = LocalStorage(tmp / "assets", "http://genhook.test")
        self.service = self.store.create_service("shop")

    def worker(self, name: str) -> Worker:
        return Worker(self.store, self.engine, self.storage, self.settings, name=name)

    def submit(self, item: str = "A1", callback: str | None = "https://hooks.example/cb") -> str:
        job, _ = self.store.submit(
            service_id=self.service["service_id"],
            workflow_id="remote",
            workflow_version=1,
            trigger={"item_id": item},
            external_id=item,
            callback_url=callback,
        )
        return str(job["id"])


@pytest.fixture(params=["sqlite", "postgresql"])
def world_factory(
    request: pytest.FixtureRequest, tmp_path: Path, presets: Presets
) -> Iterator[Any]:
    """Worlds on a real SQLite file and on a real PostgreSQL database: one store, two dialects."""
    worlds: list[World] = []
    with database_url(request.param, tmp_path) as url:

        def make(script: list[Any]) -> World:
            world = World(tmp_path, presets, script, url)
            worlds.append(world)
            return world

        yield make
        for world in worlds:
            world.store.close()


def transient() -> GenhookError:
    return GenhookError(ErrorCode.BACKEND_ERROR, "HTTP 503 from the engine")


def test_transient_failures_retry_on_schedule_then_succeed(world_factory: Any) -> None:
    """Two 5xx then success: waits 30 s then 2 min, three attempts recorded, one delivery."""
    world = world_factory([transient(), transient(), PHOTO])
    worker = world.worker("w1")
    job_id = world.submit()
    assert worker.run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "retrying"
    assert job["run_after"] == pytest.approx(world.clock.now() + 30)
    world.clock.advance(29)
    assert not worker.run_once(), "not due before 30 s"
    world.clock.advance(1)
    assert worker.run_once()
    assert world.store.job(job_id)["run_after"] == pytest.approx(world.clock.now() + 120)  # type: ignore[index]
    world.clock.advance(120)
    assert worker.run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "succeeded"
    tries = world.store.attempts(job_id)
    assert [a["outcome"] for a in tries] == ["retrying", "retrying", "succeeded"]
    assert [a["error_code"] for a in tries] == ["backend_error", "backend_error", None]
    assert job["result"]["metadata"]["attempts"] == 3
    assert job["result"]["status"] == "success"
    (delivery,) = world.store.deliveries(job_id)
    assert delivery["status"] == "pending"


def test_retries_exhausted_fail_for_good(world_factory: Any) -> None:
    """After 30 s, 2 min and 8 min the fourth transient failure fails the job permanently."""
    world = world_factory([transient()])
    worker = world.worker("w1")
    job_id = world.submit()
    for wait in (30, 120, 480):
        assert worker.run_once()
        world.clock.advance(wait)
    assert worker.run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "failed"
    assert job["result"]["error"]["error_code"] == "backend_error"
    assert len(world.store.attempts(job_id)) == 4
    assert len(world.backend.requests) == 4
    assert len(world.store.deliveries(job_id)) == 1


def test_permanent_failure_is_not_retried(world_factory: Any) -> None:
    """A refused request fails the job on its first attempt."""
    world = world_factory([GenhookError(ErrorCode.BACKEND_REJECTED, "content policy")])
    job_id = world.submit()
    assert world.worker("w1").run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "failed"
    assert job["result"]["error"]["error_code"] == "backend_rejected"
    assert len(world.store.attempts(job_id)) == 1


def test_retry_after_from_backend_stretches_the_wait(world_factory: Any) -> None:
    """A rate-limited answer with Retry-After 200 s waits 200 s, not the scheduled 30 s."""
    limited = GenhookError(ErrorCode.BACKEND_RATE_LIMITED, "429", retry_after=200)
    world = world_factory([limited, PHOTO])
    job_id = world.submit()
    world.worker("w1").run_once()
    assert world.store.job(job_id)["run_after"] == pytest.approx(world.clock.now() + 200)  # type: ignore[index]


def test_expired_lease_is_taken_over_and_the_job_completes_once(world_factory: Any) -> None:
    """A worker that stops heartbeating loses the job after 30 s; its late result is dropped."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    dead = world.store.claim("dead-worker", 30)
    assert dead is not None and dead["id"] == job_id
    other = world.worker("w2")
    world.clock.advance(29)
    assert not other.run_once(), "the lease still holds"
    world.clock.advance(2)
    assert other.run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "succeeded"
    tries = world.store.attempts(job_id)
    assert [(a["worker"], a["outcome"]) for a in tries] == [
        ("dead-worker", "lost"),
        ("w2", "succeeded"),
    ]
    assert tries[0]["error_code"] == "worker_lost"
    late = world.store.finish(
        job_id,
        "dead-worker",
        status="succeeded",
        payload={"job_id": job_id},
        error=None,
        credit_cost=0,
        work_seconds=1,
    )
    assert late is False
    assert len(world.store.deliveries(job_id)) == 1


def test_heartbeat_keeps_the_lease(world_factory: Any) -> None:
    """Renewing every 20 s keeps other workers off; stopping lets them in after the lease."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    assert world.store.claim("w1", 30) is not None
    for _ in range(3):
        world.clock.advance(20)
        assert world.store.heartbeat(job_id, "w1", 30).owned
        assert world.store.claim("w2", 30) is None
    world.clock.advance(31)
    assert world.store.claim("w2", 30) is not None
    assert not world.store.heartbeat(job_id, "w1", 30).owned


def test_cancel_queued_and_running(world_factory: Any) -> None:
    """A queued job cancels at once (outboxed); a running one stops at its next check."""
    world = world_factory([PHOTO])
    queued = world.submit("Q")
    assert world.store.cancel(queued, {"job_id": queued, "status": "failed"}) == "cancelled"
    assert world.store.job(queued)["status"] == "cancelled"  # type: ignore[index]
    assert len(world.store.deliveries(queued)) == 1
    running = world.submit("R")
    job = world.store.claim("w1", 30)
    assert job is not None and job["id"] == running
    assert world.store.cancel(running, {}) == "running"
    world.worker("w1").process(job)
    done = world.store.job(running)
    assert done is not None and done["status"] == "cancelled"
    assert done["result"]["error"]["error_code"] == "cancelled"
    assert world.backend.requests == [], "cancelled before generating"


def test_idempotency_key(world_factory: Any) -> None:
    """Same key and body: same job; another body: conflict; after 24 h: a new job."""
    world = world_factory([PHOTO])
    args: dict[str, Any] = {
        "service_id": world.service["service_id"],
        "workflow_id": "remote",
        "workflow_version": 1,
        "trigger": {"item_id": "A"},
        "external_id": "A",
        "callback_url": None,
        "idempotency_key": "k-1",
        "request_hash": "h1",
    }
    first, created = world.store.submit(**args)
    again, created_again = world.store.submit(**args)
    assert created and not created_again and again["id"] == first["id"]
    with pytest.raises(GenhookError) as conflict:
        world.store.submit(**{**args, "request_hash": "h2"})
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    world.clock.advance(24 * 3600 + 1)
    later, created_later = world.store.submit(**args)
    assert created_later and later["id"] != first["id"]


def test_processing_time_counts_work_not_waiting(world_factory: Any) -> None:
    """processing_time_seconds adds up attempts and leaves out the 30 s retry wait."""
    world = world_factory([transient(), PHOTO])
    worker = world.worker("w1")
    job_id = world.submit()
    worker.run_once()
    world.clock.advance(30)
    worker.run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "succeeded"
    seconds = job["result"]["metadata"]["processing_time_seconds"]
    assert 0 < seconds < 30
    assert job["processing_seconds"] == pytest.approx(seconds, abs=0.05)


def test_schedule_setting_is_used(world_factory: Any) -> None:
    """GENHOOK_RETRY_SCHEDULE drives the waits: a 5 s schedule waits 5 s."""
    world = world_factory([transient(), PHOTO])
    world.settings = replace(world.settings, retry_schedule=(5.0,))
    job_id = world.submit()
    world.worker("w1").run_once()
    assert world.store.job(job_id)["run_after"] == pytest.approx(world.clock.now() + 5)  # type: ignore[index]


def test_a_job_that_keeps_losing_its_worker_fails_for_good(world_factory: Any) -> None:
    """Takeovers count as attempts: once the schedule is spent, the job fails as worker_lost."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    for n in range(4):
        assert world.store.claim(f"doomed-{n}", 30) is not None
        world.clock.advance(31)
    assert world.worker("w").run_once()
    job = world.store.job(job_id)
    assert job is not None and job["status"] == "failed"
    assert job["result"]["error"]["error_code"] == "worker_lost"
    assert world.backend.requests == []
    assert [a["outcome"] for a in world.store.attempts(job_id)] == ["lost"] * 4 + ["failed"]


def test_lost_attempt_work_counts_until_its_last_heartbeat(world_factory: Any) -> None:
    """A lost attempt adds its time up to the last heartbeat to processing time, not the wait."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    assert world.store.claim("dead", 30) is not None
    world.clock.advance(12)
    assert world.store.heartbeat(job_id, "dead", 30).owned
    world.clock.advance(31)
    assert world.store.claim("w2", 30) is not None
    assert world.store.job(job_id)["processing_seconds"] == pytest.approx(12)  # type: ignore[index]
