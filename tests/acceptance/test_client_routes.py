"""Acceptance: the client's calls of the routes built alongside it (job listing and retry,
batches), against a real ``genhook serve`` on each store. The review queue's:
tests/acceptance/test_client_reviews.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from genhook import Client
from genhook.client import (
    BatchEvent,
    Receiver,
)
from tests.acceptance.harness import Genhook, wait_for
from tests.acceptance.harness import Receiver as Hooks
from tests.acceptance.test_client import DroppingProxy, client


@pytest.fixture
def proxy_for(service: Genhook) -> Iterator[Callable[[bytes], DroppingProxy]]:
    """Proxies in front of ``service`` that drop the first answer to a request line holding
    the given bytes (closed after the test)."""
    made: list[DroppingProxy] = []

    def make(drop: bytes) -> DroppingProxy:
        made.append(DroppingProxy(service.port, drop=drop))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_list_iterates_every_page(service: Genhook) -> None:
    """list(): every job that matches, newest first, across pages of ``limit`` (next_cursor),
    none twice; filters by workflow, status (one or several) and creation time."""
    with client(service) as genhook:
        since = datetime.now(UTC) - timedelta(seconds=1)
        made = [genhook.trigger("tiny", {"item_id": f"page-{n}"}).job_id for n in range(5)]
        for job_id in made:
            genhook.wait(job_id, timeout=60)
        listed = [j.job_id for j in genhook.list(workflow_id="tiny", created_after=since, limit=2)]
        assert listed == made[::-1]
        first = genhook.list_page(workflow_id="tiny", created_after=since, limit=2)
        assert len(first.jobs) == 2 and first.next_cursor is not None
        done = genhook.list(status=["succeeded", "failed"], created_after=since, limit=3)
        assert {j.job_id for j in done} >= set(made)
        assert not list(genhook.list(status="queued", created_after=since, workflow_id="tiny"))


def test_retry_of_an_ended_job(service: Genhook) -> None:
    """retry(): a new job of the same input linked by retry_of; the old job names it in
    retried_by."""
    with client(service) as genhook:
        old = genhook.trigger("tiny", {"item_id": "to-retry"})
        genhook.wait(old.job_id, timeout=60)
        again = genhook.retry(old.job_id)
        assert again.job_id != old.job_id and again.retry_of == old.job_id
        job = genhook.wait(again.job_id, timeout=60)
        assert job.status == "succeeded" and job.retry_of == old.job_id
        assert genhook.get(old.job_id).retried_by == [again.job_id]


def test_retry_sent_again_after_a_dropped_connection_makes_one_job(
    service: Genhook, proxy_for: Callable[[bytes], DroppingProxy]
) -> None:
    """retry() carries an Idempotency-Key: its answer lost, it is sent again and answers the
    same new job."""
    with client(service) as genhook:
        old = genhook.trigger("tiny", {"item_id": "retry-dropped"})
        genhook.wait(old.job_id, timeout=60)
    retry_proxy = proxy_for(b"/retry")
    with Client(f"http://127.0.0.1:{retry_proxy.port}", service.key) as through:
        again = through.retry(old.job_id)
    assert retry_proxy.dropped == 1
    with client(service) as genhook:
        assert genhook.get(old.job_id).retried_by == [again.job_id]


def test_batch_items_in_order_and_its_callback(service: Genhook, receiver: Hooks) -> None:
    """batch(): one item per trigger, in order, a job id or the item's own error with its
    field; get_batch() counts them; the batch callback parses into a BatchEvent."""
    items = [{"item_id": "b-0"}, {"item_id": "b-1"}, {"item_id": "b-2", "colour": "red"}]
    with client(service) as genhook:
        batch = genhook.batch("tiny", items, callback_url=receiver.url)
        assert [i.index for i in batch.items] == [0, 1, 2]
        assert len(batch.job_ids) == 2 and batch.items[2].job_id is None
        (refused,) = batch.errors
        assert refused.error is not None and refused.error.field == "colour"
        for job_id in batch.job_ids:
            assert genhook.wait(job_id, timeout=60).status == "succeeded"
        ended = wait_for(
            lambda: (b := genhook.get_batch(batch.batch_id)).status == "ended" and b,
            30,
            "the batch to end",
        )
        assert ended.counts is not None and ended.counts["refused"] == 1
    calls = wait_for(
        lambda: [c for c in receiver.calls() if c.json.get("batch_id") == batch.batch_id],
        30,
        "the batch callback",
    )
    event = Receiver(service.secret).parse(calls[0].body, calls[0].headers)
    assert isinstance(event, BatchEvent) and event.batch_id == batch.batch_id
    assert event.counts["refused"] == 1 and event.counts["succeeded"] == 2


def test_batch_sent_again_after_a_dropped_connection_makes_no_second_job(
    service: Genhook, proxy_for: Callable[[bytes], DroppingProxy]
) -> None:
    """batch() carries an Idempotency-Key: sent again after its answer was lost, every item
    answers the job first made for it (replayed)."""
    items = [{"item_id": "bd-0"}, {"item_id": "bd-1"}]
    batch_proxy = proxy_for(b"/batches")
    with Client(f"http://127.0.0.1:{batch_proxy.port}", service.key) as through:
        batch = through.batch("tiny", items)
    assert batch_proxy.dropped == 1
    assert all(item.replayed for item in batch.items)
    for n, job_id in enumerate(batch.job_ids):
        found = service.http.get("/v1/jobs", params={"external_id": f"bd-{n}"}).json()
        assert [j["job_id"] for j in found["jobs"]] == [job_id]
