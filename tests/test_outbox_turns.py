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

from genhook.store.schema import delivery_attempts
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
