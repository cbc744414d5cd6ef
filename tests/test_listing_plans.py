"""The listing on 100,000 jobs: every way of filtering reads its index (SQLite's EXPLAIN QUERY
PLAN, PostgreSQL's EXPLAIN), never a sort or a scan of the table, and a deep page is fast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from genhook.status import JobStatus
from genhook.store.listing import Cursor, JobFilter, listing_query
from genhook.store.schema import jobs
from genhook.store.store import Store
from tests.conftest import new_service
from tests.databases import database_url
from tests.listing_rows import add_jobs, job_rows

JOBS = 100_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, str]]:
    """A store with 100,000 jobs: 90,000 of one service, 10,000 of another."""
    with database_url(request.param, tmp_path_factory.mktemp("big")) as url:
        store = Store(url)
        store.migrate()
        shop, other = new_service(store, "shop"), new_service(store, "other")
        started = time.perf_counter()
        add_jobs(store.engine, job_rows(shop, 90_000) + job_rows(other, 10_000, first=90_000))
        assert time.perf_counter() - started < 60, "the bulk insert is too slow"
        try:
            yield store, shop
        finally:
            store.close()


def _plan(store: Store, query: sa.Select[tuple[object, ...]]) -> str:
    """The database's plan of ``query``, as one text."""
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    word = "EXPLAIN QUERY PLAN" if store.engine.dialect.name == "sqlite" else "EXPLAIN"
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"{word} {compiled}").all()
    return "\n".join(str(r[-1]) for r in rows)


CASES = {
    "all": (JobFilter(), "ix_jobs_service_created"),
    "status": (JobFilter(statuses=(JobStatus.FAILED,)), "ix_jobs_service_status_created"),
    "workflow": (JobFilter(workflow_id="banner"), "ix_jobs_service_workflow_created"),
    "range": (
        JobFilter(created_after=1_700_000_100.0, created_before=1_700_000_500.0),
        "ix_jobs_service_created",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_filter_pages_on_its_index(big: tuple[Store, str], case: str) -> None:
    store, shop = big
    filters, index = CASES[case]
    deep = Cursor(1_700_000_000.0 + 600.0, "job_b000000060000", filters.digest())
    for after in (None, deep):
        plan = _plan(store, listing_query(shop, filters, 51, after))
        assert index in plan, plan
        if store.engine.dialect.name == "sqlite":
            assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order
            assert "SCAN jobs" not in plan, plan
        else:
            assert "Sort" not in plan and "Seq Scan" not in plan, plan


def test_a_deep_page_is_as_fast_as_the_first(big: tuple[Store, str]) -> None:
    """Walking to page 1,000 of 50 costs what page 1 costs: each is a range read."""
    store, shop = big

    def page_ms(after: Cursor | None) -> float:
        best = float("inf")
        for _ in range(15):  # the best of 15: the machine is shared
            started = time.perf_counter()
            page = store.list_jobs(shop, limit=50, after=after)
            best = min(best, (time.perf_counter() - started) * 1000)
            assert len(page.jobs) == 50
        return best

    deep = Cursor(1_700_000_000.0 + 40_000 * 0.01, "job_b000000040000")  # 50,000 down
    deep_page = store.list_jobs(shop, limit=50, after=deep)
    assert deep_page.jobs[0].id == "job_b000000039999"
    shallow_ms, deep_ms = page_ms(None), page_ms(deep)
    assert deep_ms < max(3 * shallow_ms, 30.0), (shallow_ms, deep_ms)


def test_retries_and_external_ids_are_read_on_their_indexes(big: tuple[Store, str]) -> None:
    store, shop = big
    plan = _plan(store, listing_query(shop, JobFilter(external_id="SKU-7"), 101))
    assert "ix_jobs_service_external" in plan, plan
    query = sa.select(jobs.c.retry_of, jobs.c.id).where(jobs.c.retry_of.in_(["job_b1", "job_b2"]))
    assert "ix_jobs_retry_of" in _plan(store, query)
