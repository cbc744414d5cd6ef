"""``/v1/schedules`` (the operator key or the owning service's key) and ``genhook schedules``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.runtime import Runtime
from genhook.scheduling.scheduler import Scheduler
from tests.test_schedules import FLOW

SCHEDULES = """\
schedules:
  - id: weekly
    cron: "0 9 * * MON"
    timezone: Europe/Berlin
    service: shop
    input: {item_id: A1}
  - id: other
    cron: "0 * * * *"
    service: crm
    input: {item_id: B1}
"""
ADMIN = "admin-key-for-tests"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Api:
    def __init__(self, runtime: Runtime, client: httpx.AsyncClient, keys: dict[str, str]) -> None:
        self.runtime, self.client, self.keys = runtime, client, keys

    async def get(self, path: str, who: str) -> httpx.Response:
        return await self.client.get(path, headers={"authorization": f"Bearer {self.keys[who]}"})

    async def post(self, path: str, who: str) -> httpx.Response:
        return await self.client.post(path, headers={"authorization": f"Bearer {self.keys[who]}"})


def _flows(tmp: Path) -> Path:
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "tiny.yaml").write_text(FLOW + SCHEDULES, encoding="utf-8")
    return flows


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path / "var", workflows_dir=_flows(tmp_path), admin_key=ADMIN
    ).resolved()
    runtime = Runtime.build(settings, clock=ManualClock(1_796_284_800.0))  # Thu 2026-12-03
    keys = {
        "shop": runtime.store.create_service("shop")["api_key"],
        "crm": runtime.store.create_service("crm")["api_key"],
        "operator": ADMIN,
    }
    transport = httpx.ASGITransport(app=create_app(runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            yield Api(runtime, c, keys)
    finally:
        runtime.store.close()


def _ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [s["schedule_id"] for s in answer.json()["schedules"]]


@pytest.mark.anyio
async def test_a_service_sees_its_schedules_and_the_operator_all(api: Api) -> None:
    assert _ids(await api.get("/v1/schedules", "shop")) == ["tiny:weekly"]
    assert _ids(await api.get("/v1/schedules", "crm")) == ["tiny:other"]
    assert _ids(await api.get("/v1/schedules", "operator")) == ["tiny:other", "tiny:weekly"]
    (weekly,) = (await api.get("/v1/schedules", "shop")).json()["schedules"]
    assert weekly["next_due_at"] == "2026-12-07T08:00:00Z"
    assert weekly["next_due_local"] == "2026-12-07T09:00:00+01:00"
    assert weekly["cron"] == "0 9 * * MON" and weekly["timezone"] == "Europe/Berlin"
    assert weekly["paused"] is False and weekly["last_outcome"] is None
    assert weekly["service_found"] is True
    no_key = await api.client.get("/v1/schedules")
    assert no_key.status_code == 401


@pytest.mark.anyio
async def test_pause_and_resume_by_the_owner_or_the_operator(api: Api) -> None:
    scheduler = Scheduler(api.runtime)
    assert await asyncio.to_thread(scheduler.tick) == []  # both seen: due in the future
    paused = await api.post("/v1/schedules/tiny:weekly/pause", "shop")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True and paused.json()["paused_by"] == "shop"
    assert paused.json()["next_due_at"] is None
    other = await api.post("/v1/schedules/tiny:weekly/resume", "crm")
    assert other.status_code == 403 and other.json()["error_code"] == "forbidden"
    missing = await api.post("/v1/schedules/tiny:nope/pause", "operator")
    assert missing.status_code == 404 and missing.json()["error_code"] == "schedule_not_found"
    # the scheduler leaves a paused schedule alone, past its due time too
    api.runtime.clock.advance(5 * 86400 + 120)  # type: ignore[attr-defined]
    assert [f.schedule_key for f in await asyncio.to_thread(scheduler.tick)] == ["tiny:other"]
    resumed = await api.post("/v1/schedules/tiny:weekly/resume", "operator")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert resumed.json()["next_due_at"] == "2026-12-14T08:00:00Z"  # the pause's time not fired
    detail = await api.get("/v1/schedules/tiny:other", "crm")
    assert detail.status_code == 200
    (fire,) = detail.json()["fires"]
    assert fire["outcome"] == "skipped" and fire["jobs_created"] == 0
    assert (await api.get("/v1/schedules/tiny:other", "shop")).status_code == 403


def test_the_cli_lists_pauses_and_resumes(tmp_path: Path, genhook: Any) -> None:
    env = {
        "GENHOOK_DATA_DIR": str(tmp_path / "var"),
        "GENHOOK_WORKFLOWS_DIR": str(_flows(tmp_path)),
    }
    listed = genhook("schedules", "list", "--json", env=env)
    assert listed.code == 0, listed.stderr
    assert [s["schedule_id"] for s in json.loads(listed.stdout)["schedules"]] == [
        "tiny:other",
        "tiny:weekly",
    ]
    paused = genhook("schedules", "pause", "tiny:weekly", env=env)
    assert paused.code == 0, paused.stderr
    assert json.loads(paused.stdout)["paused"] is True
    table = genhook("schedules", "list", env=env)
    assert table.code == 0 and "tiny:weekly" in table.stdout and "paused" in table.stdout
    resumed = genhook("schedules", "resume", "tiny:weekly", env=env)
    assert resumed.code == 0 and json.loads(resumed.stdout)["paused"] is False
    missing = genhook("schedules", "pause", "tiny:nope", env=env)
    assert missing.code == 2 and "schedule_not_found" in missing.stderr
