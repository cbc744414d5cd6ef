"""The operator's view counts what the roll-ups and /metrics count: jobs that ended ``expired``
(their trigger's deadline passed before they started) in ``GET /v1/ops/summary`` and on the
dashboard, and the jobs awaiting review. Store-level on SQLite and PostgreSQL with an injected
clock; the dashboard's HTML from the app in process (the browser test checks it in Chromium)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.metrics import ENDED
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from genhook.status import JobStatus
from genhook.store.ops import FIGURES, Figures
from genhook.store.store import Store
from tests.conftest import CliResult
from tests.test_ops_summary import run, submit

ADMIN = "operator-key-for-expired-tests"


def expiring(store: Store, service_id: str, workflow: str = "product-image") -> str:
    """A job whose deadline is one second away (expired by the next sweep after that)."""
    return submit(
        store,
        service_id,
        workflow,
        envelope={
            "callback_events": [],
            "client_metadata": None,
            "priority": "normal",
            "deadline": store.clock.now() + 1,
        },
    )


def held_for_review(store: Store, service_id: str) -> str:
    job_id = submit(store, service_id, "review-flow")
    job = store.claim("w", 900)
    assert job is not None and job.id == job_id
    assert (
        store.hold_for_review(
            job_id,
            "w",
            payload={"job_id": job_id, "status": "success", "outputs": []},
            quality=[],
            credit_cost=0.0,
            work_seconds=1.0,
            cancelled={"job_id": job_id},
        )
        is JobStatus.AWAITING_REVIEW
    )
    return job_id


def fill(store: Store) -> dict[str, str]:
    shop = store.create_service("shop")["service_id"]
    expired = [expiring(store, shop) for _ in range(2)]
    expiring(store, shop, "banner")
    store.clock.advance(2)  # type: ignore[attr-defined]
    assert store.sweep_deadlines() == 3
    assert all(getattr(store.job(j), "status", None) == JobStatus.EXPIRED for j in expired)
    submit(store, shop)
    run(store, JobStatus.SUCCEEDED, seconds=2.0, cost=1.0)
    submit(store, shop)
    run(store, JobStatus.FAILED, seconds=1.0, cost=0.0)
    held_for_review(store, shop)
    return {"shop": shop}


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = ManualClock(1_800_000_000.0 + 1800)
    return store


def test_the_summary_counts_expired_jobs_as_the_roll_ups_do(clocked: Store) -> None:
    """Each ended job counts in exactly one of completed, failed, cancelled and expired; the
    rates are over all of them; the totals add up; the chart series carry them too."""
    fill(clocked)
    assert set(ENDED.values()) <= set(FIGURES)  # every ended status /metrics counts
    [shop] = clocked.ops_summary("24h").as_dict()["services"]
    workflows = {w["workflow_id"]: w for w in shop["workflows"]}
    product = workflows["product-image"]
    assert (product["completed"], product["failed"], product["expired"]) == (1, 1, 2)
    assert product["cancelled"] == 0
    assert product["completion_rate"] == pytest.approx(1 / 4)
    assert product["failure_rate"] == pytest.approx(1 / 4)
    assert workflows["banner"]["expired"] == 1
    assert shop["totals"]["expired"] == 3
    assert shop["awaiting_review"] == 1
    series = clocked.ops_series("24h")
    assert sum(f.expired for f in series.of_service(shop_id(clocked))) == 3
    assert Figures(expired=2, completed=2).completion_rate == 0.5


def shop_id(store: Store) -> str:
    found = store.service_by_name("shop")
    assert found is not None
    return str(found.id)


def test_the_dashboard_shows_expired_jobs_and_the_review_queue(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=store.url,
        workflows_dir=shipped_dir("workflows"),
        admin_key=ADMIN,
    ).resolved()
    runtime = Runtime.build(settings, clock=ManualClock(1_800_000_000.0 + 1800))
    try:
        fill(runtime.store)
        client = TestClient(create_app(runtime))
        page = client.get("/dashboard", headers={"Authorization": f"Bearer {ADMIN}"})
        assert page.status_code == 200, page.text
        text = page.text
        # the totals, then per workflow: banner, product-image, review-flow
        assert _figure(text, "expired") == ["3", "1", "2", "0"]
        assert _figure(text, "awaiting_review") == ["1"]
        assert re.search(r'data-total="awaiting_review"[^>]*>1<', text)
        assert "bar-expired" in text  # a layer of the jobs-ended chart
    finally:
        runtime.store.close()


def _figure(html: str, name: str) -> list[Any]:
    return re.findall(rf'data-figure="{name}"[^>]*>(?:<a [^>]*>)?([^<]*)<', html)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_genhook_ops_prints_the_expired_and_review_columns(
    store: Store, genhook: Callable[..., CliResult], tmp_path: Path
) -> None:
    """``genhook ops``'s tables: the services' ``review`` column (jobs awaiting review) and the
    workflows' ``expired`` column, with the summary's figures."""
    env = {"GENHOOK_DATA_DIR": str(tmp_path / "data"), "GENHOOK_DATABASE_URL": store.url}
    store.clock = ManualClock()
    fill(store)
    done = genhook("ops", env=env)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    services, workflows = (
        next(i for i, line in enumerate(lines) if line.startswith(title))
        for title in ("Services", "Workflows")
    )
    header = " ".join(lines[services : services + 4])
    assert "review" in header
    [shop] = [line for line in lines[services:workflows] if "shop" in line]
    assert re.search(r"│\s+1\s+│\s+0\s+│", shop), shop  # awaiting review 1, held 0
    [product] = [line for line in lines[workflows:] if "product-image" in line]
    # triggers 4, completed 1, failed 1, expired 2
    assert re.search(r"│\s+4\s+│\s+1\s+│\s+1\s+│\s+2\s+│", product), product
