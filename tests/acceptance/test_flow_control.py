"""Flow control on a real `genhook serve` with worker processes: the rate window holds a burst
(all 202, eligible_at true), fair sharing against a backlog, 429 at the queue limit, dedup, and a
backend breaker that holds jobs instead of burning their retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.acceptance.harness import Genhook, ts, wait_for
from tests.acceptance.test_metrics import scrape, value
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI

DEDUP_FLOW = """\
id: tiny-dedup
version: 1
description: tiny, deduplicated on item_id for an hour.
external_id: item_id
dedup: {key: [item_id], window: 1h}
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
    note: {type: string}
nodes:
  image:
    kind: generate
    with:
      prompt: "item ${input.item_id}"
      subject: ${input.item_id}
      width: 64
      height: 64
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: thumb
outputs:
  assets:
    - ${export.assets}
"""


def test_a_burst_over_the_rate_limit_is_accepted_and_runs_when_the_window_allows(
    genhook_factory: Callable[..., Genhook],
) -> None:
    g = genhook_factory()
    g.serve(workers=2)
    client = g.new_service("limited", "--rate-limit", "2/m")
    answers = [client.post("/v1/workflows/tiny/runs", json={"item_id": f"b{i}"}) for i in range(4)]
    assert [a.status_code for a in answers] == [202] * 4
    ids = [a.json()["job_id"] for a in answers]
    accepted_at = ts(answers[0].json()["created_at"])
    views = [client.get(f"/v1/jobs/{i}").json() for i in ids]
    assert [v["hold_reason"] for v in views[2:]] == ["rate_limit", "rate_limit"]
    for view in views[2:]:
        assert ts(view["eligible_at"]) == pytest.approx(accepted_at + 60, abs=1.0)
    for job_id in ids[:2]:
        wait_for(
            lambda j=job_id: client.get(f"/v1/jobs/{j}").json()["status"] == "succeeded",
            60,
            "the allowed jobs to run",
        )
    # the held two have not started: their attempts are empty
    assert all(client.get(f"/v1/jobs/{i}").json()["attempts"] == [] for i in ids[2:])
    done = [
        wait_for(
            lambda j=job_id: (
                (v := client.get(f"/v1/jobs/{j}").json())["status"] == "succeeded" and v
            ),
            120,
            "the held jobs to run when the window allows",
        )
        for job_id in ids[2:]
    ]
    for view in done:
        started = ts(view["attempts"][0]["started_at"])
        assert accepted_at + 60 - 0.5 <= started <= accepted_at + 60 + 3.0


def test_one_services_backlog_does_not_delay_anothers_job(
    genhook_factory: Callable[..., Genhook],
) -> None:
    g = genhook_factory()
    g.serve(workers=0)
    big = g.new_service("backlog")
    small = g.new_service("single")
    for i in range(1000):
        assert big.post("/v1/workflows/tiny/runs", json={"item_id": f"q{i}"}).status_code == 202
    g.worker()  # the workers start with 1,000 jobs of one service waiting

    def claimed() -> int:
        [row] = g.rows("SELECT count(*) AS n FROM jobs WHERE first_claimed_at IS NOT NULL")
        return int(row["n"])

    wait_for(lambda: claimed() >= 5, 60, "the backlog to be under way")
    lone = small.post("/v1/workflows/tiny/runs", json={"item_id": "lone"}).json()
    accepted = ts(lone["created_at"])
    view = wait_for(
        lambda: (
            (v := small.get(f"/v1/jobs/{lone['job_id']}").json())["status"] == "succeeded" and v
        ),
        60,
        "the single job to run",
    )
    started = ts(view["attempts"][0]["started_at"])
    [ahead] = g.rows(
        "SELECT count(*) AS n FROM jobs j JOIN services s ON s.id = j.service_id "
        "WHERE s.name = 'backlog' AND j.first_claimed_at > :accepted "
        "AND j.first_claimed_at < :started",
        accepted=accepted,
        started=started,
    )
    [waiting] = g.rows("SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'retrying')")
    ahead, waiting = ahead["n"], waiting["n"]
    # at most one job slot: each worker of the process may take one backlog job meanwhile
    assert ahead <= 2
    assert waiting > 500  # the backlog was still there


def test_queue_limit_answers_429_queue_full(genhook_factory: Callable[..., Genhook]) -> None:
    g = genhook_factory()
    g.serve(workers=0)
    client = g.new_service("small", "--queue-limit", "2")
    codes = [
        client.post("/v1/workflows/tiny/runs", json={"item_id": f"x{i}"}).status_code
        for i in range(2)
    ]
    assert codes == [202, 202]
    refused = client.post("/v1/workflows/tiny/runs", json={"item_id": "x3"})
    assert refused.status_code == 429
    assert refused.json()["error_code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    # other services are not affected
    assert g.trigger("tiny", {"item_id": "other"}).status_code == 202
    # and /metrics counts the refusal by its code
    got = scrape(g)
    labels = {"service": "small", "workflow": "tiny", "code": "queue_full"}
    assert value(got, "genhook_triggers_refused_total", **labels) == 1


def test_dedup_returns_the_first_job(genhook_factory: Callable[..., Genhook]) -> None:
    g = genhook_factory()
    (g.tmp / "flows" / "tiny-dedup.yaml").write_text(DEDUP_FLOW, encoding="utf-8")
    g.serve(workers=1)
    first = g.trigger("tiny-dedup", {"item_id": "SKU-1"})
    assert first.status_code == 202 and "deduplicated" not in first.json()
    again = g.trigger("tiny-dedup", {"item_id": "SKU-1", "note": "the same product event"})
    assert again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["deduplicated"] is True
    other = g.trigger("tiny-dedup", {"item_id": "SKU-2"})
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]
    shown = g.http.get("/v1/workflows/tiny-dedup").json()
    assert shown["dedup"] == {"key": ["item_id"], "window_seconds": 3600.0}


@pytest.fixture
def engine_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=FAKE_API_KEY) as fake:
        yield fake


def test_a_failing_backend_opens_its_breaker_without_spending_retries(
    genhook_factory: Callable[..., Genhook], engine_api: FakeOpenAI
) -> None:
    engine_api.script(["503", "503", "503"])
    g = genhook_factory(
        GENHOOK_OPENAI_BASE_URL=engine_api.base_url,
        GENHOOK_OPENAI_API_KEY=FAKE_API_KEY,
        GENHOOK_BACKEND_BREAKER_FAILURES="3",
        GENHOOK_BACKEND_PROBE_SECONDS="3s",
        GENHOOK_RETRY_SCHEDULE="0.3s,0.3s",
    )
    g.serve(workers=2)
    ids = [
        g.trigger("remote-image", {"item_id": f"r{i}", "name": "vase"}).json()["job_id"]
        for i in range(3)
    ]

    def held() -> bool:
        return any(g.job(i)["hold_reason"] == "backend_unavailable" for i in ids)

    wait_for(held, 30, "a job held while the breaker is open")
    state = [r["state"] for r in g.rows("SELECT state FROM backend_state WHERE backend = 'openai'")]
    events = [r["event"] for r in g.rows("SELECT event FROM operator_events")]
    assert state == ["open"]
    assert "backend.unhealthy" in events
    for job_id in ids:
        g.wait_status(job_id, {"succeeded"}, timeout=60)
    # 3 failures opened the breaker; then one success each: no retry was burned meanwhile
    assert len(engine_api.generations) == 6
    events = [r["event"] for r in g.rows("SELECT event FROM operator_events")]
    state = [r["state"] for r in g.rows("SELECT state FROM backend_state WHERE backend = 'openai'")]
    assert "backend.recovered" in events
    assert state == ["closed"]


def test_a_sandbox_service_runs_on_procedural_for_free(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """A --test service's job of a workflow that names a paid engine (not even configured
    here) runs on the procedural backend, costs 0, and its payload says "test": true."""
    g = genhook_factory()
    g.serve(workers=1)
    sandbox = g.new_service("sandbox", "--test")
    job_id = sandbox.post(
        "/v1/workflows/remote-image/runs", json={"item_id": "S-1", "name": "vase"}
    ).json()["job_id"]
    view = wait_for(
        lambda: (
            (v := sandbox.get(f"/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed")
            and v
        ),
        60,
        "the sandbox job to end",
    )
    assert view["status"] == "succeeded", view["result"]["error"]
    result = view["result"]
    assert result["test"] is True
    assert result["metadata"]["credit_cost"] == 0
    assert result["metadata"]["model_id"].startswith("procedural/")
    (attempt,) = view["attempts"]  # what the attempt ran on, made and cost
    assert attempt["backend"] == "procedural"
    assert attempt["made"]["image"] == 1 and attempt["credit_cost"] == 0
    # the same workflow for a normal service needs the engine, which is not configured
    normal = g.trigger("remote-image", {"item_id": "S-2", "name": "vase"}).json()["job_id"]
    ended = g.wait_status(normal, {"succeeded", "failed"})
    assert ended["status"] == "failed" and ended["result"]["test"] is False
