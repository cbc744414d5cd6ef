"""Delivery attempts against a real HTTP receiver on 127.0.0.1 (the retry arithmetic is in
tests/test_retry.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genhook.delivery import signing
from genhook.delivery.sender import AttemptResult, DeliverySender, DueDelivery
from genhook.delivery.ssrf import check_callback_target

BODY = json.dumps({"schema_version": "1", "event": "job.completed", "job_id": "job_1"}).encode()
SECRET = signing.new_secret()


@dataclass
class Seen:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 (random port) that records every request."""

    clock_now: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.headers), await request.read()))
        match request.path:
            case "/ok":
                return web.Response(text="thanks")
            case "/accepted":
                return web.Response(status=202)
            case "/big":
                return web.Response(body=b"x" * (1024 * 1024))
            case "/fail":
                return web.Response(status=500, headers={"Retry-After": "9"})
            case "/redirect":
                raise web.HTTPFound(self.url("/target"))
            case "/gone":
                return web.Response(status=410)
            case "/busy":
                return web.Response(status=429, headers={"Retry-After": "7"})
            case "/unavailable":
                date = formatdate(self.clock_now + 120, usegmt=True)
                return web.Response(status=503, headers={"Retry-After": date})
            case "/slow":
                await asyncio.wait_for(self.release.wait(), 10)
                return web.Response(text="late")
        return web.Response(status=404)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


def due(url: str, attempt: int = 1, *, allow_private: bool = True) -> DueDelivery:
    """A delivery to ``url``; by default one whose trigger was accepted with private allowed."""
    return DueDelivery("msg_2f9a", url, BODY, SECRET, attempt, allow_private=allow_private)


def run_with_receiver(
    scenario: Callable[[Receiver], Awaitable[None]], clock_now: float = 0.0
) -> None:
    async def main() -> None:
        async with Receiver(clock_now=clock_now) as receiver:
            await scenario(receiver)

    asyncio.run(main())


async def send_once(
    url: str, *, timeout: float = 15.0, clock: Callable[[], float] = time.time
) -> AttemptResult:
    async with DeliverySender(allow_private=True, timeout=timeout, clock=clock) as sender:
        return await sender.send(due(url))


class RebindingDNS:
    """DNS that answers with a public address first and with loopback from then on."""

    def __init__(self) -> None:
        self.answers = [["93.184.216.34"], ["127.0.0.1"]]
        self.calls: list[str] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class TableDNS(AbstractResolver):
    """An aiohttp resolver answering from a fixed table (the outside world's DNS)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        addr = self.table[host]
        return [
            ResolveResult(
                hostname=host, host=addr, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


def test_2xx_is_delivered_signed_and_id_stable_across_attempts() -> None:
    """A 2xx is delivered; both attempts verify, share the webhook-id and differ in timestamp."""
    now = time.time()
    ticks = iter([now, now + 30])

    async def scenario(rx: Receiver) -> None:
        async with DeliverySender(allow_private=True, clock=lambda: next(ticks)) as sender:
            first = await sender.send(due(rx.url("/ok"), attempt=1))
            second = await sender.send(due(rx.url("/accepted"), attempt=2))
        assert (first.outcome, first.status_code, first.error) == ("delivered", 200, None)
        assert (second.outcome, second.status_code) == ("delivered", 202)
        assert first.duration_ms > 0
        assert first.retry_after is None

    async def check(rx: Receiver) -> None:
        await scenario(rx)
        a, b = rx.seen
        for seen in (a, b):
            assert seen.body == BODY
            assert Webhook(SECRET).verify(seen.body, seen.headers) == json.loads(BODY)
            assert seen.headers["Content-Type"] == "application/json"
            assert seen.headers["User-Agent"] == "genhook-webhooks/1"
        assert a.headers["webhook-id"] == b.headers["webhook-id"] == "msg_2f9a"
        assert int(b.headers["webhook-timestamp"]) == int(a.headers["webhook-timestamp"]) + 30
        assert a.headers["webhook-signature"] != b.headers["webhook-signature"]

    run_with_receiver(check)


def test_500_is_retried_with_status_and_no_retry_after() -> None:
    """HTTP 500 is a retry carrying the status; its Retry-After is ignored (429/503 only)."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/fail"))
        assert (result.outcome, result.status_code, result.error) == ("retry", 500, "HTTP 500")
        assert result.retry_after is None

    run_with_receiver(scenario)


def test_unknown_path_404_is_retried() -> None:
    """A 4xx other than 410 is a retry."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/nope"))
        assert (result.outcome, result.status_code, result.error) == ("retry", 404, "HTTP 404")

    run_with_receiver(scenario)


def test_redirect_is_a_failure_and_not_followed() -> None:
    """A 302 is a retry, and the redirect target is never requested."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/redirect"))
        assert (result.outcome, result.status_code) == ("retry", 302)
        assert result.error == "redirect not followed (HTTP 302)"
        assert [s.path for s in rx.seen] == ["/redirect"]

    run_with_receiver(scenario)


def test_410_is_gone() -> None:
    """HTTP 410 stops delivery for good."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/gone"))
        assert (result.outcome, result.status_code) == ("gone", 410)

    run_with_receiver(scenario)


def test_429_retry_after_seconds() -> None:
    """A 429 with Retry-After: 7 is a retry with retry_after 7 seconds."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/busy"))
        assert (result.outcome, result.status_code, result.retry_after) == ("retry", 429, 7.0)

    run_with_receiver(scenario)


def test_503_retry_after_http_date() -> None:
    """A 503 with an HTTP-date Retry-After gives the seconds from the sender's clock to it."""
    now = 1_800_000_000.0

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/unavailable"), clock=lambda: now)
        assert (result.outcome, result.status_code, result.retry_after) == ("retry", 503, 120.0)

    run_with_receiver(scenario, clock_now=now)


def test_large_answer_is_read_capped_and_still_delivered() -> None:
    """A 2xx with a 1 MiB body is delivered; the body is not needed in full."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/big"))
        assert (result.outcome, result.status_code) == ("delivered", 200)

    run_with_receiver(scenario)


def test_slow_receiver_times_out_as_retry() -> None:
    """A receiver slower than the timeout gives a retry with a timeout error, promptly."""

    async def scenario(rx: Receiver) -> None:
        result = await send_once(rx.url("/slow"), timeout=0.3)
        assert (result.outcome, result.status_code) == ("retry", None)
        assert result.error == "timeout after 0.3s"
        assert 250 <= result.duration_ms < 3000

    run_with_receiver(scenario)


def test_during_a_secret_overlap_both_secrets_sign_and_each_verifies() -> None:
    """With a rotated secret in ``also_secrets``, ``webhook-signature`` is ``v1,<new> v1,<old>``
    (space-separated, as Standard Webhooks allows): a receiver with either secret verifies, and
    one with neither does not."""
    old = signing.new_secret()

    async def check(rx: Receiver) -> None:
        async with DeliverySender(allow_private=True) as sender:
            both = dataclasses.replace(due(rx.url("/ok")), also_secrets=(old,))
            result = await sender.send(both)
        assert result.outcome == "delivered"
        [seen] = rx.seen
        new_sig, old_sig = seen.headers["webhook-signature"].split(" ")
        stamp = int(seen.headers["webhook-timestamp"])
        assert new_sig == signing.sign(SECRET, "msg_2f9a", stamp, BODY)
        assert old_sig == signing.sign(old, "msg_2f9a", stamp, BODY)
        for secret in (SECRET, old):
            assert Webhook(secret).verify(seen.body, seen.headers) == json.loads(BODY)
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.new_secret()).verify(seen.body, seen.headers)

    run_with_receiver(check)


def test_connecting_has_its_own_short_timeout() -> None:
    """An address that never completes the TCP handshake (a listener whose accept queue is full:
    the kernel drops the SYNs) is given up on after ``connect_timeout``, long before the answer
    timeout, with its own error."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue (and leave some SYNs unanswered)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)  # let the kernel settle the handshakes it does complete

        async def scenario() -> AttemptResult:
            async with DeliverySender(
                allow_private=True, timeout=10.0, connect_timeout=0.5
            ) as sender:
                return await sender.send(due(f"http://127.0.0.1:{port}/hook"))

        try:
            result = asyncio.run(scenario())
        finally:
            for filler in fillers:
                filler.close()
    assert (result.outcome, result.status_code) == ("retry", None)
    assert result.error == "connect timeout after 0.5s"
    assert 400 <= result.duration_ms < 3000


def test_connection_refused_is_retry() -> None:
    """A closed port gives a retry with "connection refused"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario() -> AttemptResult:
        return await send_once(f"http://127.0.0.1:{port}/hook")

    result = asyncio.run(scenario())
    assert (result.outcome, result.status_code, result.error) == (
        "retry",
        None,
        "connection refused",
    )


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.1",
        "127.0.0.1.",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "\uff11\uff12\uff17\uff0e0.0.1",  # full-width, which the client folds to 127.0.0.1
    ],
)
def test_loopback_literal_blocked_before_any_request(host: str) -> None:
    """Without allow_private a loopback literal, in any spelling, never reaches the receiver."""

    async def scenario(rx: Receiver) -> None:
        async with DeliverySender() as sender:
            result = await sender.send(due(rx.url("/ok", host=host), allow_private=False))
        assert (result.outcome, result.status_code) == ("blocked", None)
        assert result.error is not None
        assert result.error.startswith("blocked: non-public address ")
        assert rx.seen == []

    run_with_receiver(scenario)


def test_dns_rebinding_is_blocked_at_connect_time() -> None:
    """A name public at trigger time and loopback at connect time is blocked; nothing is sent."""

    async def scenario(rx: Receiver) -> None:
        dns = RebindingDNS()
        url = rx.url("/ok", host="rebind.example")
        check_callback_target(url, allow_private=False, resolver=dns)  # public: accepted
        async with DeliverySender(resolver=dns) as sender:
            result = await sender.send(due(url, allow_private=False))
        assert dns.calls == ["rebind.example", "rebind.example"]
        assert (result.outcome, result.status_code) == ("blocked", None)
        assert result.error == "blocked: rebind.example resolves to non-public address 127.0.0.1"
        assert rx.seen == []

    run_with_receiver(scenario)


def test_injected_resolver_is_used_at_connect_time() -> None:
    """With allow_private, a name only the injected resolver knows is delivered to its address."""

    async def scenario(rx: Receiver) -> None:
        dns = TableDNS({"receiver.test": "127.0.0.1"})
        async with DeliverySender(allow_private=True, resolver=dns) as sender:
            result = await sender.send(due(rx.url("/ok", host="receiver.test")))
        assert (result.outcome, result.status_code) == ("delivered", 200)
        assert dns.calls == ["receiver.test"]
        assert rx.seen[0].headers["Host"] == f"receiver.test:{rx.port}"

    run_with_receiver(scenario)


def test_invalid_url_is_a_retry_not_an_exception() -> None:
    """A URL that fails the syntax check comes back as a retry with an explanation."""

    async def scenario() -> AttemptResult:
        return await send_once("ftp://example.com/")

    result = asyncio.run(scenario())
    assert result.outcome == "retry"
    assert result.error is not None and result.error.startswith("invalid callback URL")


def test_send_before_start_is_a_programming_error() -> None:
    """send() without start() raises RuntimeError instead of silently leaking a session."""
    with pytest.raises(RuntimeError):
        asyncio.run(DeliverySender().send(due("http://93.184.216.34/")))


@pytest.mark.parametrize(
    ("process_allows", "trigger_allowed"), [(True, False), (False, True), (False, False)]
)
def test_private_callback_needs_both_the_delivery_and_the_process_to_allow_it(
    process_allows: bool, trigger_allowed: bool
) -> None:
    """The delivery's own decision (taken when its trigger was accepted) and the sending
    process's setting must both allow a loopback callback; else it is blocked for good, unsent."""

    async def scenario(rx: Receiver) -> None:
        async with DeliverySender(allow_private=process_allows) as sender:
            result = await sender.send(due(rx.url("/ok"), allow_private=trigger_allowed))
        assert (result.outcome, result.status_code) == ("blocked", None)
        assert result.error == "blocked: non-public address 127.0.0.1"
        assert rx.seen == []

    run_with_receiver(scenario)


def test_one_sender_serves_both_policies_without_sharing_a_resolution() -> None:
    """A name resolved for a private-allowed delivery is not reused for a strict one: the strict
    delivery asks its own guard, which blocks the loopback answer."""

    async def scenario(rx: Receiver) -> None:
        dns = TableDNS({"receiver.test": "127.0.0.1"})
        url = rx.url("/ok", host="receiver.test")
        async with DeliverySender(allow_private=True, resolver=dns) as sender:
            first = await sender.send(due(url, allow_private=True))
            second = await sender.send(due(url, allow_private=False))
        assert (first.outcome, second.outcome) == ("delivered", "blocked")
        assert second.error == "blocked: receiver.test resolves to non-public address 127.0.0.1"
        assert len(rx.seen) == 1

    run_with_receiver(scenario)
