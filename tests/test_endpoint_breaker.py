"""The endpoint breaker and delivery.exhausted: the pure policy on an injected clock, then as the
store applies it while recording attempts (real SQLite and PostgreSQL, a manual clock):
disabled once after hours of failures over enough deliveries, its deliveries wait, an operator
enables it and they are due at once; a success resets it; operator events' own deliveries never
feed it nor report themselves."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.delivery.breaker import (
    EndpointBreaker,
    EndpointEvent,
    EndpointPolicy,
    EndpointState,
    decide,
)
from genhook.errors import ErrorCode, GenhookError
from genhook.status import DeliveryOutcome
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.schema import deliveries, operator_events
from genhook.store.store import Store
from tests.test_outbox import refused_to

HOUR = 3600.0
POLICY = EndpointPolicy(disable_seconds=6 * HOUR, disable_deliveries=10)
T0 = 1_800_000_000.0


def failed(at: float, deliveries_failing: int) -> EndpointEvent:
    return EndpointEvent("failed", started_at=at, failing_deliveries=deliveries_failing)


# ---- the pure policy -------------------------------------------------------------------------


def test_first_failure_starts_the_failing_clock_at_the_attempts_start() -> None:
    d = decide(EndpointBreaker(), failed(T0, 1), T0 + 15, POLICY)
    assert d.state == EndpointBreaker(EndpointState.ENABLED, T0, 1, None)
    assert not d.disabled
    d = decide(d.state, failed(T0 + 60, 2), T0 + 75, POLICY)
    assert (d.state.failing_since, d.state.failed_attempts) == (T0, 2)


def test_disabled_only_after_both_the_time_and_the_deliveries() -> None:
    failing = EndpointBreaker(EndpointState.ENABLED, T0, 40, None)
    # many deliveries, but not yet six hours
    assert not decide(failing, failed(T0, 50), T0 + 6 * HOUR - 1, POLICY).disabled
    # six hours, but only nine deliveries (one delivery's retries say little about an endpoint)
    assert not decide(failing, failed(T0, 9), T0 + 6 * HOUR, POLICY).disabled
    d = decide(failing, failed(T0, 10), T0 + 6 * HOUR, POLICY)
    assert d.disabled
    assert d.state == EndpointBreaker(EndpointState.DISABLED, T0, 41, T0 + 6 * HOUR)


def test_disabled_once_later_failures_do_not_disable_again() -> None:
    gone = EndpointBreaker(EndpointState.DISABLED, T0, 41, T0 + 6 * HOUR)
    d = decide(gone, failed(T0 + 7 * HOUR, 30), T0 + 7 * HOUR, POLICY)
    assert not d.disabled
    assert d.state.state is EndpointState.DISABLED and d.state.disabled_at == T0 + 6 * HOUR


def test_a_success_resets_the_failing_clock() -> None:
    failing = EndpointBreaker(EndpointState.ENABLED, T0, 40, None)
    d = decide(failing, EndpointEvent("succeeded"), T0 + 5 * HOUR, POLICY)
    assert d.state == EndpointBreaker()
    # failing again starts afresh: six hours from the new first failure
    again = decide(d.state, failed(T0 + 5 * HOUR, 1), T0 + 5 * HOUR, POLICY).state
    assert not decide(again, failed(T0, 20), T0 + 7 * HOUR, POLICY).disabled
    assert decide(again, failed(T0, 20), T0 + 11 * HOUR, POLICY).disabled


def test_a_success_while_disabled_keeps_it_disabled_for_the_operator() -> None:
    gone = EndpointBreaker(EndpointState.DISABLED, T0, 41, T0 + 6 * HOUR)
    d = decide(gone, EndpointEvent("succeeded"), T0 + 7 * HOUR, POLICY)
    assert d.state.state is EndpointState.DISABLED and d.state.failing_since is None


def test_enabling_replays_only_a_disabled_endpoint_and_starts_afresh() -> None:
    gone = EndpointBreaker(EndpointState.DISABLED, T0, 41, T0 + 6 * HOUR)
    d = decide(gone, EndpointEvent("enabled"), T0 + 8 * HOUR, POLICY)
    assert d.replay and d.state == EndpointBreaker()
    assert not decide(EndpointBreaker(), EndpointEvent("enabled"), T0, POLICY).replay


# ---- as the store applies it -----------------------------------------------------------------


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = ManualClock(T0)
    store.endpoint_disable_seconds = 6 * HOUR
    store.endpoint_disable_deliveries = 3
    store.alert_url = "https://ops.example.com/alerts"
    return store


def attempt(store: Store, ok: bool, *, retry_in: float | None = 60.0, limit: int = 100) -> int:
    """Claim every due delivery and record one attempt of each callback: 200, or HTTP 500 with
    the next attempt ``retry_in`` seconds later (None: it was the last); how many callbacks
    were attempted. Operator events' deliveries are recorded delivered."""
    leased = store.claim_deliveries(limit, 30, "outbox-1")
    for d in leased:
        now = store.clock.now()
        if d.is_alert:
            store.record_delivery(
                d.id,
                number=d.attempt,
                status_code=204,
                error=None,
                duration_ms=1.0,
                outcome=DeliveryOutcome.DELIVERED,
                next_attempt_at=None,
                owner="outbox-1",
            )
            continue
        assert store.record_delivery(
            d.id,
            number=d.attempt,
            status_code=200 if ok else 500,
            error=None if ok else "HTTP 500",
            duration_ms=5.0,
            outcome=DeliveryOutcome.DELIVERED if ok else DeliveryOutcome.RETRY,
            next_attempt_at=None if ok or retry_in is None else now + retry_in,
            owner="outbox-1",
        )
    return sum(not d.is_alert for d in leased)


def advance(store: Store, seconds: float) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


def events(store: Store, kind: OperatorEvent) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(operator_events).where(operator_events.c.event == str(kind))
        ).mappings()
        return [dict(r) for r in rows]


def status_of(store: Store, delivery_id: str) -> Any:
    row = store.delivery(delivery_id)
    assert row is not None
    return row.status, row.next_attempt_at


def new_service(store: Store) -> tuple[str, str]:
    made = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")
    return made["service"], made["service_id"]


def test_an_endpoint_failing_for_hours_over_enough_deliveries_is_disabled_once(
    clocked: Store,
) -> None:
    store = clocked
    name, service_id = new_service(store)
    url = "https://hooks.example.com/genhook?token=secret"
    ids = [refused_to(store, service_id, url) for _ in range(3)]
    assert attempt(store, ok=False) == 3
    for _ in range(5):  # failing for five hours: still enabled
        advance(store, HOUR)
        assert attempt(store, ok=False) == 3
    assert events(store, OperatorEvent.ENDPOINT_DISABLED) == []
    advance(store, HOUR)
    assert attempt(store, ok=False) == 3  # the first of these disables it
    [event] = events(store, OperatorEvent.ENDPOINT_DISABLED)
    assert event["service"] == name
    assert event["details"]["endpoint"] == "https://hooks.example.com:443"
    assert event["details"]["failed_deliveries"] == 3
    assert "token" not in str(event["details"])
    [row] = [r for r in store.endpoints() if r["service"] == name]
    assert (row["state"], row["disabled_at"], row["waiting"]) == ("disabled", T0 + 6 * HOUR, 3)

    # its deliveries wait: pending, never claimed, not even once due
    advance(store, 2 * HOUR)
    assert attempt(store, ok=False) == 0
    assert all(status_of(store, i)[0] == "pending" for i in ids)
    assert store.next_delivery_at() is None
    with pytest.raises(GenhookError) as refused:
        store.replay(ids[0])
    assert refused.value.code is ErrorCode.ENDPOINT_DISABLED
    # the alert went to the outbox too (kind alert, no job, no service)
    with store.engine.connect() as conn:
        alert = (
            conn.execute(sa.select(deliveries).where(deliveries.c.id == event["id"]))
            .mappings()
            .one()
        )
    assert (alert["kind"], alert["job_id"], alert["service_id"]) == ("alert", None, None)
    assert alert["url"] == "https://ops.example.com/alerts"

    # the operator enables it: every waiting delivery is due now (the replay)
    done = store.enable_endpoint(name, "https://hooks.example.com:443")
    assert done == {
        "service": name,
        "endpoint": "https://hooks.example.com:443",
        "state": "enabled",
        "was_disabled": True,
        "replayed": 3,
    }
    assert all(status_of(store, i) == ("pending", store.clock.now()) for i in ids)
    assert attempt(store, ok=True) == 3
    assert all(status_of(store, i)[0] == "delivered" for i in ids)
    assert len(events(store, OperatorEvent.ENDPOINT_DISABLED)) == 1
    # enabling again is harmless
    again = store.enable_endpoint(name, "https://hooks.example.com:443")
    assert again is not None and (again["was_disabled"], again["replayed"]) == (False, 0)
    assert store.enable_endpoint("no-such-service", "https://hooks.example.com:443") is None


def test_a_success_resets_the_endpoint_and_other_endpoints_are_untouched(clocked: Store) -> None:
    store = clocked
    name, service_id = new_service(store)
    for _ in range(3):
        refused_to(store, service_id, "https://a.example.com/hook")
    assert attempt(store, ok=False) == 3
    advance(store, 5 * HOUR)
    assert attempt(store, ok=False, limit=2) == 2
    assert attempt(store, ok=True) == 1  # one answer: not failing any more
    [row] = [r for r in store.endpoints() if r["service"] == name]
    assert (row["state"], row["failing_since"], row["failed_attempts"]) == ("enabled", None, 0)
    advance(store, 2 * HOUR)  # seven hours since the first failure, but it answered meanwhile
    assert attempt(store, ok=False) == 2
    assert events(store, OperatorEvent.ENDPOINT_DISABLED) == []
    [row] = [r for r in store.endpoints() if r["service"] == name]
    assert row["failing_since"] == T0 + 7 * HOUR


def test_a_callback_that_used_up_its_schedule_reports_delivery_exhausted(clocked: Store) -> None:
    store = clocked
    name, service_id = new_service(store)
    delivery_id = refused_to(store, service_id, "https://c.example.com/hook")
    assert attempt(store, ok=False, retry_in=5.0) == 1
    assert events(store, OperatorEvent.DELIVERY_EXHAUSTED) == []
    advance(store, 5.0)
    assert attempt(store, ok=False, retry_in=None) == 1  # the schedule's last attempt
    assert status_of(store, delivery_id)[0] == "failed"
    [event] = events(store, OperatorEvent.DELIVERY_EXHAUSTED)
    assert event["service"] == name
    assert event["details"]["delivery_id"] == delivery_id
    assert event["details"]["attempts"] == 2
    assert event["details"]["last_status_code"] == 500
    assert event["details"]["endpoint"] == "https://c.example.com:443"


def test_a_final_410_or_blocked_address_is_not_exhaustion(clocked: Store) -> None:
    store = clocked
    _, service_id = new_service(store)
    for outcome in (DeliveryOutcome.GONE, DeliveryOutcome.BLOCKED):
        refused_to(store, service_id, "https://d.example.com/hook")
        [d] = store.claim_deliveries(10, 30, "o")
        store.record_delivery(
            d.id,
            number=1,
            status_code=410 if outcome == "gone" else None,
            error=str(outcome),
            duration_ms=1.0,
            outcome=outcome,
            next_attempt_at=None,
            owner="o",
        )
    assert events(store, OperatorEvent.DELIVERY_EXHAUSTED) == []


def test_an_alerts_own_delivery_never_reports_itself_nor_feeds_a_breaker(clocked: Store) -> None:
    store = clocked
    with store.engine.begin() as conn:
        event_id = record_event(
            conn,
            event=OperatorEvent.SERVICE_PAUSED,
            service="shop",
            details={},
            now=store.clock.now(),
            alert_url="https://ops.example.com/alerts",
        )
    for _ in range(12):  # failing for far longer than the breaker's hours, to the last attempt
        [d] = store.claim_deliveries(10, 30, "o")
        assert (d.id, d.kind, d.webhook_secret, d.service_id) == (event_id, "alert", None, None)
        store.record_delivery(
            d.id,
            number=d.attempt,
            status_code=500,
            error="HTTP 500",
            duration_ms=1.0,
            outcome=DeliveryOutcome.RETRY,
            next_attempt_at=store.clock.now() + HOUR if d.attempt < 12 else None,
            owner="o",
        )
        advance(store, HOUR)
    assert status_of(store, event_id)[0] == "failed"
    assert events(store, OperatorEvent.DELIVERY_EXHAUSTED) == []
    assert events(store, OperatorEvent.ENDPOINT_DISABLED) == []
    assert store.endpoints() == []
