"""Acceptance: hostile callback receivers on a real `genhook serve`. Endpoints on loopback that
hang, reset the connection, trickle their answer a byte at a time, answer with a 1 GB body, or
redirect to another loopback listener (a canary) get their deliveries at the same time as a
well-behaved receiver: the sender stays healthy, the good receiver's callbacks still arrive at
once, the process's memory stays bounded, each hostile answer is recorded as what it was, and
the canary is never connected to (redirects are not followed)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for

TIMEOUT = 3.0  # GENHOOK_DELIVERY_TIMEOUT here (the default is the contract's 15 s)
PER_HOSTILE = 4  # deliveries to each hostile endpoint
GOOD = 15  # callbacks to the good receiver, sent one at a time while the hostile ones go on
HUGE = 1 << 30  # the body the huge endpoint announces (and streams until the client goes)
TRICKLE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Hostile:
    """A loopback endpoint answering every request in one hostile way; counts connections."""

    def __init__(self, mode: str, location: str = "") -> None:
        self.mode = mode
        self.location = location
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            conn.recv(65536)  # the request (head and the small signed body)
            if self.mode == "hang":
                self.held.append(conn)  # never answered, never closed
                return
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.mode == "trickle":
                for byte in TRICKLE:
                    if self.stopping.wait(0.25):
                        break
                    conn.sendall(bytes([byte]))
            elif self.mode == "huge":
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\n\r\n".encode())
                chunk = b"\0" * 65536
                for _ in range(HUGE // len(chunk)):
                    conn.sendall(chunk)  # until the client stops reading and closes
            elif self.mode == "redirect":
                conn.sendall(
                    f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {self.location}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
            conn.close()
        except OSError:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hostile() -> Iterator[dict[str, Hostile]]:
    canary = Hostile("hang")
    made = {
        "hang": Hostile("hang"),
        "reset": Hostile("reset"),
        "trickle": Hostile("trickle"),
        "huge": Hostile("huge"),
        "redirect": Hostile("redirect", location=f"{canary.url}?from=redirect"),
        "canary": canary,
    }
    yield made
    for endpoint in made.values():
        endpoint.close()


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_hostile_receivers_do_not_hurt_the_sender_or_other_callbacks(
    genhook_factory: Callable[..., Genhook], receiver: Receiver, hostile: dict[str, Hostile]
) -> None:
    g = genhook_factory(
        GENHOOK_DELIVERY_TIMEOUT=f"{TIMEOUT:g}s", GENHOOK_DELIVERY_SCHEDULE="1s,1s,1s"
    )
    server = g.serve(workers=0)
    before = _memory_kib(server.pid, "VmRSS")
    jobs: dict[str, list[str]] = {}
    for name, endpoint in hostile.items():
        if name == "canary":
            continue
        for i in range(PER_HOSTILE):  # refused triggers: each outboxes its failed payload
            answer = g.trigger("tiny", {"callback_url": endpoint.url, "row": i})
            assert answer.status_code == 422, answer.text
            jobs.setdefault(name, []).append(answer.json()["job_id"])
    wait_for(
        lambda: all(hostile[n].accepted >= 1 for n in jobs), 30, "every hostile endpoint asked"
    )
    late: list[float] = []
    for i in range(GOOD):
        at = time.time()
        answer = g.trigger("tiny", {"callback_url": receiver.url, "note": i})
        assert answer.status_code == 422, answer.text
        (call,) = receiver.wait_job(answer.json()["job_id"], timeout=30)
        late.append(call.at - at)
        assert verify(g.secret, call)["status"] == "failed"
        assert httpx.get(f"{g.base}/healthz", timeout=10).status_code == 200
    assert max(late) < 3.0, late  # the hostile ones never held the good ones back

    def attempts(job_id: str) -> list[dict[str, object]]:
        """The delivery log's finished attempts of the job's one delivery."""
        (delivery,) = g.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]
        return [a for a in delivery["attempt_log"] if a["state"] == "done"]

    def settled(name: str) -> bool:
        return all(len(attempts(j)) >= 2 for j in jobs[name])

    for name in ("reset", "trickle", "redirect"):  # failures, retried on the schedule
        wait_for(lambda n=name: settled(n), 60, f"{name}'s retries", every=0.5)
    for job_id in jobs["huge"]:  # a 200 is a 200, whatever its body: read capped, delivered
        wait_for(lambda j=job_id: attempts(j), 60, "the huge answer's attempt", every=0.5)
        assert attempts(job_id)[0]["status_code"] == 200, attempts(job_id)
    for job_id in jobs["redirect"]:
        assert {a["status_code"] for a in attempts(job_id)} == {307}
    for job_id in jobs["trickle"]:
        first = attempts(job_id)[0]
        assert first["status_code"] is None and "timeout" in str(first["error"]), first
    for job_id in jobs["reset"]:
        assert attempts(job_id)[0]["status_code"] is None
    assert hostile["canary"].accepted == 0  # no redirect was followed
    grown = _memory_kib(server.pid, "VmHWM") - before
    assert grown < 100 * 1024, f"the server's peak grew by {grown} KiB"
    assert server.poll() is None
