"""The client's parts that need no server: the retry decision, the trigger body, the SSE parser,
and the receiver's verification checked against the standardwebhooks library's own signing and
genhook's signer. (The client against a real `genhook serve`: tests/acceptance/test_client.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from genhook.client import (
    BatchEvent,
    CompletionPayload,
    JobStatusEvent,
    OperatorEvent,
    Receiver,
    RetryPolicy,
    UnknownEvent,
    WebhookPayloadError,
    WebhookVerificationError,
    parse_event,
    verify_webhook,
)
from genhook.client._core import SSEParser, api_error, retry_after, trigger_body
from genhook.delivery import signing

NOW = 1_800_000_000


def test_import_genhook_stays_light() -> None:
    """`import genhook` imports neither the client nor httpx; `from genhook import Client`
    imports the client and nothing of the server."""
    code = (
        "import sys, genhook\n"
        "light = not any(m in sys.modules for m in ('httpx', 'pydantic', 'genhook.client'))\n"
        "from genhook import AsyncClient, Client, Receiver, ApiError\n"
        "server = sorted(m for m in sys.modules if m.startswith('genhook.')\n"
        "    and not m.startswith('genhook.client') and m != 'genhook.errors')\n"
        "print(light, server, Client.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True [] genhook.client.sync"


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error_code": "x"})


def test_retry_policy() -> None:
    """429/503 wait Retry-After (bounded) for every call; a lost connection is retried only
    for idempotent calls, a connection never made for all; attempts are bounded."""
    policy = RetryPolicy(attempts=3, backoff=0.5, max_backoff=8, max_retry_after=10)
    assert policy.delay(0, False, _response(429, **{"retry-after": "2"})) == 2.0
    assert policy.delay(0, False, _response(503, **{"retry-after": "10"})) == 10.0
    assert policy.delay(0, True, _response(503, **{"retry-after": "11"})) is None
    assert 0 <= (policy.delay(1, False, _response(503)) or -1) <= 1.0
    assert policy.delay(2, True, _response(503, **{"retry-after": "1"})) is None
    assert policy.delay(0, True, _response(422)) is None
    assert policy.delay(0, True, _response(500)) is None
    assert policy.delay(0, True, _response(502)) is not None
    assert policy.delay(0, False, _response(502)) is None
    lost = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert policy.delay(0, True, error=lost) is not None
    assert policy.delay(0, False, error=lost) is None
    refused = httpx.ConnectError("connection refused")
    assert policy.delay(0, False, error=refused) is not None
    assert policy.delay(2, False, error=refused) is None


def test_retry_after_forms() -> None:
    """Retry-After as seconds or as an HTTP date; absent or garbage: None."""
    assert retry_after(_response(429, **{"retry-after": "3"})) == 3.0
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= (retry_after(_response(429, **{"retry-after": soon})) or 0) <= 31
    assert retry_after(_response(429, **{"retry-after": "soon"})) is None
    assert retry_after(_response(429)) is None


def test_api_error_of_an_answer() -> None:
    """The error shape becomes ApiError's fields; a non-JSON answer keeps its status."""
    answer = httpx.Response(
        422,
        json={
            "error_code": "unknown_field",
            "error_description": "colour is not a field",
            "field": "colour",
            "job_id": "job_1",
        },
    )
    error = api_error(answer)
    assert (error.status, error.error_code, error.field, error.job_id) == (
        422,
        "unknown_field",
        "colour",
        "job_1",
    )
    bare = api_error(httpx.Response(502, text="Bad Gateway"))
    assert bare.status == 502 and bare.error_code == "http_502" and bare.field is None


def test_trigger_body_merges_the_envelope() -> None:
    """Envelope keywords sit beside the input; a deadline goes out as RFC 3339 UTC; a name
    given twice, or one that is not an envelope field, is refused."""
    deadline = datetime(2026, 12, 1, 13, 0, tzinfo=UTC) + timedelta(microseconds=0)
    body = trigger_body(
        {"item_id": "a"},
        {
            "callback_url": "https://example.com/h",
            "callback_events": ("job.started",),
            "deadline": deadline,
            "priority": None,
        },
    )
    assert body == {
        "item_id": "a",
        "callback_url": "https://example.com/h",
        "callback_events": ["job.started"],
        "deadline": "2026-12-01T13:00:00Z",
    }
    with pytest.raises(ValueError, match="both"):
        trigger_body({"priority": "low"}, {"priority": "high"})
    with pytest.raises(TypeError):
        trigger_body({}, {"colour": "red"})
    with pytest.raises(ValueError, match="time zone"):
        trigger_body({}, {"deadline": datetime(2026, 12, 1)})


def test_sse_parser() -> None:
    """Events split on blank lines; comments (keep-alives) dropped; multi-line data joined;
    the last id kept for Last-Event-ID."""
    parser = SSEParser()
    stream = [
        ": genhook job events",
        "",
        "id: 7",
        "event: queued",
        'data: {"job_id": "job_1", "status": "queued", "at": "2026-12-01T12:00:00.000Z"}',
        "",
        ": keep-alive",
        "",
        "id: 9",
        "event: progress",
        'data: {"job_id": "job_1", "status": "running",',
        'data: "progress": {"step": 1, "total": 4, "percent": 25}}',
        "",
    ]
    events = [e for e in map(parser.feed, stream) if e is not None]
    assert [(e.id, e.event, e.status) for e in events] == [
        ("7", "queued", "queued"),
        ("9", "progress", "running"),
    ]
    assert events[1].progress == {"step": 1, "total": 4, "percent": 25}
    assert parser.last_id == "9" and not events[0].terminal


SECRET = signing.new_secret()
OLD = signing.new_secret()


def _payload(**over: Any) -> bytes:
    payload = {
        "schema_version": "1",
        "event": "job.completed",
        "job_id": "job_1",
        "workflow_id": "tiny",
        "status": "success",
        "external_id": "a",
        "outputs": [],
        "seo": None,
        "metadata": {
            "prompt_used": "p",
            "model_id": "m",
            "credit_cost": 0,
            "processing_time_seconds": 1.5,
            "attempts": 1,
            "seed": 3,
        },
        "quality_warning": None,
        "error": None,
        "timestamp": "2026-12-01T12:00:00Z",
        "client_metadata": {"order": 7},
        "test": False,
        **over,
    }
    return json.dumps(payload).encode()


def _library_headers(secret: str, body: bytes, at: int = NOW, msg: str = "msg_1") -> dict[str, str]:
    """Headers signed by the standardwebhooks library itself."""
    signature = Webhook(secret).sign(msg, datetime.fromtimestamp(at, UTC), body.decode())
    return {"Webhook-Id": msg, "Webhook-Timestamp": str(at), "Webhook-Signature": signature}


def test_receiver_accepts_the_reference_librarys_signature() -> None:
    """A delivery signed by standardwebhooks verifies, whatever the headers' case, and parses
    into a typed completion payload."""
    body = _payload()
    receiver = Receiver(SECRET, clock=lambda: NOW)
    event = receiver.parse(body, _library_headers(SECRET, body))
    assert isinstance(event, CompletionPayload) and event.succeeded
    assert event.client_metadata == {"order": 7} and event.metadata is not None
    assert receiver.verify(body.decode(), _library_headers(SECRET, body))["job_id"] == "job_1"


def test_receiver_with_both_secrets_and_the_two_signature_header() -> None:
    """genhook's signer during an overlap (two signatures): each secret alone verifies; a list
    of secrets verifies a delivery signed with either."""
    body = _payload()
    both = signing.headers(SECRET, "msg_2", NOW, body, also=(OLD,))
    assert len(both["webhook-signature"].split()) == 2
    for secrets in (SECRET, OLD, [OLD, SECRET]):
        assert Receiver(secrets, clock=lambda: NOW).verify(body, both)["job_id"] == "job_1"
    old_only = signing.headers(OLD, "msg_3", NOW, body)
    assert Receiver([SECRET, OLD], clock=lambda: NOW).verify(body, old_only)
    with pytest.raises(WebhookVerificationError):
        Receiver(SECRET, clock=lambda: NOW).verify(body, old_only)


@pytest.mark.parametrize(
    "change",
    [
        "body",
        "id",
        "timestamp",
        "no-signature",
        "v2-only",
        "garbage-entry",
        "too-old",
        "too-new",
        "not-utf8",
    ],
)
def test_receiver_refuses(change: str) -> None:
    """A changed body, id or timestamp, a missing or unknown-version signature, a malformed
    entry, a timestamp outside the tolerance: WebhookVerificationError, never another error."""
    body = _payload()
    headers = _library_headers(SECRET, body)
    clock = NOW
    if change == "body":
        body = _payload(external_id="b")
    elif change == "id":
        headers["Webhook-Id"] = "msg_9"
    elif change == "timestamp":
        headers["Webhook-Timestamp"] = str(NOW + 1)
    elif change == "no-signature":
        del headers["Webhook-Signature"]
    elif change == "v2-only":
        headers["Webhook-Signature"] = headers["Webhook-Signature"].replace("v1,", "v2,")
    elif change == "garbage-entry":
        headers["Webhook-Signature"] = "v1 v1,@@@ nonsense"
    elif change == "too-old":
        clock = NOW + 301
    elif change == "too-new":
        clock = NOW - 301
    elif change == "not-utf8":
        body = b"\xff" + body
    with pytest.raises(WebhookVerificationError):
        Receiver(SECRET, clock=lambda: clock).parse(body, headers)


def test_receiver_tolerance_is_configurable() -> None:
    """Inside the tolerance (either way) verifies; the tolerance can be widened."""
    body = _payload()
    headers = _library_headers(SECRET, body)
    assert Receiver(SECRET, clock=lambda: NOW + 299).verify(body, headers)
    assert Receiver(SECRET, clock=lambda: NOW - 299).verify(body, headers)
    assert Receiver(SECRET, tolerance=900, clock=lambda: NOW + 800).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Receiver(SECRET, tolerance=10, clock=lambda: NOW + 11).verify(body, headers)
    with pytest.raises(ValueError):
        Receiver([])


def test_verify_webhook_now() -> None:
    """The one-off helper on the wall clock: genhook's own signer, just now."""
    import time

    body = _payload(event="job.failed", status="failed", error={"error_code": "cancelled"})
    at = int(time.time())
    event = verify_webhook(body, signing.headers(SECRET, "msg_4", at, body), [OLD, SECRET])
    assert isinstance(event, CompletionPayload) and not event.succeeded
    assert event.error is not None and event.error.error_code == "cancelled"


def test_parse_event_by_kind() -> None:
    """Each kind of delivery becomes its type; an unknown event stays readable; a completion
    of the wrong shape is refused as a payload error."""
    assert isinstance(parse_event(json.loads(_payload())), CompletionPayload)
    started = parse_event({"event": "job.started", "job_id": "job_1", "status": "running"})
    assert isinstance(started, JobStatusEvent) and started.job_id == "job_1"
    batch = parse_event({"event": "batch.completed", "batch_id": "bat_1", "counts": {}})
    assert isinstance(batch, BatchEvent) and batch.counts == {}
    alert = parse_event(
        {"event": "service.paused", "service": "shop", "timestamp": None, "details": {}}
    )
    assert isinstance(alert, OperatorEvent)
    assert isinstance(parse_event({"event": "thing.new", "x": 1}), UnknownEvent)
    with pytest.raises(WebhookPayloadError):
        parse_event({"event": "job.completed", "job_id": "job_1"})
    with pytest.raises(WebhookPayloadError):
        parse_event([1, 2])


def test_a_connection_never_made_is_retried_then_raised() -> None:
    """Nothing listens on the port: every call (even a non-idempotent one) is tried
    ``attempts`` times, waiting the backoff between, then httpx's ConnectError is raised."""
    import socket

    from genhook import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
    genhook = Client(f"http://127.0.0.1:{port}", "key", retry=policy, sleep=slept.append)
    with genhook, pytest.raises(httpx.ConnectError):
        genhook.review("job_1", "reject", note="darker")
    assert len(slept) == 2 and all(0 <= s <= 0.02 for s in slept)
