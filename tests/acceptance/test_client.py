"""Acceptance: genhook's Python client (``genhook.Client``, ``genhook.AsyncClient``) and its
callback receiver, against a real ``genhook serve`` on each store, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genhook import ApiError, AsyncClient, Client
from genhook.client import (
    CompletionPayload,
    JobEvent,
    Output,
    Receiver,
    RetryPolicy,
    WebhookVerificationError,
)
from tests.acceptance.harness import Genhook, wait_for
from tests.acceptance.harness import Receiver as Hooks


def client(g: Genhook, **kw: Any) -> Client:
    return Client(g.base, g.key, **kw)


def test_trigger_wait_gives_the_typed_completion(service: Genhook, receiver: Hooks) -> None:
    """trigger -> wait (event stream, and polling) -> the job with its completion payload
    typed; the callback is the same payload."""
    with client(service) as genhook:
        accepted = genhook.trigger(
            "tiny", {"item_id": "client-1"}, callback_url=receiver.url, priority="high"
        )
        assert accepted.status == "queued" and accepted.job_id.startswith("job_")
        assert not accepted.replayed
        job = genhook.wait(accepted.job_id, timeout=60)
        assert job.status == "succeeded" and job.ended and job.priority == "high"
        payload = job.result
        assert isinstance(payload, CompletionPayload) and payload.succeeded
        assert payload.event == "job.completed" and payload.external_id == "client-1"
        (output,) = payload.outputs
        assert isinstance(output, Output)
        assert (output.width, output.height, output.asset_type) == (64, 64, "image")
        assert payload.metadata is not None and payload.metadata.attempts == 1
        polled = genhook.wait(accepted.job_id, timeout=10, stream=False)
        assert polled.result == payload
    (call,) = receiver.wait_job(accepted.job_id)
    assert Receiver(service.secret).parse(call.body, call.headers) == payload


def test_async_client_trigger_wait_and_events(service: Genhook) -> None:
    """The same with AsyncClient: trigger, its events as they happen, wait."""

    async def scenario() -> tuple[list[JobEvent], Any]:
        async with AsyncClient(service.base, service.key) as genhook:
            accepted = await genhook.trigger("tiny", {"item_id": "client-async"})
            events = [e async for e in genhook.events(accepted.job_id, timeout=60)]
            return events, await genhook.wait(accepted.job_id, timeout=10)

    events, job = asyncio.run(scenario())
    assert events[0].status == "queued" and events[-1].status == "succeeded"
    assert events[-1].result == job.result and job.result.succeeded


def test_events_stream_and_resume(service: Genhook) -> None:
    """events(): every state change in order, the last with the payload; resumed after an
    event id, the stream gives only what came after it."""
    with client(service) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": "client-events"})
        events = list(genhook.events(accepted.job_id, timeout=60))
        statuses = [e.status for e in events]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded"
        assert "running" in statuses
        assert events[-1].terminal and isinstance(events[-1].result, CompletionPayload)
        assert all(e.job_id == accepted.job_id for e in events)
        ids = [int(e.id or 0) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        rest = list(genhook.events(accepted.job_id, last_event_id=events[0].id, timeout=10))
        assert [e.id for e in rest] == [e.id for e in events[1:]]


def test_invalid_trigger_raises_api_error_with_field(service: Genhook) -> None:
    """A 422 is raised at once (never retried) as ApiError with code, field and job id."""
    slept: list[float] = []
    with client(service, sleep=slept.append) as genhook:
        with pytest.raises(ApiError) as caught:
            genhook.trigger(
                "product-image",
                {
                    "product_id": "SKU-C1",
                    "product_name": "Mug",
                    "target_style": "baroque",
                    "target_platform": "instagram_feed",
                },
            )
        error = caught.value
        assert error.status == 422 and error.error_code == "unknown_style"
        assert error.field == "target_style" and error.error_description
        assert error.job_id is not None and error.job_id.startswith("job_")
        assert slept == []
        with pytest.raises(ApiError) as missing:
            genhook.get("job_does_not_exist")
        assert missing.value.status == 404


def test_workflows_and_dry_run(service: Genhook) -> None:
    """workflows(), workflow(id) and dry_run() give typed templates and plans."""
    with client(service) as genhook:
        names = {w.workflow_id for w in genhook.workflows()}
        assert {"tiny", "product-image"} <= names
        product = genhook.workflow("product-image")
        assert "target_style" in product.input_schema["properties"]
        plan = genhook.dry_run("tiny", {"item_id": "dry-1"})
        assert plan.workflow_id == "tiny" and plan.external_id == "dry-1" and plan.outputs


def test_list_by_external_id(service: Genhook) -> None:
    """list(external_id=...) iterates the jobs found by the caller's own id."""
    with client(service) as genhook:
        first = genhook.trigger("tiny", {"item_id": "client-list"})
        second = genhook.trigger("tiny", {"item_id": "client-list"})
        found = [j.job_id for j in genhook.list(external_id="client-list")]
        assert found[:2] == [second.job_id, first.job_id]


# -- idempotency across a dropped connection ---------------------------------------------------


class DroppingProxy:
    """A TCP proxy on loopback in front of genhook that, for the first request whose line
    contains ``drop``, forwards the request, lets genhook answer it, then closes the client's
    connection without passing the answer on: the connection a client sees drop after the
    server did the work. Everything else is piped through."""

    def __init__(self, upstream_port: int, drop: bytes) -> None:
        self.upstream = upstream_port
        self.drop = drop
        self.dropped = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_message(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            while True:
                request = self._read_message(conn)
                if not request:
                    return
                self.requests.append(request)
                up.sendall(request)
                answer = self._read_message(up)
                if self.drop in request.split(b"\r\n", 1)[0] and self.dropped == 0:
                    self.dropped += 1
                    return  # genhook answered; the client never hears it
                conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy(service: Genhook) -> Iterator[DroppingProxy]:
    p = DroppingProxy(service.port, drop=b"/runs")
    yield p
    p.close()


def _key_of(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"idempotency-key":
            return value.strip().decode()
    raise AssertionError("no Idempotency-Key sent")


def test_trigger_retried_after_a_dropped_connection_makes_one_job(
    service: Genhook, proxy: DroppingProxy
) -> None:
    """Idempotency by default: the answer to the trigger is lost on the way back, the client
    sends it again with the same generated key, and genhook answers the job it made the first
    time: one job."""
    with Client(f"http://127.0.0.1:{proxy.port}", service.key) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": "client-dropped"})
    assert proxy.dropped == 1
    runs = [r for r in proxy.requests if b"/runs" in r.split(b"\r\n", 1)[0]]
    assert len(runs) == 2 and _key_of(runs[0]) == _key_of(runs[1])
    assert accepted.replayed, "the second answer is the replay (200) of the first job"
    found = service.http.get("/v1/jobs", params={"external_id": "client-dropped"}).json()
    assert [j["job_id"] for j in found["jobs"]] == [accepted.job_id]


def test_each_trigger_gets_its_own_key_unless_given(service: Genhook) -> None:
    """Two calls with the same input are two jobs (a fresh key each); an explicit key twice
    is one job, and with another input a 409 (not retried)."""
    with client(service) as genhook:
        a = genhook.trigger("tiny", {"item_id": "client-keys"})
        b = genhook.trigger("tiny", {"item_id": "client-keys"})
        assert a.job_id != b.job_id
        c = genhook.trigger("tiny", {"item_id": "client-keys"}, idempotency_key="order-77")
        d = genhook.trigger("tiny", {"item_id": "client-keys"}, idempotency_key="order-77")
        assert c.job_id == d.job_id and d.replayed and not c.replayed
        with pytest.raises(ApiError) as conflict:
            genhook.trigger("tiny", {"item_id": "client-other"}, idempotency_key="order-77")
        assert conflict.value.status == 409
        assert conflict.value.error_code == "idempotency_conflict"


# -- a service with a small queue, and no workers ----------------------------------------------


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Genhook]:
    """A genhook with no workers (jobs wait), its service's queue limit 1 and a rate of one
    job a second (so a queue_full answer says Retry-After: 1), and one event stream per
    service."""
    g = Genhook(
        tmp_path_factory.mktemp(f"client-idle-{db_kind}"),
        database=db_kind,
        GENHOOK_MAX_STREAMS_PER_SERVICE="1",
    )
    g.cli("services", "update", "shop", "--queue-limit", "1", "--rate-limit", "3600/h")
    g.serve(workers=0)
    yield g
    g.close()


def test_queue_full_is_retried_after_retry_after(idle: Genhook) -> None:
    """429 queue_full: the client waits what Retry-After says and sends again; meanwhile the
    waiting job is cancelled, so the retry is accepted. Without retries, or past the most it
    may wait, the 429 is raised with its retry_after."""
    other = client(idle)
    first = other.trigger("tiny", {"item_id": "queued-1"})
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            assert other.cancel(first.job_id).status == "cancelled"
        time.sleep(seconds)

    with client(idle, sleep=sleep) as genhook:
        started = time.monotonic()
        second = genhook.trigger("tiny", {"item_id": "queued-2"})
        assert time.monotonic() - started >= 1.0
        assert slept == [1.0], "the wait is Retry-After's"
        assert second.status == "queued"
    for policy in (RetryPolicy(attempts=1), RetryPolicy(max_retry_after=0.5)):
        with (
            client(idle, retry=policy, sleep=slept.append) as genhook,
            pytest.raises(ApiError) as caught,
        ):
            genhook.trigger("tiny", {"item_id": "queued-3"})
        assert caught.value.status == 429 and caught.value.error_code == "queue_full"
        assert caught.value.retry_after == 1.0
    assert slept == [1.0], "a refused retry does not wait"
    assert other.cancel(second.job_id).status == "cancelled"
    other.close()


def test_async_client_retries_after_retry_after_and_cancels(idle: Genhook) -> None:
    """AsyncClient: the same 429 wait (awaited), then cancel() and list() awaited."""
    other = client(idle)
    first = other.trigger("tiny", {"item_id": "async-queued-1"})
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            other.cancel(first.job_id)
        await asyncio.sleep(seconds)

    async def scenario() -> tuple[str, str, list[str]]:
        async with AsyncClient(idle.base, idle.key, sleep=sleep) as genhook:
            second = await genhook.trigger("tiny", {"item_id": "async-queued-2"})
            cancelled = await genhook.cancel(second.job_id)
            found = [j.job_id async for j in genhook.list(external_id="async-queued-2")]
            return second.job_id, cancelled.status, found

    job_id, status, found = asyncio.run(scenario())
    other.close()
    assert slept == [1.0] and status == "cancelled" and found == [job_id]


def test_cancel_and_wait_on_a_cancelled_job(idle: Genhook) -> None:
    """cancel() ends a waiting job; a second cancel answers the same (idempotent); wait() and
    events() end with the cancellation."""
    with client(idle) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": "to-cancel"})
        assert genhook.get(accepted.job_id).status == "queued"
        result = genhook.cancel(accepted.job_id)
        assert result.job_id == accepted.job_id and result.status == "cancelled"
        assert genhook.cancel(accepted.job_id).status == "cancelled"
        job = genhook.wait(accepted.job_id, timeout=10)
        assert job.status == "cancelled" and job.result is not None
        assert job.result.error is not None and job.result.error.error_code == "cancelled"
        events = list(genhook.events(accepted.job_id, timeout=10))
        assert events[-1].status == "cancelled"


def test_wait_polls_when_the_service_has_its_most_streams_open(idle: Genhook) -> None:
    """Another stream holds the service's only slot: wait()'s stream is refused (429
    too_many_streams) and it polls at once instead of waiting the 429's Retry-After; events()
    itself raises the 429 once its retries are spent."""
    slept: list[float] = []
    with client(idle, sleep=slept.append, retry=RetryPolicy(attempts=1)) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": "stream-cap"})
        held = idle.http.stream("GET", f"/v1/jobs/{accepted.job_id}/events")
        opened = held.__enter__()
        try:
            assert opened.status_code == 200
            with pytest.raises(ApiError) as refused:
                list(genhook.events(accepted.job_id, timeout=10))
            assert refused.value.error_code == "too_many_streams" and refused.value.status == 429
            timer = threading.Timer(1.0, lambda: genhook.cancel(accepted.job_id))
            timer.start()
            started = time.monotonic()
            job = genhook.wait(accepted.job_id, timeout=20, poll_interval=0.2)
            assert job.status == "cancelled" and time.monotonic() - started < 4.5
            assert slept and set(slept) == {0.2}, "polled, never slept the Retry-After"
        finally:
            held.__exit__(None, None, None)


def test_wait_times_out_on_a_job_that_does_not_end(idle: Genhook) -> None:
    """wait() past its timeout raises WaitTimeout (a TimeoutError) with the last state."""
    from genhook.client import WaitTimeout

    with client(idle) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": "never-runs"})
        for stream in (True, False):
            started = time.monotonic()
            with pytest.raises(WaitTimeout) as caught:
                genhook.wait(accepted.job_id, timeout=1.5, stream=stream, poll_interval=0.2)
            assert 1.4 <= time.monotonic() - started < 5
            assert caught.value.job is not None and caught.value.job.status == "queued"
        genhook.cancel(accepted.job_id)


# -- the receiver, on real callbacks -----------------------------------------------------------


def test_receiver_verifies_real_callbacks_through_a_secret_rotation(
    genhook_factory: Any, receiver: Hooks
) -> None:
    """Receiver verifies genhook's own signed callbacks: with the secret; after `genhook
    services rotate-secret --overlap 24h` with the old secret, the new one, or both (the
    delivery carries two signatures); never with another secret, a changed body, or a
    timestamp outside the tolerance."""
    g = genhook_factory()
    g.serve(workers=1)
    old = g.secret
    with client(g) as genhook:
        before = genhook.trigger("tiny", {"item_id": "rot-1"}, callback_url=receiver.url)
        (call,) = receiver.wait_job(before.job_id)
        event = Receiver(old).parse(call.body, call.headers)
        assert isinstance(event, CompletionPayload) and event.job_id == before.job_id
        rotated = json.loads(g.cli("services", "rotate-secret", "shop", "--overlap", "24h").stdout)
        new = rotated["webhook_secret"]
        assert new != old
        after = genhook.trigger("tiny", {"item_id": "rot-2"}, callback_url=receiver.url)
        (call,) = receiver.wait_job(after.job_id)
    assert len(call.headers["webhook-signature"].split()) == 2
    for secrets in (old, new, [new, old], [old, new]):
        parsed = Receiver(secrets).parse(call.body, call.headers)
        assert isinstance(parsed, CompletionPayload) and parsed.job_id == after.job_id
    stranger = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    forged = call.body.replace(b"rot-2", b"rot-9")
    for secrets, body, headers in (
        (stranger, call.body, call.headers),
        (new, forged, call.headers),
        (new, call.body, {**call.headers, "webhook-id": "msg_other"}),
    ):
        with pytest.raises(WebhookVerificationError):
            Receiver(secrets).parse(body, headers)
    sent = int(call.headers["webhook-timestamp"])
    late = Receiver(new, clock=lambda: sent + 301.0)
    with pytest.raises(WebhookVerificationError):
        late.parse(call.body, call.headers)
    assert Receiver(new, tolerance=600, clock=lambda: sent + 301.0).verify(call.body, call.headers)


# -- the documented receivers (docs/client.md), running ----------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def documented_example(marker: str) -> str:
    """The Python block of docs/client.md that follows the line ``<!-- marker -->``."""
    text = DOCS.read_text(encoding="utf-8")
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def load_example(marker: str, secret: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("GENHOOK_WEBHOOK_SECRETS", secret)
    namespace: dict[str, Any] = {"__name__": "example_" + marker.replace("-", "_")}
    exec(compile(documented_example(marker), str(DOCS), "exec"), namespace)
    return namespace


def test_documented_fastapi_receiver(service: Genhook, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/client.md's FastAPI receiver, served by uvicorn on loopback, gets genhook's real
    callback, verifies and parses it; a forged delivery is answered 400."""
    import httpx
    import uvicorn

    from tests.acceptance.harness import free_port

    example = load_example("fastapi-receiver", service.secret, monkeypatch)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(example["app"], host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "the example FastAPI receiver")
        url = f"http://127.0.0.1:{port}/hooks/genhook"
        _round_trip(service, url, example["completed"], "fastapi")
        forged = httpx.post(url, content=b"{}", headers={"webhook-id": "x"}, timeout=10)
        assert forged.status_code == 400
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_documented_flask_receiver(service: Genhook, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/client.md's Flask receiver, served by werkzeug on loopback, the same."""
    import httpx
    from werkzeug.serving import make_server

    example = load_example("flask-receiver", service.secret, monkeypatch)
    server = make_server("127.0.0.1", 0, example["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hooks/genhook"
        _round_trip(service, url, example["completed"], "flask")
        forged = httpx.post(url, content=b"{}", headers={"webhook-id": "x"}, timeout=10)
        assert forged.status_code == 400
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _round_trip(service: Genhook, url: str, completed: list[Any], name: str) -> None:
    """A real job's callback reaches the example, which records it once; replayed from the
    delivery log (same webhook-id), it is answered 200 and not recorded again."""
    with client(service) as genhook:
        accepted = genhook.trigger("tiny", {"item_id": f"example-{name}"}, callback_url=url)
        genhook.wait(accepted.job_id, timeout=60)
    got = wait_for(
        lambda: [p for p in completed if p.job_id == accepted.job_id], 30, "the example's record"
    )
    assert isinstance(got[0], CompletionPayload) and got[0].succeeded

    def delivery() -> Any:
        found = service.http.get("/v1/deliveries", params={"job_id": accepted.job_id}).json()
        return found["deliveries"][0]

    first = wait_for(lambda: (d := delivery())["status"] == "delivered" and d, 30, "delivered")
    replay = service.http.post(f"/v1/deliveries/{first['delivery_id']}/replay")
    assert replay.status_code == 202, replay.text
    wait_for(
        lambda: (d := delivery())["status"] == "delivered" and len(d["attempt_log"]) == 2,
        30,
        "the replay delivered",
    )
    assert len([p for p in completed if p.job_id == accepted.job_id]) == 1
