"""Claiming several jobs in one transaction (``Store.claim_many``, what a worker with free slots
calls), on SQLite and PostgreSQL: the jobs are those, and in the order, that as many single
claims would take; the limits hold within a batch; a batch stops before a second budgeted
reservation; a worker with N slots claims them in fewer transactions than jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.store.admit import Admission
from genhook.store.schema import attempts
from genhook.store.store import Store
from tests.conftest import new_service
from tests.databases import database_url


def _submit(store: Store, service_id: str, n: int = 1, **admission: Any) -> list[str]:
    return [
        str(
            store.submit(
                service_id=service_id,
                workflow_id="product-image",
                workflow_version=1,
                trigger={"product_name": f"x{i}"},
                external_id=None,
                callback_url=None,
                admission=Admission(**admission),
            )[0].id
        )
        for i in range(n)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two migrated stores of one kind on manual clocks at the same time."""
    with (
        database_url(request.param, tmp_path / "one") as one,
        database_url(request.param, tmp_path / "two") as two,
    ):
        stores = (Store(one), Store(two))
        try:
            for store in stores:
                store.migrate()
                store.clock = ManualClock()
            yield stores
        finally:
            for store in stores:
                store.close()


def _three_queues(store: Store) -> None:
    """Two services' backlogs and a third's single high-priority job."""
    a, b, c = (new_service(store, name) for name in ("a", "b", "c"))
    _submit(store, a, 4)
    _submit(store, b, 3)
    _submit(store, c, 1, priority=2)


def _named(store: Store, job: Any) -> tuple[str, str]:
    with store._read() as conn:
        name = conn.execute(
            sa.text("SELECT name FROM services WHERE id = :id"), {"id": job.service_id}
        ).scalar_one()
    return str(name), str(job.input["product_name"])


def test_a_batch_takes_the_jobs_single_claims_would_in_their_order(
    twins: tuple[Store, Store],
) -> None:
    """Three services taking turns: a batch of 6 then one of 10 take what 8 single claims
    take, in the same order (each job moves its service's turn on before the next pick)."""
    batched, single = twins
    for store in twins:
        _three_queues(store)
    batch = batched.claim_many("w", 900, 6)
    rest = batched.claim_many("w", 900, 10)
    one_by_one = [single.claim("w", 900) for _ in range(9)]
    assert (len(batch), len(rest), one_by_one[-1]) == (6, 2, None)
    assert [_named(batched, j) for j in batch + rest] == [
        _named(single, j) for j in one_by_one[:-1]
    ]
    assert batched.claim_many("w", 900, 4) == []


def test_a_batch_keeps_a_backend_cap_and_stops_before_a_second_budget(flow: Store) -> None:
    """A backend capped at 2 starts 2 of a batch of 5; a budgeted service's job is taken as
    the batch's first, and ends a batch that meets it later (the next claim starts with it)."""
    flow.backend_concurrency = {"capped": 2}
    capped = new_service(flow, "capped")
    _submit(flow, capped, 5, backend="capped")
    assert len(flow.claim_many("w", 900, 5)) == 2
    free, budgeted = new_service(flow, "free"), new_service(flow, "budget", daily_budget=10.0)
    _submit(flow, free, 2)
    paid = _submit(flow, budgeted, 2, estimate=1.0)
    batches = [[job.id for job in flow.claim_many("w", 900, 5)] for _ in range(4)]
    assert all(i not in paid for batch in batches for i in batch[1:]), batches
    assert sorted(i for batch in batches for i in batch if i in paid) == sorted(paid)
    with flow._read() as conn:
        reserved = conn.execute(sa.text("SELECT sum(reserved) FROM credit_ledger")).scalar()
    assert reserved == 2.0


def test_one_transaction_claims_a_workers_free_slots(flow: Store) -> None:
    """12 jobs, 4 free slots: 3 claim transactions (one attempt's start time each)."""
    svc = new_service(flow, "many")
    _submit(flow, svc, 12)
    for _ in range(3):
        assert len(flow.claim_many("w", 900, 4)) == 4
        flow.clock.advance(1.0)  # type: ignore[attr-defined]
    with flow._read() as conn:
        starts = conn.execute(sa.select(sa.func.count(sa.distinct(attempts.c.started_at)))).scalar()
    assert starts == 3
