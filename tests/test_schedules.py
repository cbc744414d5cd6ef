"""Schedules: due times (cron in a time zone, DST), the template's checks with their lines, and
the scheduler on an injected clock over both stores (on time, skip, catch_up, pause, items)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import TemplateError
from genhook.presets import Presets
from genhook.runtime import Runtime
from genhook.scheduling.control import list_views
from genhook.scheduling.items import parse_csv, parse_jsonl
from genhook.scheduling.scheduler import RETRY_SECONDS, Scheduler, idempotency_key
from genhook.scheduling.spec import ScheduleSpec
from genhook.store.schema import jobs
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import parse_workflow
from tests.databases import database_url

BERLIN = ZoneInfo("Europe/Berlin")

FLOW = """\
id: tiny
version: 1
description: one small image
external_id: item_id
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
    count: {type: integer}
nodes:
  image:
    kind: generate
    with:
      prompt: "item"
      subject: ${input.item_id}
      width: 64
      height: 64
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: avatar
outputs:
  assets:
    - ${export.assets}
"""


def _spec(cron: str, tz: str = "Europe/Berlin", **kw: Any) -> ScheduleSpec:
    return ScheduleSpec(
        workflow_id="tiny", id="s", cron=cron, timezone=tz, service="shop", zone=ZoneInfo(tz), **kw
    )


def _at(*args: int, tz: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz, fold=fold).timestamp()  # type: ignore[misc]


def _local(t: float) -> str:
    return datetime.fromtimestamp(t, BERLIN).isoformat()


# -- due times -------------------------------------------------------------------------------


def test_next_due_is_read_in_the_time_zone() -> None:
    """``0 9 * * MON`` in Berlin: Monday 09:00 local, CET in winter and CEST in summer."""
    spec = _spec("0 9 * * MON")
    winter = spec.next_due(_at(2026, 12, 3, 12, 0))  # a Thursday
    assert _local(winter) == "2026-12-07T09:00:00+01:00"
    assert spec.next_due(winter) == _at(2026, 12, 14, 9, 0)
    assert _local(spec.next_due(_at(2026, 7, 1))) == "2026-07-06T09:00:00+02:00"
    # strictly after: a due time is not its own next
    assert spec.next_due(winter - 1) == winter


def test_spring_forward_a_time_that_does_not_exist_fires_once_at_the_first_real_minute() -> None:
    """02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00): it fires at 03:00 CEST,
    once; the day after at 02:30 again."""
    spec = _spec("30 2 * * *")
    first = spec.next_due(_at(2026, 3, 28, 12, 0))
    assert _local(first) == "2026-03-29T03:00:00+02:00"
    assert _local(spec.next_due(first)) == "2026-03-30T02:30:00+02:00"
    assert spec.latest_due(first + 30, since=first - 3600) == first


def test_fall_back_a_time_that_happens_twice_fires_once() -> None:
    """02:30 happens twice in Berlin on 2026-10-25: it fires at the first (CEST) only."""
    spec = _spec("30 2 * * *")
    first = spec.next_due(_at(2026, 10, 24, 12, 0))
    assert _local(first) == "2026-10-25T02:30:00+02:00"
    second = spec.next_due(first)
    assert _local(second) == "2026-10-26T02:30:00+01:00"
    # from inside the repeated hour (02:10 CET, after the CEST 02:30 fired): not again that day
    assert spec.next_due(_at(2026, 10, 25, 2, 10, fold=1)) == second


def test_an_interval_schedule_follows_real_time_across_dst() -> None:
    """``*/30 * * * *``: no fires in the skipped hour, both occurrences of the repeated one."""
    spring = _spec("*/30 * * * *")
    t = spring.next_due(_at(2026, 3, 29, 1, 10))
    seen = []
    for _ in range(3):
        seen.append(_local(t))
        t = spring.next_due(t)
    assert seen == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    t = spring.next_due(_at(2026, 10, 25, 1, 50))
    times = []
    for _ in range(5):
        times.append(t)
        t = spring.next_due(t)
    assert [b - a for a, b in itertools.pairwise(times)] == [1800.0] * 4
    # the latest due time from inside the repeated hour is its second 02:00 (CET), 10 min ago
    inside = _at(2026, 10, 25, 2, 10, fold=1)
    assert spring.latest_due(inside, since=inside - 7200) == inside - 600


def test_latest_due_finds_the_latest_time_that_has_come() -> None:
    spec = _spec("0 * * * *", tz="UTC")
    now = 1_800_000_000.0 + 1234
    hour = now - now % 3600
    assert spec.latest_due(now, since=hour - 7200) == hour
    assert spec.latest_due(hour, since=hour) == hour  # at the due time itself
    assert spec.latest_due(now, since=hour + 1) is None


# -- the template's checks -------------------------------------------------------------------


def _parse(extra: str, presets: Presets, nodes: NodeRegistry, source: str = "t.yaml") -> Any:
    return parse_workflow(FLOW + extra, source, presets, nodes)


def test_schedules_are_parsed(presets: Presets, nodes: NodeRegistry) -> None:
    wf = _parse(
        """\
schedules:
  - id: weekly
    cron: "0 9 * * MON"
    timezone: Europe/Berlin
    service: shop
    input: {item_id: A1}
  - id: nightly
    cron: "30 2 * * *"
    service: shop
    items: {file: items.csv}
    missed: catch_up
    grace: 5m
    callback_url: https://shop.example/hook
""",
        presets,
        nodes,
        source="/flows/t.yaml",
    )
    weekly, nightly = wf.schedules
    assert weekly.key == "tiny:weekly" and weekly.missed == "skip" and weekly.grace == 60
    assert weekly.input == {"item_id": "A1"} and weekly.timezone == "Europe/Berlin"
    assert nightly.timezone == "UTC" and nightly.missed == "catch_up" and nightly.grace == 300
    assert nightly.items is not None and nightly.items.format == "csv"
    assert nightly.items.path == Path("/flows/items.csv")


def test_schedule_problems_name_their_lines(presets: Presets, nodes: NodeRegistry) -> None:
    base = FLOW.count("\n")
    with pytest.raises(TemplateError) as caught:
        _parse(
            """\
schedules:
  - id: Bad Id
    cron: "0 25 * * *"
    timezone: Mars/Olympus
    service: shop
    input: {item_id: A1}
    missed: later
  - id: two
    cron: "* * *"
    service: shop
    items: {file: ../outside.csv}
  - id: three
    cron: "0 9 * * *"
    service: shop
    input: {item_id: 7}
  - id: four
    cron: "0 9 * * *"
    service: shop
  - id: five
    cron: "0 9 * * *"
    items: {url: "ftp://x/y.csv"}
""",
            presets,
            nodes,
        )
    got = {(p.where, p.line) for p in caught.value.problems}
    assert ("schedules.0.id", base + 2) in got
    assert ("schedules.0.cron", base + 3) in got
    assert ("schedules.0.timezone", base + 4) in got
    assert ("schedules.0.missed", base + 7) in got
    assert ("schedules.1.cron", base + 9) in got
    assert ("schedules.1.items", base + 11) in got
    assert ("schedules.3", base + 16) in got  # neither input nor items
    assert ("schedules.4.service", base + 19) in got
    assert ("schedules.4.items", base + 21) in got
    # the fixed input is checked as a trigger only once the rest is sound: on its own here
    with pytest.raises(TemplateError) as caught:
        _parse(
            'schedules:\n  - {id: three, cron: "0 9 * * *", service: shop, input: {item_id: 7}}\n',
            presets,
            nodes,
        )
    (problem,) = caught.value.problems
    assert problem.where == "schedules.0.input.item_id" and problem.line == base + 2
    assert "invalid_type" in problem.message


def test_workflows_validate_prints_schedule_lines(tmp_path: Path, genhook: Any) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        FLOW + 'schedules:\n  - id: x\n    cron: "61 * * * *"\n    service: s\n    '
        "input: {item_id: A}\n",
        encoding="utf-8",
    )
    result = genhook("workflows", "validate", str(path))
    assert result.code == 2
    assert f"{path}:{FLOW.count(chr(10)) + 3}: schedules.0.cron: not a cron expression" in (
        result.stderr
    )


# -- items -----------------------------------------------------------------------------------


def test_csv_cells_are_typed_by_the_input_schema() -> None:
    schema = {"properties": {"item_id": {"type": "string"}, "count": {"type": "integer"}}}
    text = "item_id,count,callback_url\nA1,3,\n007,x,https://h.example/\n,,\n"
    assert parse_csv(text, schema) == [
        {"item_id": "A1", "count": 3},
        {"item_id": "007", "count": "x", "callback_url": "https://h.example/"},
    ]
    assert parse_jsonl('{"item_id": "A"}\n\n{"item_id": "B"}\n') == [
        {"item_id": "A"},
        {"item_id": "B"},
    ]


# -- the scheduler on an injected clock ------------------------------------------------------


class Env:
    def __init__(self, runtime: Runtime, clock: ManualClock, flows: Path) -> None:
        self.runtime, self.clock, self.flows = runtime, clock, flows
        self.scheduler = Scheduler(runtime)

    def jobs(self) -> list[dict[str, Any]]:
        with self.runtime.store.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs).order_by(jobs.c.idempotency_key)).mappings()
            return [dict(r) for r in rows]


def _runtime(kind: str, tmp: Path, schedules: str, start: float) -> Iterator[Env]:
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "tiny.yaml").write_text(FLOW + schedules, encoding="utf-8")
    with database_url(kind, tmp) as url:
        settings = Settings(
            data_dir=tmp / "var",
            workflows_dir=flows,
            database_url=url,
            allow_private_callbacks=True,
        ).resolved()
        clock = ManualClock(start)
        runtime = Runtime.build(settings, clock=clock)
        runtime.store.create_service("shop")
        env = Env(runtime, clock, flows)
        try:
            yield env
        finally:
            env.scheduler.close()
            runtime.store.close()


DAILY = """\
schedules:
  - id: daily
    cron: "0 9 * * *"
    timezone: Europe/Berlin
    service: shop
    input: {item_id: A1}
  - id: daily-catch-up
    cron: "0 9 * * *"
    timezone: Europe/Berlin
    service: shop
    input: {item_id: B1}
    missed: catch_up
"""
START = _at(2026, 12, 3, 8, 0)  # Thursday 08:00 Berlin


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from _runtime(request.param, tmp_path, DAILY, START)


def test_a_new_schedule_never_fires_for_the_past_and_fires_when_due(env: Env) -> None:
    store = env.runtime.store
    assert env.scheduler.tick() == []  # first seen: due at the next 09:00, nothing now
    state = store.schedule_state("tiny:daily")
    assert state is not None and state.next_due_at == _at(2026, 12, 3, 9, 0)
    env.clock.advance(3600 + 2)  # 09:00:02: on time
    fires = env.scheduler.tick()
    assert sorted((f.schedule_key, f.outcome, f.created) for f in fires) == [
        ("tiny:daily", "fired", 1),
        ("tiny:daily-catch-up", "fired", 1),
    ]
    assert env.scheduler.tick() == []  # the same due time never again
    made = env.jobs()
    assert [j["idempotency_key"] for j in made] == [
        "schedule:tiny:daily-catch-up:2026-12-03T08:00:00Z:0",
        "schedule:tiny:daily:2026-12-03T08:00:00Z:0",
    ]
    assert {j["input"]["item_id"] for j in made} == {"A1", "B1"}
    state = store.schedule_state("tiny:daily")
    assert state is not None and state.next_due_at == _at(2026, 12, 4, 9, 0)
    assert state.last_outcome == "fired" and state.last_due_at == _at(2026, 12, 3, 9, 0)


def test_missed_times_follow_the_policy_skip_or_catch_up_once(env: Env) -> None:
    env.scheduler.tick()
    env.clock.advance(3 * 86400 + 3 * 3600)  # down over four 09:00s (Thu-Sun); now Sunday 11:00
    fires = {f.schedule_key: f for f in env.scheduler.tick()}
    skipped, caught = fires["tiny:daily"], fires["tiny:daily-catch-up"]
    latest = _at(2026, 12, 6, 9, 0)
    assert (skipped.outcome, skipped.created, skipped.due_at, skipped.missed) == (
        "skipped",
        0,
        latest,
        4,
    )
    assert (caught.outcome, caught.created, caught.due_at, caught.missed) == (
        "fired",
        1,
        latest,
        3,
    )
    assert [j["input"]["item_id"] for j in env.jobs()] == ["B1"]  # one job, not three
    for key in ("tiny:daily", "tiny:daily-catch-up"):
        state = env.runtime.store.schedule_state(key)
        assert state is not None and state.next_due_at == _at(2026, 12, 7, 9, 0)
    assert env.scheduler.tick() == []


def test_within_the_grace_a_late_due_time_still_fires_under_skip(env: Env) -> None:
    env.scheduler.tick()
    env.clock.advance(3600 + 50)  # 09:00:50, within the 60 s grace
    fires = {f.schedule_key: f.outcome for f in env.scheduler.tick()}
    assert fires["tiny:daily"] == "fired"


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(env: Env) -> None:
    env.scheduler.tick()
    spec = next(s for s in env.scheduler.specs if s.key == "tiny:daily")
    store = env.runtime.store

    def set_paused(paused: bool) -> None:
        store.set_schedule_paused(
            spec.key,
            paused,
            by="operator",
            workflow_id=spec.workflow_id,
            schedule_id=spec.id,
            spec_hash=spec.spec_hash,
            next_due_at=spec.next_due(env.clock.now()),
        )

    set_paused(True)
    env.clock.advance(2 * 86400)
    keys = [f.schedule_key for f in env.scheduler.tick()]
    assert "tiny:daily" not in keys
    set_paused(False)
    state = store.schedule_state(spec.key)
    assert state is not None and state.paused_at is None
    assert state.next_due_at == _at(2026, 12, 5, 9, 0)  # the pause's due times are not fired
    assert [f for f in env.scheduler.tick() if f.schedule_key == spec.key] == []


ITEMS = """\
schedules:
  - id: catalogue
    cron: "*/15 * * * *"
    timezone: UTC
    service: shop
    items: {file: items.csv}
    callback_url: http://127.0.0.1:9/hook
  - id: feed
    cron: "*/15 * * * *"
    timezone: UTC
    service: nobody
    items: {file: feed.jsonl}
    missed: catch_up
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_items_make_one_job_each_and_bad_items_are_refused_alone(kind: str, tmp_path: Path) -> None:
    start = 1_800_000_000.0 - 1_800_000_000.0 % 900 + 60  # a minute after a quarter hour
    for env in _runtime(kind, tmp_path, ITEMS, start):
        (env.flows / "items.csv").write_text(
            "item_id,count\nA1,1\nA2,two\nA3,3\n", encoding="utf-8"
        )
        (env.flows / "feed.jsonl").write_text(json.dumps({"item_id": "F"}) + "\n", "utf-8")
        env.scheduler.tick()
        env.clock.advance(900 - 60 + 1)
        fires = {f.schedule_key: f for f in env.scheduler.tick()}
        fire = fires["tiny:catalogue"]
        assert (fire.outcome, fire.created, fire.refused) == ("fired", 2, 1)
        assert fire.errors is not None
        assert fire.errors[0]["index"] == 1
        assert fire.errors[0]["error"]["field"] == "count"
        made = env.jobs()
        assert [j["input"]["item_id"] for j in made] == ["A1", "A3"]
        assert {j["callback_url"] for j in made} == {"http://127.0.0.1:9/hook"}
        due = start - 60 + 900
        assert made[0]["idempotency_key"] == idempotency_key(env.scheduler.specs[0], due, 0)
        # no such service: tried again while on time (not in a busy loop), then recorded failed
        assert "tiny:feed" not in fires
        env.scheduler.poll_seconds = 60.0
        assert env.scheduler.next_wake() == RETRY_SECONDS
        env.clock.advance(120)
        failed = {f.schedule_key: f for f in env.scheduler.tick()}["tiny:feed"]
        assert failed.outcome == "failed" and "no service named 'nobody'" in str(failed.error)
        state = env.runtime.store.schedule_state("tiny:feed")
        assert state is not None and state.last_error == failed.error
        with env.runtime.store.engine.connect() as conn:
            (event,) = conn.execute(
                sa.text("SELECT event, service, details FROM operator_events")
            ).all()
        assert (event.event, event.service) == ("schedule.failed", "nobody")
        details = json.loads(event.details) if isinstance(event.details, str) else event.details
        assert details["schedule_id"] == "tiny:feed" and details["error"] == failed.error
        views = {v["schedule_id"]: v for v in list_views(env.runtime)}
        assert views["tiny:feed"]["service_found"] is False
        assert views["tiny:feed"]["last_outcome"] == "failed"
        assert views["tiny:catalogue"]["service_found"] is True


# -- items by URL, through the guarded fetcher ---------------------------------------------------

URL_ITEMS = """\
schedules:
  - id: feed
    cron: "*/15 * * * *"
    timezone: UTC
    service: shop
    items: {url: "http://127.0.0.1:PORT/moved", format: jsonl}  # a redirect to the feed
    missed: catch_up
"""


class _Feed:
    """A loopback HTTP server answering the feed (JSONL), and a redirect to it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = b'{"item_id": "U1"}\n{"item_id": "U2"}\n'

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/feed.jsonl")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("allow_private", [True, False])
def test_items_by_url_are_fetched_under_the_callback_policy(
    allow_private: bool, tmp_path: Path
) -> None:
    """A loopback feed is fetched when private addresses are allowed (the tests' setting) and
    refused under the default policy: the fire then fails with the refusal, no job made."""
    feed = _Feed()
    start = 1_800_000_000.0 - 1_800_000_000.0 % 900 + 60
    try:
        for env in _runtime("sqlite", tmp_path, URL_ITEMS.replace("PORT", str(feed.port)), start):
            env.runtime.settings = dataclasses.replace(
                env.runtime.settings, allow_private_callbacks=allow_private
            )
            env.scheduler = Scheduler(env.runtime)
            env.scheduler.tick()
            env.clock.advance(900 - 60 + 61 + 1)  # past the grace: decided at once
            (fire,) = env.scheduler.tick()
            if allow_private:
                assert (fire.outcome, fire.created) == ("fired", 2)
                assert sorted(j["input"]["item_id"] for j in env.jobs()) == ["U1", "U2"]
            else:
                assert fire.outcome == "failed" and fire.created == 0
                assert "non-public address" in str(fire.error)
                assert env.jobs() == []
    finally:
        feed.close()


# -- the store: two transactions racing for one due time -------------------------------------


def _race(barrier: Any, fire: Any, items: Any, results: list[Any], n: int) -> None:
    barrier.wait()
    results[n] = fire(items=items)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_transactions_for_one_due_time_make_one_fire(kind: str, tmp_path: Path) -> None:
    """Both racers have checked that the due time is not done and prepared their jobs; they
    commit at once: one fire row, one set of jobs, the other gets None."""
    import threading

    start = 1_800_000_000.0 - 1_800_000_000.0 % 900 + 60
    for env in _runtime(kind, tmp_path, ITEMS.split("  - id: feed")[0], start):
        (env.flows / "items.csv").write_text("item_id\nA1\nA2\nA3\n", encoding="utf-8")
        env.scheduler.tick()
        env.clock.advance(900 - 60 + 1)
        spec = env.scheduler.specs[0]
        due = start - 60 + 900
        service = env.runtime.store.service_by_name("shop")
        assert service is not None
        workflow = env.runtime.catalog.workflows["tiny"]
        bodies = env.scheduler.read_items(spec)
        prepared = [
            asyncio.run(env.scheduler._prepare(spec, service, workflow, bodies, due))
            for _ in range(2)
        ]
        results: list[Any] = [None, None]
        barrier = threading.Barrier(2)
        fire = functools.partial(
            env.runtime.store.record_fire,
            key=spec.key,
            due_at=due,
            next_due_at=spec.next_due(env.clock.now()),
            outcome="fired",
            service_id=service.id,
        )
        threads = [
            threading.Thread(target=_race, args=(barrier, fire, prepared[n], results, n))
            for n in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        won = [r for r in results if r is not None]
        assert len(won) == 1 and won[0].created == 3
        assert len(env.jobs()) == 3
        assert [f.due_at for f in env.runtime.store.schedule_fires(spec.key)] == [due]


LIMITED = """\
schedules:
  - id: limited
    cron: "*/15 * * * *"
    timezone: UTC
    service: small
    items: {file: items.csv}
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_fire_is_held_to_its_services_limits_item_by_item(kind: str, tmp_path: Path) -> None:
    """The service's queue limit refuses the item past it (queue_full, the others are jobs);
    its rate limit holds the second job (rate_limit), as for triggers of that service."""
    start = 1_800_000_000.0 - 1_800_000_000.0 % 900 + 60
    for env in _runtime(kind, tmp_path, LIMITED, start):
        env.runtime.store.create_service("small", queue_limit=2, rate_limit="1/h")
        (env.flows / "items.csv").write_text("item_id\nL1\nL2\nL3\n", encoding="utf-8")
        env.scheduler = Scheduler(env.runtime)
        env.scheduler.tick()
        env.clock.advance(900 - 60 + 1)
        (fire,) = env.scheduler.tick()
        assert (fire.outcome, fire.created, fire.refused) == ("fired", 2, 1)
        assert fire.errors is not None
        assert fire.errors[0]["index"] == 2
        assert fire.errors[0]["error"]["error_code"] == "queue_full"
        made = env.jobs()
        assert [j["hold_reason"] for j in sorted(made, key=lambda j: j["rate_seq"])] == [
            None,
            "rate_limit",
        ]
