"""One worker process running many jobs at once: on a slow remote engine they overlap, each keeps
its own lease, a cancelled one stops its engine's work, and CPU-bound steps stay within the gate.

The remote engine is a loopback HTTP server that speaks a subset of Replicate's predictions API
(https://replicate.com/docs/reference/http): ``POST /v1/predictions`` answers ``201`` with the
prediction object ``{"id", "status": "starting", "urls": {"get", "cancel"}, "logs", "output",
"error"}``; ``GET /v1/predictions/{id}`` returns it, ``status`` ``processing`` with sampler-style
``logs`` lines (``"  40%|####      | 20/50"``) until it ``succeeded`` with ``output`` a list of
file URLs; ``POST /v1/predictions/{id}/cancel`` sets ``canceled``. The fake holds every prediction
in ``processing`` until the test releases it (or until ``release_at`` are in flight at once), so
the tests count overlap instead of timing it. The backend below is a minimal client of it, as a
plugin for a hosted engine would be.
"""

from __future__ import annotations

import io
import json
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from genhook.backends.base import (
    AssetKind,
    BackendRegistry,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
)
from genhook.config import Settings
from genhook.cpu import CpuGate
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError
from genhook.presets import Presets
from genhook.pricing import Pricing
from genhook.storage import LocalStorage
from genhook.store.store import Store
from genhook.worker import Worker

WAIT = 60.0
"""The most a test waits for something that should happen (a guard, not a measurement)."""

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
          backend: BACKEND
          model: m1
          prompt: "photo of ${input.item_id}"
          width: 64
          height: 64
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

PRICING = Pricing.from_mapping(
    {"predictions": {"*": {"per_image": 1.0}}, "local": {"*": {"per_image": 0}}},
    "the test engines' pricing",
)


def _png() -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


PNG = _png()


@dataclass
class Prediction:
    id: str
    status: str = "starting"
    polls: int = 0


class FakePredictions:
    """The engine: predictions held in ``processing`` until released (see the module docstring)."""

    def __init__(self, release_at: int | None = None, steps: int = 50) -> None:
        self.release_at = release_at
        self.steps = steps
        self.predictions: dict[str, Prediction] = {}
        self.cancelled: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/v1/predictions":
                    if not isinstance(body.get("input"), dict):
                        self._json(422, {"detail": "input is required", "status": 422})
                        return
                    self._json(201, fake.create())
                    return
                match = re.fullmatch(r"/v1/predictions/([\w-]+)/cancel", self.path)
                if match and match.group(1) in fake.predictions:
                    self._json(200, fake.cancel(match.group(1)))
                    return
                self._json(404, {"detail": "Not found."})

            def do_GET(self) -> None:
                match = re.fullmatch(r"/v1/predictions/([\w-]+)", self.path)
                if match and match.group(1) in fake.predictions:
                    self._json(200, fake.poll(match.group(1)))
                    return
                if re.fullmatch(r"/files/[\w-]+\.png", self.path):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(PNG)))
                    self.end_headers()
                    self.wfile.write(PNG)
                    return
                self._json(404, {"detail": "Not found."})

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePredictions:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self.released.set()

    def _object(self, p: Prediction) -> dict[str, Any]:
        done = p.status == "succeeded"
        base = self.base_url
        step = self.steps if done else min(self.steps - 1, p.polls)
        percent = round(100 * step / self.steps)
        return {
            "id": p.id,
            "status": p.status,
            "logs": f"{percent:3d}%|{'#' * (percent // 10):<10}| {step}/{self.steps}\n",
            "output": [f"{base.removesuffix('/v1')}/files/{p.id}.png"] if done else None,
            "error": None,
            "urls": {
                "get": f"{base}/predictions/{p.id}",
                "cancel": f"{base}/predictions/{p.id}/cancel",
            },
        }

    def create(self) -> dict[str, Any]:
        with self.lock:
            p = Prediction(f"p{len(self.predictions) + 1}")
            self.predictions[p.id] = p
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.release_at is not None and self.in_flight >= self.release_at:
                self.released.set()
            return self._object(p)

    def poll(self, pid: str) -> dict[str, Any]:
        with self.lock:
            p = self.predictions[pid]
            p.polls += 1
            if p.status in ("starting", "processing"):
                if self.released.is_set():
                    p.status = "succeeded"
                    self.in_flight -= 1
                else:
                    p.status = "processing"
            return self._object(p)

    def cancel(self, pid: str) -> dict[str, Any]:
        with self.lock:
            p = self.predictions[pid]
            if p.status in ("starting", "processing"):
                p.status = "canceled"
                self.in_flight -= 1
                self.cancelled.append(pid)
            return self._object(p)


@dataclass
class PredictionsBackend:
    """A hosted-engine backend on the fake: create, poll (reporting the logs' step of steps),
    cancel on the job's cancel, fetch the output file."""

    base_url: str
    name: str = "predictions"
    kinds: frozenset[AssetKind] = frozenset({"image"})
    cpu_bound: bool = False
    poll_seconds: float = 0.02
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def status(self) -> BackendStatus:
        return BackendStatus(True, "fake predictions engine")

    def probe(self, timeout: float) -> BackendStatus:
        return self.status()

    def estimate_cost(self, request: GenerationRequest) -> float:
        return 1.0

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        created = self.client.post(
            f"{self.base_url}/predictions", json={"input": {"prompt": request.prompt}}
        ).json()
        prediction = created
        while prediction["status"] in ("starting", "processing"):
            if control.is_cancelled():
                self.client.post(prediction["urls"]["cancel"])
                raise GenhookError(ErrorCode.CANCELLED)
            time.sleep(self.poll_seconds)
            prediction = self.client.get(prediction["urls"]["get"]).json()
            found = re.findall(r"(\d+)/(\d+)", prediction.get("logs") or "")
            if found:
                control.progress(int(found[-1][0]), int(found[-1][1]))
        if prediction["status"] != "succeeded":
            raise GenhookError(ErrorCode.BACKEND_ERROR, f"prediction {prediction['status']}")
        data = self.client.get(prediction["output"][0]).content
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return GenerationResult(pixels, request, f"predictions/{request.model}", 1.0)


class CountingLocalBackend:
    """A local (CPU-bound) renderer that counts how many of its generations run at once."""

    name = "local"
    kinds: frozenset[AssetKind] = frozenset({"image"})
    cpu_bound = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.runs = 0

    def status(self) -> BackendStatus:
        return BackendStatus(True, "local")

    def probe(self, timeout: float) -> BackendStatus:
        return self.status()

    def estimate_cost(self, request: GenerationRequest) -> float:
        return 0.0

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            time.sleep(0.05)  # some work, so that other jobs try to come in meanwhile
            pixels = np.full((64, 64, 3), 120, dtype=np.uint8)
            pixels[::2] = 30
        finally:
            with self.lock:
                self.inside -= 1
                self.runs += 1
        return GenerationResult(pixels, request, "local/m1", 0.0)


class World:
    """A real SQLite store, an engine on one backend, and one worker running in a thread."""

    def __init__(
        self,
        tmp: Path,
        presets: Presets,
        backend: Any,
        *,
        concurrency: int,
        gate: CpuGate | None = None,
        **settings: Any,
    ) -> None:
        self.backend = backend
        (tmp / "flows").mkdir(exist_ok=True)
        flow = FLOW.replace("BACKEND", backend.name)
        (tmp / "flows" / "remote.yaml").write_text(flow, encoding="utf-8")
        self.store = Store(f"sqlite:///{tmp / 'genhook.db'}")
        self.store.migrate()
        backends = BackendRegistry()
        backends.register(backend)
        engine = Engine.load(tmp / "flows", presets=presets, backends=backends, pricing=PRICING)
        self.engine = Engine(engine.catalog, backends, gate or CpuGate(2))
        self.settings = Settings(data_dir=tmp, poll_seconds=0.1, **settings).resolved()
        self.storage = LocalStorage(tmp / "assets", "http://genhook.test")
        self.service = self.store.create_service("shop")
        self.worker = Worker(
            self.store,
            self.engine,
            self.storage,
            self.settings,
            name="w1",
            concurrency=concurrency,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)

    def submit(self, n: int) -> list[str]:
        ids = []
        for i in range(n):
            job, _ = self.store.submit(
                service_id=self.service["service_id"],
                workflow_id="remote",
                workflow_version=1,
                trigger={"item_id": f"A{i}"},
                external_id=f"A{i}",
                callback_url="https://hooks.example/cb",
            )
            ids.append(str(job.id))
        self.worker.jobs_signal.notify()
        return ids

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.worker.jobs_signal.notify()
        self.thread.join(WAIT)
        self.store.close()
        client = getattr(self.backend, "client", None)
        if client is not None:
            client.close()

    def statuses(self, ids: list[str]) -> list[str]:
        return [str(self.store.job(i).status) for i in ids]  # type: ignore[union-attr]

    def wait_until(self, what: Callable[[], bool], why: str) -> None:
        deadline = time.monotonic() + WAIT
        while not what():
            assert time.monotonic() < deadline, f"never happened: {why}"
            time.sleep(0.02)

    def wait_ended(self, ids: list[str]) -> list[str]:
        ended = {"succeeded", "failed", "cancelled"}
        self.wait_until(lambda: all(s in ended for s in self.statuses(ids)), "every job ended")
        return self.statuses(ids)


@pytest.fixture
def world(tmp_path: Path, presets: Presets) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(backend: Any, **kwargs: Any) -> World:
        w = World(tmp_path, presets, backend, **kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def test_jobs_on_a_slow_remote_engine_run_at_once_in_one_worker(world: Any) -> None:
    """8 jobs, concurrency 8: the engine sees all 8 in flight at once (it answers none until it
    does); each completes once, one attempt each, one callback each."""
    with FakePredictions(release_at=8) as fake:
        w = world(PredictionsBackend(fake.base_url), concurrency=8)
        ids = w.submit(8)
        w.start()
        assert w.wait_ended(ids) == ["succeeded"] * 8
        assert fake.max_in_flight == 8
        for job_id in ids:
            assert [a.outcome for a in w.store.attempts(job_id)] == ["succeeded"]
            assert len(w.store.deliveries(job_id)) == 1


def test_concurrency_caps_the_jobs_in_flight(world: Any) -> None:
    """6 jobs, concurrency 3: never more than 3 predictions in flight; all 6 complete."""
    with FakePredictions(release_at=3) as fake:
        w = world(PredictionsBackend(fake.base_url), concurrency=3)
        ids = w.submit(6)
        w.start()
        assert w.wait_ended(ids) == ["succeeded"] * 6
        assert fake.max_in_flight == 3


def test_each_lease_is_renewed_while_its_job_waits(world: Any) -> None:
    """Lease 1 s, heartbeat 0.2 s: the jobs wait on the engine through many heartbeats (well past
    their first lease), no other worker can claim them, and each completes once."""
    with FakePredictions() as fake:
        w = world(
            PredictionsBackend(fake.base_url),
            concurrency=4,
            lease_seconds=1.0,
            heartbeat_seconds=0.2,
        )
        ids = w.submit(4)
        w.start()
        w.wait_until(lambda: fake.in_flight == 4, "4 predictions in flight")
        w.wait_until(lambda: w.worker.leases.turns >= 8, "8 renewals (1.6 s > one lease)")
        assert w.store.claim("w2", 1.0) is None, "every lease is still held"
        assert w.statuses(ids) == ["running"] * 4
        fake.release()
        assert w.wait_ended(ids) == ["succeeded"] * 4
        for job_id in ids:
            assert [(a.worker, a.outcome) for a in w.store.attempts(job_id)] == [
                ("w1", "succeeded")
            ]
            assert len(w.store.deliveries(job_id)) == 1


def test_a_cancelled_job_stops_its_engine_and_the_others_finish(world: Any) -> None:
    """5 jobs in flight; one is cancelled: the engine gets its cancel, it ends cancelled, and
    the other 4 succeed."""
    with FakePredictions() as fake:
        w = world(PredictionsBackend(fake.base_url), concurrency=5)
        ids = w.submit(5)
        w.start()
        w.wait_until(lambda: fake.in_flight == 5, "5 predictions in flight")
        assert w.store.cancel(ids[2], lambda row: {"job_id": row.id}) == "running"
        w.wait_until(lambda: len(fake.cancelled) == 1, "the engine saw a cancel")
        fake.release()
        statuses = w.wait_ended(ids)
        assert statuses == ["succeeded", "succeeded", "cancelled", "succeeded", "succeeded"]
        assert fake.in_flight == 0 and len(fake.cancelled) == 1


def test_cpu_bound_steps_never_exceed_the_gate(world: Any) -> None:
    """8 jobs on a local renderer, concurrency 8, a gate of 2 slots: never more than 2
    generations at once (and the export, also CPU-bound, shares the same 2 slots)."""
    backend = CountingLocalBackend()
    gate = CpuGate(2)
    w = world(backend, concurrency=8, gate=gate)
    ids = w.submit(8)
    w.start()
    assert w.wait_ended(ids) == ["succeeded"] * 8
    assert backend.runs == 8
    assert 1 <= backend.most_inside <= 2
    assert gate.held == 0 and gate.waiting == 0


def test_the_gate_counts_nested_holds_once_and_frees_its_slot_outside() -> None:
    """A hold inside a hold takes no second slot; ``outside`` gives the slot back meanwhile."""
    gate = CpuGate(1)
    with gate.hold():
        with gate.hold():
            assert gate.held == 1
        with gate.outside():
            assert gate.held == 0
            other: list[int] = []
            t = threading.Thread(target=lambda: _hold_once(gate, other))
            t.start()
            t.join(WAIT)
            assert other == [1], "another thread got the slot while this one waited outside"
        assert gate.held == 1
    assert gate.held == 0
    with gate.outside():  # outside without a slot: nothing to give back
        assert gate.held == 0


def _hold_once(gate: CpuGate, seen: list[int]) -> None:
    with gate.hold():
        seen.append(gate.held)


class ScratchLocalBackend(CountingLocalBackend):
    """A local renderer that writes a file into the attempt's work folder, as a video backend
    does, and says where it was."""

    name = "local"

    def __init__(self) -> None:
        super().__init__()
        self.folders: list[Path] = []

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        folder = control.scratch()
        (folder / "clip.bin").write_bytes(b"frames")
        self.folders.append(folder)
        return super().generate(request, control)


def test_generations_write_into_the_attempts_folder_removed_with_it(world: Any) -> None:
    """Control.workdir is ``<job>/.attempt-1/.work`` under the asset storage; once the job has
    ended it is gone, and nothing of it was published."""
    backend = ScratchLocalBackend()
    w = world(backend, concurrency=2)
    (job_id,) = w.submit(1)
    w.start()
    assert w.wait_ended([job_id]) == ["succeeded"]
    (folder,) = backend.folders
    assert folder == w.storage.root / job_id / ".attempt-1" / ".work"
    assert not folder.exists() and not folder.parent.exists()
    assert not (w.storage.root / job_id / "clip.bin").exists()


def test_a_backends_declared_limit_applies_unless_the_setting_names_it(
    tmp_path: Path, presets: Presets
) -> None:
    """max_concurrency declared by a backend becomes its limit of running jobs; a limit set by
    GENHOOK_BACKEND_CONCURRENCY for it wins."""
    from genhook.worker import apply_backend_limits

    backend = PredictionsBackend("http://127.0.0.1:9/v1")
    backend.max_concurrency = 3  # type: ignore[attr-defined]
    try:
        w = World(tmp_path, presets, backend, concurrency=1)
        try:
            assert apply_backend_limits(w.store, w.engine) == {"predictions": 3}
            w.store.backend_concurrency = {"predictions": 1, "openai": 4}
            assert apply_backend_limits(w.store, w.engine) == {"predictions": 1, "openai": 4}
        finally:
            w.store.close()
    finally:
        backend.client.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_batched_lease_cancel_and_progress_calls(dialect: str, tmp_path: Path) -> None:
    """renew_leases renews only the worker's own running jobs and reports their cancels;
    cancels_requested reads them for many jobs at once; record_progress writes running events
    for the jobs the worker still holds only."""
    from tests.databases import database_url

    with database_url(dialect, tmp_path) as url:
        store = Store(url)
        try:
            store.migrate()
            service = store.create_service("shop")["service_id"]
            ids = []
            for i in range(3):
                job, _ = store.submit(
                    service_id=service,
                    workflow_id="remote",
                    workflow_version=1,
                    trigger={"item_id": f"B{i}"},
                    external_id=f"B{i}",
                    callback_url=None,
                )
                ids.append(str(job.id))
            mine = [store.claim("w1", 30), store.claim("w1", 30)]
            theirs = store.claim("w2", 30)
            assert all(mine) and theirs is not None
            held = [j.id for j in mine if j is not None]
            assert store.cancel(held[1], lambda row: {}) == "running"
            renewed = store.renew_leases("w1", [*held, theirs.id, "job_missing"], 30)
            assert renewed == {held[0]: False, held[1]: True}
            assert store.cancels_requested(ids) == {held[1]}
            assert store.cancels_requested([]) == set()
            detail = {"step": 1, "total": 2, "percent": 50.0}
            written = store.record_progress("w1", [(held[0], detail), (theirs.id, detail)])
            assert written == 1
            last = store.events(held[0])[-1]
            assert last.status == "running" and last.detail == {"progress": detail}
            assert all(e.detail != {"progress": detail} for e in store.events(theirs.id))
        finally:
            store.close()
