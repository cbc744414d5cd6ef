"""Acceptance: `genhook sender` delivers on its own, beside workers on another process, while the
API process that accepted the trigger is stopped; SIGTERM ends it cleanly."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import GENHOOK, Genhook, Receiver, verify
from tests.databases import database_url

TRIGGER = {
    "product_id": "SKU-SND",
    "product_name": "walnut tray",
    "target_style": "studio_white",
    "target_platform": "thumb",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


def _start(genhook: Genhook, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (genhook.tmp / f"{name}.log").open("wb")
    genhook.logfiles.append(log)
    proc = subprocess.Popen([GENHOOK, *args], env=genhook.env, stdout=log, stderr=subprocess.STDOUT)
    genhook.procs.append(proc)
    return proc


def test_the_sender_delivers_while_the_api_is_stopped(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    """A trigger accepted by `serve --workers 0`; the API process is then frozen (SIGSTOP);
    a separate worker runs the job and a separate `genhook sender` delivers its signed
    callback; SIGTERM stops the sender with exit 0."""
    genhook = Genhook(tmp_path / "g", GENHOOK_DATABASE_URL=db_url)
    try:
        api = genhook.serve(workers=0)
        answer = genhook.trigger("product-image", {**TRIGGER, "callback_url": receiver.url})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        api.send_signal(signal.SIGSTOP)  # its outbox can deliver nothing from now on
        try:
            _start(genhook, "worker", "worker")
            sender = _start(genhook, "sender", "sender", "--concurrency", "4")
            (call,) = receiver.wait_job(job_id, timeout=60)
            payload = verify(genhook.secret, call)
            assert payload["status"] == "success" and payload["job_id"] == job_id
            sender.send_signal(signal.SIGTERM)
            assert sender.wait(30) == 0, genhook.logs()
        finally:
            api.send_signal(signal.SIGCONT)
        assert len(receiver.for_job(job_id)) == 1
    finally:
        genhook.close()
