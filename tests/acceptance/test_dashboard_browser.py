"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against a real ``genhook serve`` with a worker, over a database filled through the
store's own methods (submit, claim, finish, the outbox's claim and record).

It logs in through the form, checks that every figure the page shows is what
``GET /v1/ops/summary`` answers, checks the page fits a phone's width, clicks *Resume* on a
paused service (whose held jobs then run) and *Replay* on a failed delivery (which the
receiver then gets), and saves screenshots under ``test-artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genhook.clock import ManualClock
from genhook.status import JobStatus
from genhook.store.schema import services
from genhook.store.store import Store
from tests.acceptance.harness import ROOT, Genhook, Receiver, wait_for
from tests.test_ops_expired import expiring, held_for_review
from tests.test_ops_summary import give_up, refuse, retry, run, submit

CHROMIUM = Path(os.environ.get("GENHOOK_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
ADMIN = "browser-test-operator-key"
HOURS = 20  # of traffic before now
DASH = "\u2013"  # the page's "no figure"


def _browser_or_skip() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not CHROMIUM.is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def secs(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f} s"


def money(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def expected(figures: dict[str, Any]) -> dict[str, str]:
    """What the page must show for one service's totals or one workflow's figures."""
    return {
        "triggers": f"{figures['triggers']:,}",
        "completion_rate": pct(figures["completion_rate"]),
        "avg_generation_seconds": secs(figures["avg_generation_seconds"]),
        "qc_pass_rate": pct(figures["qc_pass_rate"]),
        "credits_per_job": money(figures["credits_per_job"]),
        "retry_rate": pct(figures["retry_rate"]),
        "failure_rate": pct(figures["failure_rate"]),
        "expired": f"{figures['expired']:,}",
    }


def shown(scope: Any, selector: str) -> dict[str, str]:
    """``data-figure`` name to text of every figure under ``selector``."""
    return {
        cell.get_attribute("data-figure"): cell.inner_text().strip()
        for cell in scope.locator(f"{selector} [data-figure]").all()
    }


def fill(store: Store, shop: str, receiver: Receiver) -> dict[str, Any]:
    """A day of traffic for three services (on the store's clock, hour by hour up to now), and
    one callback that failed for good."""
    clock = store.clock
    assert isinstance(clock, ManualClock)
    cms = store.create_service("cms", rate_limit="600/h", daily_budget=25.0)["service_id"]
    storm = store.create_service("storm", rate_limit="10/h")["service_id"]
    rng = random.Random(5)
    for hour in range(HOURS):
        for _ in range(rng.randint(1, 4)):
            submit(store, shop)
            draw = rng.random()
            if draw < 0.12:
                retry(store, seconds=rng.uniform(0.5, 2), cost=0.5)
            status = JobStatus.FAILED if draw < 0.08 else JobStatus.SUCCEEDED
            run(store, status, seconds=rng.uniform(2, 5), cost=1.0, warning=rng.random() < 0.1)
        if hour % 3 == 0:
            submit(store, shop, "banner")
            run(store, JobStatus.SUCCEEDED, seconds=rng.uniform(1, 2), cost=2.0)
        if hour % 5 == 0:
            refuse(store, shop)
        if hour >= HOURS - 6:
            submit(store, cms, "product-video")
            run(store, JobStatus.SUCCEEDED, seconds=rng.uniform(6, 9), cost=4.0)
        if hour % 4 == 1 or hour == HOURS - 1:  # its deadline passes before anything claims it
            expiring(store, shop)
        clock.advance(3600.0)
        store.sweep_deadlines()
    clock.advance(max(0.0, time.time() - clock.now()))
    submit(store, shop, callback_url=receiver.url, callback_private=True)
    failed_job = run(store, JobStatus.SUCCEEDED, seconds=3.2, cost=1.0)
    (delivery,) = give_up(store, 503, "HTTP 503")
    reviewed = held_for_review(store, shop)
    submit(store, storm, "tiny")
    run(store, JobStatus.SUCCEEDED, seconds=0.4, cost=0.0)
    with store._write() as conn:
        conn.execute(
            services.update()
            .where(services.c.id == storm)
            .values(
                paused_at=store.clock.now(),
                paused_reason="trigger storm: 31 triggers in the last hour, more than 3 x 10/h",
            )
        )
    held = [
        store.submit(
            service_id=storm,
            workflow_id="tiny",
            workflow_version=1,
            trigger={"item_id": f"STORM-{i}"},
            external_id=f"STORM-{i}",
            callback_url=None,
        )[0].id
        for i in range(3)
    ]
    return {"delivery": delivery.id, "failed_job": failed_job, "held": held, "review": reviewed}


def test_dashboard_in_chromium(browser: Any, tmp_path: Path, db_kind: str) -> None:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    receiver = Receiver().start()
    closing: list[httpx.Client] = []
    g = Genhook(tmp_path / "g", database=db_kind, GENHOOK_ADMIN_KEY=ADMIN)
    store = Store(g.database_url, ManualClock(time.time() - HOURS * 3600.0))
    try:
        shop = store.service_for_key(g.key)
        assert shop is not None
        filled = fill(store, shop.id, receiver)
        g.serve(workers=1)
        ops = httpx.Client(
            base_url=g.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )
        closing.append(ops)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()

        # log in through the form
        page.goto(f"{g.base}/dashboard")
        assert page.url.endswith("/dashboard/login")
        page.screenshot(path=str(ARTIFACTS / "login.png"))
        page.fill("#key", "not the key")
        page.click("button[type=submit]")
        assert "That is not the operator key." in page.inner_text("main")
        page.fill("#key", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{g.base}/dashboard")
        cookie = next(c for c in context.cookies() if c["name"] == "genhook_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # every figure shown is the summary's
        for window in ("24h", "7d", "1h"):
            page.goto(f"{g.base}/dashboard?window={window}")
            summary = ops.get("/v1/ops/summary", params={"window": window}).json()
            assert [s["service"] for s in summary["services"]] == ["cms", "shop", "storm"]
            shop_totals = summary["services"][1]["totals"]
            assert shop_totals["expired"] >= (1 if window == "1h" else 2), window
            assert [s["awaiting_review"] for s in summary["services"]] == [0, 1, 0]
            review_total = page.locator('[data-total="awaiting_review"]').inner_text()
            assert review_total == "1"
            for service in summary["services"]:
                section = f'[data-service="{service["service"]}"]'
                figures = shown(page, f"{section} dl.figures")
                want = expected(service["totals"])
                want.update(
                    queued=f"{service['queued']:,}",
                    running=f"{service['running']:,}",
                    awaiting_review=f"{service['awaiting_review']:,}",
                    credits_today=money(service["credits_today"]),
                    rate_limit=service["rate_limit"] or "none",
                )
                if service["daily_budget"] is None:
                    want.update(daily_budget="(no budget)")
                else:
                    want.update(
                        daily_budget=money(service["daily_budget"]),
                        budget_used=pct(service["budget_used"]),
                    )
                assert figures == want, service["service"]
                badge = page.locator(f'{section} .service-head [data-figure="paused"]')
                assert badge.inner_text() == ("paused" if service["paused"] else "running")
                assert page.locator(f"{section} svg.chart").count() == 5
                rows = page.locator(f"{section} tr[data-workflow]")
                assert rows.count() == len(service["workflows"])
                for workflow in service["workflows"]:
                    row = f'{section} tr[data-workflow="{workflow["workflow_id"]}"]'
                    want = expected(workflow)
                    want.update(
                        completed=f"{workflow['completed']:,}", failed=f"{workflow['failed']:,}"
                    )
                    assert shown(page, row) == want, (window, workflow["workflow_id"])
        page.goto(f"{g.base}/dashboard?window=24h")
        storm = page.locator('[data-service="storm"]')
        assert "trigger storm" in storm.inner_text()
        assert storm.locator('[data-held="paused"]').inner_text() == "paused 3"
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # readable on a phone: nothing wider than the screen but the tables' own scroll boxes
        phone = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            extra_http_headers={"Authorization": f"Bearer {ADMIN}"},
        )
        small = phone.new_page()
        small.goto(f"{g.base}/dashboard?window=24h")
        assert small.evaluate("document.documentElement.scrollWidth") <= 390
        small.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        phone.close()

        # resume the paused service: its held jobs run
        page.click('[data-service="storm"] [data-action="resume"]')
        page.wait_for_url("**/dashboard?window=24h&resumed=storm&released=3")
        assert "Resumed storm: 3 held jobs released." in page.inner_text(".notice")
        assert page.locator('[data-service="storm"] [data-figure="paused"]').inner_text() == (
            "running"
        )
        for job_id in filled["held"]:
            wait_for(
                lambda j=job_id: getattr(store.job(j), "status", None) == JobStatus.SUCCEEDED,
                90,
                f"{job_id} to run after the resume",
            )
        assert ops.get("/v1/ops/summary").json()["services"][2]["paused"] is False

        # replay the failed delivery: the receiver gets it
        page.click("text=Failed deliveries")
        row = page.locator(f'tr[data-delivery="{filled["delivery"]}"]')
        assert "HTTP 503" in row.inner_text()
        page.screenshot(path=str(ARTIFACTS / "failed-deliveries.png"), full_page=True)
        assert not receiver.for_job(filled["failed_job"])
        row.locator('[data-action="replay"]').click()
        page.wait_for_url("**/dashboard/deliveries?replayed=*")
        assert "queued to be sent again" in page.inner_text(".notice")
        receiver.wait_job(filled["failed_job"], timeout=60)
        wait_for(
            lambda: getattr(store.delivery(filled["delivery"]), "status", None) == "delivered",
            30,
            "the replayed delivery to be recorded as delivered",
        )
        page.click("text=Held jobs")
        assert page.locator('tr[data-service="storm"] [data-held="paused"]').inner_text() == "0"
        page.screenshot(path=str(ARTIFACTS / "held.png"), full_page=True)
        context.close()
    finally:
        for client in closing:
            client.close()
        store.close()
        g.close()
        receiver.stop()
