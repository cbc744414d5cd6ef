"""A backend's progress becomes the job's progress events: throttled to one every 2 s per job,
the last one always written before the job ends, and streamed in order by
``GET /v1/jobs/{job_id}/events``.

The engine is the loopback fake of Replicate's predictions API in
``tests/test_worker_concurrency.py`` (its ``logs`` carry ``step/steps`` as a sampler's progress
bar does); the API runs in process on the same SQLite file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import httpx

from genhook.api.app import create_app
from genhook.api.streams import sse_event
from genhook.config import Settings
from genhook.runtime import Runtime
from genhook.status import JobStatus
from genhook.store.records import JobEvent
from genhook.worker import PROGRESS_SECONDS
from tests.test_worker_concurrency import FakePredictions, PredictionsBackend, World


def _progress(data: dict[str, Any]) -> dict[str, Any] | None:
    """A streamed event's progress (``data.progress``; ``data.detail.progress`` where the
    route still formats running events itself)."""
    found = data.get("progress") or (data.get("detail") or {}).get("progress")
    return found if isinstance(found, dict) else None


def _stream(settings: Settings, key: str, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Every SSE event of the job's stream, (id, event, data), until the stream ends."""
    runtime = Runtime.build(settings)

    async def fetch() -> str:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            r = await c.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            return r.text

    try:
        text = asyncio.run(fetch())
    finally:
        runtime.store.close()
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "id" in fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


def test_progress_is_throttled_ends_with_the_last_step_and_reaches_sse(
    tmp_path: Path, presets: Any
) -> None:
    """A job whose engine reports a step every poll (50 a second) for ~5 s: at most one
    progress event every 2 s, steps in order, the last 50 of 50 (100 %) before it succeeds;
    the SSE stream has queued, running, the progress events, succeeded, in that order."""
    with FakePredictions(steps=1000) as fake:
        world = World(tmp_path, presets, PredictionsBackend(fake.base_url), concurrency=2)
        try:
            (job_id,) = world.submit(1)
            world.thread.start()

            def progress_rows() -> list[JobEvent]:
                return [
                    e for e in world.store.events(job_id) if e.detail and "progress" in e.detail
                ]

            world.wait_until(lambda: len(progress_rows()) >= 2, "two progress events")
            fake.release()
            assert world.wait_ended([job_id]) == ["succeeded"]
            events = world.store.events(job_id)
        finally:
            world.close()
    rows = [e for e in events if e.detail and "progress" in e.detail]
    steps = [r.detail["progress"]["step"] for r in rows]  # type: ignore[index]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert rows[-1].detail == {"progress": {"step": 1000, "total": 1000, "percent": 100.0}}
    # the throttle: between progress events at least 2 s, except before the job's last one
    gaps = [b.at - a.at for a, b in itertools.pairwise(rows[:-1])]
    assert all(gap >= PROGRESS_SECONDS - 0.1 for gap in gaps), gaps
    assert [e.status for e in events][-1] == JobStatus.SUCCEEDED
    assert max(e.id for e in rows) < events[-1].id, "the last progress comes before the end"

    streamed = _stream(world.settings, world.service["api_key"], job_id)
    assert [i for i, _, _ in streamed] == [e.id for e in events]
    kinds = [("progress" if _progress(d) else name) for _, name, d in streamed]
    assert kinds == ["queued", "running"] + ["progress"] * len(rows) + ["succeeded"]
    assert [_progress(d) for _, _, d in streamed if _progress(d)] == [
        r.detail["progress"]  # type: ignore[index]
        for r in rows
    ]
    assert streamed[-1][2]["result"]["status"] == "success"


def test_a_progress_event_is_named_progress_on_the_stream() -> None:
    """``event: progress`` with ``data.progress``; other events keep their status's name."""
    progress = JobEvent(
        7, "job_1", 0.0, JobStatus.RUNNING, {"progress": {"step": 1, "total": 4, "percent": 25.0}}
    )
    text = sse_event("job_1", progress).decode()
    assert text.startswith("id: 7\nevent: progress\ndata: ")
    data = json.loads(text.split("data: ", 1)[1])
    assert data["progress"] == {"step": 1, "total": 4, "percent": 25.0}
    assert data["status"] == "running" and "detail" not in data
    running = JobEvent(6, "job_1", 0.0, JobStatus.RUNNING, {"attempt": 1})
    assert sse_event("job_1", running).decode().startswith("id: 6\nevent: running\n")
