"""Flow control with many processes on one PostgreSQL: separate OS processes (each its own
Store, so its own connections and sessions, as on separate machines) released at once by a
barrier, each admitting, claiming or failing against the same service or backend. Whatever the
interleaving, the limits hold as for one process: the rate window's slots, one job per dedup
key and per idempotency key, the daily budget's reservations, one breaker count per failure and
one ``backend.unhealthy``, every job and delivery leased once.

SQLite is not run here: its writers are serialised by ``BEGIN IMMEDIATE`` (one write lock per
database file), which tests/test_store_races.py and the store tests exercise. See
docs/concurrency.md for the lock or statement behind each invariant.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.errors import ErrorCode, GenhookError
from genhook.store.admit import Admission
from genhook.store.schema import jobs, services
from genhook.store.store import Store
from tests.databases import database_url

PROCESSES = 4
# separate processes, each with its own connections (as on separate hosts), forked from a
# server that imported genhook once (a fresh interpreter each would take seconds to start)
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload(["genhook.store.store", "tests.test_store_races_pg"])


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


def _child(
    url: str, task: str, args: dict[str, Any], barrier: Any, results: Any, number: int
) -> None:
    store = Store(url)
    try:
        for name, value in args.get("store", {}).items():
            setattr(store, name, value)
        barrier.wait(60)
        results.put((number, TASKS[task](store, number, **args.get("kwargs", {}))))
    except BaseException as exc:  # the parent fails the test with what happened
        cause = exc.__cause__
        results.put((number, f"error: {exc!r} from {cause!r}"))
    finally:
        store.close()


def run_at_once(url: str, task: str, **args: Any) -> list[Any]:
    """``task`` in ``PROCESSES`` processes started together; their results, in process order."""
    barrier = SPAWN.Barrier(PROCESSES)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_child, args=(url, task, args, barrier, results, n))
        for n in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    got: dict[int, Any] = {}
    try:
        for _ in procs:
            number, value = results.get(timeout=120)
            got[number] = value
    except queue.Empty:
        pytest.fail(f"only {len(got)} of {PROCESSES} processes answered")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [v for v in got.values() if isinstance(v, str) and v.startswith("error:")]
    assert not errors, errors
    return [got[n] for n in range(PROCESSES)]


# -- what each process does (module-level functions: a forked process looks them up) ---------


def _submit(store: Store, number: int, *, service_id: str, triggers: list[dict[str, Any]]) -> Any:
    """Submit ``triggers`` in order; per trigger (job id, created) or the error code."""
    out: list[Any] = []
    for t in triggers:
        try:
            job, created = store.submit(
                service_id=service_id,
                workflow_id="wf",
                workflow_version=1,
                trigger={"n": t["n"], "by": number},
                external_id=str(t["n"]),
                callback_url=None,
                idempotency_key=t.get("key"),
                request_hash=t.get("key"),
                admission=Admission(
                    dedup_key=t.get("dedup"), dedup_window=3600.0 if t.get("dedup") else 0.0
                ),
            )
            out.append((str(job.id), created))
        except GenhookError as exc:
            out.append(exc.code.value)
    return out


def _claim_all(store: Store, number: int, *, rounds: int = 200) -> list[str]:
    """Claim until nothing is left to take (a few empty claims in a row); the ids taken."""
    taken: list[str] = []
    empty = 0
    for _ in range(rounds):
        try:
            job = store.claim(f"w{number}", 300)
        except GenhookError as exc:  # as a worker does: log it, claim again at the next poll
            if exc.code is not ErrorCode.STORE_UNAVAILABLE:
                raise
            continue
        if job is None:
            empty += 1
            if empty >= 3:
                break
            continue
        empty = 0
        taken.append(str(job.id))
    return taken


def _fail_backend(store: Store, number: int, *, backend: str, times: int) -> list[str]:
    return [
        str(store.backend_failed(backend, GenhookError(ErrorCode.BACKEND_ERROR, "503")).state)
        for _ in range(times)
    ]


def _claim_deliveries(store: Store, number: int) -> list[str]:
    taken: list[str] = []
    for _ in range(50):
        got = store.claim_deliveries(8, 300, owner=f"o{number}")
        if not got:
            break
        taken.extend(d.id for d in got)
    return taken


TASKS: dict[str, Callable[..., Any]] = {
    "submit": _submit,
    "claim": _claim_all,
    "fail_backend": _fail_backend,
    "claim_deliveries": _claim_deliveries,
}


# -- setup helpers ----------------------------------------------------------------------------


def migrated(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def service(store: Store, name: str, **values: Any) -> str:
    service_id = str(store.create_service(name)["service_id"])
    if values:
        with store._write() as conn:
            conn.execute(services.update().where(services.c.id == service_id).values(**values))
    return service_id


def job_rows(store: Store, service_id: str) -> list[sa.Row[Any]]:
    with store._read() as conn:
        return list(
            conn.execute(
                sa.select(jobs.c.id, jobs.c.hold_reason, jobs.c.rate_seq, jobs.c.rate_slot)
                .where(jobs.c.service_id == service_id)
                .order_by(jobs.c.rate_seq)
            )
        )


# -- admission --------------------------------------------------------------------------------


def test_the_rate_window_holds_for_triggers_admitted_by_many_processes(pg_url: str) -> None:
    """4 processes x 10 triggers at once against 15/h (40 is no storm, under 3 x 15): the
    window's 15 slots now, 25 later, the rate sequence 1..40 without a gap or a repeat (the
    service row is locked per batch)."""
    store = migrated(pg_url)
    try:
        sid = service(store, "limited", rate_limit="15/h")
        triggers = [{"n": i} for i in range(10)]
        answers = run_at_once(pg_url, "submit", kwargs={"service_id": sid, "triggers": triggers})
        assert all(created for answer in answers for _, created in answer)
        rows = job_rows(store, sid)
        assert sorted(r.rate_seq for r in rows) == list(range(1, 41))
        assert sum(r.hold_reason is None for r in rows) == 15
        assert sum(r.hold_reason == "rate_limit" for r in rows) == 25
        with store._read() as conn:
            waiting, seq = conn.execute(
                sa.select(services.c.waiting, services.c.rate_seq).where(services.c.id == sid)
            ).one()
        assert (waiting, seq) == (40, 40)
    finally:
        store.close()


def test_one_dedup_key_from_many_processes_at_once_is_one_job(pg_url: str) -> None:
    """4 processes submit the same 15 dedup keys in the same order at once: 15 jobs, and every
    process got, for each key, the one job made for it."""
    store = migrated(pg_url)
    try:
        sid = service(store, "dedup")
        triggers = [{"n": i, "dedup": f"item-{i}"} for i in range(15)]
        answers = run_at_once(pg_url, "submit", kwargs={"service_id": sid, "triggers": triggers})
        assert len(job_rows(store, sid)) == 15
        for i in range(15):
            ids = {answer[i][0] for answer in answers}
            assert len(ids) == 1, (i, answers)
            assert sum(answer[i][1] for answer in answers) == 1
    finally:
        store.close()


def test_one_idempotency_key_from_many_processes_at_once_is_one_job(pg_url: str) -> None:
    """The same 15 Idempotency-Keys (same body) from 4 processes at once: 15 jobs, one each."""
    store = migrated(pg_url)
    try:
        sid = service(store, "keys")
        triggers = [{"n": i, "key": f"key-{i}"} for i in range(15)]
        answers = run_at_once(pg_url, "submit", kwargs={"service_id": sid, "triggers": triggers})
        assert len(job_rows(store, sid)) == 15
        for i in range(15):
            assert len({answer[i][0] for answer in answers}) == 1, (i, answers)
            assert sum(answer[i][1] for answer in answers) == 1
    finally:
        store.close()


# -- claims -----------------------------------------------------------------------------------


def submit_plain(store: Store, sid: str, n: int, **admission: Any) -> list[str]:
    return [
        str(
            store.submit(
                service_id=sid,
                workflow_id="wf",
                workflow_version=1,
                trigger={"n": i},
                external_id=str(i),
                callback_url=None,
                admission=Admission(**admission),
            )[0].id
        )
        for i in range(n)
    ]


def test_every_job_is_claimed_once_by_many_processes(pg_url: str) -> None:
    """60 jobs of 3 services, 4 claiming processes at once: each job leased once (SKIP LOCKED
    and the conditional take), every one taken."""
    store = migrated(pg_url)
    try:
        ids = []
        for name in ("a", "b", "c"):
            ids += submit_plain(store, service(store, name), 20)
        taken = [i for answer in run_at_once(pg_url, "claim") for i in answer]
        assert sorted(taken) == sorted(ids)
    finally:
        store.close()


def test_the_daily_budget_is_reserved_once_by_many_claiming_processes(pg_url: str) -> None:
    """Budgets of 2 credits on 5 services (a fresh day: no ledger row yet), 4 jobs of 1 credit
    each: 4 processes claiming at once start exactly 2 jobs per service, and the ledger holds
    2 reserved credits each (never more than the budget)."""
    store = migrated(pg_url)
    try:
        sids = [service(store, f"b{n}", daily_budget=2.0, on_budget="hold") for n in range(5)]
        for sid in sids:
            submit_plain(store, sid, 4, estimate=1.0)
        taken = [i for answer in run_at_once(pg_url, "claim") for i in answer]
        assert len(taken) == len(set(taken))
        with store._read() as conn:
            per_service = dict(
                conn.execute(
                    sa.select(jobs.c.service_id, sa.func.count())
                    .where(jobs.c.id.in_(taken))
                    .group_by(jobs.c.service_id)
                ).all()
            )
            reserved = dict(
                conn.execute(sa.text("SELECT service_id, reserved FROM credit_ledger")).all()
            )
        assert per_service == dict.fromkeys(sids, 2)
        assert reserved == dict.fromkeys(sids, 2.0)
    finally:
        store.close()


def test_the_window_of_real_starts_holds_across_claiming_processes(pg_url: str) -> None:
    """2/h services whose 5 jobs each (no storm: under 3 x 2) are all due (their admission
    slots passed, as after a wait): 4 processes claiming at once start exactly 2 of each (the
    window of real starts), the rest held."""
    store = migrated(pg_url)
    try:
        sids = [service(store, f"r{n}", rate_limit="2/h") for n in range(3)]
        for sid in sids:
            ids = submit_plain(store, sid, 5)
            with store._write() as conn:  # every slot due now: only the claim's window holds
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(ids))
                    .values(run_after=store.clock.now() - 1, hold_reason=None)
                )
        taken = [i for answer in run_at_once(pg_url, "claim") for i in answer]
        with store._read() as conn:
            per_service = dict(
                conn.execute(
                    sa.select(jobs.c.service_id, sa.func.count())
                    .where(jobs.c.id.in_(taken))
                    .group_by(jobs.c.service_id)
                ).all()
            )
        assert per_service == dict.fromkeys(sids, 2)
    finally:
        store.close()


def test_a_backend_concurrency_cap_holds_across_claiming_processes(pg_url: str) -> None:
    """Backends limited to 2 jobs running: in each of 3 rounds, 4 processes claim 12 jobs of a
    new backend at once (none finishes); each backend runs exactly 2."""
    store = migrated(pg_url)
    caps = {f"capped{r}": 2 for r in range(3)}
    try:
        running: dict[str, int] = {}
        for r, backend in enumerate(caps):
            for name in ("x", "y", "z"):
                submit_plain(store, service(store, f"{name}{r}"), 4, backend=backend)
            answers = run_at_once(
                pg_url, "claim", store={"backend_concurrency": caps}, kwargs={"rounds": 20}
            )
            with store._read() as conn:
                running = dict(
                    conn.execute(
                        sa.select(jobs.c.backend, sa.func.count())
                        .where(jobs.c.status == "running")
                        .group_by(jobs.c.backend)
                    ).all()
                )
            assert running.get(backend, 0) >= 2, answers
        assert running == caps
    finally:
        store.close()


# -- the backend breaker ----------------------------------------------------------------------


def test_backend_failures_from_many_processes_are_each_counted_and_open_once(
    pg_url: str,
) -> None:
    """4 processes report 3 failures each of one backend at once, the breaker opening at 10:
    it is open, counted 12 failures in a row (no lost update), and ``backend.unhealthy`` was
    recorded once."""
    store = migrated(pg_url)
    try:
        run_at_once(
            pg_url,
            "fail_backend",
            store={"backend_breaker_failures": 10},
            kwargs={"backend": "flaky", "times": 3},
        )
        with store._read() as conn:
            state, failures = conn.execute(
                sa.text("SELECT state, failures FROM backend_state WHERE backend = 'flaky'")
            ).one()
            opened = conn.execute(
                sa.text("SELECT count(*) FROM operator_events WHERE event = 'backend.unhealthy'")
            ).scalar_one()
        assert (state, failures, opened) == ("open", 12, 1)
    finally:
        store.close()


# -- the outbox -------------------------------------------------------------------------------


def test_every_delivery_is_leased_once_by_many_outbox_processes(pg_url: str) -> None:
    """120 due callbacks of 3 services on 2 endpoints each, 4 outbox processes claiming at once
    (caps high enough for all): every delivery leased once, none twice."""
    store = migrated(pg_url)
    try:
        store.delivery_per_endpoint = store.delivery_per_service = 1000
        made = []
        for s in range(3):
            sid = service(store, f"d{s}")
            for i in range(40):
                job, _ = store.reject(
                    job_id=f"job_{s}_{i}",
                    service_id=sid,
                    workflow_id="wf",
                    workflow_version=1,
                    body={"n": i},
                    external_id=None,
                    callback_url=f"https://hooks{i % 2}.example/cb",
                    error=GenhookError(ErrorCode.INVALID_TYPE, "bad"),
                    payload={"job_id": f"job_{s}_{i}", "status": "failed"},
                )
                made += [d.id for d in store.deliveries(job.id)]
        answers = run_at_once(
            pg_url,
            "claim_deliveries",
            store={"delivery_per_endpoint": 1000, "delivery_per_service": 1000},
        )
        taken = [d for answer in answers for d in answer]
        assert sorted(taken) == sorted(made)
    finally:
        store.close()
