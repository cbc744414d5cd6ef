"""The HTTP API in process: the app that ``genhook serve`` builds, driven through
``httpx.ASGITransport`` (no socket, no subprocess), on a real SQLite store, with an injected clock.

Covers what only the API does: the asset route (HEAD, ETag, ranges, 304), the public schema
route, the API-key cache (bounded, short-lived), and the event streams (no listener left behind,
a per-service cap).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from genhook.api.app import create_app
from genhook.api.auth import KEY_CACHE_SECONDS, KeyCache
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.contract.schema import completion_schema
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from genhook.store.schema import services
from genhook.workflow.result import Asset

pytestmark = pytest.mark.anyio

TRIGGER = {
    "product_id": "SKU-123",
    "product_name": "Linen Shirt",
    "target_style": "lifestyle",
    "target_platform": "instagram_feed",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Api:
    runtime: Runtime
    clock: ManualClock
    client: httpx.AsyncClient
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def new_key(self, name: str) -> str:
        return self.runtime.store.create_service(name)["api_key"]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path,
        workflows_dir=shipped_dir("workflows"),
        poll_seconds=0.2,
        max_streams_per_service=3,
    ).resolved()
    clock = ManualClock()
    runtime = Runtime.build(settings, clock=clock)
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            yield Api(runtime, clock, c, runtime.store.create_service("shop")["api_key"])
    finally:
        runtime.store.close()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _stored_asset(api: Api) -> tuple[str, bytes]:
    data = _jpeg()
    asset = Asset(
        data=data,
        filename="sku-123-linen-shirt-64x48.jpg",
        media_type="image/jpeg",
        format="jpeg",
        width=64,
        height=48,
        platform_code="instagram_feed",
        alt_text="a",
        caption="c",
    )
    url = api.runtime.storage.put("job_01inprocess", asset)
    return url.removeprefix(api.runtime.settings.public_url), data


# -- assets --------------------------------------------------------------------------------------


async def test_asset_get_carries_sha256_etag_and_cache_control(api: Api) -> None:
    path, data = _stored_asset(api)
    r = await api.client.get(path)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert "max-age=" in r.headers["cache-control"]
    assert r.headers["accept-ranges"] == "bytes"


async def test_asset_head_answers_headers_without_body(api: Api) -> None:
    path, data = _stored_asset(api)
    r = await api.client.head(path)
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == len(data)
    assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'


@pytest.mark.parametrize("header", ["bytes=0-99", "bytes=-10", "bytes=100-"])
async def test_asset_range_answers_206_with_the_slice(api: Api, header: str) -> None:
    path, data = _stored_asset(api)
    n = len(data)
    start, stop = {"bytes=0-99": (0, 100), "bytes=-10": (n - 10, n), "bytes=100-": (100, n)}[header]
    r = await api.client.get(path, headers={"Range": header})
    assert r.status_code == 206
    assert r.content == data[start:stop]
    assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{n}"


async def test_asset_unsatisfiable_range_is_416_json(api: Api) -> None:
    path, data = _stored_asset(api)
    r = await api.client.get(path, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.json()["error_code"] == "range_not_satisfiable"
    assert r.headers["content-range"] == f"bytes */{len(data)}"


async def test_asset_malformed_range_is_ignored(api: Api) -> None:
    """RFC 9110 14.2: a Range the server does not understand is ignored: the whole file."""
    path, data = _stored_asset(api)
    r = await api.client.get(path, headers={"Range": "lines=1-2"})
    assert r.status_code == 200
    assert r.content == data


@pytest.mark.parametrize("form", ['"{}"', 'W/"{}"', '"other", "{}"', "*"])
async def test_asset_if_none_match_answers_304(api: Api, form: str) -> None:
    path, data = _stored_asset(api)
    etag = hashlib.sha256(data).hexdigest()
    r = await api.client.get(path, headers={"If-None-Match": form.format(etag)})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == f'"{etag}"'


async def test_asset_if_none_match_other_etag_answers_200(api: Api) -> None:
    path, data = _stored_asset(api)
    r = await api.client.get(path, headers={"If-None-Match": '"0123"'})
    assert r.status_code == 200
    assert r.content == data


async def test_unknown_asset_is_404_json(api: Api) -> None:
    r = await api.client.get("/assets/job_01nothing/none.jpg")
    assert r.status_code == 404
    assert r.json()["error_code"] == "not_found"


# -- the completion schema -----------------------------------------------------------------------


async def test_schema_route_is_public(api: Api) -> None:
    r = await api.client.get("/v1/schemas/completion-v1.json")
    assert r.status_code == 200
    assert json.loads(r.content) == completion_schema()


# -- API-key cache -------------------------------------------------------------------------------


def _replace_key_hash(api: Api, name: str) -> None:
    """What another process rotating or revoking the key does to the row."""
    with api.runtime.store.engine.begin() as conn:
        conn.execute(
            sa.update(services).where(services.c.name == name).values(api_key_hash="0" * 64)
        )


async def test_revoked_key_stops_working_within_the_cache_ttl(api: Api) -> None:
    assert (await api.client.get("/v1/workflows", headers=api.auth)).status_code == 200
    _replace_key_hash(api, "shop")
    api.clock.advance(KEY_CACHE_SECONDS / 2)
    assert (await api.client.get("/v1/workflows", headers=api.auth)).status_code == 200
    api.clock.advance(KEY_CACHE_SECONDS / 2 + 0.01)
    r = await api.client.get("/v1/workflows", headers=api.auth)
    assert r.status_code == 401
    assert r.json()["error_code"] == "unauthorized"


async def test_new_key_works_at_once(api: Api) -> None:
    """Unknown keys are not cached: a key created after a miss works on the next request."""
    other = {"Authorization": "Bearer gh_unknown"}
    assert (await api.client.get("/v1/workflows", headers=other)).status_code == 401
    key = api.new_key("crm")
    r = await api.client.get("/v1/workflows", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


def test_key_cache_is_bounded_and_expires() -> None:
    clock = ManualClock()
    cache = KeyCache(clock, max_entries=3, ttl=5.0)
    for n in range(10):
        cache.put(f"k{n}", {"id": n})
    assert len(cache) == 3
    assert cache.get("k0") is None
    assert cache.get("k9") == {"id": 9}
    cache.get("k7")  # most recently used survives the next insert
    cache.put("k10", {"id": 10})
    assert cache.get("k7") == {"id": 7}
    assert cache.get("k8") is None
    clock.advance(5.0)
    assert cache.get("k7") is None
    assert len(cache) <= 3


# -- refused triggers ----------------------------------------------------------------------------


async def test_refused_trigger_has_one_job_id_in_answer_store_and_payload(api: Api) -> None:
    """The API mints the job id of a refused trigger and passes it down: the 422's ``job_id``,
    the stored job's id, its stored payload's ``job_id`` and its event's are the one id, and a
    retry with the same Idempotency-Key answers it again."""
    headers = {**api.auth, "Idempotency-Key": "refused-1"}
    bad = {k: v for k, v in TRIGGER.items() if k != "product_name"}
    r = await api.client.post("/v1/workflows/product-image/runs", json=bad, headers=headers)
    assert r.status_code == 422, r.text
    job_id = r.json()["job_id"]
    assert isinstance(job_id, str) and job_id.startswith("job_")
    job = api.runtime.store.job(job_id)
    assert job is not None and job.id == job_id
    assert job.result["job_id"] == job_id
    assert [e.detail["job_id"] for e in api.runtime.store.events(job_id)] == [job_id]
    shown = await api.client.get(f"/v1/jobs/{job_id}", headers=api.auth)
    assert shown.status_code == 200 and shown.json()["result"] == job.result
    again = await api.client.post("/v1/workflows/product-image/runs", json=bad, headers=headers)
    assert (again.status_code, again.json()["job_id"]) == (422, job_id)


# -- event streams -------------------------------------------------------------------------------


async def _queued_job(api: Api) -> str:
    r = await api.client.post("/v1/workflows/product-image/runs", json=TRIGGER, headers=api.auth)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


async def _wait_for_listeners(api: Api, count: int) -> None:
    with anyio.fail_after(5):
        while api.runtime.events_signal.listener_count != count:
            await anyio.sleep(0.01)


async def _open_streams(api: Api, tg: anyio.abc.TaskGroup, job_id: str, count: int) -> None:
    """``count`` clients following ``job_id``, each stream open (its listener added)."""
    start = api.runtime.events_signal.listener_count
    for _ in range(count):
        tg.start_soon(partial(api.client.get, f"/v1/jobs/{job_id}/events", headers=api.auth))
    await _wait_for_listeners(api, start + count)


async def test_streams_that_end_leave_no_listener(api: Api) -> None:
    job_id = await _queued_job(api)
    start = api.runtime.events_signal.listener_count
    bodies: list[str] = []

    async def follow() -> None:
        r = await api.client.get(f"/v1/jobs/{job_id}/events", headers=api.auth)
        bodies.append(r.text)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(follow)
        await _wait_for_listeners(api, start + 3)
        r = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth)
        assert r.status_code == 202
    assert len(bodies) == 3
    assert all("event: cancelled" in body for body in bodies)
    assert api.runtime.events_signal.listener_count == start
    for _ in range(10):  # streams of an ended job end at once, and leave nothing either
        r = await api.client.get(f"/v1/jobs/{job_id}/events", headers=api.auth)
        assert "event: cancelled" in r.text
    assert api.runtime.events_signal.listener_count == start


async def test_streams_whose_client_left_leave_no_listener(api: Api) -> None:
    job_id = await _queued_job(api)
    start = api.runtime.events_signal.listener_count
    async with anyio.create_task_group() as tg:
        await _open_streams(api, tg, job_id, 3)
        tg.cancel_scope.cancel()  # every client goes away mid-stream
    assert api.runtime.events_signal.listener_count == start


async def test_streams_per_service_are_capped(api: Api) -> None:
    job_id = await _queued_job(api)
    start = api.runtime.events_signal.listener_count
    async with anyio.create_task_group() as tg:
        await _open_streams(api, tg, job_id, 3)
        r = await api.client.get(f"/v1/jobs/{job_id}/events", headers=api.auth)
        assert r.status_code == 429
        assert r.json()["error_code"] == "too_many_streams"
        assert "retry-after" in r.headers
        # another service's streams are counted apart
        other = api.new_key("crm")
        headers = {"Authorization": f"Bearer {other}"}
        r = await api.client.post("/v1/workflows/product-image/runs", json=TRIGGER, headers=headers)
        tg.start_soon(
            partial(api.client.get, f"/v1/jobs/{r.json()['job_id']}/events", headers=headers)
        )
        await _wait_for_listeners(api, start + 4)
        tg.cancel_scope.cancel()
    await _wait_for_listeners(api, start)
    await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth)
    r = await api.client.get(f"/v1/jobs/{job_id}/events", headers=api.auth)
    assert r.status_code == 200
