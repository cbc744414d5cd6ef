"""The outbox's turns against a real HTTP receiver on 127.0.0.1 and a real store (SQLite and
PostgreSQL): a whole batch of answers that came back but whose turn had not committed when the
sender was killed is not acted on and not lost; the next outbox sends each again, same webhook-id,
and records one delivered attempt per message, the killed one's attempts left interrupted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from genhook.delivery.outbox import Outbox
from genhook.delivery.sender import DeliverySender
from genhook.store.schema import deliveries, delivery_attempts
from genhook.store.store import Store
from tests import test_outbox
from tests.test_outbox import ROOT, Receiver, deliver_until, refused_to

receiver = test_outbox.receiver  # the fixture: a real HTTP receiver on 127.0.0.1

MESSAGES = 40


@contextmanager
def writes_held(store: Store) -> Iterator[None]:
    """No other transaction can write the delivery log while the block runs: SQLite's write
    lock, or on PostgreSQL a lock on every attempt row (the first rows a turn writes)."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(immediate=True)
        with conn.begin() as transaction:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(delivery_attempts.c.id).with_for_update())
            try:
                yield
            finally:
                transaction.rollback()


def log_of(store: Store, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Each delivery's attempts, (number, state), in order."""
    found: dict[str, list[tuple[int, str]]] = {i: [] for i in ids}
    with store.engine.connect() as conn:
        for delivery_id, number, state in conn.execute(
            sa.select(
                delivery_attempts.c.delivery_id,
                delivery_attempts.c.number,
                delivery_attempts.c.state,
            ).order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.number)
        ):
            found[delivery_id].append((number, state))
    return found


def statuses(store: Store, ids: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for delivery_id in ids:
        row = store.delivery(delivery_id)
        assert row is not None
        counts[row.status] += 1
    return counts


def test_a_killed_turn_loses_no_answer_and_acts_on_none(store: Store, receiver: Receiver) -> None:
    """An outbox process leases 40 deliveries in one turn and POSTs them all (each logged
    ``sending`` before its request); the receiver answers 204 to every one while the turn that
    would record them cannot write, and the process is SIGKILLed. None is delivered yet, none is
    lost: all 40 are still sending with their one attempt. The next outbox takes them over at
    start-up and sends each again: 40 delivered, each with attempt 1 interrupted and attempt 2
    done, and the receiver saw every webhook-id exactly twice."""
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    ids = [refused_to(store, service_id, receiver.url()) for _ in range(MESSAGES)]
    receiver.hold = True
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_child", store.url, str(MESSAGES)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while len(receiver.seen) < MESSAGES:
            assert time.monotonic() < deadline, f"only {len(receiver.seen)} requests arrived"
            time.sleep(0.01)
        during = log_of(store, ids)
        with writes_held(store):
            receiver.release.set()  # every request is answered 204 now
            time.sleep(1.0)  # the answers are in; the turn that records them waits
            child.kill()
            child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert during == {i: [(1, "sending")] for i in ids}  # logged before each request went out
    assert statuses(store, ids) == {"sending": MESSAGES}  # no answer acted on
    assert log_of(store, ids) == {i: [(1, "sending")] for i in ids}

    receiver.hold = False
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: statuses(store, ids) == {"delivered": MESSAGES},
            timeout=30,
        )
    )
    assert log_of(store, ids) == {i: [(1, "interrupted"), (2, "done")] for i in ids}
    assert Counter(seen["webhook-id"] for seen in receiver.seen) == dict.fromkeys(ids, 2)


def held_by(store: Store, ids: list[str]) -> Counter[str | None]:
    """Of ``ids``, how many each lease owner holds (None: not sending)."""
    counts: Counter[str | None] = Counter()
    with store.engine.connect() as conn:
        for status, owner in conn.execute(
            sa.select(deliveries.c.status, deliveries.c.lease_owner).where(deliveries.c.id.in_(ids))
        ):
            counts[owner if status == "sending" else None] += 1
    return counts


def test_leasing_ahead_holds_each_lease_and_keeps_the_wire_to_its_concurrency(
    store: Store, receiver: Receiver
) -> None:
    """An outbox with 4 request slots and 4 leases ahead, under caps of 12, facing a receiver
    that holds every request: one claim leases 8 at once, each to this outbox with its attempt
    logged ``sending``; 4 requests are on the wire and no more arrive while they are held (the
    4 leased ahead wait in memory for a slot); the other 4 stay pending. Released, all 12 are
    delivered, each POSTed once with one done attempt."""
    store.delivery_per_endpoint = store.delivery_per_service = 12
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    ids = [refused_to(store, service_id, receiver.url()) for _ in range(12)]
    receiver.hold = True

    async def scenario() -> tuple[Counter[str | None], dict[str, list[tuple[int, str]]], int]:
        stop = asyncio.Event()
        async with DeliverySender(allow_private=True, timeout=30.0) as sender:
            outbox = Outbox(store, sender, (5.0,), poll_seconds=0.05, concurrency=4, lease_ahead=4)
            task = asyncio.create_task(outbox.run(stop))
            try:
                deadline = time.monotonic() + 10
                while len(receiver.seen) < 4:
                    assert time.monotonic() < deadline, f"{len(receiver.seen)} requests arrived"
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # time for a fifth request, if one could go out
                on_wire = len(receiver.seen)
                holders = await asyncio.to_thread(held_by, store, ids)
                log = await asyncio.to_thread(log_of, store, ids)
                holders[f"mine:{outbox.name}"] = holders.pop(outbox.name, 0)
                receiver.release.set()
                while await asyncio.to_thread(statuses, store, ids) != {"delivered": 12}:
                    assert time.monotonic() < deadline + 10, "not every delivery was delivered"
                    await asyncio.sleep(0.02)
                return holders, log, on_wire
            finally:
                stop.set()
                outbox.signal.notify()
                await task

    holders, log, on_wire = asyncio.run(scenario())
    assert on_wire == 4
    [mine] = [key for key in holders if key and key.startswith("mine:")]
    assert holders == {mine: 8, None: 4}  # 8 leased, all to this outbox; 4 left pending
    assert sorted(len(entries) for entries in log.values()) == [0] * 4 + [1] * 8
    assert all(entries in ([], [(1, "sending")]) for entries in log.values())
    assert Counter(seen["webhook-id"] for seen in receiver.seen) == dict.fromkeys(ids, 1)
    assert log_of(store, ids) == {i: [(1, "done")] for i in ids}


def test_deliveries_leased_ahead_and_never_sent_survive_a_kill(
    store: Store, receiver: Receiver
) -> None:
    """An outbox process with 4 request slots and 4 leases ahead leases 8 of 12 deliveries in
    one turn, POSTs 4 (held by the receiver) and is SIGKILLed with the other 4 leased, logged
    ``sending`` and never sent. Nothing is lost: the next outbox takes the 8 over at start-up
    and delivers all 12. The 4 that reached the receiver arrive twice (attempt 1 interrupted,
    attempt 2 done), the 4 leased ahead once on their second attempt, the 4 never leased once
    on their first."""
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    ids = [refused_to(store, service_id, receiver.url()) for _ in range(12)]
    receiver.hold = True
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_child", store.url, "12", "4", "4"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while len(receiver.seen) < 4:
            assert time.monotonic() < deadline, f"only {len(receiver.seen)} requests arrived"
            time.sleep(0.01)
        time.sleep(0.5)
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    sent = {seen["webhook-id"] for seen in receiver.seen}
    assert len(sent) == 4 and len(receiver.seen) == 4
    assert statuses(store, ids) == {"sending": 8, "pending": 4}
    leased = [i for i, entries in log_of(store, ids).items() if entries == [(1, "sending")]]
    assert len(leased) == 8 and sent <= set(leased)

    receiver.release.set()
    receiver.hold = False
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: statuses(store, ids) == {"delivered": 12},
            timeout=30,
        )
    )
    after = log_of(store, ids)
    assert {i: after[i] for i in leased} == {i: [(1, "interrupted"), (2, "done")] for i in leased}
    assert {i: after[i] for i in ids if i not in leased} == {
        i: [(1, "done")] for i in ids if i not in leased
    }
    counts = Counter(seen["webhook-id"] for seen in receiver.seen)
    assert counts == {i: 2 if i in sent else 1 for i in ids}
