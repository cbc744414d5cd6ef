"""Benchmark: the S3 client for asset storage, boto3 against obstore, on a moto server.

The work is what a genhook worker does with a job's files, one file after another:

* ``small``: 200 images of 60 KB, each uploaded with its Content-Type and Cache-Control;
* ``large``: 3 files of 20 MB, each uploaded in 8 MB parts (multipart, 8 parts in flight);
* ``publish``: the 200 small files copied from their staging key to their final key, and the
  staged keys deleted (what the finishing transaction does).

Both clients run in the same process against the same moto server (its own process, on
loopback), interleaved round by round (1 warm-up round, then ROUNDS rounds; the median is
reported, and the ratio obstore / boto3 of wall times: below 1 means obstore is faster), with
the CPU time each client spent in this process (moto's own is in its process, not counted).
moto is slower than S3 itself, so the figures say which client adds less, not what S3 does.

Run: ``.venv/bin/python bench/storage_upload.py`` (needs the ``s3`` and ``dev`` extras).
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import obstore
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from obstore.store import S3Store
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, s3_server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SMALL = 200
SMALL_BYTES = 60 * 1024
LARGE = 3
LARGE_BYTES = 20 * 1024 * 1024
PART = 8 * 1024 * 1024
CACHE = "public, max-age=31536000, immutable"

Work = Callable[[str], None]


def _boto3(endpoint: str, bucket: str, small: list[bytes], large: list[bytes]) -> dict[str, Work]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=16),
    )
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=8)
    extra = {"CacheControl": CACHE}

    def put(files: list[bytes], key: str, content_type: str) -> None:
        for i, data in enumerate(files):
            client.upload_fileobj(
                io.BytesIO(data),
                bucket,
                key.format(i=i),
                ExtraArgs={**extra, "ContentType": content_type},
                Config=transfer,
            )

    def put_small(run: str) -> None:
        put(small, run + "/.attempt-1/{i}.jpg", "image/jpeg")

    def put_large(run: str) -> None:
        put(large, run + "/big-{i}.mp4", "video/mp4")

    def publish(run: str) -> None:
        for i in range(len(small)):
            client.copy_object(
                Bucket=bucket,
                Key=f"{run}/{i}.jpg",
                CopySource={"Bucket": bucket, "Key": f"{run}/.attempt-1/{i}.jpg"},
            )
        keys = [{"Key": f"{run}/.attempt-1/{i}.jpg"} for i in range(len(small))]
        client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    return {"small": put_small, "large": put_large, "publish": publish}


def _obstore(endpoint: str, bucket: str, small: list[bytes], large: list[bytes]) -> dict[str, Work]:
    store = S3Store(
        bucket,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region=REGION,
        client_options={"allow_http": True},
    )

    def put_small(run: str) -> None:
        for i, data in enumerate(small):
            obstore.put(
                store,
                f"{run}/.attempt-1/{i}.jpg",
                data,
                attributes={"Content-Type": "image/jpeg", "Cache-Control": CACHE},
            )

    def put_large(run: str) -> None:
        for i, data in enumerate(large):
            obstore.put(
                store,
                f"{run}/big-{i}.mp4",
                io.BytesIO(data),
                attributes={"Content-Type": "video/mp4", "Cache-Control": CACHE},
                use_multipart=True,
                chunk_size=PART,
                max_concurrency=8,
            )

    def publish(run: str) -> None:
        for i in range(len(small)):
            obstore.copy(store, f"{run}/.attempt-1/{i}.jpg", f"{run}/{i}.jpg")
        obstore.delete(store, [f"{run}/.attempt-1/{i}.jpg" for i in range(len(small))])

    return {"small": put_small, "large": put_large, "publish": publish}


def _check(client: Any, bucket: str, run: str) -> None:
    """What a round stored is what it was asked to store (both clients, same checks)."""
    head = client.head_object(Bucket=bucket, Key=f"{run}/0.jpg")
    assert head["ContentType"] == "image/jpeg", head["ContentType"]
    assert head.get("CacheControl") == CACHE, head.get("CacheControl")
    big = client.head_object(Bucket=bucket, Key=f"{run}/big-0.mp4")
    assert big["ContentLength"] == LARGE_BYTES, big["ContentLength"]
    left = client.list_objects_v2(Bucket=bucket, Prefix=f"{run}/.attempt-1/")
    assert left.get("KeyCount", 0) == 0, "staged keys left after publish"


def main() -> int:
    small = [os.urandom(SMALL_BYTES) for _ in range(SMALL)]
    large = [os.urandom(LARGE_BYTES) for _ in range(LARGE)]
    times: dict[str, dict[str, list[float]]] = {}
    with s3_server() as s3:
        clients = {
            "boto3": _boto3(s3.endpoint_url, s3.bucket, small, large),
            "obstore": _obstore(s3.endpoint_url, s3.bucket, small, large),
        }
        for round_no in range(ROUNDS + 1):
            for name, work in clients.items():
                run = f"r{round_no}-{name}"
                for phase in ("small", "large", "publish"):
                    started, cpu = time.perf_counter(), time.process_time()
                    work[phase](run)
                    elapsed = time.perf_counter() - started
                    if round_no:  # round 0 warms up
                        figures = times.setdefault(name, {})
                        figures.setdefault(phase, []).append(elapsed)
                        figures.setdefault(f"{phase}-cpu", []).append(time.process_time() - cpu)
                _check(s3.client(), s3.bucket, run)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {ROUNDS} rounds (median)")
    print(f"boto3 {boto3.__version__}, obstore {obstore.__version__}; moto server on loopback")
    print(
        f"{'phase':<34} {'boto3 s':>9} {'obstore s':>10} {'obstore/boto3':>14} "
        f"{'boto3 CPU s':>12} {'obstore CPU s':>14}"
    )
    labels = {
        "small": f"{SMALL} x {SMALL_BYTES // 1024} KB put",
        "large": f"{LARGE} x {LARGE_BYTES // 2**20} MB multipart put",
        "publish": f"{SMALL} copies + 1 batch delete",
    }
    for phase, label in labels.items():
        b = statistics.median(times["boto3"][phase])
        o = statistics.median(times["obstore"][phase])
        bc = statistics.median(times["boto3"][f"{phase}-cpu"])
        oc = statistics.median(times["obstore"][f"{phase}-cpu"])
        print(f"{label:<34} {b:>9.3f} {o:>10.3f} {o / b:>14.2f} {bc:>12.3f} {oc:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
