"""The operator's view: the summary's figures from the roll-ups (equal to what the jobs
themselves say), its windows, resume, the operator routes' authentication, the dashboard's
session and CSRF checks, and ``genhook ops``.

Store-level tests run on SQLite and PostgreSQL with an injected clock; the HTTP tests drive the
app that ``genhook serve`` builds in process (``httpx.ASGITransport``) on a real SQLite store.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.dashboard.charts import bars, lines
from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_job_id
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from genhook.status import DeliveryOutcome, DeliveryStatus, JobStatus
from genhook.store.ops import WINDOWS, Figures
from genhook.store.records import Delivery
from genhook.store.schema import deliveries, jobs, operator_events, services
from genhook.store.store import Store
from tests.conftest import CliResult

HOUR = 3600.0
ADMIN = "operator-key-for-tests"


# ---- filling a store through its own methods --------------------------------------------------


def submit(store: Store, service_id: str, workflow: str = "product-image", **extra: Any) -> str:
    job, _ = store.submit(
        service_id=service_id,
        workflow_id=workflow,
        workflow_version=1,
        trigger={"product_name": "x"},
        external_id=None,
        callback_url=extra.pop("callback_url", None),
        **extra,
    )
    return str(job.id)


def run(
    store: Store,
    status: JobStatus,
    *,
    seconds: float,
    cost: float,
    warning: bool = False,
) -> str:
    """Claim the next job and end it with ``status``."""
    job = store.claim("w", 900)
    assert job is not None
    error = None if status is JobStatus.SUCCEEDED else GenhookError(ErrorCode.BACKEND_ERROR)
    store.finish(
        job.id,
        "w",
        status=status,
        payload={"job_id": job.id, "quality_warning": {"blur": 1} if warning else None},
        error=error,
        credit_cost=cost,
        work_seconds=seconds,
    )
    return job.id


def retry(store: Store, *, seconds: float, cost: float) -> str:
    job = store.claim("w", 900)
    assert job is not None
    store.retry(
        job.id,
        "w",
        error=GenhookError(ErrorCode.BACKEND_ERROR),
        delay=0.0,
        credit_cost=cost,
        work_seconds=seconds,
        cancelled={"job_id": job.id},
    )
    return job.id


def refuse(store: Store, service_id: str, workflow: str = "product-image") -> None:
    store.reject(
        job_id=new_job_id(),
        service_id=service_id,
        workflow_id=workflow,
        workflow_version=1,
        body={"product_name": 3},
        external_id=None,
        callback_url=None,
        error=GenhookError(ErrorCode.INVALID_TYPE, "product_name: not a string"),
        payload={"status": "failed"},
    )


def give_up(store: Store, status_code: int, error: str) -> list[Delivery]:
    """Send every due delivery once and record that it failed for good."""
    leased = store.claim_deliveries(100, 60)
    for d in leased:
        store.record_delivery(
            d.id,
            number=d.attempt,
            status_code=status_code,
            error=error,
            duration_ms=2.0,
            outcome=DeliveryOutcome.GONE,  # failed for good, no schedule to use up
            next_attempt_at=None,
        )
    return leased


def pause(store: Store, service_id: str, at: float) -> None:
    with store._write() as conn:
        conn.execute(
            services.update()
            .where(services.c.id == service_id)
            .values(paused_at=at, paused_reason="trigger storm: a test")
        )


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = ManualClock(1_800_000_000.0 + 1800)  # half past an hour
    return store


def fill(store: Store) -> dict[str, Any]:
    """Two services; "shop" has succeeded, QC-warned, retried-then-failed, queued and refused
    jobs on two workflows, "cms" one success."""
    shop = store.create_service("shop", rate_limit="1000/h", daily_budget=20.0)["service_id"]
    cms = store.create_service("cms")["service_id"]
    ended = []
    for _ in range(3):
        submit(store, shop)
    ended.append(run(store, JobStatus.SUCCEEDED, seconds=2.0, cost=1.5))
    ended.append(run(store, JobStatus.SUCCEEDED, seconds=4.0, cost=1.5, warning=True))
    retried = retry(store, seconds=1.0, cost=0.5)
    assert run(store, JobStatus.FAILED, seconds=3.0, cost=0.5) == retried
    ended.append(retried)
    submit(store, shop, "banner")
    ended.append(run(store, JobStatus.SUCCEEDED, seconds=1.0, cost=2.0))
    submit(store, shop)  # stays queued
    refuse(store, shop)
    submit(store, cms)
    cms_job = run(store, JobStatus.SUCCEEDED, seconds=0.5, cost=0.0)
    return {"shop": shop, "cms": cms, "ended": ended, "cms_job": cms_job}


def test_summary_equals_what_the_jobs_say(clocked: Store) -> None:
    ids = fill(clocked)
    summary = clocked.ops_summary("24h").as_dict()
    assert summary["window"] == "24h"
    by_name = {s["service"]: s for s in summary["services"]}
    assert list(by_name) == ["cms", "shop"]
    shop = by_name["shop"]
    assert shop["rate_limit"] == "1000/h" and shop["daily_budget"] == 20.0
    assert (shop["paused"], shop["queued"], shop["running"]) == (False, 1, 0)
    workflows = {w["workflow_id"]: w for w in shop["workflows"]}
    product = workflows["product-image"]
    # the baseline: the same figures from the jobs rows themselves
    rows = [clocked.job(j) for j in ids["ended"]]
    product_rows = [r for r in rows if r and r.workflow_id == "product-image"]
    assert product["triggers"] == 5  # 4 accepted (one still queued) and 1 refused
    assert product["refused"] == 1
    assert product["completed"] == 2 and product["failed"] == 1
    assert product["completion_rate"] == pytest.approx(2 / 3)
    assert product["failure_rate"] == pytest.approx(1 / 3)
    assert product["avg_generation_seconds"] == pytest.approx(
        sum(r.processing_seconds for r in product_rows) / 3
    )
    assert product["avg_generation_seconds"] == pytest.approx((2 + 4 + 1 + 3) / 3)
    assert product["qc_pass_rate"] == pytest.approx(1 / 2)
    assert product["credits_per_job"] == pytest.approx(sum(r.credit_cost for r in product_rows) / 3)
    assert product["retries"] == 1 and product["retry_rate"] == pytest.approx(1 / 3)
    assert workflows["banner"]["completed"] == 1
    assert workflows["banner"]["credits_per_job"] == pytest.approx(2.0)
    spent = sum(r.credit_cost for r in rows if r)
    assert shop["credits_today"] == pytest.approx(spent)
    assert shop["budget_used"] == pytest.approx(spent / 20.0)
    assert shop["totals"]["completed"] == 3
    assert by_name["cms"]["workflows"][0]["qc_pass_rate"] == 1.0
    assert by_name["cms"]["daily_budget"] is None and by_name["cms"]["budget_used"] is None


def test_windows_cover_the_hours_that_overlap_them(clocked: Store) -> None:
    clock = clocked.clock
    assert isinstance(clock, ManualClock)
    svc = clocked.create_service("shop")["service_id"]
    submit(clocked, svc)  # now - 7 days - 2 h: in no window
    clock.advance(5 * 24 * HOUR)
    submit(clocked, svc)  # 2 days + 2 h before the end: 7d only
    clock.advance(2 * 24 * HOUR)
    submit(clocked, svc)  # 2 h before: 24h and 7d
    clock.advance(HOUR)
    submit(clocked, svc)  # the previous hour: every window
    clock.advance(HOUR)
    submit(clocked, svc)  # this hour
    triggers = {
        w: sum(
            f["triggers"]
            for s in clocked.ops_summary(w).as_dict()["services"]
            for f in s["workflows"]
        )
        for w in WINDOWS
    }
    assert triggers == {"1h": 2, "24h": 3, "7d": 4}
    with pytest.raises(ValueError):
        clocked.ops_summary("30d")


def test_series_steps_add_up_to_the_window(clocked: Store) -> None:
    ids = fill(clocked)
    clock = clocked.clock
    assert isinstance(clock, ManualClock)
    clock.advance(5 * HOUR)
    submit(clocked, ids["cms"])
    series = clocked.ops_series("24h")
    assert len(series.steps) == 24 and series.steps[-1] <= clock.now() < series.steps[-1] + HOUR
    summed = Figures()
    for value in series.of_service(ids["shop"]):
        summed = summed + value
    shop = next(s for s in clocked.ops_summary("24h").services if s.name == "shop")
    assert summed == shop.totals
    cms = series.of_service(ids["cms"])
    assert cms[-1].triggers == 1 and cms[-6].triggers == 1 and sum(f.triggers for f in cms) == 2
    week = clocked.ops_series("7d")
    assert week.step == 6 * HOUR and len(week.steps) == 28


def test_resume_lifts_the_pause_releases_the_held_jobs_and_logs_it(clocked: Store) -> None:
    clocked.alert_url = "https://ops.example.com/hook"
    svc = clocked.create_service("stormy")["service_id"]
    pause(clocked, svc, clocked.clock.now())
    held = [submit(clocked, svc) for _ in range(3)]
    assert all(clocked.job(j).hold_reason == "paused" for j in held)  # type: ignore[union-attr]
    assert clocked.claim("w", 900) is None
    summary = clocked.ops_summary().as_dict()["services"][0]
    assert summary["paused"] is True and summary["breaker"] == "open"
    assert summary["held"]["paused"] == 3 and summary["queued"] == 3
    assert sorted(j.id for j in clocked.held_jobs()) == sorted(held)

    done = clocked.resume_service("stormy")
    assert done is not None and done.as_dict() == {
        "service": "stormy",
        "paused": False,
        "resumed": True,
        "released": 3,
    }
    assert all(clocked.job(j).hold_reason is None for j in held)  # type: ignore[union-attr]
    claimed = clocked.claim("w", 900)
    assert claimed is not None and claimed.id in held
    with clocked._read() as conn:
        logged = conn.execute(sa.select(operator_events)).mappings().all()
        alert = conn.execute(
            sa.select(deliveries.c.kind, deliveries.c.body).where(
                deliveries.c.id == logged[0]["id"]
            )
        ).one()
    assert [e["event"] for e in logged] == ["service.resumed"]
    assert logged[0]["service"] == "stormy" and logged[0]["details"]["released"] == 3
    assert alert.kind == "alert" and json.loads(alert.body)["event"] == "service.resumed"
    # again: nothing to do, nothing logged; an unknown name is None
    again = clocked.resume_service("stormy")
    assert again is not None and (again.resumed, again.released) == (False, 0)
    assert clocked.resume_service("nobody") is None
    with clocked._read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(operator_events)).scalar() == 1


def test_failed_deliveries_newest_first(clocked: Store) -> None:
    svc = clocked.create_service("shop")["service_id"]
    for _ in range(2):
        submit(clocked, svc, callback_url="https://shop.example.com/cb")
        run(clocked, JobStatus.SUCCEEDED, seconds=1.0, cost=0.0)
        clocked.clock.advance(1.0)  # type: ignore[attr-defined]
    leased = give_up(clocked, 410, "gone")
    failed = clocked.failed_deliveries()
    assert [f.id for f in failed] == [d.id for d in reversed(leased)]
    assert failed[0].service == "shop" and failed[0].last_status_code == 410
    assert clocked.ops_summary().services[0].failed_deliveries == 2
    assert clocked.replay(failed[0].id)
    assert [f.id for f in clocked.failed_deliveries()] == [failed[1].id]


def test_figures_without_ended_jobs_are_none() -> None:
    empty = Figures(triggers=4)
    assert empty.completion_rate is None and empty.avg_generation_seconds is None
    assert empty.qc_pass_rate is None and empty.credits_per_job is None
    assert Figures(completed=1, qc_checked=1, qc_passed=0).qc_pass_rate == 0.0


def test_charts_draw_each_figure_with_its_title() -> None:
    steps = [0.0, 3600.0, 7200.0]
    svg = str(bars("t", steps, 3600.0, [("done", "bar-completed", [1, 0, 7])]))
    assert svg.count("<rect") == 2 and "02:00: 7 done" in svg and ">10<" in svg  # axis 10
    svg = str(
        lines(
            "r",
            steps,
            3600.0,
            [("rate", "line-qc", [0.5, None, 1.0])],
            unit="%",
            top=100.0,
            scale=100.0,
        )
    )
    assert svg.count("<circle") == 2 and "<polyline" not in svg  # the gap breaks the line
    assert "00:00: 50%" in svg


# ---- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Ops:
    runtime: Runtime
    clock: ManualClock
    client: httpx.AsyncClient

    @property
    def store(self) -> Store:
        return self.runtime.store


async def _ops(tmp_path: Path, admin_key: str | None) -> AsyncIterator[Ops]:
    settings = Settings(
        data_dir=tmp_path, workflows_dir=shipped_dir("workflows"), admin_key=admin_key
    ).resolved()
    clock = ManualClock(1_800_000_000.0 + 1800)
    runtime = Runtime.build(settings, clock=clock)
    transport = httpx.ASGITransport(app=create_app(runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            yield Ops(runtime, clock, c)
    finally:
        runtime.store.close()


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in _ops(tmp_path, ADMIN):
        yield value


@pytest.fixture
async def no_key(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in _ops(tmp_path, None):
        yield value


OPERATOR = {"Authorization": f"Bearer {ADMIN}"}
ROUTES = [
    ("GET", "/v1/ops/summary"),
    ("POST", "/v1/ops/services/shop/resume"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/login"),
    ("POST", "/dashboard/login"),
    ("GET", "/dashboard/deliveries"),
]


@pytest.mark.anyio
async def test_operator_routes_refuse_all_without_an_operator_key(no_key: Ops) -> None:
    no_key.store.create_service("shop")
    for method, path in ROUTES:
        answer = await no_key.client.request(method, path, headers=OPERATOR, data={"key": ADMIN})
        assert answer.status_code == 403, (method, path)
        assert answer.json()["error_code"] == "forbidden"


@pytest.mark.anyio
async def test_the_ops_api_takes_only_the_operator_key(ops: Ops) -> None:
    service_key = ops.store.create_service("shop")["api_key"]
    for headers in ({}, {"Authorization": f"Bearer {service_key}"}, {"Authorization": "Bearer x"}):
        answer = await ops.client.get("/v1/ops/summary", headers=headers)
        assert answer.status_code == 401 and answer.json()["error_code"] == "unauthorized"
        answer = await ops.client.post("/v1/ops/services/shop/resume", headers=headers)
        assert answer.status_code == 401
    answer = await ops.client.get("/v1/ops/summary", headers=OPERATOR)
    assert answer.status_code == 200
    body = answer.json()
    assert body["window"] == "24h" and [s["service"] for s in body["services"]] == ["shop"]
    assert set(body["services"][0]) >= {
        "service",
        "paused",
        "rate_limit",
        "daily_budget",
        "credits_today",
        "queued",
        "running",
        "workflows",
    }
    answer = await ops.client.get("/v1/ops/summary?window=30d", headers=OPERATOR)
    assert answer.status_code == 422
    assert (answer.json()["error_code"], answer.json()["field"]) == ("invalid_value", "window")
    for window in WINDOWS:
        answer = await ops.client.get(f"/v1/ops/summary?window={window}", headers=OPERATOR)
        assert answer.json()["window"] == window


@pytest.mark.anyio
async def test_resume_over_the_api_releases_the_held_jobs(ops: Ops) -> None:
    svc = ops.store.create_service("shop")["service_id"]
    pause(ops.store, svc, ops.clock.now())
    job = submit(ops.store, svc)
    seen = ops.runtime.jobs_signal.generation
    answer = await ops.client.post("/v1/ops/services/shop/resume", headers=OPERATOR)
    assert answer.status_code == 200
    assert answer.json() == {"service": "shop", "paused": False, "resumed": True, "released": 1}
    assert ops.runtime.jobs_signal.generation > seen  # the workers were woken
    assert ops.store.job(job).hold_reason is None  # type: ignore[union-attr]
    answer = await ops.client.post("/v1/ops/services/nobody/resume", headers=OPERATOR)
    assert answer.status_code == 404 and answer.json()["error_code"] == "service_not_found"


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.mark.anyio
async def test_dashboard_login_session_and_csrf(ops: Ops) -> None:
    svc = ops.store.create_service("shop")["service_id"]
    pause(ops.store, svc, ops.clock.now())
    submit(ops.store, svc)
    c = ops.client
    answer = await c.get("/dashboard")
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    assert "password" in (await c.get("/dashboard/login")).text
    answer = await c.post("/dashboard/login", data={"key": "wrong"})
    assert answer.status_code == 401 and "not the operator key" in answer.text
    assert "genhook_session" not in c.cookies
    answer = await c.post("/dashboard/login", data={"key": ADMIN})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/dashboard", "Max-Age=43200"):
        assert attribute in cookie, attribute
    page = await c.get("/dashboard")
    assert page.status_code == 200 and 'data-service="shop"' in page.text
    assert "script" not in page.text.lower()
    assert "default-src 'none'" in page.headers["content-security-policy"]
    csrf = _csrf(page.text)
    # a form post without the session's token is refused, and changes nothing
    for token in ("", "0" * 64):
        answer = await c.post("/dashboard/services/shop/resume", data={"csrf": token})
        assert answer.status_code == 403 and answer.json()["error_code"] == "forbidden"
    assert ops.store.ops_summary().services[0].paused
    answer = await c.post("/dashboard/services/shop/resume", data={"csrf": csrf, "window": "7d"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard?window=7d&resumed=shop&released=1"
    assert not ops.store.ops_summary().services[0].paused
    assert "Resumed shop: 1 held job released." in (await c.get(answer.headers["location"])).text
    # a tampered cookie, and one past its 12 hours, are no session
    value = c.cookies["genhook_session"]
    c.cookies.set(
        "genhook_session", value[:-1] + ("0" if value[-1] != "0" else "1"), path="/dashboard"
    )
    assert (await c.get("/dashboard")).status_code == 303
    c.cookies.set("genhook_session", value, path="/dashboard")
    assert (await c.get("/dashboard")).status_code == 200
    # log out: with the token only; the cookie is cleared
    assert (await c.post("/dashboard/logout", data={})).status_code == 403
    answer = await c.post(
        "/dashboard/logout", data={"csrf": _csrf((await c.get("/dashboard")).text)}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    assert 'genhook_session=""' in answer.headers["set-cookie"]
    c.cookies.set("genhook_session", value, path="/dashboard")
    ops.clock.advance(12 * HOUR + 1)
    assert (await c.get("/dashboard")).status_code == 303
    # the Bearer header works without a session or a token; a wrong one is 401
    c.cookies.clear()
    assert (await c.get("/dashboard?window=1h", headers=OPERATOR)).status_code == 200
    assert (await c.get("/dashboard", headers={"Authorization": "Bearer x"})).status_code == 401
    assert (await c.get("/dashboard?window=2h", headers=OPERATOR)).status_code == 422


@pytest.mark.anyio
async def test_dashboard_shows_the_summary_and_replays_a_failed_delivery(ops: Ops) -> None:
    store = ops.store
    svc = store.create_service("shop", daily_budget=8.0)["service_id"]
    submit(store, svc, callback_url="https://shop.example.com/cb")
    run(store, JobStatus.SUCCEEDED, seconds=2.5, cost=2.0)
    (delivery,) = give_up(store, 500, "HTTP 500")
    page = (await ops.client.get("/dashboard", headers=OPERATOR)).text
    shown = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', page))
    assert shown["completion_rate"] == "100.0%" and shown["avg_generation_seconds"] == "2.50 s"
    assert shown["credits_today"] == "2.00" and shown["budget_used"] == "25.0%"
    listing = await ops.client.get("/dashboard/deliveries", headers=OPERATOR)
    assert f'data-delivery="{delivery.id}"' in listing.text and "HTTP 500" in listing.text
    seen = ops.runtime.deliveries_signal.generation
    answer = await ops.client.post(f"/dashboard/deliveries/{delivery.id}/replay", headers=OPERATOR)
    assert answer.status_code == 303
    assert store.delivery(delivery.id).status == DeliveryStatus.PENDING  # type: ignore[union-attr]
    assert ops.runtime.deliveries_signal.generation > seen
    answer = await ops.client.post("/dashboard/deliveries/nope/replay", headers=OPERATOR)
    assert answer.status_code == 404
    held = await ops.client.get("/dashboard/held", headers=OPERATOR)
    assert held.status_code == 200 and "No job is held." in held.text
    css = await ops.client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await ops.client.get("/dashboard/static/secret.py")).status_code == 404


# ---- genhook ops ------------------------------------------------------------------------------


def test_genhook_ops_prints_the_summary_and_resumes(
    genhook: Callable[..., CliResult], tmp_path: Path
) -> None:
    env = {"GENHOOK_DATA_DIR": str(tmp_path / "data")}
    settings = Settings.from_env(env)
    runtime = Runtime.build(settings)
    try:
        store = runtime.store
        svc = store.create_service("shop", rate_limit="10/m")["service_id"]
        store.create_service("idle")
        submit(store, svc)
        run(store, JobStatus.SUCCEEDED, seconds=1.25, cost=0.5)
        pause(store, svc, store.clock.now())
        held = submit(store, svc)
        expected = store.ops_summary("7d").as_dict()
    finally:
        runtime.store.close()
    done = genhook("ops", "--window", "7d", "--json", env=env)
    assert done.code == 0, done.stderr
    got = done.json
    for body in (got, expected):
        body.pop("until")
    assert got == expected
    table = genhook("ops", env=env)
    assert table.code == 0, table.stderr
    assert "shop" in table.stdout and "idle" in table.stdout and "paused" in table.stdout
    assert "100.0%" in table.stdout and "1.25 s" in table.stdout  # completion, generation
    resumed = genhook("ops", "resume", "shop", env=env)
    assert resumed.code == 0, resumed.stderr
    assert resumed.json == {"service": "shop", "paused": False, "resumed": True, "released": 1}
    unknown = genhook("ops", "resume", "nobody", env=env)
    assert unknown.code == 2 and "no service named 'nobody'" in unknown.stderr
    store = Store(settings.database_url)
    try:
        assert store.job(held).hold_reason is None  # type: ignore[union-attr]
        with store._read() as conn:
            assert conn.execute(sa.select(jobs.c.status).where(jobs.c.id == held)).scalar() == (
                JobStatus.QUEUED
            )
    finally:
        store.close()
