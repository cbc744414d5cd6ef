"""Acceptance: `genhook serve` with its assets on S3-compatible storage (a moto server on
loopback, behind tests/s3server.py's gateway, which checks presigned URLs as S3 does), on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import SAMPLES
from tests.s3server import S3Server, s3_server

PREFIX = "media/genhook"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(gateway=True) as server:
        yield server


@pytest.fixture(scope="module")
def on_s3(
    tmp_path_factory: pytest.TempPathFactory, s3: S3Server, db_kind: str
) -> Iterator[Genhook]:
    g = Genhook(
        tmp_path_factory.mktemp(f"s3-serve-{db_kind}"),
        database=db_kind,
        **s3.env(PREFIX),
        GENHOOK_S3_URL_EXPIRY="1h",
    )
    g.serve(workers=2)
    yield g
    g.close()


def amz_date(url: str) -> str:
    """A presigned URL's signing time (``X-Amz-Date``, ``YYYYMMDDTHHMMSSZ``: sorts as time)."""
    (value,) = parse_qs(urlsplit(url).query)["X-Amz-Date"]
    return value


def test_product_image_assets_on_s3(on_s3: Genhook, s3: S3Server, receiver: Receiver) -> None:
    """A product-image job succeeds; every asset_url is a presigned URL that serves the bytes
    of its sha256 with their Content-Type and Cache-Control, until url_expires_at; genhook's
    /assets/ route redirects to a fresh one; only the published objects are left."""
    sample = SAMPLES / "product-image" / "ceramic-mug-ecommerce.json"
    body = {**json.loads(sample.read_text(encoding="utf-8")), "callback_url": receiver.url}
    started = datetime.now(UTC) - timedelta(seconds=5)
    answer = on_s3.trigger("product-image", body)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    (call,) = receiver.wait_job(job_id, timeout=120)
    payload = verify(on_s3.secret, call)
    assert payload["status"] == "success", payload
    outputs = payload["outputs"]
    assert len(outputs) == 5  # ecommerce_pack
    names = []
    for output in outputs:
        url = output["asset_url"]
        assert url.startswith(f"{s3.endpoint_url}/{s3.bucket}/{PREFIX}/{job_id}/")
        assert "X-Amz-Signature=" in url
        expires = datetime.fromisoformat(output["url_expires_at"])
        assert started + timedelta(hours=1) <= expires <= datetime.now(UTC) + timedelta(hours=1)
        got = httpx.get(url, timeout=30)
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == output["sha256"]
        assert len(got.content) == output["bytes"]
        assert got.headers["content-type"] == f"image/{output['format']}"
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
        names.append(output["filename_suggestion"])
        via = httpx.get(f"{on_s3.base}/assets/{job_id}/{output['filename_suggestion']}")
        assert via.status_code == 307 and via.headers["cache-control"] == "no-store"
        fresh = via.headers["location"]
        # signed now: within the same second as the payload's URL it is the same URL
        assert "X-Amz-Signature=" in fresh and amz_date(fresh) >= amz_date(url)
        assert hashlib.sha256(httpx.get(fresh).content).hexdigest() == output["sha256"]
    assert s3.keys(f"{PREFIX}/{job_id}/") == sorted(f"{PREFIX}/{job_id}/{n}" for n in names)
    missing = httpx.get(f"{on_s3.base}/assets/{job_id}/no-such-file.jpg")
    assert missing.status_code == 404 and missing.json()["error_code"] == "not_found"
    assert on_s3.job(job_id)["result"] == payload


def test_a_failing_job_leaves_no_objects(
    on_s3: Genhook, s3: S3Server, receiver: Receiver, tmp_path: Path
) -> None:
    """Storage that takes a job's first file and refuses the rest (503 SlowDown, for good):
    each attempt fails with storage_unavailable after its retries, the job fails after its
    schedule, and no object of it is left in the bucket, staged or published."""
    assert s3.gateway is not None
    s3.gateway.refuse("mug-fail9", after=1)
    body = {
        "product_id": "MUG-FAIL9",
        "product_name": "Speckled Ceramic Mug",
        "product_category": "kitchenware",
        "target_style": "studio_white",
        "target_platform": "ecommerce_pack",
        "callback_url": receiver.url,
    }
    answer = on_s3.trigger("product-image", body)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    (call,) = receiver.wait_job(job_id, timeout=180)
    payload = verify(on_s3.secret, call)
    assert payload["status"] == "failed" and payload["outputs"] == []
    assert payload["error"]["error_code"] == "storage_unavailable"
    job = on_s3.job(job_id)
    assert [a["outcome"] for a in job["attempts"]][-1] == "failed"
    assert len(job["attempts"]) == 4  # the first try and the three of the retry schedule
    assert s3.keys(f"{PREFIX}/{job_id}/") == []
    gone = httpx.get(f"{on_s3.base}/assets/{job_id}/anything.jpg")
    assert gone.status_code == 404
