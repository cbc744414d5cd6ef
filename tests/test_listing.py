"""The job listing's store part (keyset pages, filters, cursors) and retries' links, on SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest

from genhook.errors import ErrorCode, GenhookError
from genhook.status import JobStatus
from genhook.store.listing import CURSOR_PREFIX, Cursor, JobFilter, as_retry
from genhook.store.store import Store
from tests.conftest import new_service
from tests.listing_rows import add_jobs, job_rows


def _walk(store: Store, service_id: str, filters: JobFilter, limit: int) -> list[str]:
    """Every job id of a listing, page after page (each cursor through its text form)."""
    seen: list[str] = []
    after = None
    while True:
        page = store.list_jobs(service_id, filters, limit=limit, after=after)
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            return seen
        assert len(page.jobs) == limit
        after = Cursor.decode(page.next_cursor.encode(), filters)


def test_pages_cover_every_job_once_newest_first(store: Store) -> None:
    shop = new_service(store, "shop")
    other = new_service(store, "other")
    add_jobs(store.engine, job_rows(shop, 95) + job_rows(other, 5, first=95))
    seen = _walk(store, shop, JobFilter(), limit=10)
    assert seen == [f"job_b{n:012d}" for n in reversed(range(95))]
    # the last page is short and has no next cursor; a page exactly at the end has none either
    page = store.list_jobs(shop, limit=95)
    assert len(page.jobs) == 95 and page.next_cursor is None


def test_ties_on_created_at_are_broken_by_id(store: Store) -> None:
    shop = new_service(store, "shop")
    add_jobs(store.engine, job_rows(shop, 30, spacing=0.0))  # all in the same instant
    assert _walk(store, shop, JobFilter(), limit=7) == [
        f"job_b{n:012d}" for n in reversed(range(30))
    ]


def test_pages_are_stable_while_jobs_are_added(store: Store) -> None:
    """Jobs accepted between two pages are newer than the cursor: the next pages neither
    repeat nor skip a job that existed when the listing began."""
    shop = new_service(store, "shop")
    add_jobs(store.engine, job_rows(shop, 40))
    first = store.list_jobs(shop, limit=15)
    add_jobs(store.engine, job_rows(shop, 20, first=1000))  # later than all 40
    rest: list[str] = []
    after = first.next_cursor
    while after is not None:
        page = store.list_jobs(shop, limit=15, after=after)
        rest += [job.id for job in page.jobs]
        after = page.next_cursor
    listed = [job.id for job in first.jobs] + rest
    assert listed == [f"job_b{n:012d}" for n in reversed(range(40))]
    # a fresh listing starts with the new ones
    assert store.list_jobs(shop, limit=1).jobs[0].id == f"job_b{1019:012d}"


def test_filters(store: Store) -> None:
    shop = new_service(store, "shop")
    rows = job_rows(shop, 120)
    add_jobs(store.engine, rows)

    def expect(keep: object) -> list[str]:
        return [r["id"] for r in reversed(rows) if keep(r)]  # type: ignore[operator]

    failed = JobFilter(statuses=(JobStatus.FAILED,))
    assert _walk(store, shop, failed, 7) == expect(lambda r: r["status"] == "failed")
    ended = JobFilter(statuses=(JobStatus.FAILED, JobStatus.CANCELLED))
    assert _walk(store, shop, ended, 9) == expect(lambda r: r["status"] in ("failed", "cancelled"))
    banner = JobFilter(workflow_id="banner")
    assert _walk(store, shop, banner, 11) == expect(lambda r: r["workflow_id"] == "banner")
    t0, t1 = rows[30]["created_at"], rows[70]["created_at"]
    window = JobFilter(created_after=t0, created_before=t1)  # [t0, t1)
    assert _walk(store, shop, window, 6) == expect(lambda r: t0 <= r["created_at"] < t1)
    both = JobFilter(statuses=(JobStatus.SUCCEEDED,), workflow_id="product-image")
    assert _walk(store, shop, both, 4) == expect(
        lambda r: r["status"] == "succeeded" and r["workflow_id"] == "product-image"
    )
    sku = JobFilter(external_id="SKU-7")
    assert _walk(store, shop, sku, 2) == expect(lambda r: r["external_id"] == "SKU-7")
    assert store.list_jobs(shop, JobFilter(workflow_id="nope")).jobs == []


def test_a_cursor_is_refused_when_it_is_not_one_or_belongs_to_other_filters(
    store: Store,
) -> None:
    shop = new_service(store, "shop")
    add_jobs(store.engine, job_rows(shop, 5))
    page = store.list_jobs(shop, JobFilter(workflow_id="banner"), limit=1)
    assert page.next_cursor is not None
    text = page.next_cursor.encode()
    assert text.startswith(CURSOR_PREFIX) and "job_b" not in text  # opaque
    forged = CURSOR_PREFIX + base64.urlsafe_b64encode(json.dumps(["x", 1]).encode()).decode()
    for bad in ("", "abc", CURSOR_PREFIX + "!!!", forged, text + "x" * 400):
        with pytest.raises(GenhookError) as caught:
            Cursor.decode(bad, JobFilter(workflow_id="banner"))
        assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_CURSOR, "cursor")
    with pytest.raises(GenhookError) as caught:
        Cursor.decode(text, JobFilter(workflow_id="social-card"))
    assert caught.value.code is ErrorCode.INVALID_CURSOR
    assert "other filters" in caught.value.description
    assert Cursor.decode(text, JobFilter(workflow_id="banner")) == page.next_cursor


def test_a_retry_is_linked_both_ways(store: Store) -> None:
    shop = new_service(store, "shop")
    old, _ = store.submit(
        service_id=shop,
        workflow_id="product-image",
        workflow_version=3,
        trigger={"product_id": "P-1"},
        external_id="P-1",
        callback_url="https://example.com/hook",
        envelope={"priority": "high", "client_metadata": {"a": 1}, "deadline": None},
    )
    # a plain trigger submitted in the same batch as the retry keeps retry_of None
    retry = as_retry(
        store.submission(
            service_id=shop,
            workflow_id=old.workflow_id,
            workflow_version=old.workflow_version,
            trigger=old.input,
            external_id=old.external_id,
            callback_url=old.callback_url,
            envelope=old.envelope,
        ),
        old.id,
    )
    made, created = store._batcher.run(retry)
    assert created and made.retry_of == old.id
    again = store.job(made.id)
    assert again is not None
    assert (again.retry_of, again.input, again.workflow_version) == (old.id, old.input, 3)
    assert (again.callback_url, again.envelope) == (old.callback_url, old.envelope)
    assert store.job(old.id).retry_of is None  # type: ignore[union-attr]
    assert store.retried_by(old.id) == [made.id]
    assert store.retried_by(made.id) == []
    page = store.list_jobs(shop)
    assert [j.id for j in page.jobs] == [made.id, old.id]
    assert page.retried_by == {old.id: [made.id]}
