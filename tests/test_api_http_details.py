"""HTTP details of the API, in process (``httpx.ASGITransport``) on a real SQLite store: a 405
names the allowed methods, and the schema route's media type is the one its OpenAPI declares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.paths import shipped_dir
from genhook.runtime import Runtime

pytestmark = pytest.mark.anyio

SCHEMA_ROUTE = "/v1/schemas/completion-v1.json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, workflows_dir=shipped_dir("workflows")).resolved()
    runtime = Runtime.build(settings, clock=ManualClock())
    transport = httpx.ASGITransport(app=create_app(runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            yield c
    finally:
        runtime.store.close()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/healthz", {"GET"}),
        ("PUT", "/v1/workflows", {"GET"}),
        ("GET", "/v1/workflows/product_hero/runs", {"POST"}),
        ("DELETE", "/v1/deliveries/msg_x/replay", {"POST"}),
    ],
)
async def test_405_names_the_allowed_methods(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    """A 405 carries ``Allow`` (RFC 9110 §15.5.6: it MUST) and the JSON error shape."""
    r = await client.request(method, path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= allowed
    assert method not in {m.strip() for m in r.headers["allow"].split(",")}
    assert r.json()["error_code"] == "method_not_allowed"


async def test_schema_route_media_type_is_what_openapi_declares(
    client: httpx.AsyncClient,
) -> None:
    """The completion schema is served as application/schema+json, and the OpenAPI document
    declares exactly that media type for its 200."""
    r = await client.get(SCHEMA_ROUTE)
    assert r.status_code == 200
    served = r.headers["content-type"].split(";")[0].strip()
    assert served == "application/schema+json"
    spec = (await client.get("/openapi.json")).json()
    declared = spec["paths"][SCHEMA_ROUTE]["get"]["responses"]["200"]["content"]
    assert list(declared) == [served]


async def test_schema_route_errors_stay_json_in_openapi(client: httpx.AsyncClient) -> None:
    """Only the schema itself is application/schema+json; the route's error answers are
    declared as the application/json error shape, like every other route's."""
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"][SCHEMA_ROUTE]["get"]["responses"]
    errors = {status: r for status, r in responses.items() if status != "200"}
    assert errors
    for answer in errors.values():
        assert list(answer["content"]) == ["application/json"]
        assert answer["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
