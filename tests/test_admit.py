"""The accept path's batch: triggers admitted together behave as if admitted one at a time.

On real SQLite and PostgreSQL stores with an injected clock: a batch is written by the same
code the group committer runs (``Store._write_batch`` inside one write transaction), so which
triggers share a batch is chosen by the test, not by timing. Also the group committer itself
(many concurrent ``submit_async`` calls, a failure that is one item's alone) and the trigger
lane against the FastAPI route it stands in front of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import HoldReason
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from genhook.store.admit import Admission, Submission
from genhook.store.schema import events, job_rollups, jobs, operator_events, services
from genhook.store.store import Store
from tests.conftest import new_service


def _item(store: Store, service_id: str, n: int = 0, **fields: Any) -> Submission:
    admission = fields.pop("admission", Admission())
    return store.submission(
        service_id=service_id,
        workflow_id="product-image",
        workflow_version=1,
        trigger={"product_name": f"shirt {n}"},
        external_id=f"SKU-{n}",
        callback_url=None,
        admission=admission,
        **fields,
    )


def _batch(store: Store, items: Sequence[Submission]) -> list[Any]:
    """Admit ``items`` as one batch, in one committed transaction."""
    with store._write() as conn:
        return list(store._write_batch(conn, items))


def _count(store: Store, table: sa.Table, *where: Any) -> int:
    with store._read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def test_a_batch_writes_every_job_its_event_and_its_counts(flow: Store) -> None:
    svc = new_service(flow, "many")
    outcomes = _batch(flow, [_item(flow, svc, n) for n in range(20)])
    assert all(created for _, created in outcomes)
    ids = {job.id for job, _ in outcomes}
    assert len(ids) == 20
    assert _count(flow, jobs, jobs.c.service_id == svc, jobs.c.status == "queued") == 20
    assert _count(flow, events, events.c.job_id.in_(ids), events.c.status == "queued") == 20
    with flow._read() as conn:
        waiting = conn.execute(sa.select(services.c.waiting).where(services.c.id == svc)).scalar()
        triggers = conn.execute(
            sa.select(sa.func.sum(job_rollups.c.triggers)).where(job_rollups.c.service_id == svc)
        ).scalar()
    assert waiting == 20 and triggers == 20
    # the jobs are claimable like any others
    assert flow.claim("w", 30) is not None


def test_one_idempotency_key_twice_in_a_batch_is_one_job(flow: Store) -> None:
    svc = new_service(flow, "keys")
    first = _item(flow, svc, 1, idempotency_key="k", request_hash="h1")
    again = _item(flow, svc, 2, idempotency_key="k", request_hash="h1")
    other = _item(flow, svc, 3, idempotency_key="k", request_hash="h2")
    plain = _item(flow, svc, 4)
    outcomes = _batch(flow, [first, again, other, plain])
    (job1, created1), (job2, created2) = outcomes[0], outcomes[1]
    assert created1 and not created2 and job2.id == job1.id
    assert isinstance(outcomes[2], GenhookError)
    assert outcomes[2].code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert outcomes[3][1] is True  # the refused item took nothing else down
    assert _count(flow, jobs, jobs.c.service_id == svc) == 2
    # a later batch finds the key in the database
    (job3, created3), conflict = _batch(
        flow,
        [
            _item(flow, svc, 5, idempotency_key="k", request_hash="h1"),
            _item(flow, svc, 6, idempotency_key="k", request_hash="h9"),
        ],
    )
    assert not created3 and job3.id == job1.id
    assert conflict.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_one_dedup_key_twice_in_a_batch_is_one_job(flow: Store) -> None:
    svc = new_service(flow, "dedup")
    same = Admission(dedup_key="sku-1", dedup_window=3600.0)
    outcomes = _batch(
        flow, [_item(flow, svc, 1, admission=same), _item(flow, svc, 2, admission=same)]
    )
    (job1, created1), (job2, created2) = outcomes
    assert created1 and not created2
    assert job2.id == job1.id and job2.deduplicated
    flow.clock.advance(10)  # type: ignore[attr-defined]
    ((job3, created3),) = _batch(flow, [_item(flow, svc, 3, admission=same)])
    assert not created3 and job3.id == job1.id and job3.deduplicated
    assert _count(flow, jobs, jobs.c.service_id == svc) == 1


def _slots(store: Store, service_id: str) -> list[float]:
    with store._read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.rate_slot)
            .where(jobs.c.service_id == service_id)
            .order_by(jobs.c.rate_seq)
        )
        return [float(r.rate_slot) for r in rows]


def test_rate_slots_of_batches_equal_those_of_single_triggers(flow: Store) -> None:
    """3 per minute: the same slots whether 8 triggers come one by one or as batches of 3 and
    5 (the second batch reads the slots of the jobs 3 back from the database)."""
    single = new_service(flow, "single", rate_limit="3/m")
    batched = new_service(flow, "batched", rate_limit="3/m")
    t0 = flow.clock.now()
    for n in range(8):
        _batch(flow, [_item(flow, single, n)])
    _batch(flow, [_item(flow, batched, n) for n in range(3)])
    outcomes = _batch(flow, [_item(flow, batched, n) for n in range(3, 8)])
    assert _slots(flow, single) == _slots(flow, batched)
    assert _slots(flow, batched) == [t0] * 3 + [t0 + 60] * 3 + [t0 + 120] * 2
    held = [job.hold_reason for job, _ in outcomes]
    assert held == [HoldReason.RATE_LIMIT] * 5


def test_the_queue_limit_cuts_a_batch_where_it_is_reached(flow: Store) -> None:
    svc = new_service(flow, "small", queue_limit=2)
    outcomes = _batch(flow, [_item(flow, svc, n) for n in range(4)])
    assert [o[1] for o in outcomes[:2]] == [True, True]
    assert all(isinstance(o, GenhookError) and o.code is ErrorCode.QUEUE_FULL for o in outcomes[2:])
    with flow._read() as conn:
        waiting = conn.execute(sa.select(services.c.waiting).where(services.c.id == svc)).scalar()
    assert waiting == 2
    assert _count(flow, jobs, jobs.c.service_id == svc) == 2


def test_a_storm_inside_a_batch_pauses_from_the_trigger_that_trips_it(flow: Store) -> None:
    """1/h: the breaker trips past 3 triggers in the last hour, so the 4th pauses the service
    and it and every later one are held; one operator event."""
    svc = new_service(flow, "stormy", rate_limit="1/h")
    outcomes = _batch(flow, [_item(flow, svc, n) for n in range(6)])
    reasons = [job.hold_reason for job, _ in outcomes]
    assert reasons[3:] == [HoldReason.PAUSED] * 3
    assert HoldReason.PAUSED not in reasons[:3]
    assert flow.paused(svc)
    assert _count(flow, operator_events, operator_events.c.event == "service.paused") == 1


@pytest.mark.anyio
async def test_concurrent_async_submits_are_all_durable(flow: Store) -> None:
    svc = new_service(flow, "async")
    results = await asyncio.gather(*(flow.submit_async(_item(flow, svc, n)) for n in range(200)))
    assert all(created for _, created in results)
    assert len({job.id for job, _ in results}) == 200
    assert _count(flow, jobs, jobs.c.service_id == svc) == 200
    assert _count(flow, events, events.c.status == "queued") == 200


@pytest.mark.anyio
async def test_an_item_that_breaks_its_batch_fails_alone(flow: Store) -> None:
    """A job id already taken makes the batch's insert fail: every other item of the batch is
    written in a transaction of its own, and only that one is refused."""
    svc = new_service(flow, "clash")
    taken, _ = flow.submit(
        service_id=svc,
        workflow_id="product-image",
        workflow_version=1,
        trigger={},
        external_id=None,
        callback_url=None,
    )
    items = [_item(flow, svc, n) for n in range(10)]
    items[4] = _item(flow, svc, 4, job_id=taken.id)
    results = await asyncio.gather(*(flow.submit_async(i) for i in items), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and results[4] is refused[0]
    assert isinstance(refused[0], GenhookError)
    assert _count(flow, jobs, jobs.c.service_id == svc) == 10  # 9 new and the first


# -- the trigger lane and the route behind it ---------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(data_dir=tmp_path, workflows_dir=shipped_dir("workflows")).resolved()
    rt = Runtime.build(settings, clock=ManualClock())
    try:
        yield rt
    finally:
        rt.store.close()


@pytest.mark.anyio
async def test_the_lane_and_the_fastapi_route_answer_alike(runtime: Runtime) -> None:
    """The same requests through the app (the lane answers) and an app without the lane (the
    FastAPI route answers): the same status, error code and field, and the same job fields."""
    app = create_app(runtime)
    routed = create_app(runtime, trigger_lane=False)
    key = runtime.store.create_service("shop")["api_key"]

    auth = {"authorization": f"Bearer {key}"}
    good = {
        "product_id": "SKU-1",
        "product_name": "Linen Shirt",
        "target_style": "lifestyle",
        "target_platform": "instagram_feed",
    }
    cases: list[tuple[str, dict[str, str], Any]] = [
        ("product-image", auth, good),
        ("product-image", auth, {**good, "target_style": "neon"}),
        ("product-image", auth, {**good, "nope": 1}),
        ("product-image", {}, good),
        ("product-image", {"authorization": "Bearer wrong"}, good),
        ("no-such-flow", auth, good),
        ("product-image", {**auth, "content-type": "text/plain"}, good),
        ("product-image", {**auth, "idempotency-key": "x" * 300}, good),
    ]
    answers: list[list[tuple[int, Any, Any, Any]]] = []
    for asgi in (app, routed):
        transport = httpx.ASGITransport(app=asgi)
        seen = []
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            for n, (flow_id, headers, body) in enumerate(cases):
                b = {**body, "product_id": f"SKU-{n}"} if "product_id" in body else body
                r = await c.post(f"/v1/workflows/{flow_id}/runs", json=b, headers=headers)
                data = r.json()
                seen.append(
                    (r.status_code, data.get("error_code"), data.get("field"), data.get("status"))
                )
        answers.append(seen)
    lane, route = answers
    assert lane == route
    assert [s for s, *_ in lane] == [202, 422, 422, 401, 401, 404, 415, 422]
