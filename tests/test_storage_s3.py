"""Asset storage: local files, and S3-compatible object storage on a real moto server (through
the presigned-URL-checking, fault-injecting gateway of tests/s3server.py). Nothing mocks the
client: genhook's S3 client talks HTTP to the server."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from genhook import storage_s3
from genhook.config import ConfigError, S3Settings, Settings
from genhook.contract.schema import completion_schema
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError
from genhook.storage import LocalStorage, open_storage, url_expires_at
from genhook.storage_s3 import S3Storage
from genhook.workflow.inputs import check_trigger
from genhook.workflow.result import Asset
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, check_presigned, s3_server

ROOT = Path(__file__).resolve().parent.parent
CACHE = "public, max-age=31536000, immutable"


def _asset(name: str, data: bytes = b"bytes") -> Asset:
    return Asset(
        data=data,
        filename=name,
        media_type="image/png",
        format="png",
        width=1,
        height=1,
        platform_code="test",
        alt_text="",
        caption="",
    )


def test_local_delete_job_removes_published_and_staged(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "assets", "http://genhook.test")
    storage.put("job_a", _asset("a.png"))
    staged = storage.attempt("job_a", 2)
    staged.put("job_a", _asset("b.png"))
    storage.put("job_b", _asset("keep.png"))
    storage.delete_job("job_a")
    assert not (tmp_path / "assets" / "job_a").exists()
    assert storage.path("job_b", "keep.png") is not None
    storage.delete_job("job_a")
    storage.delete_job("job_never")


# -- S3 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(gateway=True) as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


def _storage(s3: S3Server, bucket: str, tmp: Path, **given: Any) -> S3Storage:
    settings = S3Settings(
        endpoint_url=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        **given,
    )
    return S3Storage(bucket, "pre", settings, "http://genhook.test", tmp / "scratch")


def _head(s3: S3Server, bucket: str, key: str) -> dict[str, Any]:
    return dict(s3.client().head_object(Bucket=bucket, Key=key))


def test_upload_sets_content_type_cache_control_and_streams_big_files(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Every object carries its Content-Type and the immutable Cache-Control; a file over one
    part goes up in parts (a multipart ETag, "-N"); the bytes come back as sent."""
    storage = _storage(s3, bucket, tmp_path)
    big = bytes(range(256)) * (9 * 4096 + 7)  # 9 MiB and a bit: two parts
    urls = {
        "a.png": storage.put("job_1", _asset("a.png", b"\x89PNG small")),
        "clip.mp4": storage.put("job_1", _asset("clip.mp4", big)),
        "b.webp": storage.put("job_1", _asset("b.webp", b"RIFF....WEBP")),
    }
    types = {"a.png": "image/png", "clip.mp4": "video/mp4", "b.webp": "image/webp"}
    for name, url in urls.items():
        head = _head(s3, bucket, f"pre/job_1/{name}")
        assert head["ContentType"] == types[name]
        assert head["CacheControl"] == CACHE
        answer = httpx.get(url)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == types[name]
        assert answer.headers["cache-control"] == CACHE
    assert _head(s3, bucket, "pre/job_1/clip.mp4")["ETag"].endswith('-2"')
    assert hashlib.sha256(httpx.get(urls["clip.mp4"]).content).hexdigest() == (
        hashlib.sha256(big).hexdigest()
    )
    assert s3.keys("pre/", bucket=bucket) == [
        "pre/job_1/a.png",
        "pre/job_1/b.webp",
        "pre/job_1/clip.mp4",
    ]


def test_presigned_url_works_says_when_it_expires_and_refuses_tampering(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    storage = _storage(s3, bucket, tmp_path, url_expiry=3600.0)
    before = datetime.now(UTC).replace(microsecond=0)
    url = storage.put("job_1", _asset("a.png", b"secret bytes"))
    storage.put("job_1", _asset("other.png", b"other bytes"))
    expires = url_expires_at(url)
    assert expires is not None
    assert before + timedelta(seconds=3600) <= expires <= before + timedelta(seconds=3602)
    assert httpx.get(url).content == b"secret bytes"
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    forged = url.replace(signature, signature[:-4] + ("0000" if signature[-4:] != "0000" else "1"))
    answer = httpx.get(forged)
    assert answer.status_code == 403 and "SignatureDoesNotMatch" in answer.text
    # the signature of one object opens no other
    moved = httpx.get(url.replace("/a.png?", "/other.png?"))
    assert moved.status_code == 403 and "SignatureDoesNotMatch" in moved.text
    longer = httpx.get(url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"))
    assert longer.status_code == 403


def test_expired_presigned_url_is_refused(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    storage = _storage(s3, bucket, tmp_path, url_expiry=1.0)
    url = storage.put("job_1", _asset("a.png"))
    assert httpx.get(url).status_code == 200
    time.sleep(2.1)
    answer = httpx.get(url)
    assert answer.status_code == 403 and "Request has expired" in answer.text


def test_gateway_checks_signatures_like_s3(s3: S3Server, bucket: str) -> None:
    """The test gateway's check is S3's: boto3's own SigV4 presigned URL passes it (another
    signer than genhook's client), and its clock decides expiry."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(signature_version="s3v4"),
    )
    client.put_object(Bucket=bucket, Key="k/x.bin", Body=b"x")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k/x.bin"}, ExpiresIn=60
    )
    assert httpx.get(url).content == b"x"
    split = httpx.URL(url)
    target = f"{split.raw_path.decode()}"
    headers = {"host": split.netloc.decode()}
    assert check_presigned("GET", target, headers, SECRET_KEY) is None
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert check_presigned("GET", target, headers, SECRET_KEY, now=later) == (
        "AccessDenied",
        "Request has expired",
    )
    assert check_presigned("GET", target, headers, "another secret") is not None


def test_public_urls(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """public: the bucket's own URL (fetched anonymously once a bucket policy makes it
    public), or GENHOOK_S3_PUBLIC_URL's base; no url_expires_at."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/pre/*",
            }
        ],
    }
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    storage = _storage(s3, bucket, tmp_path, url_mode="public")
    url = storage.put("job_1", _asset("a.png", b"public bytes"))
    assert url == f"{s3.endpoint_url}/{bucket}/pre/job_1/a.png"
    assert url_expires_at(url) is None
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == b"public bytes"
    assert answer.headers["content-type"] == "image/png"
    cdn = _storage(s3, bucket, tmp_path, public_url="https://cdn.example.test/assets")
    assert cdn.mode == "public"
    assert cdn.url("job_1", "a.png") == "https://cdn.example.test/assets/pre/job_1/a.png"
    assert cdn.locate("job_1", "a.png") == "https://cdn.example.test/assets/pre/job_1/a.png"


def test_redirect_mode_keeps_genhook_urls_and_locate_signs_fresh_ones(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    storage = _storage(s3, bucket, tmp_path, url_mode="redirect", url_expiry=600.0)
    url = storage.put("job_1", _asset("a.png", b"via genhook"))
    assert url == "http://genhook.test/assets/job_1/a.png"
    assert url_expires_at(url) is None
    first = storage.locate("job_1", "a.png")
    assert first is not None and url_expires_at(first) is not None
    assert httpx.get(first).content == b"via genhook"
    assert storage.locate("job_1", "missing.png") is None
    assert storage.locate("job_none", "a.png") is None
    assert storage.locate("../etc", "passwd") is None


def test_attempt_staging_publish_and_discard(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """An attempt uploads under .attempt-N/, its URLs naming the final keys; publish copies
    them there (metadata kept) and removes the staging; a later attempt that lost its lease
    never replaces what was delivered; discard removes this and earlier attempts' staging,
    never a later one's."""
    storage = _storage(s3, bucket, tmp_path)
    first = storage.attempt("job_1", 1)
    url = first.put("job_1", _asset("a.png", b"delivered"))
    first.put("job_1", _asset("b.png", b"delivered b"))
    assert s3.keys("pre/", bucket=bucket) == [
        "pre/job_1/.attempt-1/a.png",
        "pre/job_1/.attempt-1/b.png",
    ]
    assert httpx.get(url).status_code in (403, 404)  # not published yet: nothing there
    first.publish()
    first.discard()
    assert s3.keys("pre/", bucket=bucket) == ["pre/job_1/a.png", "pre/job_1/b.png"]
    assert httpx.get(url).content == b"delivered"
    head = _head(s3, bucket, "pre/job_1/a.png")
    assert (head["ContentType"], head["CacheControl"]) == ("image/png", CACHE)

    stale = storage.attempt("job_1", 2)  # a worker that lost its lease: never published
    stale.put("job_1", _asset("a.png", b"stale"))
    crashed = storage.attempt("job_1", 3)  # died before its discard
    crashed.put("job_1", _asset("a.png", b"crashed"))
    holder = storage.attempt("job_1", 5)  # the lease holder now, still staging
    holder.put("job_1", _asset("a.png", b"holder"))
    storage.attempt("job_1", 4).discard()
    assert s3.keys("pre/", bucket=bucket) == [
        "pre/job_1/.attempt-5/a.png",
        "pre/job_1/a.png",
        "pre/job_1/b.png",
    ]
    assert httpx.get(url).content == b"delivered"
    holder.discard()  # the job failed: nothing of it is left but what was delivered before
    assert s3.keys("pre/", bucket=bucket) == ["pre/job_1/a.png", "pre/job_1/b.png"]


def test_attempt_refuses_another_jobs_files(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    attempt = _storage(s3, bucket, tmp_path).attempt("job_1", 1)
    with pytest.raises(ValueError, match="cannot hold"):
        attempt.put("job_2", _asset("a.png"))
    with pytest.raises(ValueError, match="not a safe asset name"):
        attempt.put("job_1", _asset("../a.png"))


def test_delete_job_in_batches(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_s3, "DELETE_BATCH", 3)
    storage = _storage(s3, bucket, tmp_path)
    for i in range(5):
        storage.put("job_1", _asset(f"{i}.png"))
    storage.attempt("job_1", 2).put("job_1", _asset("staged.png"))
    storage.attempt("job_1", 3).folder.mkdir(parents=True)
    storage.put("job_10", _asset("keep.png"))  # a job whose id starts like it
    storage.put("job_2", _asset("keep.png"))
    storage.delete_job("job_1")
    assert s3.keys("pre/", bucket=bucket) == ["pre/job_10/keep.png", "pre/job_2/keep.png"]
    assert not (tmp_path / "scratch" / "job_1").exists()
    storage.delete_job("job_1")
    storage.delete_job("job_never")
    with pytest.raises(ValueError):
        storage.delete_job("../pre")


def test_transient_failures_are_retried(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """503 SlowDown and dropped connections are retried with backoff; past the retries, an
    upload fails with the retryable storage_unavailable."""
    assert s3.gateway is not None
    storage = _storage(s3, bucket, tmp_path)
    s3.gateway.fail_next(2, "503")
    before = s3.gateway.requests
    storage.put("job_1", _asset("a.png", b"after 503s"))
    assert s3.gateway.requests - before == 3
    s3.gateway.fail_next(2, "drop")
    before = s3.gateway.requests
    storage.put("job_1", _asset("b.png", b"after drops"))
    assert s3.gateway.requests - before == 3
    assert s3.keys("pre/", bucket=bucket) == ["pre/job_1/a.png", "pre/job_1/b.png"]
    s3.gateway.fail_next(storage_s3.MAX_RETRIES + 1, "503")
    with pytest.raises(GenhookError) as failed:
        storage.put("job_1", _asset("c.png"))
    assert failed.value.code is ErrorCode.STORAGE_UNAVAILABLE and failed.value.retryable
    assert "c.png" in failed.value.description
    s3.gateway.faults.clear()
    s3.gateway.fail_next(2, "drop")  # the HEAD behind /assets/ is retried too
    assert storage.locate("job_1", "a.png") is not None
    s3.gateway.fail_next(storage_s3.MAX_RETRIES + 1, "503")
    with pytest.raises(GenhookError) as unanswered:  # /assets/ answers 503
        storage.locate("job_1", "a.png")
    assert unanswered.value.code is ErrorCode.STORAGE_UNAVAILABLE
    s3.gateway.faults.clear()


def test_probe_asks_once_and_says_why(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """The readiness probe: one listing request, not retried (a failing store answers within
    the probe's time, not after a minute of retries), the reason without secrets; a bucket
    that does not exist is not ready; local storage is ready where its folder can be made."""
    assert s3.gateway is not None
    storage = _storage(s3, bucket, tmp_path)
    before = s3.gateway.requests
    assert storage.probe(3.0) == (True, "S3 bucket answering")
    assert s3.gateway.requests - before == 1
    s3.gateway.fail_next(3, "503")
    before, started = s3.gateway.requests, time.monotonic()
    ready, why = storage.probe(3.0)
    assert not ready and "listing the bucket" in why and SECRET_KEY not in why
    assert s3.gateway.requests - before == 1 and time.monotonic() - started < 3.0
    s3.gateway.faults.clear()
    missing = _storage(s3, f"{bucket}-missing", tmp_path)
    assert missing.probe(3.0)[0] is False
    local = LocalStorage(tmp_path / "assets", "http://genhook.test")
    assert local.probe(1.0) == (True, "local files, writable")
    (tmp_path / "a-file").write_bytes(b"")
    blocked = LocalStorage(tmp_path / "a-file" / "assets", "http://genhook.test")
    assert blocked.probe(1.0)[0] is False


def test_payload_says_when_presigned_urls_expire(
    s3: S3Server, bucket: str, tmp_path: Path, engine: Engine
) -> None:
    """A run of the shipped product-image sample stored on S3 (presigned): every output
    carries url_expires_at, the payload validates against the published schema (formats
    checked), and each URL serves the bytes of its sha256."""
    storage = _storage(s3, bucket, tmp_path, url_expiry=86400.0)
    wf = engine.workflow("product-image")
    sample = ROOT / "workflows" / "samples" / "product-image" / "linen-shirt.json"
    trigger = check_trigger(wf, json.loads(sample.read_text(encoding="utf-8")))
    attempt = storage.attempt("job_01s3", 1)
    outcome = engine.execute(wf, trigger.input, attempt, job_id="job_01s3")
    attempt.publish()
    payload = outcome.payload.to_json()
    Draft202012Validator(completion_schema(), format_checker=FormatChecker()).validate(payload)
    assert payload["outputs"]
    for output in payload["outputs"]:
        expires = datetime.fromisoformat(output["url_expires_at"])
        assert expires == url_expires_at(output["asset_url"])
        assert output["url_expires_at"].endswith("Z")
        body = httpx.get(output["asset_url"]).content
        assert hashlib.sha256(body).hexdigest() == output["sha256"]


def test_video_poster_urls_expire_too(
    s3: S3Server, bucket: str, tmp_path: Path, engine: Engine
) -> None:
    """A product-video run on S3 (presigned): each video output says when its asset_url and
    its poster_url expire, and both serve their bytes (MP4, JPEG)."""
    storage = _storage(s3, bucket, tmp_path, url_expiry=600.0)
    wf = engine.workflow("product-video")
    sample = next((ROOT / "workflows" / "samples" / "product-video").glob("*.json"))
    trigger = check_trigger(wf, json.loads(sample.read_text(encoding="utf-8")))
    attempt = storage.attempt("job_01video", 1)
    outcome = engine.execute(wf, trigger.input, attempt, job_id="job_01video")
    attempt.publish()
    payload = outcome.payload.to_json()
    Draft202012Validator(completion_schema(), format_checker=FormatChecker()).validate(payload)
    videos = [o for o in payload["outputs"] if o["asset_type"] == "video"]
    assert videos
    for output in videos:
        assert output["url_expires_at"] and output["poster_url_expires_at"]
        poster = datetime.fromisoformat(output["poster_url_expires_at"])
        assert poster == url_expires_at(output["poster_url"])
        clip = httpx.get(output["asset_url"])
        assert clip.headers["content-type"] == "video/mp4"
        assert hashlib.sha256(clip.content).hexdigest() == output["sha256"]
        still = httpx.get(output["poster_url"])
        assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"


def test_settings_and_open_storage(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    env = {**s3.env("media/v1", bucket=bucket), "GENHOOK_DATA_DIR": str(tmp_path)}
    settings = Settings.from_env({**env, "GENHOOK_S3_URL_EXPIRY": "2h"})
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.mode) == (bucket, "media/v1", "presigned")
    assert settings.s3.url_expiry == 7200.0
    assert settings.s3.secret_access_key == SECRET_KEY
    assert SECRET_KEY not in repr(settings)
    url = storage.put("job_1", _asset("a.png", b"x"))
    assert "/media/v1/job_1/a.png?" in url and httpx.get(url).content == b"x"
    refused = [
        ("GENHOOK_STORAGE_URL", "s3://Bad_Bucket/x", "names no bucket"),
        ("GENHOOK_STORAGE_URL", "s3://bucket/a/../b", "prefix"),
        ("GENHOOK_S3_URL_MODE", "signed", "accepts presigned, public, redirect"),
        ("GENHOOK_S3_URL_EXPIRY", "8d", "out of range; accepts 1s to 7d"),
        ("GENHOOK_S3_ENDPOINT_URL", "ftp://minio", r"not an http\(s\) URL"),
        ("GENHOOK_S3_PUBLIC_URL", "cdn.example.com", r"not an http\(s\) URL"),
        ("AWS_SECRET_ACCESS_KEY", "", "set both or neither"),
    ]
    for var, value, message in refused:
        with pytest.raises(ConfigError, match=message) as error:
            Settings.from_env({**env, var: value})
        assert str(error.value).startswith(var.split("_SECRET")[0])
    with pytest.raises(ConfigError, match="accepts file:///PATH or s3://BUCKET"):
        Settings.from_env({"GENHOOK_STORAGE_URL": "gs://bucket/x"})
