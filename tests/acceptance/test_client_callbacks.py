"""Acceptance: the client and receiver on the trigger envelope (``job.started`` callbacks, the
``client_metadata`` echo, a ``deadline``), against a real ``genhook serve`` on each store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from genhook import Client
from genhook.client import CompletionPayload, JobStatusEvent, Receiver
from tests.acceptance.harness import Genhook
from tests.acceptance.harness import Receiver as Hooks
from tests.acceptance.test_client import client


def test_receiver_parses_job_started_and_the_echoed_metadata(
    service: Genhook, receiver: Hooks
) -> None:
    """callback_events=["job.started"]: a signed job.started callback that parses into a
    JobStatusEvent, then the completion; both echo client_metadata."""
    with client(service) as genhook:
        accepted = genhook.trigger(
            "tiny",
            {"item_id": "started-1"},
            callback_url=receiver.url,
            callback_events=["job.started"],
            client_metadata={"order": 7},
        )
        genhook.wait(accepted.job_id, timeout=60)
    calls = receiver.wait_job(accepted.job_id, count=2)
    events = [Receiver(service.secret).parse(c.body, c.headers) for c in calls]
    started = [e for e in events if isinstance(e, JobStatusEvent)]
    completed = [e for e in events if isinstance(e, CompletionPayload)]
    assert [e.event for e in started] == ["job.started"] and len(completed) == 1
    assert started[0].job_id == accepted.job_id and started[0].attempt == 1
    assert started[0].client_metadata == {"order": 7}
    assert completed[0].client_metadata == {"order": 7} and completed[0].succeeded


def test_a_deadline_sent_as_a_datetime_expires_a_waiting_job(service: Genhook) -> None:
    """deadline=datetime: sent as RFC 3339; a job held past it (its service's rate spent)
    ends expired, and wait() returns it with the deadline_expired payload."""
    created = json.loads(service.cli("services", "create", "slow", "--rate-limit", "1/h").stdout)
    with Client(service.base, created["api_key"]) as genhook:
        genhook.trigger("tiny", {"item_id": "slow-1"})
        deadline = datetime.now(UTC) + timedelta(seconds=2)
        held = genhook.trigger("tiny", {"item_id": "slow-2"}, deadline=deadline)
        job = genhook.wait(held.job_id, timeout=60)
    assert job.status == "expired" and job.ended
    assert job.result is not None and not job.result.succeeded
    assert job.result.error is not None and job.result.error.error_code == "deadline_expired"
