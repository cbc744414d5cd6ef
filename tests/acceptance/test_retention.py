"""Acceptance: retention with real processes, on SQLite and PostgreSQL. A service with
`--retention 5s` and `GENHOOK_PURGE_INTERVAL=1s`: after its job's signed callback arrived and
its asset was fetched, the running `genhook serve` purges it, the asset URL answers 410
asset_expired, the job 410 job_expired, and the files and rows are gone; a job still owing a
callback, and another service's job (default retention), stay. `genhook sender` alone purges
too (split roles)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.harness import (
    GENHOOK,
    Genhook,
    Receiver,
    free_port,
    ts,
    verify,
    wait_for,
)

TRIGGER = {
    "product_id": "SKU-RET",
    "product_name": "birch stool",
    "target_style": "studio_white",
    "target_platform": "thumb",
}
# a purge pass every second; a failed callback is tried again only after a minute
FAST = {"GENHOOK_PURGE_INTERVAL": "1s", "GENHOOK_DELIVERY_SCHEDULE": "1m"}
RETENTION = 5.0


def _finished(genhook: Genhook, receiver: Receiver, client: httpx.Client | None = None) -> Any:
    """A product-image job run to its delivered callback; its payload (signature verified)."""
    answer = (client or genhook.http).post(
        "/v1/workflows/product-image/runs", json={**TRIGGER, "callback_url": receiver.url}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    (call,) = receiver.wait_job(job_id, timeout=90)
    return verify(genhook.secret, call) if client is None else call.json


def _job_rows(genhook: Genhook, job_id: str) -> dict[str, int]:
    counts = {}
    for table, column in (
        ("jobs", "id"),
        ("job_attempts", "job_id"),
        ("job_events", "job_id"),
        ("deliveries", "job_id"),
    ):
        [row] = genhook.rows(f"SELECT count(*) AS n FROM {table} WHERE {column} = :id", id=job_id)
        counts[table] = int(row["n"])
    return counts


def _gone(url: str) -> httpx.Response | None:
    got = httpx.get(url, timeout=10)
    return got if got.status_code == 410 else None


def test_a_finished_jobs_asset_url_answers_410_once_its_retention_is_over(
    genhook_factory: Any, receiver: Receiver
) -> None:
    genhook: Genhook = genhook_factory(**FAST)
    genhook.cli("services", "update", "shop", "--retention", f"{RETENTION:g}s")
    # a callback to a closed port, retried in a minute: a delivery that stays pending
    owed_to = f"http://127.0.0.1:{free_port()}/hook"
    other = genhook.new_service("keeper")  # the default retention, 30 days
    genhook.serve(workers=1)
    payload = _finished(genhook, receiver)
    job_id = payload["job_id"]
    [output] = payload["outputs"]
    url = output["asset_url"]
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200 and len(fetched.content) == output["bytes"]
    folder = genhook.tmp / "var" / "assets" / job_id
    assert folder.is_dir() and any(folder.iterdir())
    assert all(n >= 1 for n in _job_rows(genhook, job_id).values())
    kept = _finished(genhook, receiver, other)
    owed = genhook.trigger("product-image", {**TRIGGER, "callback_url": owed_to})
    assert owed.status_code == 202, owed.text
    owed_id = owed.json()["job_id"]
    owed_job = genhook.wait_status(owed_id, {"succeeded"}, timeout=90)

    expired = wait_for(lambda: _gone(url), 60, f"{url} to answer 410", every=0.25)
    assert expired.json()["error_code"] == "asset_expired"
    assert expired.headers["content-type"].startswith("application/json")
    job = genhook.http.get(f"/v1/jobs/{job_id}")
    assert job.status_code == 410 and job.json()["error_code"] == "job_expired"
    assert not folder.exists()
    assert _job_rows(genhook, job_id) == dict.fromkeys(_job_rows(genhook, job_id), 0)
    [stone] = genhook.rows("SELECT * FROM purged_jobs WHERE job_id = :id", id=job_id)
    assert stone["assets_deleted_at"] is not None
    # what is not due stays: the other service's job, and the job whose callback is owed
    # (checked once it has ended longer ago than the retention, and two passes ran since)
    time.sleep(max(0.0, ts(owed_job["finished_at"]) + RETENTION + 2.5 - time.time()))
    assert httpx.get(kept["outputs"][0]["asset_url"], timeout=10).status_code == 200
    assert other.get(f"/v1/jobs/{kept['job_id']}").status_code == 200
    assert genhook.http.get(f"/v1/jobs/{owed_id}").status_code == 200
    assert (genhook.tmp / "var" / "assets" / owed_id).is_dir()
    dry = genhook.cli("purge", "--dry-run")
    assert '"jobs": 0' in dry.stdout, dry.stdout


def test_genhook_sender_alone_purges_too(genhook_factory: Any, receiver: Receiver) -> None:
    """Split roles: the API process stopped, a `genhook sender` on its own purges the job."""
    genhook: Genhook = genhook_factory(**FAST)
    genhook.cli("services", "update", "shop", "--retention", "3s")
    api = genhook.serve(workers=1)
    payload = _finished(genhook, receiver)
    job_id = payload["job_id"]
    api.send_signal(signal.SIGTERM)
    assert api.wait(60) == 0, genhook.logs()
    folder = genhook.tmp / "var" / "assets" / job_id
    assert folder.is_dir()
    log = (genhook.tmp / "sender.log").open("wb")
    genhook.logfiles.append(log)
    sender = subprocess.Popen(
        [GENHOOK, "sender"], env=genhook.env, stdout=log, stderr=subprocess.STDOUT
    )
    genhook.procs.append(sender)
    wait_for(lambda: not folder.exists(), 60, "the sender to purge the job's files", every=0.25)
    assert _job_rows(genhook, job_id)["jobs"] == 0
    assert genhook.rows("SELECT job_id FROM purged_jobs") == [{"job_id": job_id}]
    sender.send_signal(signal.SIGTERM)
    assert sender.wait(30) == 0, genhook.logs()
    assert "purge:" in Path(log.name).read_text(errors="replace")


def test_on_s3_storage_the_purge_deletes_the_jobs_objects(
    genhook_factory: Any, receiver: Receiver
) -> None:
    """Assets on a real S3-compatible server (moto, on loopback), asset URLs through genhook
    (GENHOOK_S3_URL_MODE=redirect: 307 to a fresh presigned URL): once the job's retention is
    over its objects are gone from the bucket, and its asset URL answers 410 asset_expired."""
    from tests.s3server import s3_server

    with s3_server() as s3:
        genhook: Genhook = genhook_factory(
            **FAST, **s3.env(prefix="assets"), GENHOOK_S3_URL_MODE="redirect"
        )
        genhook.cli("services", "update", "shop", "--retention", f"{RETENTION:g}s")
        genhook.serve(workers=1)
        payload = _finished(genhook, receiver)
        job_id = payload["job_id"]
        [output] = payload["outputs"]
        url = output["asset_url"]
        fetched = httpx.get(url, timeout=30, follow_redirects=True)
        assert fetched.status_code == 200 and len(fetched.content) == output["bytes"]
        assert fetched.history and fetched.history[0].status_code == 307
        assert s3.keys(f"assets/{job_id}/")
        expired = wait_for(lambda: _gone(url), 60, f"{url} to answer 410", every=0.25)
        assert expired.json()["error_code"] == "asset_expired"
        assert s3.keys(f"assets/{job_id}/") == []
        assert genhook.http.get(f"/v1/jobs/{job_id}").status_code == 410
        [stone] = genhook.rows("SELECT * FROM purged_jobs WHERE job_id = :id", id=job_id)
        assert stone["assets_deleted_at"] is not None
