"""Acceptance: the trigger envelope in full, on a real `genhook serve` and a real receiver that
verifies every signature with the standardwebhooks library, on SQLite and PostgreSQL.

- ``callback_events``: ``job.started`` and throttled ``job.progress`` (the Replicate fake's
  sampler steps) when asked, each its own signed message, never after the terminal one; only
  the terminal one otherwise.
- ``client_metadata`` echoed unchanged in every payload, the 422 refusal's too, and in
  ``GET /v1/jobs/{job_id}``.
- ``deadline``: a job still waiting past it ends ``expired`` (payload ``failed``,
  ``deadline_expired``), on the SSE stream and in the metrics too.
- a workflow's run timeout: the attempt fails ``timed_out``, not retried.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import REMOTE_FLOW, Genhook, Receiver, ts, verify, wait_for
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate

ROOT = Path(__file__).resolve().parents[2]
SHIRT = json.loads(
    (ROOT / "workflows" / "samples" / "product-image" / "linen-shirt.json").read_text("utf-8")
)
META = {"crm_ref": "deal-42", "nested": {"ünïcode": "✓", "list": [1, 2.5, None, True]}}


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def replicate() -> Iterator[FakeReplicate]:
    """A slow engine that reports its sampler's steps (polled: no sync wait)."""
    with FakeReplicate(image_scale=1.0, run_seconds=7.0, honour_wait=False) as fake:
        yield fake


def test_started_and_progress_events_then_the_terminal_one(
    genhook_factory: Callable[..., Genhook], replicate: FakeReplicate, receiver: Receiver
) -> None:
    g = genhook_factory(
        GENHOOK_IMAGE_BACKEND="replicate",
        GENHOOK_REPLICATE_BASE_URL=replicate.base_url,
        GENHOOK_REPLICATE_API_TOKEN=FAKE_TOKEN,
    )
    g.serve(workers=1)
    asked = g.trigger(
        "product-image",
        {
            **SHIRT,
            "callback_url": receiver.url,
            "callback_events": ["job.started", "job.progress"],
            "client_metadata": META,
        },
    )
    assert asked.status_code == 202, asked.text
    job_id = asked.json()["job_id"]
    wait_for(
        lambda: any(c.json["event"] == "job.completed" for c in receiver.for_job(job_id)),
        120,
        "the job's completion callback",
    )
    calls = receiver.for_job(job_id)
    payloads = [verify(g.secret, call) for call in calls]  # every one signed
    events = [p["event"] for p in payloads]
    assert events[0] == "job.started", events
    assert events[-1] == "job.completed" and events.count("job.completed") == 1, events
    progress = [p for p in payloads if p["event"] == "job.progress"]
    assert progress, events
    assert set(events) == {"job.started", "job.progress", "job.completed"}
    assert len({c.headers["webhook-id"] for c in calls}) == len(calls)  # a message each
    for p in payloads:
        assert p["client_metadata"] == META
        assert p["job_id"] == job_id and p["workflow_id"] == "product-image"
        assert p["external_id"] == "SKU-123" and p["schema_version"] == "1"
    for p in [payloads[0], *progress]:
        assert p["status"] == "running" and p["attempt"] == 1
    for p in progress:
        assert 0 <= p["progress"]["step"] <= p["progress"]["steps"]
    times = [ts(p["timestamp"]) for p in progress]
    assert all(b - a >= 1.99 for a, b in itertools.pairwise(times)), times
    assert ts(payloads[0]["timestamp"]) <= times[0] <= ts(payloads[-1]["timestamp"])
    assert payloads[-1]["status"] == "success"
    job = g.job(job_id)
    assert job["client_metadata"] == META and job["result"]["client_metadata"] == META

    # not asked: the terminal one only, with client_metadata null
    plain = g.trigger("product-image", {**SHIRT, "callback_url": receiver.url}).json()["job_id"]
    (only,) = receiver.wait_job(plain, timeout=120)
    payload = verify(g.secret, only)
    assert payload["event"] == "job.completed" and payload["client_metadata"] is None
    assert g.job(plain)["client_metadata"] is None


def test_client_metadata_in_the_refusal_callback(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    g.serve(workers=1)
    refused = g.trigger(
        "product-image",
        {**SHIRT, "target_style": "no-such", "callback_url": receiver.url, "client_metadata": META},
    )
    assert refused.status_code == 422
    (call,) = receiver.wait_job(refused.json()["job_id"])
    payload = verify(g.secret, call)
    assert payload["error"]["error_code"] == "unknown_style"
    assert payload["client_metadata"] == META
    assert g.job(refused.json()["job_id"])["client_metadata"] == META


def _sse(g: Genhook, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream(
        "GET", f"{g.base}/v1/jobs/{job_id}/events", headers=g.http.headers, timeout=30
    ) as r:
        text = r.read().decode()
    found = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        fields = dict(line.split(": ", 1) for line in lines)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_a_job_still_waiting_past_its_deadline_ends_expired(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    g.cli("services", "update", "shop", "--rate-limit", "1/h")  # the second job waits
    g.serve(workers=1)
    first = g.trigger("tiny", {"item_id": "first", "callback_url": receiver.url})
    assert first.status_code == 202
    receiver.wait_job(first.json()["job_id"])
    late = g.trigger(
        "tiny",
        {
            "item_id": "late",
            "callback_url": receiver.url,
            "deadline": _soon(3),
            "client_metadata": META,
        },
    )
    assert late.status_code == 202
    job_id = late.json()["job_id"]
    waiting = g.job(job_id)
    assert waiting["status"] == "queued" and waiting["hold_reason"] == "rate_limit"
    (call,) = receiver.wait_job(job_id, timeout=30)
    payload = verify(g.secret, call)
    assert payload["event"] == "job.failed" and payload["status"] == "failed"
    assert payload["error"]["error_code"] == "deadline_expired"
    assert payload["client_metadata"] == META and payload["outputs"] == []
    assert payload["metadata"]["attempts"] == 0 and payload["metadata"]["credit_cost"] == 0
    assert ts(payload["timestamp"]) >= ts(late.json()["created_at"]) + 2.5
    job = g.job(job_id)
    assert job["status"] == "expired" and job["attempts"] == [] and job["result"] == payload
    assert job["hold_reason"] is None
    events = _sse(g, job_id)
    assert events[-1][0] == "expired", events
    assert events[-1][1]["result"]["error"]["error_code"] == "deadline_expired"
    metrics = httpx.get(f"{g.base}/metrics").text
    assert any(
        line.startswith("genhook_jobs_ended")
        and 'status="expired"' in line
        and line.endswith(" 1.0")
        for line in metrics.splitlines()
    ), [line for line in metrics.splitlines() if line.startswith("genhook_jobs_ended")]


def test_the_run_timeout_fails_the_attempt_timed_out(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    with FakeOpenAI(api_key=FAKE_API_KEY) as engine_api:
        engine_api.script(["sleep:30"], default="sleep:30")
        g = genhook_factory(
            GENHOOK_OPENAI_BASE_URL=engine_api.base_url, GENHOOK_OPENAI_API_KEY=FAKE_API_KEY
        )
        flow = REMOTE_FLOW.replace("id: remote-image", "id: slow-image").replace(
            "version: 1\n", "version: 1\ntimeout: 2s\n", 1
        )
        (g.tmp / "flows" / "slow-image.yaml").write_text(flow, encoding="utf-8")
        g.serve(workers=1)
        assert g.http.get("/v1/workflows/slow-image").json()["timeout_seconds"] == 2.0
        job_id = g.trigger(
            "slow-image", {"item_id": "S-1", "name": "vase", "callback_url": receiver.url}
        ).json()["job_id"]
        (call,) = receiver.wait_job(job_id, timeout=60)
        payload = verify(g.secret, call)
        assert payload["status"] == "failed"
        assert payload["error"]["error_code"] == "timed_out", payload["error"]
        assert "run timeout of 2 s" in payload["error"]["error_description"]
        assert payload["metadata"]["attempts"] == 1  # not retried
        job = g.wait_status(job_id, {"failed"})
        assert [a["error"]["error_code"] for a in job["attempts"]] == ["timed_out"]
        assert len(engine_api.generations) == 1
