"""Acceptance: the receiver helper on the trigger envelope's extra callbacks (``job.started``)
and the ``client_metadata`` echo, from a real ``genhook serve`` on each store."""

from __future__ import annotations

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
