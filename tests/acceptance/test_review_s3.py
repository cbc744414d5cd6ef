"""Acceptance: approving a held job re-signs its presigned S3 URLs. A real `genhook serve`
(SQLite and PostgreSQL) with its assets on a moto server behind tests/s3server.py's gateway
(which refuses an expired presigned URL as S3 does), ``GENHOOK_S3_URL_MODE=presigned`` and a
presign expiry of 5 s: a job held for review waits past its URLs' expiry; ``GET /v1/reviews``
lists it with URLs signed again; it is approved, and the delivered payload's ``asset_url``
serves the bytes, its ``url_expires_at`` after the approval."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.acceptance.test_review import held, review, reviewing
from tests.s3server import S3Server, s3_server

PREFIX = "media/held"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(gateway=True) as server:
        yield server


def test_approving_after_the_urls_expired_delivers_fresh_ones(
    genhook_factory: Callable[..., Genhook], s3: S3Server, receiver: Receiver
) -> None:
    g = reviewing(genhook_factory)
    g.env.update(s3.env(PREFIX))
    g.env.update(GENHOOK_S3_URL_MODE="presigned", GENHOOK_S3_URL_EXPIRY="5s")
    g.serve(workers=1)
    accepted = g.trigger("review-tiny", {"item_id": "SKU-S3", "callback_url": receiver.url})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    [stale] = held(g, job_id, 1)["outputs"]
    assert "X-Amz-Signature=" in stale["asset_url"]
    assert httpx.get(stale["asset_url"], timeout=30).status_code == 200
    # past the expiry of the URLs saved at hold time: the storage refuses them now
    left = datetime.fromisoformat(stale["url_expires_at"]) - datetime.now(UTC)
    time.sleep(max(0.0, left.total_seconds()) + 1.5)
    assert httpx.get(stale["asset_url"], timeout=30).status_code == 403
    # the review queue lists it with URLs signed now, for the reviewer
    [listed] = held(g, job_id, 1)["outputs"]
    assert listed["asset_url"] != stale["asset_url"]
    assert datetime.fromisoformat(listed["url_expires_at"]) > datetime.now(UTC)
    assert httpx.get(listed["asset_url"], timeout=30).status_code == 200
    approved_at = datetime.now(UTC)
    answer = review(g, job_id, {"decision": "approve"})
    assert answer.status_code == 200, answer.text
    (call,) = receiver.wait_job(job_id, timeout=60)
    payload = verify(g.secret, call)
    assert payload["status"] == "success", payload
    [output] = payload["outputs"]
    assert output["asset_url"] != stale["asset_url"]
    assert datetime.fromisoformat(output["url_expires_at"]) > approved_at
    got = httpx.get(output["asset_url"], timeout=30)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).hexdigest() == output["sha256"] == stale["sha256"]
    assert g.job(job_id)["result"]["outputs"][0]["asset_url"] == output["asset_url"]
