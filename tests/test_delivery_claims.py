"""Batched delivery claims and records on real SQLite and PostgreSQL: the claim's seek-based pick
takes exactly what its definition says on random queues (services in turns under both in-flight
caps, disabled endpoints skipped, abandoned attempts taken back); a turn's records apply in
order within one transaction (the endpoint breaker included); a delivery written before 0005
without its endpoint is still claimed after the upgrade."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from genhook.clock import ManualClock
from genhook.status import DeliveryOutcome, DeliveryStatus
from genhook.store.deliveries import DeliveryResult
from genhook.store.migrate import alembic_config
from genhook.store.ops_events import endpoint_of
from genhook.store.schema import deliveries, delivery_attempts, endpoints, services
from genhook.store.store import Store
from tests.databases import database_url
from tests.test_outbox import refused_to

T0 = 1_800_000_000.0
HOSTS = ["https://a.example.com/h", "https://b.example.com/h", "http://c.example.com/h"]


@dataclass(frozen=True)
class Row:
    id: str
    service_id: str | None
    url: str
    status: str
    next_attempt_at: float | None
    lease_expires: float | None

    @property
    def endpoint(self) -> str:
        return endpoint_of(self.url)


def definition(
    rows: list[Row],
    disabled: set[tuple[str, str]],
    *,
    now: float,
    limit: int,
    per_endpoint: int,
    per_service: int,
) -> list[str]:
    """What a claim takes, straight from its definition (DeliveryStore._pick's docstring)."""
    live = [r for r in rows if r.status == "sending" and (r.lease_expires or 0) > now]
    live_endpoint = Counter(r.endpoint for r in live)
    live_service = Counter(r.service_id or "" for r in live)

    def usable(r: Row) -> bool:
        return r.service_id is None or (r.service_id, r.endpoint) not in disabled

    waiting = []
    for r in rows:
        if r.status == "pending" and r.next_attempt_at is not None and r.next_attempt_at <= now:
            waiting.append((r.next_attempt_at, r))
        elif r.status == "sending" and r.lease_expires is not None and r.lease_expires <= now:
            due = r.next_attempt_at if r.next_attempt_at is not None else r.lease_expires
            waiting.append((due, r))
    waiting = sorted(((due, r.id, r) for due, r in waiting if usable(r)), key=lambda w: w[:2])
    nth: Counter[str] = Counter()
    fits = []
    for due, rid, r in waiting:
        nth[r.endpoint] += 1
        if nth[r.endpoint] + live_endpoint[r.endpoint] <= per_endpoint:
            fits.append((due, rid, r))
    turn: Counter[str] = Counter()
    ranked = []
    for due, rid, r in fits:
        service = r.service_id or ""
        turn[service] += 1
        if turn[service] + live_service[service] <= per_service:
            ranked.append((turn[service], due, rid))
    return [rid for _, _, rid in sorted(ranked)[:limit]]


def random_queue(store: Store, rng: random.Random, services: list[str]) -> list[Row]:
    """Up to 60 deliveries over a few services (and operator events), shared endpoints, ties
    in due time, some due later, some in flight under a live lease, some abandoned."""
    rows = []
    for i in range(rng.randint(0, 60)):
        service_id = rng.choice([*services, None])
        url = rng.choice(HOSTS)
        kind = rng.random()
        if kind < 0.6:
            status, due, lease = "pending", T0 + rng.choice([-30, -30, -20, -10, -5, 0, 5]), None
        elif kind < 0.8:
            status, due, lease = "sending", None, T0 + rng.choice([-5, 10, 20])
        elif kind < 0.9:
            status, due, lease = "sending", T0 - 40, T0 - 1  # a retry whose sender died
        else:
            status, due, lease = "delivered", None, None
        rows.append(Row(f"msg_{i:03d}_{rng.randrange(1000)}", service_id, url, status, due, lease))
    with store.engine.begin() as conn:
        conn.execute(delivery_attempts.delete())
        conn.execute(deliveries.delete())
        if rows:
            conn.execute(
                deliveries.insert(),
                [
                    {
                        "id": r.id,
                        "job_id": None,
                        "service_id": r.service_id,
                        "kind": "callback" if r.service_id else "alert",
                        "endpoint": r.endpoint,
                        "url": r.url,
                        "body": b"{}",
                        "status": r.status,
                        "attempts": 1 if r.status == "sending" else 0,
                        "next_attempt_at": r.next_attempt_at,
                        "lease_expires": r.lease_expires,
                        "lease_owner": "someone" if r.status == "sending" else None,
                        "created_at": T0 - 60,
                    }
                    for r in rows
                ],
            )
    return rows


def test_the_claim_takes_exactly_what_its_definition_says(store: Store) -> None:
    """80 random queues: each claim leases the definition's deliveries, in its order."""
    store.clock = ManualClock(T0)
    services = [
        store.create_service(f"s{i}-{uuid.uuid4().hex[:6]}")["service_id"] for i in range(3)
    ]
    rng = random.Random(8)
    for _ in range(80):
        rows = random_queue(store, rng, services)
        disabled = {(s, endpoint_of(h)) for s in services for h in HOSTS if rng.random() < 0.15}
        with store.engine.begin() as conn:
            conn.execute(endpoints.delete())
            for service_id, endpoint in disabled:
                conn.execute(
                    endpoints.insert().values(
                        service_id=service_id, endpoint=endpoint, state="disabled", updated_at=T0
                    )
                )
        store.delivery_per_endpoint = rng.randint(1, 6)
        store.delivery_per_service = rng.randint(1, 8)
        limit = rng.randint(1, 20)
        want = definition(
            rows,
            disabled,
            now=T0,
            limit=limit,
            per_endpoint=store.delivery_per_endpoint,
            per_service=store.delivery_per_service,
        )
        got = [d.id for d in store.claim_deliveries(limit, 30, "outbox-1")]
        assert got == want


def answer(delivery_id: str, number: int, ok: bool, next_at: float | None = None) -> DeliveryResult:
    if ok:
        return DeliveryResult(delivery_id, number, DeliveryOutcome.DELIVERED, 204, None, 3.0, None)
    return DeliveryResult(delivery_id, number, DeliveryOutcome.RETRY, 500, "HTTP 500", 3.0, next_at)


def breaker_of(store: Store, service_id: str, url: str) -> tuple[float | None, int] | None:
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(endpoints.c.failing_since, endpoints.c.failed_attempts).where(
                endpoints.c.service_id == service_id, endpoints.c.endpoint == endpoint_of(url)
            )
        ).first()
    return None if row is None else (row[0], int(row[1]))


def test_a_turns_records_feed_the_breaker_in_their_order(store: Store) -> None:
    """One transaction of answers at one endpoint: a failure then a success leaves it not
    failing; a success then two failures leaves it failing since the first of them, two
    attempts counted: as if each had been recorded alone, in that order."""
    clock = ManualClock(T0)
    store.clock = clock
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    url = "https://hooks.example.com/in"
    for _ in range(5):
        refused_to(store, service_id, url)
    leased = store.claim_deliveries(10, 30, "o")
    started = {d.id: T0 for d in leased}
    assert len(leased) == 5
    moved = store.record_deliveries(
        [answer(leased[0].id, 1, False, T0 + 60), answer(leased[1].id, 1, True)], "o"
    )
    assert moved == [True, True]
    assert breaker_of(store, service_id, url) == (None, 0)
    clock.advance(5)
    moved = store.record_deliveries(
        [
            answer(leased[2].id, 1, True),
            answer(leased[3].id, 1, False, T0 + 60),
            answer(leased[4].id, 1, False, T0 + 60),
        ],
        "o",
    )
    assert moved == [True, True, True]
    assert breaker_of(store, service_id, url) == (started[leased[3].id], 2)
    assert [status_of(store, d.id) for d in leased] == [
        DeliveryStatus.PENDING,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.PENDING,
        DeliveryStatus.PENDING,
    ]


def status_of(store: Store, delivery_id: str) -> str:
    found = store.delivery(delivery_id)
    assert found is not None
    return found.status


def test_record_and_claim_records_first_then_claims_into_the_room_left(store: Store) -> None:
    """With the endpoint at its cap, one transaction records an answer and leases the next
    delivery into the slot it freed; an answer for a delivery another outbox took over is
    logged but moves nothing."""
    store.clock = ManualClock(T0)
    store.delivery_per_endpoint = 2
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    ids = [refused_to(store, service_id, "https://hooks.example.com/in") for _ in range(4)]
    first = store.claim_deliveries(10, 30, "o")
    assert [d.id for d in first] == ids[:2]
    assert store.claim_deliveries(10, 30, "o") == []
    moved, claimed = store.record_and_claim(
        [answer(ids[0], 1, True), answer(ids[1], 1, True, None)], 10, 30, "other"
    )
    assert moved == [False, False]  # held by "o", not by "other"
    assert claimed == []
    moved, claimed = store.record_and_claim([answer(ids[0], 1, True)], 10, 30, "o")
    assert moved == [True]
    assert [d.id for d in claimed] == [ids[2]]
    assert attempt_states(store, ids[0]) == ["done"]
    assert attempt_states(store, ids[2]) == ["sending"]
    assert attempt_states(store, ids[3]) == []


def attempt_states(store: Store, delivery_id: str) -> list[str]:
    found = store.delivery(delivery_id)
    assert found is not None and found.job_id is not None
    [row] = store.deliveries(found.job_id)
    return [a.state for a in row.attempt_log]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_pending_delivery_without_an_endpoint_is_claimed_after_the_upgrade(
    kind: str, tmp_path: Path
) -> None:
    """A callback outboxed before 0005 has no endpoint; 0006 fills it in from its URL, so the
    claim (which finds pending deliveries by service and endpoint) still takes it."""
    with database_url(kind, tmp_path) as url:
        store = Store(url)
        try:
            with store.engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0005")
            service_id = "svc_old"
            with store.engine.begin() as conn:
                # the columns a service had at 0005 (later migrations add more)
                conn.execute(
                    services.insert().values(
                        id=service_id,
                        name="old",
                        api_key_hash="0" * 64,
                        api_key_prefix="gh_old",
                        webhook_secret="whsec_" + "A" * 43,
                        created_at=time.time() - 1,
                    )
                )
                conn.execute(
                    deliveries.insert().values(
                        id="msg_old",
                        job_id=None,
                        service_id=service_id,
                        kind="callback",
                        endpoint=None,
                        url="https://Old.Example.com/hook?x=1",
                        body=b"{}",
                        status="pending",
                        attempts=0,
                        next_attempt_at=time.time() - 1,
                        created_at=time.time() - 1,
                    )
                )
            store.migrate()
            [leased] = store.claim_deliveries(10, 30, "o")
            assert (leased.id, leased.endpoint) == ("msg_old", "https://old.example.com:443")
        finally:
            store.close()
