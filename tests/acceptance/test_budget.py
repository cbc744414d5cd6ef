"""The daily budget on a real `genhook serve` with 4 concurrent workers: a pricing file makes each
job cost exactly one credit; a budget of K credits lets exactly K of K+3 simultaneous triggers
run, the ledger never passes it, and the rest wait until the next UTC midnight
(``--on-budget hold``) or end ``budget_exceeded`` (``--on-budget fail``). The 80% and 100%
thresholds each send one signed operator event (verified with ``standardwebhooks``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from genhook.delivery.signing import new_secret
from genhook.flow import next_utc_midnight
from tests.acceptance.harness import ROOT, Genhook, Receiver, ts, wait_for

ADMIN_KEY = "operator-key-for-budget-tests"
BUDGET = 3  # K: credits, and jobs, the day allows
EXTRA = 3

# one generate step that makes one image, no QC retries: its worst case is exactly one image
ONE_IMAGE_FLOW = """\
id: one-image
version: 1
description: Exactly one procedural image per job (one credit with the test's pricing).
external_id: item_id
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
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


@pytest.fixture
def alerts() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def one_credit_per_image(g: Genhook) -> None:
    """Give ``g`` the one-image workflow, and the shipped prices (a paid engine is never run
    unpriced) with procedural at one credit per image."""
    (g.tmp / "flows" / "one-image.yaml").write_text(ONE_IMAGE_FLOW, encoding="utf-8")
    pricing = g.tmp / "pricing.yaml"
    shipped = (ROOT / "presets" / "pricing.yaml").read_text(encoding="utf-8")
    procedural = '  "*": {per_image: 0, per_video_second: 0}'
    priced = shipped.replace(
        f"procedural:\n{procedural}", 'procedural:\n  "*": {per_image: 1.0, per_video_second: 0}', 1
    )
    assert priced != shipped
    pricing.write_text(priced, encoding="utf-8")
    g.env["GENHOOK_PRICING_FILE"] = str(pricing)


def budgeted(
    factory: Callable[..., Genhook], alerts: Receiver, on_budget: str
) -> tuple[Genhook, httpx.Client, str]:
    """A genhook priced at one credit per image, 4 workers, and a service ``spender`` with a
    budget of ``BUDGET`` credits; its client and the alert secret."""
    secret = new_secret()
    g = factory(
        GENHOOK_ALERT_URL=alerts.url,
        GENHOOK_ALERT_SECRET=secret,
        GENHOOK_ADMIN_KEY=ADMIN_KEY,
    )
    one_credit_per_image(g)
    client = g.new_service("spender", "--daily-budget", str(BUDGET), "--on-budget", on_budget)
    g.serve(workers=4)
    # the dry run prices a job at exactly one credit, worst case included
    dry = client.post("/v1/workflows/one-image/dry-run", json={"item_id": "dry"})
    assert dry.status_code == 200, dry.text
    estimate = dry.json()["credit_estimate"]
    assert estimate["max"] == pytest.approx(1.0) and estimate["expected"] == pytest.approx(1.0)
    return g, client, secret


def trigger_at_once(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post("/v1/workflows/one-image/runs", json=b), bodies))


def spent_today(g: Genhook) -> dict[str, Any]:
    [row] = g.rows(
        "SELECT l.spent, l.reserved, l.alerted_80, l.alerted_100 FROM credit_ledger l "
        "JOIN services s ON s.id = l.service_id WHERE s.name = 'spender'",
    )
    return row


def credits_today(g: Genhook) -> float:
    summary = httpx.get(
        f"{g.base}/v1/ops/summary", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    assert summary.status_code == 200, summary.text
    [svc] = [s for s in summary.json()["services"] if s["service"] == "spender"]
    assert svc["daily_budget"] == BUDGET
    return float(svc["credits_today"])


def thresholds_once(g: Genhook, alerts: Receiver, secret: str) -> None:
    """One budget.threshold event for 0.8 and one for 1.0, logged and delivered, signed."""

    def settled() -> list[dict[str, Any]] | None:
        logged = g.rows("SELECT id, details FROM operator_events WHERE event = 'budget.threshold'")
        undelivered = g.rows(
            "SELECT id FROM deliveries WHERE kind = 'alert' AND status != 'delivered'"
        )
        return logged if len(logged) >= 2 and not undelivered else None

    logged = wait_for(settled, 30, "both threshold events logged and delivered")
    assert len(logged) == 2
    # the alert receiver got each exactly once (the outbox marked them delivered first)
    calls = wait_for(lambda: len(alerts.calls()) >= 2 and alerts.calls(), 10, "the alerts")
    assert len(calls) == 2
    events = [Webhook(secret).verify(c.body, c.headers) for c in calls]
    for event in events:
        assert set(event) == {"event", "service", "timestamp", "details"}
        assert event["event"] == "budget.threshold"
        assert event["service"] == "spender"
        assert event["timestamp"].endswith("Z")
    assert sorted(e["details"]["threshold"] for e in events) == [0.8, 1.0]
    assert sorted(c.headers["webhook-id"] for c in calls) == sorted(r["id"] for r in logged)
    ledger = spent_today(g)
    assert ledger["alerted_80"] and ledger["alerted_100"]


def test_a_budget_of_k_credits_runs_exactly_k_jobs_and_holds_the_rest_until_midnight(
    genhook_factory: Callable[..., Genhook], alerts: Receiver
) -> None:
    g, client, secret = budgeted(genhook_factory, alerts, "hold")
    answers = trigger_at_once(client, [{"item_id": f"h{i}"} for i in range(BUDGET + EXTRA)])
    assert [a.status_code for a in answers] == [202] * (BUDGET + EXTRA)
    ids = [a.json()["job_id"] for a in answers]

    def views() -> list[dict[str, Any]]:
        return [client.get(f"/v1/jobs/{i}").json() for i in ids]

    def settled() -> list[dict[str, Any]] | None:
        now = views()
        done = [v for v in now if v["status"] == "succeeded"]
        held = [v for v in now if v["hold_reason"] == "budget"]
        return now if len(done) + len(held) == len(ids) else None

    final = wait_for(settled, 45, "every job to succeed or be held for the budget")
    done = [v for v in final if v["status"] == "succeeded"]
    held = [v for v in final if v["status"] != "succeeded"]
    assert len(done) == BUDGET
    assert all(v["credit_cost"] == pytest.approx(1.0) for v in done)
    midnight = next_utc_midnight(time.time())
    for view in held:
        assert view["status"] == "queued"
        assert view["hold_reason"] == "budget"
        assert view["attempts"] == []  # nothing was generated for them
        assert ts(view["eligible_at"]) == pytest.approx(midnight, abs=1.0)
    # the ledger never overshoots: everything spent, nothing left reserved
    ledger = spent_today(g)
    assert ledger["spent"] == pytest.approx(BUDGET) and ledger["reserved"] == pytest.approx(0)
    assert credits_today(g) == pytest.approx(BUDGET)
    [made] = g.rows(
        "SELECT count(*) AS n FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        "JOIN services s ON s.id = j.service_id WHERE s.name = 'spender'",
    )
    assert made["n"] == BUDGET
    thresholds_once(g, alerts, secret)
    # a later trigger is held too, and its refusal does not send the thresholds again
    late = client.post("/v1/workflows/one-image/runs", json={"item_id": "late"})
    assert late.status_code == 202
    wait_for(
        lambda: client.get(f"/v1/jobs/{late.json()['job_id']}").json()["hold_reason"] == "budget",
        30,
        "the late job to be held for the budget",
    )
    assert len([v for v in views() if v["status"] == "succeeded"]) == BUDGET
    thresholds_once(g, alerts, secret)


def test_on_budget_fail_ends_the_extra_jobs_budget_exceeded(
    genhook_factory: Callable[..., Genhook], alerts: Receiver, receiver: Receiver
) -> None:
    g, client, secret = budgeted(genhook_factory, alerts, "fail")
    bodies = [{"item_id": f"f{i}", "callback_url": receiver.url} for i in range(BUDGET + EXTRA)]
    answers = trigger_at_once(client, bodies)
    assert [a.status_code for a in answers] == [202] * (BUDGET + EXTRA)
    ids = [a.json()["job_id"] for a in answers]
    payloads = [receiver.wait_job(i, timeout=45)[0].json for i in ids]
    assert len(receiver.calls()) == BUDGET + EXTRA  # one completion each
    done = [p for p in payloads if p["event"] == "job.completed"]
    refused = [p for p in payloads if p["event"] != "job.completed"]
    assert len(done) == BUDGET
    assert len(refused) == EXTRA
    for payload in done:
        assert payload["status"] == "success"
        assert payload["metadata"]["credit_cost"] == pytest.approx(1.0)
    for payload in refused:
        assert (payload["event"], payload["status"]) == ("job.failed", "failed")
        assert payload["error"]["error_code"] == "budget_exceeded"
        assert payload["metadata"]["credit_cost"] == 0
    for job_id, payload in zip(ids, payloads, strict=True):
        view = client.get(f"/v1/jobs/{job_id}").json()
        ended = "succeeded" if payload["status"] == "success" else "failed"
        assert view["status"] == ended
        if ended == "failed":
            assert view["result"]["error"]["error_code"] == "budget_exceeded"
            assert view["credit_cost"] == 0
    ledger = spent_today(g)
    assert ledger["spent"] == pytest.approx(BUDGET) and ledger["reserved"] == pytest.approx(0)
    assert credits_today(g) == pytest.approx(BUDGET)
    thresholds_once(g, alerts, secret)
