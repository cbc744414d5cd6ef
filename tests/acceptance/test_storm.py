"""The trigger-storm breaker on a real `genhook serve` and `genhook worker`: more than three times
a service's hourly limit within an hour pauses it (every trigger still 202, held ``paused``,
nothing of it generated while another service's jobs run), ``service.paused`` goes to the alert
URL signed with GENHOOK_ALERT_SECRET; an operator resumes it through the API (``service.resumed``)
or ``genhook ops resume``, and its jobs then start as the rate window allows."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from genhook.delivery.signing import new_secret
from tests.acceptance.harness import GENHOOK, Genhook, Receiver, ts, wait_for

ADMIN_KEY = "operator-key-for-storm-tests"
HOUR = 3600.0


@pytest.fixture
def alerts() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def operator(g: Genhook) -> httpx.Client:
    client = httpx.Client(
        base_url=g.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    g.clients.append(client)  # closed with it
    return client


def summary_of(ops: httpx.Client, name: str) -> dict[str, Any]:
    answer = ops.get("/v1/ops/summary")
    assert answer.status_code == 200, answer.text
    [svc] = [s for s in answer.json()["services"] if s["service"] == name]
    return dict(svc)


def events_of(alerts: Receiver, secret: str, event: str, service: str) -> list[dict[str, Any]]:
    """The alerts received for ``event`` of ``service``, each signature verified."""
    found = []
    for call in alerts.calls():
        body = Webhook(secret).verify(call.body, call.headers)
        if body["event"] == event and body["service"] == service:
            assert set(body) == {"event", "service", "timestamp", "details"}
            assert body["timestamp"].endswith("Z")
            found.append(body)
    return found


def claimed(g: Genhook, service: str) -> int:
    [row] = g.rows(
        "SELECT count(*) AS n FROM jobs j JOIN services s ON s.id = j.service_id "
        "WHERE s.name = :name AND (j.first_claimed_at IS NOT NULL OR j.attempts > 0)",
        name=service,
    )
    return int(row["n"])


def succeeded(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (v := client.get(f"/v1/jobs/{job_id}").json())["status"] == "succeeded" and v,
            30,
            f"{job_id} to succeed",
        )
    )


def storm(client: httpx.Client, count: int) -> list[str]:
    answers = [
        client.post("/v1/workflows/tiny/runs", json={"item_id": f"s{i}"}) for i in range(count)
    ]
    assert [a.status_code for a in answers] == [202] * count
    return [a.json()["job_id"] for a in answers]


def test_a_trigger_storm_pauses_the_service_until_an_operator_resumes_it(
    genhook_factory: Callable[..., Genhook], alerts: Receiver
) -> None:
    secret = new_secret()
    g = genhook_factory(
        GENHOOK_ALERT_URL=alerts.url, GENHOOK_ALERT_SECRET=secret, GENHOOK_ADMIN_KEY=ADMIN_KEY
    )
    g.serve(workers=0)  # the storm arrives before any worker runs: nothing may start early
    stormy = g.new_service("stormy", "--rate-limit", "2/h")
    ops = operator(g)
    ids = storm(stormy, 7)  # 7 > 3 x 2 in the last hour
    assert summary_of(ops, "stormy")["paused"] is True
    assert summary_of(ops, "shop")["paused"] is False
    wait_for(lambda: events_of(alerts, secret, "service.paused", "stormy"), 30, "service.paused")
    [paused] = events_of(alerts, secret, "service.paused", "stormy")
    assert paused["details"]["rate_limit"] == "2/h"
    views = [stormy.get(f"/v1/jobs/{i}").json() for i in ids]
    assert [v["hold_reason"] for v in views] == ["paused"] * 7
    assert all(v["status"] == "queued" and v["attempts"] == [] for v in views)
    # a worker runs meanwhile: another service's job goes through, the paused one's do not
    g.worker()
    other = g.trigger("tiny", {"item_id": "other"}).json()["job_id"]
    g.wait_status(other, {"succeeded"}, timeout=30)
    assert claimed(g, "stormy") == 0
    assert [stormy.get(f"/v1/jobs/{i}").json()["hold_reason"] for i in ids] == ["paused"] * 7

    # the operator resumes it through the API
    assert httpx.post(f"{g.base}/v1/ops/services/stormy/resume", timeout=30).status_code == 401
    answer = ops.post("/v1/ops/services/stormy/resume")
    assert answer.status_code == 200, answer.text
    assert answer.json()["resumed"] is True
    assert summary_of(ops, "stormy")["paused"] is False
    wait_for(lambda: events_of(alerts, secret, "service.resumed", "stormy"), 30, "resumed")
    # the rate limit still holds: the two the window allows run, the rest wait their turn
    allowed = [succeeded(stormy, i) for i in ids[:2]]
    starts = sorted(ts(v["attempts"][0]["started_at"]) for v in allowed)
    held = [stormy.get(f"/v1/jobs/{i}").json() for i in ids[2:]]
    assert all(v["status"] == "queued" and v["attempts"] == [] for v in held), held
    assert [v["hold_reason"] for v in held] == ["rate_limit"] * 5
    # eligible_at is when the window lets each start: two an hour after the two starts, two
    # an hour later, one an hour after that
    eligible = sorted(ts(v["eligible_at"]) for v in held)
    expected = [starts[0] + HOUR, starts[1] + HOUR, starts[0] + 2 * HOUR, starts[1] + 2 * HOUR]
    expected.append(starts[0] + 3 * HOUR)
    assert eligible == pytest.approx(expected, abs=1.0)
    assert claimed(g, "stormy") == 2
    [resumed] = events_of(alerts, secret, "service.resumed", "stormy")
    # the trigger that tripped the breaker was held "paused"; the six before it were already
    # waiting (two due, four for their rate slots) when the pause came
    assert resumed["details"]["released"] == 1
    assert len(events_of(alerts, secret, "service.paused", "stormy")) == 1


def test_genhook_ops_resume_resumes_a_paused_service(
    genhook_factory: Callable[..., Genhook], alerts: Receiver
) -> None:
    secret = new_secret()
    g = genhook_factory(
        GENHOOK_ALERT_URL=alerts.url, GENHOOK_ALERT_SECRET=secret, GENHOOK_ADMIN_KEY=ADMIN_KEY
    )
    g.serve(workers=1)
    ops = operator(g)
    burst = g.new_service("burst", "--rate-limit", "1/h")
    ids = storm(burst, 4)  # 4 > 3 x 1
    assert summary_of(ops, "burst")["paused"] is True
    wait_for(lambda: events_of(alerts, secret, "service.paused", "burst"), 30, "service.paused")
    out = g.cli("ops", "resume", "burst")
    result = json.loads(out.stdout)
    assert result["resumed"] is True
    assert summary_of(ops, "burst")["paused"] is False
    wait_for(lambda: events_of(alerts, secret, "service.resumed", "burst"), 30, "resumed")
    [paused_row] = g.rows("SELECT paused_at FROM services WHERE name = 'burst'")
    assert paused_row["paused_at"] is None
    # the one job the window allows runs; its first one may have run before the storm
    done = wait_for(
        lambda: [i for i in ids if burst.get(f"/v1/jobs/{i}").json()["status"] == "succeeded"],
        30,
        "a job of the resumed service to run",
    )
    assert len(done) == 1
    waiting = [burst.get(f"/v1/jobs/{i}").json() for i in ids if i not in done]
    assert [v["hold_reason"] for v in waiting] == ["rate_limit"] * 3
    # an unknown service is an error (exit 2, its code on the one line)
    missing = subprocess.run(
        [GENHOOK, "ops", "resume", "nope"], env=g.env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2
    assert missing.stderr == "error: service_not_found: no service named 'nope'\n"
    assert len(events_of(alerts, secret, "service.resumed", "burst")) == 1
