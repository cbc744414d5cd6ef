"""Operator events on a real `genhook serve`: POSTed to GENHOOK_ALERT_URL, signed with
GENHOOK_ALERT_SECRET (verified with the `standardwebhooks` library), retried, logged; a callback
that used up its schedule sends `delivery.exhausted`, an alert that used up its own sends
nothing about itself; an endpoint failing for long is disabled (`endpoint.disabled`), its
deliveries wait, and the operator enables it and they are delivered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genhook.delivery.signing import new_secret
from tests.acceptance.harness import Genhook, Receiver, verify, wait_for

ADMIN_KEY = "operator-key-for-tests"


@pytest.fixture
def alerts() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def database(g: Genhook) -> sa.Engine:
    return g.engine()  # SQLite or PostgreSQL, as the install's db_kind


def rows(engine: sa.Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]


def alerting(factory: Callable[..., Genhook], alerts: Receiver, **env: str) -> tuple[Genhook, str]:
    secret = new_secret()
    g = factory(
        GENHOOK_ALERT_URL=alerts.url,
        GENHOOK_ALERT_SECRET=secret,
        GENHOOK_ADMIN_KEY=ADMIN_KEY,
        **env,
    )
    g.serve(workers=1)
    return g, secret


def test_an_exhausted_callback_sends_a_signed_retried_operator_event(
    genhook_factory: Callable[..., Genhook], receiver: Receiver, alerts: Receiver
) -> None:
    receiver.statuses = [500]  # the callback never gets through
    alerts.statuses = [503, 200]  # the alert gets through on its second attempt
    g, secret = alerting(genhook_factory, alerts)
    answer = g.trigger("tiny", {"callback_url": receiver.url})
    assert answer.status_code == 422
    job_id = answer.json()["job_id"]
    first, second = wait_for(lambda: len(alerts.calls()) >= 2 and alerts.calls(), 30, "alerts")
    assert len(receiver.for_job(job_id)) == 5  # the schedule's 5 attempts, then the event
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    event = Webhook(secret).verify(second.body, second.headers)
    assert event["event"] == "delivery.exhausted"
    assert event["service"] == "shop"
    assert event["timestamp"].endswith("Z")
    details = event["details"]
    assert details["job_id"] == job_id
    assert details["attempts"] == 5
    assert details["last_status_code"] == 500
    assert details["endpoint"] == f"http://127.0.0.1:{receiver.port}"
    with pytest.raises(WebhookVerificationError):  # not signed with the service's secret
        verify(g.secret, second)
    # logged as well
    engine = database(g)
    try:
        [logged] = rows(engine, "SELECT id, event, service FROM operator_events")
        assert (logged["id"], logged["event"], logged["service"]) == (
            first.headers["webhook-id"],
            "delivery.exhausted",
            "shop",
        )
    finally:
        engine.dispose()


def test_an_alert_that_used_up_its_schedule_reports_nothing_about_itself(
    genhook_factory: Callable[..., Genhook], receiver: Receiver, alerts: Receiver
) -> None:
    receiver.statuses = [500]
    alerts.statuses = [500]  # the operator's receiver is down too
    g, secret = alerting(genhook_factory, alerts)
    assert g.trigger("tiny", {"callback_url": receiver.url}).status_code == 422
    engine = database(g)
    try:
        [alert] = wait_for(
            lambda: rows(engine, "SELECT id FROM deliveries WHERE kind = 'alert'"), 30, "an alert"
        )
        wait_for(
            lambda: rows(
                engine, f"SELECT 1 FROM deliveries WHERE id = '{alert['id']}' AND status = 'failed'"
            ),
            30,
            "the alert's delivery to fail for good",
        )
        # the transaction that failed it would have logged and outboxed any event about it
        assert [r["event"] for r in rows(engine, "SELECT event FROM operator_events")] == [
            "delivery.exhausted"
        ]
        assert len(rows(engine, "SELECT id FROM deliveries WHERE kind = 'alert'")) == 1
        calls = alerts.calls()
        assert len(calls) == 5 and {c.headers["webhook-id"] for c in calls} == {alert["id"]}
        for call in calls:
            assert Webhook(secret).verify(call.body, call.headers)["event"] == "delivery.exhausted"
    finally:
        engine.dispose()


def test_an_endpoint_failing_for_long_is_disabled_waits_and_is_replayed_when_enabled(
    genhook_factory: Callable[..., Genhook], receiver: Receiver, alerts: Receiver
) -> None:
    receiver.statuses = [500]
    g, secret = alerting(
        genhook_factory,
        alerts,
        GENHOOK_ENDPOINT_DISABLE_AFTER="1s",
        GENHOOK_ENDPOINT_DISABLE_DELIVERIES="3",
        GENHOOK_DELIVERY_SCHEDULE=",".join(["0.2s"] * 12 + ["1h"]),
    )
    operator = httpx.Client(
        base_url=g.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    endpoint = f"http://127.0.0.1:{receiver.port}"
    try:
        jobs = [g.trigger("tiny", {"callback_url": receiver.url}).json()["job_id"] for _ in "abc"]
        [call] = wait_for(lambda: alerts.calls(), 30, "the endpoint.disabled alert")
        event = Webhook(secret).verify(call.body, call.headers)
        assert (event["event"], event["service"]) == ("endpoint.disabled", "shop")
        assert event["details"]["endpoint"] == endpoint
        assert event["details"]["failed_deliveries"] >= 3

        def listed() -> Any:
            [row] = operator.get("/v1/ops/endpoints").json()["endpoints"]
            return row["waiting"] == 3 and row

        row = wait_for(listed, 30, "its three deliveries to wait")
        assert (row["service"], row["endpoint"], row["state"]) == ("shop", endpoint, "disabled")
        assert operator.get("/v1/ops/endpoints?state=enabled").json() == {"endpoints": []}
        # they wait: no attempt while disabled; a service's replay is refused with the reason
        tried = len(receiver.calls())
        [delivery] = g.http.get(f"/v1/deliveries?job_id={jobs[0]}").json()["deliveries"]
        refused = g.http.post(f"/v1/deliveries/{delivery['delivery_id']}/replay")
        assert refused.status_code == 409
        assert refused.json()["error_code"] == "endpoint_disabled"
        # the operator key is needed to enable it
        assert httpx.post(f"{g.base}/v1/ops/endpoints/enable", json={}).status_code == 401
        assert g.http.post("/v1/ops/endpoints/enable", json={}).status_code == 401
        missing = operator.post(
            "/v1/ops/endpoints/enable", json={"service": "nobody", "endpoint": endpoint}
        )
        assert missing.status_code == 404 and missing.json()["error_code"] == "service_not_found"
        assert len(receiver.calls()) == tried

        receiver.statuses = [200]  # the receiver is fixed; the operator enables the endpoint
        enabled = operator.post(
            "/v1/ops/endpoints/enable", json={"service": "shop", "endpoint": endpoint + "/"}
        )
        assert enabled.status_code == 200, enabled.text
        assert enabled.json() == {
            "service": "shop",
            "endpoint": endpoint,
            "state": "enabled",
            "was_disabled": True,
            "replayed": 3,
        }
        for job_id in jobs:
            delivered = receiver.wait_job(job_id, timeout=10, count=1)
            assert verify(g.secret, delivered[-1])["job_id"] == job_id
        wait_for(
            lambda: all(
                g.http.get(f"/v1/deliveries?job_id={j}").json()["deliveries"][0]["status"]
                == "delivered"
                for j in jobs
            ),
            10,
            "every waiting delivery to be delivered",
        )
        assert len(alerts.calls()) == 1  # disabled once
    finally:
        operator.close()


def test_a_path_is_not_needed_and_a_bad_endpoint_is_refused(
    genhook_factory: Callable[..., Genhook], alerts: Receiver
) -> None:
    g, _ = alerting(genhook_factory, alerts)
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bad = httpx.post(
        f"{g.base}/v1/ops/endpoints/enable",
        json={"service": "shop", "endpoint": "ftp://x"},
        headers=auth,
    )
    assert bad.status_code == 422
    assert (bad.json()["error_code"], bad.json()["field"]) == ("invalid_value", "endpoint")
    fine = httpx.post(
        f"{g.base}/v1/ops/endpoints/enable",
        json={"service": "shop", "endpoint": "https://Hooks.Example.com"},
        headers=auth,
    )
    assert fine.json()["endpoint"] == "https://hooks.example.com:443"
    assert fine.json()["was_disabled"] is False
