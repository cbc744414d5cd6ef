"""Acceptance: what fails in between (backends, workers, receivers, callers) is survived."""

from __future__ import annotations

import glob
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI

ITEM = {"item_id": "A-1", "name": "ceramic vase"}


@pytest.fixture
def engine_api() -> Iterator[FakeOpenAI]:
    """The remote generation engine (the outside world), faked faithfully."""
    with FakeOpenAI(api_key=FAKE_API_KEY) as fake:
        yield fake


def remote(factory: Callable[..., Genhook], fake: FakeOpenAI, **env: str) -> Genhook:
    return factory(
        GENHOOK_OPENAI_BASE_URL=fake.base_url,
        GENHOOK_OPENAI_API_KEY=FAKE_API_KEY,
        **env,
    )


def test_transient_backend_failures_are_retried(
    genhook_factory: Callable[..., Genhook], engine_api: FakeOpenAI, receiver: Receiver
) -> None:
    """503 twice, then an image: three attempts on the compressed schedule, then success."""
    engine_api.script(["503", {"status": 500}, "ok"])
    g = remote(genhook_factory, engine_api)
    g.serve()
    job_id = g.trigger("remote-image", {**ITEM, "callback_url": receiver.url}).json()["job_id"]
    (call,) = receiver.wait_job(job_id)
    payload = verify(g.secret, call)
    assert payload["status"] == "success"
    assert payload["metadata"]["attempts"] == 3
    assert payload["metadata"]["model_id"] == "openai/gpt-image-test"
    assert payload["metadata"]["credit_cost"] == 4.0  # the shipped pricing file's openai "*"
    job = g.job(job_id)
    assert [a["outcome"] for a in job["attempts"]] == ["retrying", "retrying", "succeeded"]
    assert [a["error"]["error_code"] for a in job["attempts"][:2]] == ["backend_error"] * 2
    assert "503" in job["attempts"][0]["error"]["error_description"]
    assert len(engine_api.requests) == 3


def delivery_status(g: Genhook, job_id: str) -> str | None:
    """The recorded status of the job's one callback delivery (``None`` before it exists)."""
    found = g.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]
    return str(found[0]["status"]) if found else None


def test_permanent_backend_failure_is_not_retried(
    genhook_factory: Callable[..., Genhook], engine_api: FakeOpenAI, receiver: Receiver
) -> None:
    """A content-policy refusal fails the job at once with backend_rejected."""
    engine_api.script(["content_policy"])
    g = remote(genhook_factory, engine_api)
    g.serve()
    job_id = g.trigger("remote-image", {**ITEM, "callback_url": receiver.url}).json()["job_id"]
    (call,) = receiver.wait_job(job_id)
    payload = verify(g.secret, call)
    assert payload["status"] == "failed" and payload["outputs"] == []
    assert payload["error"]["error_code"] == "backend_rejected"
    assert "content_policy_violation" in payload["error"]["error_description"]
    # A failed job is terminal in the store: nothing can claim it again, so one request is final.
    wait_for(lambda: g.job(job_id)["status"] == "failed", 30, "the job recorded as failed")
    assert len(engine_api.requests) == 1
    assert [a["outcome"] for a in g.job(job_id)["attempts"]] == ["failed"]


def test_worker_killed_mid_job_is_taken_over(
    genhook_factory: Callable[..., Genhook], engine_api: FakeOpenAI, receiver: Receiver
) -> None:
    """SIGKILL a worker mid-generation: another takes the job after the lease; one callback."""
    engine_api.script([{"delay": 30}, "ok"])
    g = remote(
        genhook_factory,
        engine_api,
        GENHOOK_LEASE_SECONDS="2",
        GENHOOK_HEARTBEAT_SECONDS="0.5",
        GENHOOK_OPENAI_TIMEOUT="60",
    )
    g.serve(workers=0)
    doomed = g.worker()
    job_id = g.trigger("remote-image", {**ITEM, "callback_url": receiver.url}).json()["job_id"]
    wait_for(lambda: engine_api.requests, 60, "the first worker to call the engine")
    assert g.job(job_id)["status"] == "running"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    g.worker()
    (call,) = receiver.wait_job(job_id, timeout=90)
    payload = verify(g.secret, call)
    assert payload["status"] == "success"
    job = g.job(job_id)
    assert [a["outcome"] for a in job["attempts"]] == ["lost", "succeeded"]
    assert job["attempts"][0]["error"]["error_code"] == "worker_lost"
    assert job["attempts"][0]["worker"] != job["attempts"][1]["worker"]
    wait_for(lambda: delivery_status(g, job_id) == "delivered", 30, "the delivery recorded")
    calls = receiver.for_job(job_id)
    assert len({c.headers["webhook-id"] for c in calls}) == 1
    assert len(calls) == 1


def test_receiver_down_then_500_then_200(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """Delivery retries on its schedule past a dead receiver and a 500; every attempt logged."""
    receiver = Receiver(statuses=[500, 200])
    port_holder = Receiver().start()
    port = port_holder.port
    port_holder.stop()  # the receiver's port is closed: it is "down"
    g = genhook_factory(GENHOOK_DELIVERY_SCHEDULE="1s,0.5s,0.5s,0.5s")
    g.serve()
    url = f"http://127.0.0.1:{port}/hooks"
    job_id = g.trigger("tiny", {"item_id": "down-1", "callback_url": url}).json()["job_id"]

    def log() -> list[dict[str, Any]]:
        (delivery,) = g.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]
        return list(delivery["attempt_log"])

    wait_for(
        lambda: (
            g.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]
            and [a["state"] for a in log()] == ["done"]
        ),
        60,
        "a first attempt, refused",
    )
    receiver.port = port
    receiver.start()
    try:
        calls = receiver.wait_job(job_id, count=2)
        wait_for(
            lambda: [a["state"] for a in log()] == ["done"] * 3, 30, "three completed attempts"
        )
        attempts = log()
        assert attempts[0]["status_code"] is None and attempts[0]["error"]
        assert attempts[1]["status_code"] == 500
        assert attempts[2]["status_code"] == 200 and attempts[2]["error"] is None
        assert all(a["duration_ms"] >= 0 for a in attempts)
        assert calls[0].headers["webhook-id"] == calls[1].headers["webhook-id"]
        assert verify(g.secret, calls[1])["job_id"] == job_id
        (delivery,) = g.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]
        assert delivery["status"] == "delivered"
        replay = g.http.post(f"/v1/deliveries/{delivery['delivery_id']}/replay")
        assert replay.status_code == 202
        third = receiver.wait_job(job_id, count=3)[2]
        assert third.headers["webhook-id"] == delivery["webhook_id"]
    finally:
        receiver.stop()


def test_gone_stops_delivery(service: Genhook) -> None:
    """A receiver answering 410 gets no further attempts."""
    receiver = Receiver(statuses=[410]).start()
    try:
        job_id = service.trigger(
            "tiny", {"item_id": "gone-1", "callback_url": receiver.url}
        ).json()["job_id"]
        receiver.wait_job(job_id)
        wait_for(lambda: delivery_status(service, job_id) == "failed", 30, "the 410 recorded")
        assert len(receiver.for_job(job_id)) == 1
        (delivery,) = service.http.get("/v1/deliveries", params={"job_id": job_id}).json()[
            "deliveries"
        ]
        assert delivery["status"] == "failed" and delivery["attempt_log"][0]["status_code"] == 410
    finally:
        receiver.stop()


def test_idempotency_key(service: Genhook) -> None:
    """One Idempotency-Key: same body, same job; another body, 409."""
    body = {"item_id": "idem-1"}
    first = service.trigger("tiny", body, **{"Idempotency-Key": "order-77"})
    again = service.trigger("tiny", body, **{"Idempotency-Key": "order-77"})
    assert first.status_code == 202 and again.status_code in (200, 202)
    assert first.json()["job_id"] == again.json()["job_id"]
    clash = service.trigger("tiny", {"item_id": "idem-2"}, **{"Idempotency-Key": "order-77"})
    assert clash.status_code == 409 and clash.json()["error_code"] == "idempotency_conflict"
    other = service.trigger("tiny", body, **{"Idempotency-Key": "order-78"})
    assert other.json()["job_id"] != first.json()["job_id"]
    respaced = service.http.post(
        "/v1/workflows/tiny/runs",
        content=b'{ "item_id" :  "idem-1" }',
        headers={"Idempotency-Key": "order-77", "Content-Type": "application/json"},
    )
    assert respaced.json()["job_id"] == first.json()["job_id"], "same JSON, other spacing"


def test_cancel_queued_and_running(
    genhook_factory: Callable[..., Genhook], engine_api: FakeOpenAI, receiver: Receiver
) -> None:
    """Cancel a queued job (no worker) and a running one (slow engine): both end cancelled."""
    engine_api.script([{"delay": 3}, "ok"])
    g = remote(genhook_factory, engine_api)
    g.serve(workers=0)
    queued = g.trigger("remote-image", {**ITEM, "callback_url": receiver.url}).json()["job_id"]
    answer = g.http.post(f"/v1/jobs/{queued}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    (call,) = receiver.wait_job(queued)
    assert verify(g.secret, call)["error"]["error_code"] == "cancelled"
    again = g.http.post(f"/v1/jobs/{queued}/cancel")
    assert again.status_code == 409 and again.json()["error_code"] == "not_cancellable"
    running = g.trigger("remote-image", {**ITEM, "callback_url": receiver.url}).json()["job_id"]
    g.worker()
    wait_for(lambda: g.job(running)["status"] == "running", 60, "the job to run")
    assert g.http.post(f"/v1/jobs/{running}/cancel").json()["status"] == "running"
    done = g.wait_status(running, {"cancelled", "succeeded", "failed"})
    assert done["status"] == "cancelled"
    (call,) = receiver.wait_job(running)
    assert verify(g.secret, call)["error"]["error_code"] == "cancelled"


SPELLINGS = [
    "http://127.0.0.1/cb",
    "http://localhost/cb",
    "http://2130706433/cb",
    "http://0177.0.0.1/cb",
    "http://0x7f.0.0.1/cb",
    "http://127.1/cb",
    "http://[::1]/cb",
    "http://[::ffff:127.0.0.1]/cb",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.8/cb",
    "http://192.168.1.1/cb",
    "http://[fe80::1]/cb",
    "http://224.0.0.1/cb",
    "http://0.0.0.0/cb",
    "ftp://example.com/cb",
    "http://user:pw@example.com/cb",
]


def test_private_callback_urls_refused(genhook_factory: Callable[..., Genhook]) -> None:
    """With private callbacks off (production), every spelling of a non-public host is 422."""
    g = genhook_factory(GENHOOK_ALLOW_PRIVATE_CALLBACKS="false")
    g.serve(workers=0)
    for url in SPELLINGS:
        answer = g.trigger("tiny", {"item_id": "x", "callback_url": url})
        assert answer.status_code == 422, url
        assert answer.json()["error_code"] == "invalid_callback_url", url
        assert answer.json()["field"] == "callback_url"
    ok = g.trigger("tiny", {"item_id": "x", "callback_url": "https://93.184.216.34/cb"})
    assert ok.status_code == 202


def test_burst_of_1000_triggers(service: Genhook, receiver: Receiver) -> None:
    """1,000 triggers: all accepted, all completed, all delivered, each exactly once."""
    with httpx.Client(
        base_url=service.base, headers={"Authorization": f"Bearer {service.key}"}, timeout=60
    ) as client:
        ids = []
        for i in range(1000):
            answer = client.post(
                "/v1/workflows/tiny/runs",
                json={"item_id": f"burst-{i}", "callback_url": receiver.url},
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
    assert len(set(ids)) == 1000
    wanted = set(ids)
    wait_for(
        lambda: wanted <= {c.json["job_id"] for c in receiver.calls()},
        300,
        "1,000 callbacks",
        every=0.5,
    )
    mine = [c for c in receiver.calls() if c.json["job_id"] in wanted]
    assert len(mine) == 1000, "one callback per job"
    assert all(c.json["status"] == "success" for c in mine)
    for call in mine[::50]:
        verify(service.secret, call)


def test_killed_server_loses_no_accepted_trigger(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    """Every trigger answered 202 survives a SIGKILL of the server the next instant."""
    g = genhook_factory()
    server = g.serve(workers=0)
    ids = [
        g.trigger("tiny", {"item_id": f"k-{i}", "callback_url": receiver.url}).json()["job_id"]
        for i in range(50)
    ]
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    g.serve(workers=2)
    wanted = set(ids)
    wait_for(lambda: wanted <= {c.json["job_id"] for c in receiver.calls()}, 120, "50 callbacks")
    assert {g.job(i)["status"] for i in ids} == {"succeeded"}


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (started by any of its threads; zombies left out)."""
    kids: set[int] = set()
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path, encoding="ascii") as f:
                kids |= {int(p) for p in f.read().split()}
        except OSError:
            continue
    return {k for k in kids if _alive(k)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_replaces_a_dead_worker_process(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    """`serve --workers 1` restarts its worker process after a SIGKILL; work goes on."""
    g = genhook_factory()
    server = g.serve(workers=1)
    (first,) = wait_for(lambda: _children(server.pid), 30, "the worker process")
    os.kill(first, signal.SIGKILL)
    replacement = wait_for(
        lambda: (kids := _children(server.pid) - {first}) and kids, 30, "a new worker process"
    )
    assert first not in replacement
    job_id = g.trigger("tiny", {"item_id": "after", "callback_url": receiver.url}).json()["job_id"]
    (call,) = receiver.wait_job(job_id, timeout=60)
    assert verify(g.secret, call)["status"] == "success"
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    assert not any(_alive(pid) for pid in replacement), "its workers stopped too"
