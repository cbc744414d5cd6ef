"""The outbox against a real HTTP receiver on 127.0.0.1 and a real store: the callback policy
belongs to the delivery, every attempt is logged before its request, and a sender that dies is
taken over at once (start-up recovery) or within one lease (renewed while in flight)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genhook.clock import ManualClock
from genhook.contract.completion import failure_payload
from genhook.delivery.outbox import Outbox, owner_is_dead, owner_name
from genhook.delivery.sender import DeliverySender
from genhook.delivery.signing import new_secret
from genhook.errors import ErrorCode, InvalidInput
from genhook.ids import new_job_id
from genhook.status import DeliveryAttemptState, DeliveryOutcome, DeliveryStatus
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.records import DeliveryAttemptRecord, DeliveryRecord
from genhook.store.schema import deliveries
from genhook.store.store import Store

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records each request and answers per ``answer``.

    ``hold`` set: requests wait (up to 20 s) for ``release`` before answering; ``on_request``
    runs inside the handler, while the sender is waiting for the answer.
    """

    answer: int = 200
    hold: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    seen: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    on_request: Callable[[], None] | None = None
    port: int = 0

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rx.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            rx.seen.append(dict(self.headers))
            if rx.on_request is not None:
                rx.on_request()
            rx.arrived.set()
            if rx.hold:
                rx.release.wait(20)
            self.send_response(rx.answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rx.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        rx.release.set()
        server.shutdown()
        server.server_close()


def outboxed(store: Store, url: str, *, private: bool) -> DeliveryRecord:
    """A refused trigger's failure payload in the outbox for ``url``, accepted with the callback
    policy ``private``: the delivery as the store holds it."""
    service = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")
    return outboxed_for(store, service["service_id"], url, private=private)


def outboxed_for(
    store: Store, service_id: str, url: str, *, private: bool = True
) -> DeliveryRecord:
    """The same for the service ``service_id``."""
    error = InvalidInput(ErrorCode.MISSING_FIELD, "product_name is required", field="product_name")
    job_id = new_job_id()
    payload = failure_payload(
        job_id=job_id, workflow_id="tiny", external_id=None, error=error, attempts=0
    ).to_json()
    job, _ = store.reject(
        job_id=job_id,
        service_id=service_id,
        workflow_id="tiny",
        workflow_version=1,
        body={},
        external_id=None,
        callback_url=url,
        error=error,
        payload=payload,
        callback_private=private,
    )
    [delivery] = store.deliveries(job.id)
    return delivery


def refused_to(store: Store, service_id: str, url: str) -> str:
    """A refused trigger of ``service_id`` outboxed to ``url`` (private allowed): its delivery."""
    return outboxed_for(store, service_id, url).id


def current(store: Store, delivery: DeliveryRecord) -> DeliveryRecord:
    [row] = store.deliveries(delivery.job_id)
    return row


async def deliver_until(
    store: Store,
    *,
    allow_private: bool,
    done: Callable[[], bool],
    timeout: float = 10.0,
    lease_seconds: float = 30.0,
) -> float:
    """Run one outbox until ``done()`` (seconds it took); fail after ``timeout``."""
    stop = asyncio.Event()
    async with DeliverySender(allow_private=allow_private, timeout=30.0) as sender:
        outbox = Outbox(store, sender, (5.0,), poll_seconds=0.05, lease_seconds=lease_seconds)
        task = asyncio.create_task(outbox.run(stop))
        started = time.monotonic()
        try:
            while not done():
                assert time.monotonic() - started < timeout, "the outbox did not get there"
                await asyncio.sleep(0.02)
            return time.monotonic() - started
        finally:
            stop.set()
            outbox.signal.notify()
            await task


def test_blocked_delivery_fails_for_good_and_no_later_private_process_sends_it(
    store: Store, receiver: Receiver
) -> None:
    """A delivery accepted with private callbacks off that the connect-time guard blocks fails at
    once with the reason; a process started later with private callbacks on does not send it,
    not even after a manual replay: the decision taken at the trigger is the delivery's."""
    delivery = outboxed(store, receiver.url(), private=False)

    def ended() -> bool:
        return current(store, delivery).status in ("failed", "delivered")

    asyncio.run(deliver_until(store, allow_private=False, done=ended))
    row = current(store, delivery)
    assert row.status == "failed"
    assert row.last_error == "blocked: non-public address 127.0.0.1"
    assert [(a.state, a.error) for a in row.attempt_log] == [
        ("done", "blocked: non-public address 127.0.0.1")
    ]

    assert store.replay(delivery.id)
    asyncio.run(deliver_until(store, allow_private=True, done=ended))
    row = current(store, delivery)
    assert row.status == "failed"
    assert len(row.attempt_log) == 2
    assert receiver.seen == []


def test_delivery_accepted_with_private_callbacks_is_sent_by_a_private_process(
    store: Store, receiver: Receiver
) -> None:
    """The same loopback callback, accepted with private callbacks allowed, is delivered."""
    delivery = outboxed(store, receiver.url(), private=True)
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: current(store, delivery).status == "delivered",
        )
    )
    assert len(receiver.seen) == 1
    assert receiver.seen[0]["webhook-id"] == delivery.id


def test_receiver_gets_the_stored_bytes_and_their_signature_verifies(
    store: Store, receiver: Receiver
) -> None:
    """The payload is encoded once: the bytes a real receiver reads are the delivery row's bytes,
    byte for byte (compact, UTF-8, no escapes), the job's stored ``result`` is those bytes parsed,
    and the signature verifies with the ``standardwebhooks`` library and the service's secret."""
    service = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")
    error = InvalidInput(ErrorCode.INVALID_TYPE, "«Crème Brûlée» — Ωμέγα 茶", field="product_name")
    job_id = new_job_id()
    payload = failure_payload(
        job_id=job_id, workflow_id="tiny", external_id="Amélie-1", error=error, attempts=0
    ).to_json()
    store.reject(
        job_id=job_id,
        service_id=service["service_id"],
        workflow_id="tiny",
        workflow_version=1,
        body={},
        external_id="Amélie-1",
        callback_url=receiver.url(),
        error=error,
        payload=payload,
        callback_private=True,
    )
    [delivery] = store.deliveries(job_id)
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: current(store, delivery).status == "delivered",
        )
    )
    with store.engine.connect() as conn:
        stored = conn.execute(
            sa.select(deliveries.c.body).where(deliveries.c.id == delivery.id)
        ).scalar_one()
    [received] = receiver.bodies
    assert received == stored
    assert "Crème Brûlée".encode() in received and b"\\u" not in received
    assert b", " not in received and b": " not in received
    job = store.job(job_id)
    assert job is not None and job.result == json.loads(received)
    headers = {k.lower(): v for k, v in receiver.seen[0].items()}
    verified = Webhook(service["webhook_secret"]).verify(received, headers)
    assert verified["job_id"] == job_id


def test_attempt_is_in_the_log_before_its_request_goes_out(
    store: Store, receiver: Receiver
) -> None:
    """While the receiver holds the request, the delivery log already shows the attempt, state
    sending; after the answer it is done, with the status and duration."""
    delivery = outboxed(store, receiver.url(), private=True)
    during: list[list[tuple[int, str]]] = []
    receiver.on_request = lambda: during.append(
        [(a.number, a.state) for a in current(store, delivery).attempt_log]
    )
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: current(store, delivery).status == "delivered",
        )
    )
    assert during == [[(1, "sending")]]
    [attempt] = current(store, delivery).attempt_log
    assert (attempt.state, attempt.status_code) == ("done", 200)
    assert attempt.duration_ms is not None and attempt.duration_ms > 0


def test_lease_is_renewed_while_an_attempt_is_in_flight(store: Store, receiver: Receiver) -> None:
    """With a 0.6 s lease and a receiver that takes 1.5 s, a second outbox polling the same store
    does not take the delivery over: one request, delivered once."""
    delivery = outboxed(store, receiver.url(), private=True)
    receiver.hold = True
    threading.Timer(1.5, receiver.release.set).start()

    async def both() -> None:
        delivered = lambda: current(store, delivery).status == "delivered"  # noqa: E731
        await asyncio.gather(
            deliver_until(store, allow_private=True, done=delivered, lease_seconds=0.6),
            deliver_until(store, allow_private=True, done=delivered, lease_seconds=0.6),
        )

    asyncio.run(both())
    assert len(receiver.seen) == 1
    assert [a.state for a in current(store, delivery).attempt_log] == ["done"]


def test_a_sender_killed_mid_send_is_resent_at_once_by_the_next_one(
    tmp_path: Path, receiver: Receiver
) -> None:
    """SIGKILL an outbox process while the receiver holds its request: the log keeps that attempt
    (sending). The next outbox takes the delivery over at start-up, well before the 30 s lease
    runs out: attempt 1 interrupted, attempt 2 delivered, same webhook-id."""
    url = f"sqlite:///{tmp_path / 'genhook.db'}"
    store = Store(url)
    store.migrate()
    try:
        delivery = outboxed(store, receiver.url(), private=True)
        receiver.hold = True
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox_child", url],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert receiver.arrived.wait(20), "the child outbox never sent"
        finally:
            child.kill()
            child.wait(10)
        log = current(store, delivery).attempt_log
        assert [(a.number, a.state) for a in log] == [(1, "sending")]

        receiver.hold, receiver.answer = False, 204
        took = asyncio.run(
            deliver_until(
                store,
                allow_private=True,
                done=lambda: current(store, delivery).status == "delivered",
            )
        )
        assert took < 5.0
        row = current(store, delivery)
        assert [(a.number, a.state, a.status_code) for a in row.attempt_log] == [
            (1, "interrupted", None),
            (2, "done", 204),
        ]
        assert "the receiver may have got it" in row.attempt_log[0].error
        assert [s["webhook-id"] for s in receiver.seen] == [delivery.id] * 2
    finally:
        store.close()


def test_owner_is_dead() -> None:
    """Only an owner on this host whose process has ended counts as dead."""
    assert owner_name().split(":")[1] == str(os.getpid())
    assert not owner_is_dead(owner_name())
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    host = owner_name().split(":")[0]
    assert owner_is_dead(f"{host}:{done.stdout.strip()}:abcd1234")
    assert not owner_is_dead(f"{host}:{os.getppid()}:abcd1234")
    assert not owner_is_dead(f"other-{host}:{done.stdout.strip()}:abcd1234")
    assert not owner_is_dead("garbage")


def test_delivery_log_shows_the_attempt_state() -> None:
    """The API's view of an attempt has its state and a duration only once it is done."""
    from genhook.api.views import delivery_view

    row = DeliveryRecord(
        id="msg_1",
        job_id="job_1",
        service_id="svc_1",
        kind="callback",
        endpoint="http://127.0.0.1:80",
        url="http://127.0.0.1/hook",
        body=b"{}",
        status=DeliveryStatus.SENDING,
        attempts=1,
        next_attempt_at=None,
        created_at=1_800_000_000.0,
        delivered_at=None,
        last_status_code=None,
        last_error=None,
        attempt_log=(
            DeliveryAttemptRecord(
                number=1,
                at=1_800_000_000.0,
                state=DeliveryAttemptState.SENDING,
                status_code=None,
                error=None,
                duration_ms=None,
                manual=False,
            ),
        ),
    )
    [attempt] = delivery_view(row)["attempt_log"]
    assert (attempt["state"], attempt["duration_ms"]) == ("sending", None)
    assert json.dumps(attempt)


# ---- isolation: in-flight caps and fair turns (issue 7) ----------------------------------------


def endpoints_of(leased: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in leased:
        counts[d.endpoint] = counts.get(d.endpoint, 0) + 1
    return counts


def test_claims_keep_under_the_per_endpoint_and_per_service_caps_across_outboxes(
    store: Store,
) -> None:
    """Caps count attempts in flight under a live lease, whoever holds them: a second outbox
    gets nothing more of a service at its cap, gets room back as attempts end, and once the
    first one's leases run out (it died) they count no more."""
    clock = ManualClock(time.time())
    store.clock = clock
    store.delivery_per_endpoint, store.delivery_per_service = 3, 5
    service_id = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")["service_id"]
    for _ in range(10):
        refused_to(store, service_id, "http://a.example.com/hook")
        refused_to(store, service_id, "https://b.example.com/hook")
    first = store.claim_deliveries(100, 30, "outbox-1")
    assert len(first) == 5
    counts = endpoints_of(first)
    assert set(counts) == {"http://a.example.com:80", "https://b.example.com:443"}
    assert max(counts.values()) == 3
    assert store.claim_deliveries(100, 30, "outbox-2") == []
    done = first[0]
    assert store.record_delivery(
        done.id,
        number=done.attempt,
        status_code=200,
        error=None,
        duration_ms=1.0,
        outcome=DeliveryOutcome.DELIVERED,
        next_attempt_at=None,
        owner="outbox-1",
    )
    [again] = store.claim_deliveries(100, 60, "outbox-2")  # the one slot that came free
    assert max(endpoints_of([*first[1:], again]).values()) <= 3
    clock.advance(31)  # outbox-1's leases ran out: its four no longer count
    taken = store.claim_deliveries(100, 30, "outbox-2")
    assert len(taken) == 4
    assert max(endpoints_of([again, *taken]).values()) <= 3


def test_one_services_backlog_does_not_fill_a_claim(store: Store) -> None:
    """Services take turns: with 40 of one service's deliveries due first, a claim of 3 still
    takes the other service's one (plain due order would take it 41st)."""
    store.delivery_per_endpoint = store.delivery_per_service = 100
    busy = store.create_service(f"busy-{uuid.uuid4().hex[:8]}")["service_id"]
    quiet = store.create_service(f"quiet-{uuid.uuid4().hex[:8]}")["service_id"]
    for _ in range(40):
        refused_to(store, busy, "https://busy.example.com/hook")
    wanted = refused_to(store, quiet, "https://quiet.example.com/hook")
    leased = store.claim_deliveries(3, 30, "outbox-1")
    assert len(leased) == 3
    assert wanted in [d.id for d in leased]
    assert [d.service_id for d in leased].count(quiet) == 1


@dataclass
class Hanging:
    """A loopback endpoint that accepts connections, reads, and never answers."""

    port: int = 0
    open_now: int = 0
    most_open: int = 0
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)  # set: close every connection

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    import socket

    h = Hanging()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.settimeout(0.1)
    h.port = listener.getsockname()[1]
    stop = h.stop

    def hold(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    conn.settimeout(0.2)
                    if conn.recv(65536) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
        with h.lock:
            h.open_now -= 1

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with h.lock:
                h.accepted += 1
                h.open_now += 1
                h.most_open = max(h.most_open, h.open_now)
            threading.Thread(target=hold, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield h
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_hanging_endpoint_holds_only_its_cap_and_others_are_delivered_at_once(
    store: Store, receiver: Receiver, hanging: Hanging
) -> None:
    """30 deliveries to an endpoint that never answers hold at most ``delivery_per_endpoint``
    connections; another service's delivery, outboxed meanwhile, arrives within a second; and
    the loop that has capped work due does not spin on it."""
    store.delivery_per_endpoint, store.delivery_per_service = 4, 6
    slow = store.create_service(f"slow-{uuid.uuid4().hex[:8]}")["service_id"]
    fast = store.create_service(f"fast-{uuid.uuid4().hex[:8]}")["service_id"]
    for _ in range(30):
        refused_to(store, slow, hanging.url())

    async def scenario() -> tuple[float, float]:
        stop = asyncio.Event()
        async with DeliverySender(allow_private=True, timeout=30.0) as sender:
            outbox = Outbox(store, sender, (5.0,), poll_seconds=0.5)
            task = asyncio.create_task(outbox.run(stop))
            try:
                while hanging.accepted < 4:
                    await asyncio.sleep(0.02)
                cpu = time.process_time()
                await asyncio.sleep(1.5)  # capped work is due all along
                idle_cpu = time.process_time() - cpu
                wanted = await asyncio.to_thread(refused_to, store, fast, receiver.url())
                outbox.signal.notify()  # what a worker's job end does
                sent = time.monotonic()
                while not receiver.seen:
                    assert time.monotonic() - sent < 5, "the other service's callback waited"
                    await asyncio.sleep(0.01)
                assert receiver.seen[0]["webhook-id"] == wanted
                return time.monotonic() - sent, idle_cpu
            finally:
                hanging.stop.set()  # the hung attempts end (server disconnected)
                stop.set()
                outbox.signal.notify()
                await task

    took, idle_cpu = asyncio.run(scenario())
    assert took < 1.0
    assert hanging.most_open == 4 and hanging.accepted == 4
    assert idle_cpu < 0.5, f"the outbox loop spun on capped work ({idle_cpu:.2f} s of CPU)"


# ---- signatures: rotated secrets, operator events ---------------------------------------------


def test_during_a_secret_overlap_callbacks_verify_with_either_secret(
    store: Store, receiver: Receiver
) -> None:
    """After ``rotate-secret --overlap``, a callback carries ``v1,<new> v1,<old>``: both verify
    with the ``standardwebhooks`` library; once the overlap is over only the new one signs."""
    clock = ManualClock(time.time())
    store.clock = clock
    made = store.create_service(f"shop-{uuid.uuid4().hex[:8]}")
    old = made["webhook_secret"]
    new = store.rotate_secret(made["service"], 3600.0)["webhook_secret"]
    first = refused_to(store, made["service_id"], receiver.url())

    def delivered(delivery_id: str) -> bool:
        row = store.delivery(delivery_id)
        return row is not None and row.status == "delivered"

    asyncio.run(deliver_until(store, allow_private=True, done=lambda: delivered(first)))
    body, headers = receiver.bodies[0], {k.lower(): v for k, v in receiver.seen[0].items()}
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers)["job_id"]
    assert Webhook(old).verify(body, headers)["job_id"]

    clock.advance(3601)
    later = refused_to(store, made["service_id"], receiver.url())
    asyncio.run(deliver_until(store, allow_private=True, done=lambda: delivered(later)))
    body, headers = receiver.bodies[1], {k.lower(): v for k, v in receiver.seen[1].items()}
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(body, headers)["job_id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


def test_an_operator_event_is_signed_with_the_alert_secret(
    store: Store, receiver: Receiver
) -> None:
    """An alert delivery is POSTed signed with ``GENHOOK_ALERT_SECRET`` (not a service's);
    without one configured it is not sent unsigned: the attempt fails and is retried."""
    alert_secret = new_secret()
    with store.engine.begin() as conn:
        event_id = record_event(
            conn,
            event=OperatorEvent.SERVICE_PAUSED,
            service="shop",
            details={"reason": "storm"},
            now=store.clock.now(),
            alert_url=receiver.url(),
        )

    async def run(secret: str | None, done: Callable[[], bool]) -> None:
        stop = asyncio.Event()
        async with DeliverySender(allow_private=True) as sender:
            outbox = Outbox(store, sender, (0.05, 5.0), poll_seconds=0.05, alert_secret=secret)
            task = asyncio.create_task(outbox.run(stop))
            try:
                started = time.monotonic()
                while not done():
                    assert time.monotonic() - started < 10
                    await asyncio.sleep(0.02)
            finally:
                stop.set()
                outbox.signal.notify()
                await task

    def row() -> DeliveryRecord:
        found = store.delivery(event_id)
        assert found is not None
        return found

    asyncio.run(run(None, lambda: row().attempts >= 1 and row().status == "pending"))
    assert receiver.seen == []
    assert row().last_error == "no GENHOOK_ALERT_SECRET to sign this operator event with"
    store.replay(event_id)
    asyncio.run(run(alert_secret, lambda: row().status == "delivered"))
    [body] = receiver.bodies
    headers = {k.lower(): v for k, v in receiver.seen[0].items()}
    assert headers["webhook-id"] == event_id
    sent = Webhook(alert_secret).verify(body, headers)
    assert (sent["event"], sent["service"], sent["details"]) == (
        "service.paused",
        "shop",
        {"reason": "storm"},
    )
    assert sent["timestamp"].endswith("Z")


def test_each_attempt_is_counted_in_the_delivery_metrics(store: Store, receiver: Receiver) -> None:
    """The outbox records every attempt's outcome and latency (``genhook_delivery_seconds``,
    by the service's name and outcome): a 500 then a 204 is one ``failed`` and one ``delivered``."""
    from prometheus_client.parser import text_string_to_metric_families

    from genhook import metrics

    def counts() -> dict[tuple[str, str], float]:
        text = metrics.exposition(store.engine, store.clock, []).decode()
        return {
            (s.labels["service"], s.labels["outcome"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "genhook_delivery_seconds"
            for s in family.samples
            if s.name == "genhook_delivery_seconds_count"
        }

    delivery = outboxed(store, receiver.url(), private=True)
    [service] = [s for s in store.list_services() if s.id == store.delivery(delivery.id).service_id]
    before = counts()
    answers = iter([500, 204])
    receiver.on_request = lambda: setattr(receiver, "answer", next(answers))
    asyncio.run(
        deliver_until(
            store,
            allow_private=True,
            done=lambda: current(store, delivery).status == "delivered",
            timeout=20,
        )
    )
    after = counts()
    for outcome in ("failed", "delivered"):
        key = (service.name, outcome)
        assert after.get(key, 0) - before.get(key, 0) == 1, (outcome, before, after)
