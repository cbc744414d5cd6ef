"""Workers on a real SQLite store with an injected clock: retries, leases, cancel, idempotency."""

from __future__ import annotations

import hashlib
import json
import stat
import textwrap
import threading
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
from tests.fakes import SCRIPTED_PRICING, ScriptedBackend

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
        self.engine = Engine.load(
            tmp / "flows", presets=presets, backends=backends, pricing=SCRIPTED_PRICING
        )
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
        return str(job.id)


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
    assert job is not None and job.status == "retrying"
    assert job.run_after == pytest.approx(world.clock.now() + 30)
    world.clock.advance(29)
    assert not worker.run_once(), "not due before 30 s"
    world.clock.advance(1)
    assert worker.run_once()
    assert world.store.job(job_id).run_after == pytest.approx(world.clock.now() + 120)  # type: ignore[union-attr]
    world.clock.advance(120)
    assert worker.run_once()
    job = world.store.job(job_id)
    assert job is not None and job.status == "succeeded"
    tries = world.store.attempts(job_id)
    assert [a.outcome for a in tries] == ["retrying", "retrying", "succeeded"]
    assert [a.error_code for a in tries] == ["backend_error", "backend_error", None]
    assert job.result["metadata"]["attempts"] == 3
    assert job.result["status"] == "success"
    (delivery,) = world.store.deliveries(job_id)
    assert delivery.status == "pending"


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
    assert job is not None and job.status == "failed"
    assert job.result["error"]["error_code"] == "backend_error"
    assert len(world.store.attempts(job_id)) == 4
    assert len(world.backend.requests) == 4
    assert len(world.store.deliveries(job_id)) == 1


def test_permanent_failure_is_not_retried(world_factory: Any) -> None:
    """A refused request fails the job on its first attempt."""
    world = world_factory([GenhookError(ErrorCode.BACKEND_REJECTED, "content policy")])
    job_id = world.submit()
    assert world.worker("w1").run_once()
    job = world.store.job(job_id)
    assert job is not None and job.status == "failed"
    assert job.result["error"]["error_code"] == "backend_rejected"
    assert len(world.store.attempts(job_id)) == 1


def test_retry_after_from_backend_stretches_the_wait(world_factory: Any) -> None:
    """A rate-limited answer with Retry-After 200 s waits 200 s, not the scheduled 30 s."""
    limited = GenhookError(ErrorCode.BACKEND_RATE_LIMITED, "429", retry_after=200)
    world = world_factory([limited, PHOTO])
    job_id = world.submit()
    world.worker("w1").run_once()
    assert world.store.job(job_id).run_after == pytest.approx(world.clock.now() + 200)  # type: ignore[union-attr]


def test_expired_lease_is_taken_over_and_the_job_completes_once(world_factory: Any) -> None:
    """A worker that stops heartbeating loses the job after 30 s; its late result is dropped."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    dead = world.store.claim("dead-worker", 30)
    assert dead is not None and dead.id == job_id
    other = world.worker("w2")
    world.clock.advance(29)
    assert not other.run_once(), "the lease still holds"
    world.clock.advance(2)
    assert other.run_once()
    job = world.store.job(job_id)
    assert job is not None and job.status == "succeeded"
    tries = world.store.attempts(job_id)
    assert [(a.worker, a.outcome) for a in tries] == [
        ("dead-worker", "lost"),
        ("w2", "succeeded"),
    ]
    assert tries[0].error_code == "worker_lost"
    late = world.store.finish(
        job_id,
        "dead-worker",
        status="succeeded",
        payload={"job_id": job_id},
        error=None,
        credit_cost=0,
        work_seconds=1,
    )
    assert late is None
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
    assert world.store.cancel(queued, lambda row: {"job_id": row.id}) == "cancelled"
    assert world.store.job(queued).status == "cancelled"  # type: ignore[union-attr]
    assert len(world.store.deliveries(queued)) == 1
    running = world.submit("R")
    job = world.store.claim("w1", 30)
    assert job is not None and job.id == running
    assert world.store.cancel(running, lambda row: {}) == "running"
    world.worker("w1").process(job)
    done = world.store.job(running)
    assert done is not None and done.status == "cancelled"
    assert done.result["error"]["error_code"] == "cancelled"
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
    assert created and not created_again and again.id == first.id
    with pytest.raises(GenhookError) as conflict:
        world.store.submit(**{**args, "request_hash": "h2"})
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    world.clock.advance(24 * 3600 + 1)
    later, created_later = world.store.submit(**args)
    assert created_later and later.id != first.id


def test_schedule_setting_is_used(world_factory: Any) -> None:
    """GENHOOK_RETRY_SCHEDULE drives the waits: a 5 s schedule waits 5 s."""
    world = world_factory([transient(), PHOTO])
    world.settings = replace(world.settings, retry_schedule=(5.0,))
    job_id = world.submit()
    world.worker("w1").run_once()
    assert world.store.job(job_id).run_after == pytest.approx(world.clock.now() + 5)  # type: ignore[union-attr]


def test_a_job_that_keeps_losing_its_worker_fails_for_good(world_factory: Any) -> None:
    """Takeovers count as attempts: once the schedule is spent, the job fails as worker_lost."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    for n in range(4):
        assert world.store.claim(f"doomed-{n}", 30) is not None
        world.clock.advance(31)
    assert world.worker("w").run_once()
    job = world.store.job(job_id)
    assert job is not None and job.status == "failed"
    assert job.result["error"]["error_code"] == "worker_lost"
    assert world.backend.requests == []
    assert [a.outcome for a in world.store.attempts(job_id)] == ["lost"] * 4 + ["failed"]


def test_lost_attempt_work_counts_until_its_last_heartbeat(world_factory: Any) -> None:
    """A lost attempt adds its time up to the last heartbeat to processing time, not the wait."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    assert world.store.claim("dead", 30) is not None
    world.clock.advance(12)
    assert world.store.heartbeat(job_id, "dead", 30).owned
    world.clock.advance(31)
    assert world.store.claim("w2", 30) is not None
    assert world.store.job(job_id).processing_seconds == pytest.approx(12)  # type: ignore[union-attr]


class TimedBackend(ScriptedBackend):
    """A scripted engine whose n-th call takes ``seconds[n]`` of the world's (injected) time."""

    def __init__(self, script: list[Any], clock: ManualClock, seconds: list[float]) -> None:
        super().__init__(script)
        self.clock = clock
        self.seconds = seconds

    def generate(self, request: Any) -> Any:
        self.clock.advance(self.seconds[min(len(self.requests), len(self.seconds) - 1)])
        return super().generate(request)


def timed_world(world_factory: Any, script: list[Any], seconds: list[float]) -> Any:
    world = world_factory([])
    backend = TimedBackend(script, world.clock, seconds)
    world.engine.backends.register(backend)
    world.backend = backend
    return world


def test_processing_time_is_the_sum_of_attempts_from_claim_to_end(world_factory: Any) -> None:
    """A 429 with Retry-After 4 s after 2 s of work, then 3 s of work: 1 s of set-up after the
    second claim counts, the waits do not; payload and job row both say 2 + 1 + 3 = 6 s."""
    limited = GenhookError(ErrorCode.BACKEND_RATE_LIMITED, "429", retry_after=4)
    world = timed_world(world_factory, [limited, PHOTO], [2.0, 3.0])
    world.settings = replace(world.settings, retry_schedule=(1.0,))
    worker = world.worker("w1")
    job_id = world.submit()
    world.clock.advance(7)  # waiting in the queue is not work
    assert worker.run_once()
    assert world.store.job(job_id).processing_seconds == pytest.approx(2.0)  # type: ignore[union-attr]
    world.clock.advance(4)
    job = world.store.claim("w1", 30)
    assert job is not None and job.id == job_id
    world.clock.advance(1)  # the worker's own set-up after its claim is work
    worker.process(job)
    done = world.store.job(job_id)
    assert done is not None and done.status == "succeeded"
    assert done.result["metadata"]["processing_time_seconds"] == pytest.approx(6.0)
    assert done.processing_seconds == pytest.approx(6.0)
    tries = world.store.attempts(job_id)
    assert sum(a.ended_at - a.started_at for a in tries) == pytest.approx(6.0)


class GatedBackend(ScriptedBackend):
    """A scripted engine that holds each call until the test lets it go."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__(script)
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, request: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30), "the test never released the engine"
        return super().generate(request)


def files_of(world: Any, job_id: str) -> list[str]:
    folder = world.storage.root / job_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_cancel_recorded_before_the_finish_wins_over_success(world_factory: Any) -> None:
    """The store: a job flagged while running whose worker then reports success ends cancelled,
    with the cancelled payload, its credits and time, no published assets, one callback."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    job = world.store.claim("w1", 30)
    assert job is not None
    assert world.store.cancel(job_id, lambda row: {"never": "used"}) == "running"
    published: list[bool] = []
    ended = world.store.finish(
        job_id,
        "w1",
        status="succeeded",
        payload={"job_id": job_id, "status": "success"},
        error=None,
        credit_cost=1.5,
        work_seconds=2.0,
        cancelled={"job_id": job_id, "status": "failed", "event": "job.failed"},
        publish=lambda: published.append(True),
    )
    assert ended == "cancelled" and published == []
    done = world.store.job(job_id)
    assert done is not None and done.status == "cancelled"
    assert done.result["event"] == "job.failed" and done.error_code == "cancelled"
    assert done.credit_cost == pytest.approx(1.5)
    assert done.processing_seconds == pytest.approx(2.0)
    assert [a.outcome for a in world.store.attempts(job_id)] == ["cancelled"]
    (delivery,) = world.store.deliveries(job_id)
    assert json.loads(delivery.body)["event"] == "job.failed"
    assert [e.status for e in world.store.events(job_id)][-1] == "cancelled"


def test_a_cancel_recorded_before_a_retry_ends_the_job(world_factory: Any) -> None:
    """A transient failure after a cancel does not put the job back in the queue."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    assert world.store.claim("w1", 30) is not None
    assert world.store.cancel(job_id, lambda row: {}) == "running"
    ended = world.store.retry(
        job_id,
        "w1",
        error=transient(),
        delay=30,
        credit_cost=0.5,
        work_seconds=1.0,
        cancelled={"job_id": job_id, "event": "job.failed"},
    )
    assert ended == "cancelled"
    done = world.store.job(job_id)
    assert done is not None and done.status == "cancelled" and done.credit_cost == 0.5
    assert world.store.claim("w2", 30) is None
    assert len(world.store.deliveries(job_id)) == 1


def test_cancel_between_steps_of_a_running_job_ends_it_cancelled(world_factory: Any) -> None:
    """Cancel while the engine is generating: the job ends cancelled, not succeeded; the
    generation's credits are recorded and its assets are not delivered."""
    world = world_factory([])
    backend = GatedBackend([PHOTO])
    world.engine.backends.register(backend)
    job_id = world.submit()
    job = world.store.claim("w1", 30)
    assert job is not None
    run = threading.Thread(target=world.worker("w1").process, args=(job,))
    run.start()
    assert backend.entered.wait(30)
    assert world.store.cancel(job_id, lambda row: {}) == "running"
    backend.release.set()
    run.join(30)
    assert not run.is_alive()
    done = world.store.job(job_id)
    assert done is not None and done.status == "cancelled"
    assert done.result["status"] == "failed" and done.result["outputs"] == []
    assert done.result["error"]["error_code"] == "cancelled"
    assert done.credit_cost == pytest.approx(backend.cost)
    assert done.result["metadata"]["credit_cost"] == pytest.approx(backend.cost)
    assert files_of(world, job_id) == [], "nothing made by the cancelled attempt is published"
    (delivery,) = world.store.deliveries(job_id)
    assert json.loads(delivery.body)["event"] == "job.failed"


def test_a_worker_that_lost_its_lease_cannot_replace_delivered_assets(world_factory: Any) -> None:
    """Worker A stalls past its lease, B takes the job over and delivers; A resumes and makes
    other bytes. The files behind the delivered asset_urls stay B's: their sha256 matches."""
    world = world_factory([PHOTO, np.ascontiguousarray(PHOTO[::-1, ::-1])])
    job_id = world.submit()
    stale = world.store.claim("A", 30)
    assert stale is not None
    world.clock.advance(31)
    assert world.worker("B").run_once()
    delivered = world.store.job(job_id)
    assert delivered is not None and delivered.status == "succeeded"
    world.worker("A").process(stale)  # A wakes up and runs its attempt to the end
    assert len(world.backend.requests) == 2, "A really generated other bytes"
    after = world.store.job(job_id)
    assert after is not None and after.result == delivered.result
    outputs = delivered.result["outputs"]
    assert outputs
    for output in outputs:
        filename = output["asset_url"].rsplit("/", 1)[1]
        path = world.storage.path(job_id, filename)
        assert path is not None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == output["sha256"]
    assert files_of(world, job_id) == sorted(o["asset_url"].rsplit("/", 1)[1] for o in outputs)


def test_asset_files_are_private(world_factory: Any) -> None:
    """Delivered files are 0600 in 0700 folders: no other local user reads them."""
    world = world_factory([PHOTO])
    job_id = world.submit()
    assert world.worker("w1").run_once()
    folder = world.storage.root / job_id
    assert stat.S_IMODE(world.storage.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list(folder.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
