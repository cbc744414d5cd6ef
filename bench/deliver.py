"""Benchmark: signed callbacks delivered per second through genhook's durable outbox, against a
raw aiohttp loop sending the same signed POSTs to the same receiver at the same concurrency.

The receiver (both sides post to it): a bare aiohttp server in its own process on 127.0.0.1
(uvloop), which counts every POST by path and ``webhook-id`` and answers 204 at once.

* **raw** (the baseline the target is set against): one process running a plain aiohttp client
  loop (uvloop, one keep-alive session, CONCURRENCY requests in flight): it POSTs the round's
  bodies, each with its ``webhook-*`` headers signed beforehand with the ``standardwebhooks``
  library (pre-signed: no signing, no database, no bookkeeping while timed).
* **genhook**: one process running genhook's real :class:`~genhook.delivery.outbox.Outbox` and
  :class:`~genhook.delivery.sender.DeliverySender` (uvloop, as under ``genhook serve``) on a
  real store: a SQLite file in WAL mode with ``synchronous=FULL``, as genhook configures it, or
  with ``--database-url postgresql://...`` a fresh database ``<name>_deliver`` on that server.
  Before each round the bench puts the round's messages into that outbox the way genhook does
  (``Store.reject``: a refused trigger's failure payload, outboxed to the receiver, accepted
  with private callbacks allowed since the receiver is on loopback), with the outbox stopped;
  the timed round starts the outbox (``Outbox.run``) and ends when no delivery is left pending
  or sending (polled from this process every 5 ms with plain sqlite3, a read beside the WAL, or
  a plain psycopg connection).
  Each attempt is claimed (logged ``sending`` before its POST), signed at send time, sent
  through the SSRF guard, and its answer recorded, exactly as in production. The outbox's
  concurrency is CONCURRENCY: its lanes, so at most CONCURRENCY requests in flight, as on the
  raw side. The service's in-flight caps (``GENHOOK_DELIVERY_PER_ENDPOINT`` and
  ``..._PER_SERVICE``) count leases, which include the deliveries the outbox leases ahead of a
  free lane (``Outbox.lease_ahead``, 3 x CONCURRENCY by default, or ``--lease-ahead``): they
  are set to CONCURRENCY + lease_ahead so that they do not bind before the lanes do.

Both sides post the same bodies (the delivery rows' bytes, about 520 bytes of JSON). One
warm-up round each, then ROUNDS rounds of COUNT messages, interleaved (the order alternates
each round); medians. Also reported: each side's CPU time per delivery (its process, from
/proc, over each round) and the machine's load. At the end every genhook delivery must be
``delivered`` with one ``done`` attempt, and the receiver must have counted exactly one POST
per webhook-id on each side, and at most CONCURRENCY connections per side in any round (HTTP/1.1
without pipelining: one request per connection at a time, so no side ever had more requests in
flight). Exits 1 when genhook / raw < TARGET or any of these fails.

Run: ``.venv/bin/python bench/deliver.py [--rounds N] [--count N] [--concurrency N]
[--database-url postgresql://postgres@127.0.0.1:5432/genhook_bench]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from _common import (
    HOST,
    Child,
    Children,
    bench_env,
    cpu_seconds,
    free_port,
    machine_line,
    run_async,
    temp_root,
)
from claim import variant_url
from genhook.contract.completion import failure_payload
from genhook.errors import ErrorCode, InvalidInput
from genhook.ids import new_job_id
from genhook.store.schema import deliveries
from genhook.store.store import Store

CONCURRENCY = 32
WARMUP = 500
COUNT = 2000
ROUNDS = 5
TARGET = 0.5
SCHEDULE = (5.0, 300.0)  # no retry is expected; a failed attempt would fail the bench anyway


# the receiver -------------------------------------------------------------------------------


def serve_receiver(port: int) -> None:
    """Count POSTs by (path, webhook-id), and the client connections (peer address and port)
    they came on within each round (``POST /round`` starts one), and answer 204; ``GET /stats``
    gives the counts and, per path, the most connections one round used."""
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    peers: dict[str, set[object]] = collections.defaultdict(set)  # this round's connections
    peak: collections.Counter[str] = collections.Counter()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen[(request.path, request.headers.get("webhook-id", ""))] += 1
        used = peers[request.path]
        used.add(request.transport.get_extra_info("peername") if request.transport else None)
        peak[request.path] = max(peak[request.path], len(used))
        return web.Response(status=204)

    async def new_round(_: web.Request) -> web.Response:
        peers.clear()
        return web.Response(status=204)

    async def stats(_: web.Request) -> web.Response:
        by_path: dict[str, dict[str, int]] = {}
        for (path, _msg), n in seen.items():
            entry = by_path.setdefault(path, {"posts": 0, "distinct": 0, "repeated": 0})
            entry["posts"] += n
            entry["distinct"] += 1
            entry["repeated"] += n > 1
        for path, most in peak.items():
            by_path[path]["connections"] = most
        return web.json_response(by_path)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/raw", hook)
        app.router.add_post("/genhook", hook)
        app.router.add_get("/stats", stats)
        app.router.add_post("/round", new_round)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
        await asyncio.Event().wait()

    run_async(main)


# the baseline: a raw aiohttp loop --------------------------------------------------------------


def serve_raw(url: str, concurrency: int) -> None:
    """Read commands on stdin: ``prep FILE`` (messages to pre-sign: JSON lines of id, body and
    secret) answers ``ready``; ``go`` posts them all and answers ``done``."""
    from standardwebhooks.webhooks import Webhook

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            ready: list[tuple[bytes, dict[str, str]]] = []
            while True:
                line = (await asyncio.to_thread(sys.stdin.readline)).split()
                if not line:
                    return
                if line[0] == "prep":
                    ready = []
                    now = datetime.now(UTC)
                    for text in Path(line[1]).read_text(encoding="utf-8").splitlines():
                        msg = json.loads(text)
                        body = msg["body"].encode()
                        signature = Webhook(msg["secret"]).sign(msg["id"], now, body.decode())
                        ready.append(
                            (
                                body,
                                {
                                    "webhook-id": msg["id"],
                                    "webhook-timestamp": str(int(now.timestamp())),
                                    "webhook-signature": signature,
                                    "content-type": "application/json",
                                },
                            )
                        )
                    print("ready", flush=True)
                elif line[0] == "go":
                    todo = iter(ready)

                    async def lane(todo: Iterator[tuple[bytes, dict[str, str]]]) -> None:
                        for body, headers in todo:
                            async with session.post(url, data=body, headers=headers) as answer:
                                await answer.read()
                                if answer.status != 204:
                                    raise RuntimeError(f"the receiver answered {answer.status}")

                    await asyncio.gather(*(lane(todo) for _ in range(concurrency)))
                    print("done", flush=True)

    run_async(main)


# genhook: the durable outbox and its sender -------------------------------------------------


def serve_genhook(database_url: str, concurrency: int, lease_ahead: int | None) -> None:
    """Read commands on stdin: ``go`` starts genhook's outbox (answers ``started``), ``stop``
    stops it once its attempts in flight are done (answers ``stopped``)."""
    from genhook.delivery.outbox import Outbox
    from genhook.delivery.sender import DeliverySender
    from genhook.store.store import Store

    async def main() -> None:
        store = Store(database_url)
        async with DeliverySender(allow_private=True) as sender:
            outbox = Outbox(
                store, sender, SCHEDULE, concurrency=concurrency, lease_ahead=lease_ahead
            )
            # the caps count leases (attempts logged and not yet recorded), which include those
            # leased ahead of a free lane: they must not bind before the outbox's lanes do
            caps = concurrency + outbox.lease_ahead
            store.delivery_per_endpoint = store.delivery_per_service = caps
            running: tuple[asyncio.Task[None], asyncio.Event] | None = None
            while True:
                line = (await asyncio.to_thread(sys.stdin.readline)).strip()
                if line == "go" and running is None:
                    stop = asyncio.Event()
                    running = (asyncio.create_task(outbox.run(stop)), stop)
                    print("started", flush=True)
                elif line == "stop" and running is not None:
                    running[1].set()
                    outbox.signal.notify()
                    await running[0]
                    running = None
                    print("stopped", flush=True)
                elif not line:
                    break
        store.close()

    run_async(main)


# the bench ---------------------------------------------------------------------------------


class Side:
    """One side of the comparison: its process (commands on stdin, answers on stdout), and its
    figures per timed round. Started in its own process group, killed with it at the end."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                argv,
                env=bench_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        self.rates: list[float] = []
        self.cpu_ms: list[float] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def say(self, command: str, answer: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        got = self.proc.stdout.readline().strip()
        if got != answer:
            raise RuntimeError(f"{self.name} answered {got!r} to {command!r}, not {answer!r}")

    def record(self, count: int, seconds: float, cpu: float) -> None:
        self.rates.append(count / seconds)
        self.cpu_ms.append(cpu * 1000 / count)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def seed(store: Store, service: dict[str, str], url: str, count: int, out: Path) -> int:
    """``count`` messages in genhook's outbox to ``url`` (refused triggers' failure payloads,
    as genhook writes them), and the same bodies for the raw side in ``out`` (JSON lines);
    the bodies' total size."""
    error = InvalidInput(ErrorCode.MISSING_FIELD, "product_name is required", field="product_name")
    job_ids = []
    for i in range(count):
        job_id = new_job_id()
        payload = failure_payload(
            job_id=job_id, workflow_id="product-image", external_id=f"x{i}", error=error, attempts=0
        ).to_json()
        store.reject(
            job_id=job_id,
            service_id=service["service_id"],
            workflow_id="product-image",
            workflow_version=1,
            body={},
            external_id=f"x{i}",
            callback_url=url,
            error=error,
            payload=payload,
            callback_private=True,
        )
        job_ids.append(job_id)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.body).where(deliveries.c.job_id.in_(job_ids))
        ).all()
    size = 0
    with out.open("w", encoding="utf-8") as f:
        for msg_id, body in rows:
            size += len(body)
            line = {"id": msg_id, "body": bytes(body).decode(), "secret": service["webhook_secret"]}
            f.write(json.dumps(line) + "\n")
    return size


def outstanding(db: Any) -> int:
    """Deliveries not yet recorded done (pending or sending), each state through its partial
    index, on a plain read connection (polled every 5 ms: it shares the cores with genhook)."""
    return sum(
        int(db.execute(f"SELECT count(*) FROM deliveries WHERE status = '{s}'").fetchone()[0])
        for s in ("pending", "sending")
    )


def poll_connection(database_url: str) -> Any:
    """A plain read connection to the bench's store: sqlite3 beside the WAL, or psycopg in
    autocommit (both have ``execute(sql).fetchone()``)."""
    if database_url.startswith("sqlite"):
        return sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
    import psycopg

    return psycopg.connect(database_url.replace("+psycopg", "", 1), autocommit=True)


def new_round(base: str) -> None:
    """Start a round at the receiver: the connections each side uses are counted afresh (an
    idle keep-alive connection may close between rounds and be opened again)."""
    urllib.request.urlopen(
        urllib.request.Request(f"{base}/round", method="POST"), timeout=10
    ).close()


def wait_for_receiver(base: str, receiver: Child) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/stats", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or receiver.proc.poll() is not None:
                raise RuntimeError(f"the receiver did not start:\n{receiver.log_tail()}") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--count", type=int, default=COUNT, help="messages per round")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--database-url", default=None, help="postgresql://... (else SQLite)")
    parser.add_argument(
        "--lease-ahead", type=int, default=None, help="the outbox's lease_ahead (its default)"
    )
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, arg = args.serve
        if kind == "receiver":
            serve_receiver(int(arg))
        elif kind == "raw":
            serve_raw(arg, args.concurrency)
        else:
            serve_genhook(arg, args.concurrency, args.lease_ahead)
        return 0

    sides: list[Side] = []
    with temp_root("genhook-bench-deliver-") as tmp, Children() as children:
        root = Path(tmp)
        database_url = (
            f"sqlite:///{root / 'genhook.db'}"
            if args.database_url is None
            else variant_url(args.database_url, root, "deliver")
        )
        store = Store(database_url)
        store.migrate()
        service = store.create_service("bench")
        port = free_port()
        base = f"http://{HOST}:{port}"
        receiver = children.start(
            "receiver",
            [sys.executable, __file__, "--serve", "receiver", str(port)],
            bench_env(),
            root / "receiver.log",
        )
        wait_for_receiver(base, receiver)
        conc = ["--concurrency", str(args.concurrency)]
        if args.lease_ahead is not None:
            conc += ["--lease-ahead", str(args.lease_ahead)]
        try:
            raw = Side(
                "raw",
                [sys.executable, __file__, *conc, "--serve", "raw", f"{base}/raw"],
                root / "raw.log",
            )
            sides.append(raw)
            genhook = Side(
                "genhook",
                [sys.executable, __file__, *conc, "--serve", "genhook", database_url],
                root / "genhook.log",
            )
            sides.append(genhook)
            sent = size = 0
            messages = root / "messages.jsonl"
            poll = poll_connection(database_url)

            def one_round(count: int, timed: bool, genhook_first: bool) -> None:
                nonlocal sent, size
                size += seed(store, service, f"{base}/genhook", count, messages)
                sent += count
                raw.say(f"prep {messages}", "ready")
                new_round(base)
                for side in (genhook, raw) if genhook_first else (raw, genhook):
                    cpu = cpu_seconds(side.pid)
                    start = time.perf_counter()
                    if side is raw:
                        raw.say("go", "done")
                    else:
                        genhook.say("go", "started")
                        while outstanding(poll):
                            time.sleep(0.005)
                    seconds = time.perf_counter() - start
                    cpu = cpu_seconds(side.pid) - cpu
                    if timed:
                        side.record(count, seconds, cpu)
                    if side is genhook:
                        genhook.say("stop", "stopped")

            one_round(WARMUP, timed=False, genhook_first=True)
            for round_no in range(args.rounds):
                one_round(args.count, timed=True, genhook_first=round_no % 2 == 1)
        finally:
            for side in sides:
                side.kill()
        with urllib.request.urlopen(f"{base}/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
        with store.engine.connect() as conn:
            statuses = dict(
                conn.exec_driver_sql(
                    "SELECT status, count(*) FROM deliveries GROUP BY status"
                ).all()
            )
            attempts = dict(
                conn.exec_driver_sql(
                    "SELECT state, count(*) FROM delivery_attempts GROUP BY state"
                ).all()
            )
        store.close()

    print(
        f"deliver: signed POSTs of ~{size // sent}-byte callbacks to a bare aiohttp receiver,"
        f" {args.concurrency} in flight, {WARMUP} warm-up then {args.rounds} interleaved rounds"
        f" of {args.count}; medians"
    )
    store_name = "SQLite" if database_url.startswith("sqlite") else "PostgreSQL"
    print(machine_line() + "; the receiver, both sides and this bench share the cores")
    print(f"genhook's store: {store_name}")
    print(f"{'side':<10}{'deliveries/s':>14}{'min':>9}{'max':>9}{'CPU ms/delivery':>17}")
    for side in sides:
        print(
            f"{side.name:<10}{statistics.median(side.rates):>14.0f}{min(side.rates):>9.0f}"
            f"{max(side.rates):>9.0f}{statistics.median(side.cpu_ms):>17.3f}"
        )
    print(
        "rounds deliveries/s: "
        + "; ".join(f"{s.name} " + ", ".join(f"{r:.0f}" for r in s.rates) for s in sides)
    )
    ok = True
    for path in ("/raw", "/genhook"):
        got = stats.get(path, {"posts": 0, "distinct": 0, "repeated": 0})
        used = got.get("connections", 0)
        print(
            f"receiver {path}: {got['posts']} POSTs, {got['distinct']} webhook-ids,"
            f" at most {used} connections in a round"
        )
        if got["posts"] != sent or got["distinct"] != sent:
            print(f"FAIL: {path}: {sent} messages, {got}")
            ok = False
        if used > args.concurrency:  # HTTP/1.1, no pipelining: one request per connection
            print(f"FAIL: {path}: {used} connections, more than {args.concurrency} in flight")
            ok = False
    print(f"genhook deliveries by status: {statuses}; attempts by state: {attempts}")
    if statuses != {"delivered": sent} or attempts != {"done": sent}:
        print(f"FAIL: expected {sent} delivered, each with one done attempt")
        ok = False
    ratio = statistics.median(genhook.rates) / statistics.median(raw.rates)
    verdict = "ok" if ratio >= TARGET and ok else "FAIL"
    print(f"{verdict}: genhook / raw aiohttp loop = {ratio:.2f}x (target >= {TARGET:.2f}x)")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
