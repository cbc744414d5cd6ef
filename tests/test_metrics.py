"""Metrics: label bounds, the scrape's naming and merging, the store collector on real SQLite and
PostgreSQL (an injected clock), the queries' indexes, multiprocess files written by real
processes, and the open ``GET /metrics`` route."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from genhook import metrics
from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.media.qc import Face, Measurements
from genhook.nodes.quality_check import CHECKS
from genhook.paths import shipped_dir
from genhook.quality import Thresholds, evaluate
from genhook.runtime import Runtime
from genhook.status import JobStatus
from genhook.store.admit import Admission
from genhook.store.schema import endpoints, services
from genhook.store.store import Store

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: bytes | str) -> Samples:
    """Every sample of a Prometheus text, by (sample name, labels), through the client's parser."""
    raw = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(raw)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---- bounds and naming -----------------------------------------------------------------------


def test_a_bound_keeps_the_first_values_and_counts_the_rest_as_other() -> None:
    bound = metrics.Bound(cap=2)
    seen = [bound(v) for v in ("a", "b", "c", "a", "b", "d")]
    assert seen == ["a", "b", "other", "a", "b", "other"]
    assert bound("") == "other" and bound(None) == "other"
    assert metrics.Bound(cap=5)("x" * (metrics.MAX_LABEL_LENGTH + 1)) == "other"
    assert metrics.Bound(cap=5)(ErrorCode.QUEUE_FULL) == "queue_full"


def test_the_scrape_names_services_and_bounds_services_and_workflows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "MAX_SERVICES", 2)
    monkeypatch.setattr(metrics, "MAX_WORKFLOWS", 2)
    labels = metrics.Labels.of(
        [("svc_1", "shop"), ("svc_2", "cms"), ("svc_3", "late")], ["b", "a", "c"]
    )
    assert [labels.service(s) for s in ("svc_1", "svc_2", "svc_3", "svc_unknown")] == [
        "shop",
        "cms",
        "other",
        "other",
    ]
    assert labels.service(None) == labels.service("none") == "none"
    assert [labels.workflow(w) for w in ("a", "b", "c", "gone")] == ["a", "b", "other", "other"]


def test_relabelling_sums_the_samples_that_come_to_share_labels() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_count", "test", ("service", "workflow"), registry=registry)
    histogram = Histogram("t_seconds", "test", ("service",), buckets=(1, 10), registry=registry)
    for service, n in (("svc_1", 1), ("svc_2", 2), ("svc_3", 4)):
        counter.labels(service, "wf").inc(n)
        for _ in range(n):
            histogram.labels(service).observe(5)
    labels = metrics.Labels({"svc_1": "shop"}, frozenset({"wf"}))
    text = "".join(_render(metrics.relabel(registry.collect(), labels)))
    got = parse(text)
    assert value(got, "t_count_total", service="shop", workflow="wf") == 1
    assert value(got, "t_count_total", service="other", workflow="wf") == 6
    assert value(got, "t_seconds_count", service="other") == 6
    assert value(got, "t_seconds_bucket", service="other", le="1.0") == 0
    assert value(got, "t_seconds_bucket", service="other", le="10.0") == 6
    assert value(got, "t_seconds_sum", service="other") == 30


def _render(families: Any) -> Iterator[str]:
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    found = list(families)

    class Fixed:
        def collect(self) -> Any:
            return found

    registry.register(Fixed())  # type: ignore[arg-type]
    yield generate_latest(registry).decode()


# ---- recorded series, in this process ----------------------------------------------------------


def test_recorded_counts_show_by_service_name(store: Store) -> None:
    service_id = store.create_service("shop")["service_id"]
    clock = ManualClock()

    def scrape() -> Samples:
        return parse(metrics.exposition(store.engine, clock, ["tiny"]))

    before = scrape()
    metrics.trigger_accepted(service_id, "tiny")
    metrics.trigger_accepted(service_id, "tiny")
    metrics.trigger_refused(service_id, "tiny", ErrorCode.INVALID_VALUE)
    metrics.trigger_refused(service_id, "no-such-flow", "unknown_workflow")
    metrics.retry(service_id, "tiny")
    metrics.generation_seconds("tiny", "procedural", 0.2)
    with metrics.job_scope("tiny"):
        metrics.qc("sharpness", True)
        metrics.qc("sharpness", False)
        metrics.export_seconds(0.03)
    metrics.delivery(service_id, "delivered", 0.02)
    metrics.delivery(None, "failed", 0.5)
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    shop = {"service": "shop", "workflow": "tiny"}
    assert delta("genhook_triggers_accepted_total", **shop) == 2
    assert delta("genhook_triggers_refused_total", **shop, code="invalid_value") == 1
    assert (
        delta(
            "genhook_triggers_refused_total",
            service="shop",
            workflow="other",
            code="unknown_workflow",
        )
        == 1
    )
    assert delta("genhook_job_retries_total", **shop) == 1
    assert delta("genhook_generation_seconds_count", workflow="tiny", backend="procedural") == 1
    assert delta("genhook_export_seconds_count", workflow="tiny") == 1
    for result in ("pass", "fail"):
        assert delta("genhook_qc_checks_total", workflow="tiny", check="sharpness", result=result)
    assert delta("genhook_delivery_seconds_count", service="shop", outcome="delivered") == 1
    assert delta("genhook_delivery_seconds_count", service="none", outcome="failed") == 1
    assert value(after, "genhook_store_up") == 1


def test_a_metric_that_cannot_be_recorded_never_fails_its_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(metrics, "_series", broken)
    metrics.trigger_accepted("svc", "tiny")  # logged, not raised
    metrics.delivery(None, "delivered", 0.1)


# ---- the store's gauges ----------------------------------------------------------------------


def _submit(store: Store, service_id: str, workflow: str = "tiny", **admission: Any) -> str:
    job, _ = store.submit(
        service_id=service_id,
        workflow_id=workflow,
        workflow_version=1,
        trigger={"item_id": "x"},
        external_id=None,
        callback_url=None,
        admission=Admission(**admission),
    )
    return str(job.id)


def test_the_collector_reads_jobs_queues_holds_credits_and_breakers(store: Store) -> None:
    clock = ManualClock()
    store.clock = clock
    store.backend_breaker_failures = 2
    limited = store.create_service("limited", rate_limit="1/h", daily_budget=10.0)["service_id"]
    other = store.create_service("other-shop")["service_id"]
    t0 = clock.now()
    for _ in range(3):
        _submit(store, limited)  # one may start now, two wait for the window
    _submit(store, other)
    _submit(store, other, workflow="uninstalled")
    clock.advance(30)
    first = store.claim("w1", 900)
    assert first is not None
    store.finish(
        first.id,
        "w1",
        status=JobStatus.SUCCEEDED,
        payload={"job_id": first.id, "quality_warning": None},
        error=None,
        credit_cost=2.5,
        work_seconds=1.0,
    )
    second = store.claim("w2", 900)
    assert second is not None
    error = GenhookError(ErrorCode.BACKEND_UNAVAILABLE, "down")
    for _ in range(2):
        store.backend_failed("openai", error)
    store.backend_failed("procedural", error)
    with store.engine.begin() as conn:
        conn.execute(services.update().where(services.c.id == other).values(paused_at=t0))
        conn.execute(
            endpoints.insert().values(
                service_id=other, endpoint="http://a:80", state="disabled", updated_at=t0
            )
        )

    got = parse(metrics.exposition(store.engine, clock, ["tiny"]))
    names = {limited: "limited", other: "other-shop"}
    ended = {first.service_id: 1}
    running = {second.service_id: 1}
    for sid, name in names.items():
        assert value(
            got, "genhook_jobs_ended_total", service=name, workflow="tiny", status="succeeded"
        ) == ended.get(sid, 0), name
        assert value(
            got, "genhook_jobs", service=name, workflow="tiny", status="running"
        ) == running.get(sid, 0)
    waiting_limited = 3 - ended.get(limited, 0) - running.get(limited, 0)
    waiting_other = 2 - ended.get(other, 0) - running.get(other, 0)
    assert value(got, "genhook_queue_depth", service="limited") == waiting_limited
    assert value(got, "genhook_queue_depth", service="other-shop") == waiting_other
    assert value(got, "genhook_queue_oldest_wait_seconds", service="limited") == 30
    assert value(got, "genhook_jobs_held", service="limited", reason="rate_limit") == 2
    assert value(got, "genhook_jobs_held", service="other-shop", reason="rate_limit") == 0
    # a workflow no template has any more is counted as other
    assert (
        value(got, "genhook_jobs", service="other-shop", workflow="other", status="queued")
        + value(got, "genhook_jobs", service="other-shop", workflow="other", status="running")
        == 1
    )
    spender = names[first.service_id]
    assert value(got, "genhook_credits_spent_today", service=spender) == 2.5
    assert value(got, "genhook_credits_spent_total", service=spender, workflow="tiny") == 2.5
    assert value(got, "genhook_daily_budget_credits", service="limited") == 10
    assert ("genhook_daily_budget_credits", frozenset({("service", "other-shop")})) not in got
    assert value(got, "genhook_service_paused", service="other-shop") == 1
    assert value(got, "genhook_service_paused", service="limited") == 0
    assert value(got, "genhook_endpoints_disabled", service="other-shop") == 1
    assert value(got, "genhook_backend_breaker_open", backend="openai") == 1
    assert value(got, "genhook_backend_breaker_open", backend="procedural") == 0
    assert value(got, "genhook_backend_failures", backend="procedural") == 1
    assert value(got, "genhook_store_up") == 1


def test_the_collector_reads_live_jobs_through_the_partial_indexes(tmp_path: Path) -> None:
    """SQLite uses a partial index only for its own literal IN list: every query of the jobs
    table must name one (a plan without one scans every job ever made)."""
    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    store.migrate()
    plans: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM jobs" in statement and not statement.startswith("EXPLAIN"):
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            plans.append(" ".join(str(row[-1]) for row in cursor.fetchall()))

    try:
        metrics.read_store(store.engine, 0.0)
    finally:
        store.close()
    assert len(plans) == 2, plans
    assert "USING INDEX ix_jobs_service_claimable" in plans[0], plans
    assert "USING INDEX ix_jobs_running_or_held" in plans[1], plans


def test_a_store_that_does_not_answer_reads_as_store_up_0(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'genhook.db'}")
    try:
        got = parse(metrics.exposition(engine, ManualClock(), ["tiny"]))
    finally:
        engine.dispose()
    assert value(got, "genhook_store_up") == 0
    assert not any(name == "genhook_queue_depth" for name, _ in got)


# ---- multiprocess mode -------------------------------------------------------------------------


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_every_process_counts_into_the_folder_and_a_scrape_sums_them(
    store: Store, tmp_path: Path
) -> None:
    service_id = store.create_service("shop")["service_id"]
    folder = metrics.prepare_multiprocess_dir(tmp_path)
    record = (
        "from genhook import metrics\n"
        f"metrics.trigger_accepted({service_id!r}, 'tiny')\n"
        "metrics.generation_seconds('tiny', 'procedural', 0.2)\n"
    )
    # one process picks the variable up at import; one imports prometheus-client first and is
    # switched over by enable_multiprocess, as `genhook serve` does
    _python(record, PROMETHEUS_MULTIPROC_DIR=str(folder))
    _python(
        "import prometheus_client, pathlib\nfrom genhook import metrics\n"
        f"metrics.enable_multiprocess(pathlib.Path({str(folder)!r}))\n" + record
    )
    assert len(list(folder.glob("counter_*.db"))) == 2
    got = parse(metrics.exposition(store.engine, ManualClock(), ["tiny"], str(folder)))
    assert value(got, "genhook_triggers_accepted_total", service="shop", workflow="tiny") == 2
    assert (
        value(got, "genhook_generation_seconds_count", workflow="tiny", backend="procedural") == 2
    )
    # a new `genhook serve` empties it
    assert metrics.prepare_multiprocess_dir(tmp_path) == folder
    assert list(folder.iterdir()) == []


def test_a_worker_whose_folder_is_missing_counts_in_process(tmp_path: Path) -> None:
    """`genhook worker` on another host, its environment copied from the serve's."""
    done = _python(
        "from genhook import metrics\n"
        "metrics.trigger_accepted('svc', 'tiny')\n"
        "print(metrics._series().accepted.labels('svc', 'tiny')._value.get())\n",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "elsewhere"),
    )
    assert done.stdout.strip() == "1.0"
    assert "not a writable directory" in done.stderr
    assert not (tmp_path / "elsewhere").exists()


# ---- the instrumented parts ----------------------------------------------------------------------


def test_the_quality_check_counts_every_check_that_evaluate_can_fail() -> None:
    failing = Measurements(
        width=1, height=1, contrast=0, sharpness=0, brightness=0, faces=(Face(0, 0, 1, 1, 0.9),)
    )
    names = {f.check for f in evaluate(failing, Thresholds(min_width=9, min_height=9), ["x"])}
    names |= {f.check for f in evaluate(failing, Thresholds(faces="reject"), ["x"])}
    assert names <= {*CHECKS, "face_confidence"}
    assert names >= set(CHECKS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_metrics_route_is_open_and_speaks_prometheus_text(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, workflows_dir=shipped_dir("workflows")).resolved()
    runtime = Runtime.build(settings, clock=ManualClock())
    try:
        runtime.store.create_service("shop")
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            answer = await c.get("/metrics")
            wrong_key = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
    finally:
        runtime.store.close()
    assert answer.status_code == 200 and wrong_key.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = parse(answer.text)
    assert value(got, "genhook_store_up") == 1
    assert value(got, "genhook_queue_depth", service="shop") == 0


def test_every_series_is_documented_with_its_labels() -> None:
    """docs/operations.md's metrics tables name every series with exactly its labels."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text("utf-8")
    rows = {
        name: tuple(re.findall(r"`([a-z_]+)`", labels))
        for name, labels in re.findall(r"^\| `(genhook_[a-z_]+)` \| \w+ \|([^|]*)\|", text, re.M)
    }
    series = metrics._series()
    recorded = {
        m._name + ("_total" if m._type == "counter" else ""): tuple(m._labelnames)
        for m in (getattr(series, f.name) for f in dataclasses.fields(series))
        if not isinstance(m, CollectorRegistry)
    }
    described = {
        name + ("_total" if kind == "counter" else ""): labels
        for name, _, labels, kind in metrics.STORE_SERIES.values()
    }
    described["genhook_store_up"] = ()
    expected = {**recorded, **described}
    assert set(rows) == set(expected)
    for name, labels in expected.items():
        assert sorted(rows[name]) == sorted(labels), name
