"""A slow endpoint never delays other services' callbacks, on a real `genhook serve`: 200
callbacks of one service to a loopback endpoint that accepts the connection and never answers
are in flight (at most the per-endpoint cap of them at once), and meanwhile another service's
callbacks arrive within a second each."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from tests.acceptance.harness import GENHOOK, Genhook, Receiver, verify, wait_for

HANGING_DELIVERIES = 200
PER_ENDPOINT = 8  # GENHOOK_DELIVERY_PER_ENDPOINT's default


@dataclass
class Hanging:
    """A loopback endpoint that accepts every connection, reads, and never answers."""

    port: int = 0
    open_now: int = 0
    most_open: int = 0
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/slow"

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    if conn.recv(65536) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
        with self.lock:
            self.open_now -= 1

    def serve(self, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.accepted += 1
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    h = Hanging()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.settimeout(0.1)
    h.port = listener.getsockname()[1]
    thread = threading.Thread(target=h.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield h
    finally:
        h.stop.set()
        thread.join(5)
        listener.close()


def second_service(g: Genhook, name: str) -> dict[str, str]:
    made = subprocess.run(
        [GENHOOK, "services", "create", name],
        env=g.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    service: dict[str, str] = json.loads(made.stdout)
    return service


def test_a_hanging_endpoint_does_not_delay_another_services_callbacks(
    genhook_factory: Callable[..., Genhook], receiver: Receiver, hanging: Hanging
) -> None:
    g = genhook_factory()
    other = second_service(g, "other")
    g.serve(workers=2)
    # 200 refused triggers of "shop": each outboxes its failed payload to the hanging endpoint
    for i in range(HANGING_DELIVERIES):
        answer = g.trigger("tiny", {"callback_url": hanging.url, "row": i})
        assert answer.status_code == 422, answer.text
    wait_for(lambda: hanging.accepted >= PER_ENDPOINT, 30, "the hanging endpoint's attempts")
    try:
        other_auth = {"Authorization": f"Bearer {other['api_key']}"}
        late: list[float] = []
        for i in range(10):  # refused triggers of "other": its callbacks go out at once
            answered = g.http.post(
                "/v1/workflows/tiny/runs",
                json={"callback_url": receiver.url, "note": i},
                headers=other_auth,
            )
            assert answered.status_code == 422, answered.text
            at = time.time()
            job_id = answered.json()["job_id"]
            [call] = receiver.wait_job(job_id, timeout=30)
            late.append(call.at - at)
            assert verify(other["webhook_secret"], call)["status"] == "failed"
        # and a job that runs: its completion arrives within a second of its end
        started = g.http.post(
            "/v1/workflows/tiny/runs",
            json={"item_id": "quick", "callback_url": receiver.url},
            headers=other_auth,
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        [call] = receiver.wait_job(job_id, timeout=60)
        job = g.http.get(f"/v1/jobs/{job_id}", headers=other_auth).json()
        ended = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()
        late.append(call.at - ended)
        assert verify(other["webhook_secret"], call)["status"] == "success"

        assert max(late) < 1.0, f"other service's callbacks took {sorted(late)[-3:]} s"
        # the hanging endpoint never held more than its cap of attempts at once
        assert hanging.most_open == PER_ENDPOINT
        log = g.http.get(f"/v1/deliveries?job_id={job_id}", headers=other_auth).json()
        assert [d["status"] for d in log["deliveries"]] == ["delivered"]
    finally:
        hanging.stop.set()  # the hung attempts end, so serve stops promptly
