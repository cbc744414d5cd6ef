"""Prometheus metrics: counts recorded where things happen, and the store's facts at scrape time.

Functions the other parts call (each is cheap, thread-safe and never raises):

- ``trigger_accepted(service, workflow)``: a trigger answered 202 with a new job.
- ``trigger_refused(service, workflow, code)``: a trigger refused with an error code (the 422 of
  invalid input, 429 ``queue_full``, ...); ``code`` an :class:`~genhook.errors.ErrorCode` or its
  string.
- ``retry(service, workflow)``: a failed attempt scheduled to run again.
- ``generation_seconds(workflow, backend, seconds)``: one generation by a backend.
- ``export_seconds(seconds, workflow=None)``: one export node's run (resize, crop, encode).
- ``qc(check, passed, workflow=None)``: one quality check's outcome on one candidate.
- ``delivery(service, outcome, seconds)``: one callback delivery attempt and its latency
  (``outcome``: ``delivered``, ``failed`` (will retry), ``gone`` (410), ``exhausted``, ...).
- ``job_scope(workflow)``: a context manager; ``export_seconds`` and ``qc`` called inside it
  (the engine runs every node of a job inside one) count for that workflow.

``service`` is always the service's **id** (``Service.id``, ``Job.service_id``, ``None`` for
operator alerts): every part has it, and ``/metrics`` shows the service's name instead.

Counters and histograms live in the process that records them. Under ``genhook serve`` every
process (the API and each worker) writes them to files in one directory, prometheus-client's
multiprocess mode (:func:`prepare_multiprocess_dir`, :func:`enable_multiprocess`), and a scrape
sums them, dead workers' included. Gauges are facts of the database (jobs by status, queue depth
and oldest wait, held jobs, credits, breakers): :class:`StoreCollector` reads them when scraped,
with queries on the partial indexes of live jobs and on the small per-service tables, so they
are right whichever process or machine changed them. :func:`exposition` renders both.

Label values are bounded twice. A process keeps the first :data:`MAX_VALUES` distinct values of
each label and records later ones as ``other`` (memory and files stay bounded whatever callers
pass). A scrape then maps services to their names, keeps the first :data:`MAX_SERVICES` services
(by creation) and the first :data:`MAX_WORKFLOWS` installed workflows (by id), and sums every
other service or workflow, unknown ids included, into ``other``: the same rule for every series
and every process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import sqlalchemy as sa

from genhook.flow import HoldReason, utc_day
from genhook.status import TERMINAL, JobStatus
from genhook.store.schema import (
    backend_state,
    credit_ledger,
    endpoints,
    job_rollups,
    jobs,
    services,
)

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from genhook.clock import Clock
    from genhook.runtime import Runtime

__all__ = [
    "CONTENT_TYPE",
    "StoreCollector",
    "delivery",
    "enable_multiprocess",
    "export_seconds",
    "exposition",
    "generation_seconds",
    "job_scope",
    "prepare_multiprocess_dir",
    "qc",
    "render",
    "retry",
    "trigger_accepted",
    "trigger_refused",
]

log = logging.getLogger("genhook.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: where every process of one ``genhook serve`` writes."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format that :func:`exposition` writes."""
OTHER = "other"
"""The label value of everything past a bound."""
NO_SERVICE = "none"
"""The ``service`` of what belongs to no service (operator alerts)."""
MAX_SERVICES = 100
MAX_WORKFLOWS = 100
MAX_VALUES = 200
"""Distinct values one process records per label (services, workflows, codes, checks ...)."""
MAX_LABEL_LENGTH = 100

GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
EXPORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)

LIVE_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s not in TERMINAL)
"""Statuses counted from the jobs table itself (what the queue holds now)."""
ENDED = {
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
"""Ended statuses and the roll-up column that counts them."""


# ---- label bounds ---------------------------------------------------------------------------


class Bound:
    """At most ``cap`` distinct values of one label in this process; later ones are ``other``
    (so are empty values and values longer than :data:`MAX_LABEL_LENGTH`)."""

    def __init__(self, cap: int = MAX_VALUES) -> None:
        self.cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = "" if value is None else str(value)
        if not text or len(text) > MAX_LABEL_LENGTH:
            return OTHER
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self.cap:
                self._seen.add(text)
                return text
        return text if text in self._seen else OTHER


@dataclass
class _Bounds:
    service: Bound = field(default_factory=Bound)
    workflow: Bound = field(default_factory=Bound)
    code: Bound = field(default_factory=Bound)
    backend: Bound = field(default_factory=Bound)
    check: Bound = field(default_factory=Bound)
    outcome: Bound = field(default_factory=Bound)

    def service_of(self, service: str | None) -> str:
        return NO_SERVICE if service is None else self.service(service)


_bounds = _Bounds()


# ---- the recorded series --------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    registry: CollectorRegistry
    accepted: Counter
    refused: Counter
    retries: Counter
    generation: Histogram
    export: Histogram
    qc: Counter
    delivery: Histogram


_series_lock = threading.Lock()
_made: _Series | None = None
_delivery_children: tuple[_Series | None, dict[tuple[str | None, str], Histogram]] = (None, {})
"""The delivery histogram's labelled children of the series they belong to, by the caller's
(service, outcome): the bounds and prometheus-client's label lookup once per pair instead of
once per attempt (they were 2% of a delivery's CPU)."""
_workflow: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "genhook_metrics_workflow", default=None
)


def _multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path or None


def _series() -> _Series:
    """The series, made on first use: after :func:`enable_multiprocess`, whatever imported this
    module first. prometheus-client is imported only then (it costs a CLI start ~0.1 s)."""
    global _made
    if _made is not None:
        return _made
    with _series_lock:
        if _made is None:
            _made = _make_series()
        return _made


def _make_series() -> _Series:
    from prometheus_client import values

    path = _multiprocess_dir()
    if path is not None and not (os.path.isdir(path) and os.access(path, os.W_OK)):
        # e.g. `genhook worker` on another host with the variable copied: count in-process
        log.warning(
            "%s=%s is not a writable directory: metrics stay in-process", MULTIPROC_ENV, path
        )
        values.ValueClass = values.MutexValue
    elif path is not None and values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # the same series in-process as in multiprocess mode
    registry = CollectorRegistry(auto_describe=True)
    sw = ("service", "workflow")
    return _Series(
        registry=registry,
        accepted=Counter(
            "genhook_triggers_accepted",
            "Triggers answered 202 with a new job.",
            sw,
            registry=registry,
        ),
        refused=Counter(
            "genhook_triggers_refused",
            "Triggers refused, by error code.",
            (*sw, "code"),
            registry=registry,
        ),
        retries=Counter(
            "genhook_job_retries",
            "Failed attempts scheduled to run again.",
            sw,
            registry=registry,
        ),
        generation=Histogram(
            "genhook_generation_seconds",
            "Seconds of each generation, by workflow and backend.",
            ("workflow", "backend"),
            buckets=GENERATION_BUCKETS,
            registry=registry,
        ),
        export=Histogram(
            "genhook_export_seconds",
            "Seconds of each export node's run (resize, crop, encode every preset).",
            ("workflow",),
            buckets=EXPORT_BUCKETS,
            registry=registry,
        ),
        qc=Counter(
            "genhook_qc_checks",
            "Quality-check outcomes on each candidate, by check (result pass or fail).",
            ("workflow", "check", "result"),
            registry=registry,
        ),
        delivery=Histogram(
            "genhook_delivery_seconds",
            "Seconds of each callback delivery attempt, by outcome.",
            ("service", "outcome"),
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        ),
    )


P = ParamSpec("P")
_failed_once = threading.Event()


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    """Metrics must not fail a job or a request: log the first failure, drop the count."""

    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            if not _failed_once.is_set():
                _failed_once.set()
                log.exception("recording a metric failed (further failures are not logged)")

    return functools.wraps(fn)(guarded)


@_never_raises
def trigger_accepted(service: str, workflow: str) -> None:
    """A trigger answered 202 with a new job."""
    _series().accepted.labels(_bounds.service_of(service), _bounds.workflow(workflow)).inc()


@_never_raises
def trigger_refused(service: str, workflow: str, code: object) -> None:
    """A trigger refused with ``code``; an ``unknown_workflow`` refusal counts as workflow
    ``other`` (its id names no template, and callers choose it)."""
    code = str(code)
    flow = OTHER if code == "unknown_workflow" else _bounds.workflow(workflow)
    _series().refused.labels(_bounds.service_of(service), flow, _bounds.code(code)).inc()


@_never_raises
def retry(service: str, workflow: str) -> None:
    """A failed attempt scheduled to run again."""
    _series().retries.labels(_bounds.service_of(service), _bounds.workflow(workflow)).inc()


@_never_raises
def generation_seconds(workflow: str, backend: str, seconds: float) -> None:
    """One generation by ``backend`` took ``seconds``."""
    _series().generation.labels(_bounds.workflow(workflow), _bounds.backend(backend)).observe(
        max(0.0, seconds)
    )


@_never_raises
def export_seconds(seconds: float, workflow: str | None = None) -> None:
    """One export node's run took ``seconds`` (``workflow``: default the job's scope)."""
    flow = _bounds.workflow(workflow or _workflow.get())
    _series().export.labels(flow).observe(max(0.0, seconds))


@_never_raises
def qc(check: str, passed: bool, workflow: str | None = None) -> None:
    """One quality check's outcome on one candidate."""
    flow = _bounds.workflow(workflow or _workflow.get())
    result = "pass" if passed else "fail"
    _series().qc.labels(flow, _bounds.check(check), result).inc()


@_never_raises
def delivery(service: str | None, outcome: str, seconds: float) -> None:
    """One delivery attempt ended with ``outcome`` after ``seconds``."""
    global _delivery_children
    series = _series()
    of, children = _delivery_children
    if of is not series:
        _delivery_children = of, children = series, {}
    key = (service, outcome)
    child = children.get(key)
    if child is None:
        child = series.delivery.labels(_bounds.service_of(service), _bounds.outcome(outcome))
        if len(children) < MAX_VALUES * 4:  # bounded whatever callers pass
            children[key] = child
    child.observe(max(0.0, seconds))


@contextlib.contextmanager
def job_scope(workflow: str) -> Iterator[None]:
    """Inside it, :func:`export_seconds` and :func:`qc` count for ``workflow``."""
    token = _workflow.set(workflow)
    try:
        yield
    finally:
        _workflow.reset(token)


# ---- multiprocess set-up --------------------------------------------------------------------


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """``DATA_DIR/metrics``, created and emptied: a new ``genhook serve`` counts from zero
    (Prometheus reads a counter that starts again as a restart, not as a drop)."""
    path = data_dir / "metrics"
    if path.is_dir():
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def enable_multiprocess(path: Path) -> None:
    """Count in files under ``path`` from now on, in this process and in every process it
    starts afterwards (they inherit the variable). Call it before anything is recorded."""
    os.environ[MULTIPROC_ENV] = str(path)
    if _made is not None:
        log.warning("metrics were recorded before multiprocess mode: those stay in-process")
        return
    if "prometheus_client.values" not in sys.modules:
        return  # imported later, it reads the variable itself
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


# ---- scrape time ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """How a scrape names services and workflows: the service's name for its id, ``other``
    past the first :data:`MAX_SERVICES` services (by creation) and for unknown ids; the
    first :data:`MAX_WORKFLOWS` installed workflows, ``other`` for every other id."""

    names: Mapping[str, str]
    workflows: frozenset[str]

    @classmethod
    def of(cls, service_rows: Iterable[tuple[str, str]], workflows: Iterable[str]) -> Labels:
        """``service_rows``: (id, name), oldest first."""
        names = dict(list(service_rows)[:MAX_SERVICES])
        return cls(names, frozenset(sorted(workflows)[:MAX_WORKFLOWS]))

    def service(self, value: str | None) -> str:
        if value is None or value == NO_SERVICE:
            return NO_SERVICE
        return self.names.get(value, OTHER)

    def workflow(self, value: str | None) -> str:
        return value if value in self.workflows else OTHER

    def relabel(self, labels: Mapping[str, str]) -> dict[str, str]:
        out = dict(labels)
        if "service" in out:
            out["service"] = self.service(out["service"])
        if "workflow" in out:
            out["workflow"] = self.workflow(out["workflow"])
        return out


def relabel(families: Iterable[Metric], labels: Labels) -> Iterator[Metric]:
    """The families with services and workflows named by ``labels``; samples that come to
    share their labels are summed (counters and histogram buckets add up)."""
    from prometheus_client.metrics_core import Metric

    for family in families:
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for sample in family.samples:
            named = labels.relabel(sample.labels)
            key = (sample.name, tuple(named.items()))
            merged[key] = merged.get(key, 0.0) + sample.value
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for (name, pairs), value in merged.items():
            out.add_sample(name, dict(pairs), value)
        yield out


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read from the store (rows as tuples)."""

    services: Sequence[Any]  # id, name, created_at, paused_at, daily_budget
    live: Sequence[Any]  # service_id, workflow_id, status, hold_reason, count, oldest created_at
    ended: Sequence[Any]  # service_id, workflow_id, completed, failed, cancelled, expired, credits
    ledger: Sequence[Any]  # service_id, spent, reserved (today)
    backends: Sequence[Any]  # backend, state, failures
    endpoints: Sequence[Any]  # service_id, state, count


def _index_filter(name: str) -> Any:
    """The ``WHERE`` of partial index ``name`` with its values inline, as the index itself
    says it: SQLite uses a partial index only for the same literal ``IN`` list."""
    index = next(i for i in jobs.indexes if i.name == name)
    where = index.dialect_options["sqlite"]["where"]
    return where.left.in_(
        sa.bindparam(
            f"{name}_values", list(where.right.value), expanding=True, literal_execute=True
        )
    )


def _live(conn: sa.Connection, columns: tuple[Any, ...], group: tuple[Any, ...], index: str) -> Any:
    """The live jobs of partial index ``index``, counted by ``group``, read through that
    index. SQLite is told it (``INDEXED BY``): on its own it would rather walk the listing's
    index for the grouping order, which holds every job ever made."""
    query = sa.select(*columns).where(_index_filter(index)).group_by(*group)
    if conn.dialect.name != "sqlite":
        return conn.execute(query).all()
    compiled = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    forced = compiled.replace("FROM jobs", f"FROM jobs INDEXED BY {index}", 1)
    assert forced != compiled, compiled
    return conn.execute(sa.text(forced)).all()


def read_store(engine: sa.Engine, now: float) -> Snapshot:
    """One read transaction of cheap queries: the services and their small tables, the live
    jobs through the partial indexes the claim uses, the ended ones from the roll-ups."""
    group = (jobs.c.service_id, jobs.c.workflow_id, jobs.c.status, jobs.c.hold_reason)
    live_columns = (*group, sa.func.count(), sa.func.min(jobs.c.created_at))
    with engine.connect() as conn, conn.begin():
        live = [
            *_live(conn, live_columns, group, "ix_jobs_service_claimable"),
            *_live(conn, live_columns, group, "ix_jobs_running_or_held"),  # and held for review
        ]
        rollup = job_rollups.c
        return Snapshot(
            services=conn.execute(
                sa.select(
                    services.c.id,
                    services.c.name,
                    services.c.created_at,
                    services.c.paused_at,
                    services.c.daily_budget,
                ).order_by(services.c.created_at, services.c.id)
            ).all(),
            live=live,
            ended=conn.execute(
                sa.select(
                    rollup.service_id,
                    rollup.workflow_id,
                    sa.func.sum(rollup.completed),
                    sa.func.sum(rollup.failed),
                    sa.func.sum(rollup.cancelled),
                    sa.func.sum(rollup.expired),
                    sa.func.sum(rollup.credits),
                ).group_by(rollup.service_id, rollup.workflow_id)
            ).all(),
            ledger=conn.execute(
                sa.select(
                    credit_ledger.c.service_id, credit_ledger.c.spent, credit_ledger.c.reserved
                ).where(credit_ledger.c.day == utc_day(now))
            ).all(),
            backends=conn.execute(
                sa.select(backend_state.c.backend, backend_state.c.state, backend_state.c.failures)
            ).all(),
            endpoints=conn.execute(
                sa.select(endpoints.c.service_id, endpoints.c.state, sa.func.count()).group_by(
                    endpoints.c.service_id, endpoints.c.state
                )
            ).all(),
        )


class _Family:
    """One gauge or counter family being summed (or maxed) by label values."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], kind: str) -> None:
        self.name, self.doc, self.labels, self.kind = name, doc, labels, kind
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, key: tuple[str, ...], value: float, *, keep_max: bool = False) -> None:
        old = self.values.get(key)
        if old is None:
            self.values[key] = float(value)
        else:
            self.values[key] = max(old, value) if keep_max else old + value

    def metric(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        family = (CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily)(
            self.name, self.doc, labels=self.labels
        )
        for key, value in sorted(self.values.items()):
            family.add_metric(list(key), value)
        return family


STORE_SERIES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "jobs": (
        "genhook_jobs",
        "Jobs not ended, by status (what the queue holds now).",
        ("service", "workflow", "status"),
        "gauge",
    ),
    "ended": (
        "genhook_jobs_ended",
        "Jobs that ended, by status (refused triggers are in genhook_triggers_refused).",
        ("service", "workflow", "status"),
        "counter",
    ),
    "depth": (
        "genhook_queue_depth",
        "Jobs waiting to run (queued or retrying), held ones included.",
        ("service",),
        "gauge",
    ),
    "oldest": (
        "genhook_queue_oldest_wait_seconds",
        "Age of the oldest waiting job, from its trigger (0 when none waits).",
        ("service",),
        "gauge",
    ),
    "held": (
        "genhook_jobs_held",
        "Queued jobs held by flow control, by hold_reason.",
        ("service", "reason"),
        "gauge",
    ),
    "credits": (
        "genhook_credits_spent",
        "Credits spent by jobs that ended, by workflow (from the roll-ups).",
        ("service", "workflow"),
        "counter",
    ),
    "today": (
        "genhook_credits_spent_today",
        "Credits spent today (UTC) by the service's attempts.",
        ("service",),
        "gauge",
    ),
    "reserved": (
        "genhook_credits_reserved",
        "Credits held reserved now by the service's running jobs.",
        ("service",),
        "gauge",
    ),
    "budget": (
        "genhook_daily_budget_credits",
        "The service's daily budget (services with one).",
        ("service",),
        "gauge",
    ),
    "paused": (
        "genhook_service_paused",
        "1 while the storm breaker holds the service paused.",
        ("service",),
        "gauge",
    ),
    "endpoints_off": (
        "genhook_endpoints_disabled",
        "Callback endpoints of the service that are disabled.",
        ("service",),
        "gauge",
    ),
    "backend_open": (
        "genhook_backend_breaker_open",
        "1 while the backend's breaker is open (its jobs wait).",
        ("backend",),
        "gauge",
    ),
    "backend_failures": (
        "genhook_backend_failures",
        "Transient failures of the backend in a row (its breaker opens past the limit).",
        ("backend",),
        "gauge",
    ),
}
"""The series read from the store at scrape time: name, help, labels, type."""


def store_families(snapshot: Snapshot, labels: Labels, now: float) -> list[Metric]:
    """The gauges (and the roll-ups' counters) of ``snapshot``, named by ``labels``.

    Every named service has each per-service series (0 when nothing applies), so an alert on a
    value does not lose its series when it reaches 0."""
    svc, wf = labels.service, labels.workflow
    f = {key: _Family(*spec) for key, spec in STORE_SERIES.items()}
    for row in snapshot.services:
        name = svc(row[0])
        for key in ("depth", "today", "reserved", "endpoints_off"):
            f[key].add((name,), 0)
        f["oldest"].add((name,), 0, keep_max=True)
        f["paused"].add((name,), 1 if row[3] is not None else 0, keep_max=True)
        for reason in HoldReason:
            f["held"].add((name, str(reason)), 0)
        if row[4] is not None:
            f["budget"].add((name,), float(row[4]))
    for service_id, workflow_id, status, reason, count, first in snapshot.live:
        name = svc(service_id)
        f["jobs"].add((name, wf(workflow_id), str(status)), count)
        if status in (JobStatus.QUEUED, JobStatus.RETRYING):
            f["depth"].add((name,), count)
            f["oldest"].add((name,), max(0.0, now - float(first)), keep_max=True)
            if reason is not None:
                f["held"].add((name, str(reason)), count)
    for service_id, workflow_id, *sums in snapshot.ended:
        pair = (svc(service_id), wf(workflow_id))
        for status, n in zip(ENDED, sums[: len(ENDED)], strict=True):
            f["ended"].add((*pair, status), n or 0)
        for status in LIVE_STATUSES:  # a workflow's live series stay, at 0, once it has run
            f["jobs"].add((*pair, str(status)), 0)
        f["credits"].add(pair, sums[len(ENDED)] or 0)
    for service_id, spent, reserved in snapshot.ledger:
        f["today"].add((svc(service_id),), spent or 0)
        f["reserved"].add((svc(service_id),), reserved or 0)
    for service_id, state, count in snapshot.endpoints:
        if state == "disabled":
            f["endpoints_off"].add((svc(service_id),), count)
    for backend, state, failures in snapshot.backends:
        name = backend if len(backend) <= MAX_LABEL_LENGTH else OTHER
        f["backend_open"].add((name,), 1 if state == "open" else 0, keep_max=True)
        f["backend_failures"].add((name,), failures or 0, keep_max=True)
    return [family.metric() for family in f.values()]


class StoreCollector:
    """A prometheus-client collector: the recorded series (this process's, or every
    process's files in multiprocess mode) named by the store, and the store's gauges.

    When the store does not answer, ``genhook_store_up`` is 0 and the recorded series keep
    the names of the last scrape that read them."""

    _last_names: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        engine: sa.Engine,
        clock: Clock,
        workflows: Iterable[str],
        multiprocess_dir: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.workflows = tuple(workflows)
        self.multiprocess_dir = multiprocess_dir

    def recorded(self) -> Iterable[Metric]:
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            collector = MultiProcessCollector(None, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            found: Iterable[Metric] = collector.collect()  # type: ignore[no-untyped-call]
            return found
        return _series().registry.collect()

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        now = self.clock.now()
        snapshot: Snapshot | None
        try:
            snapshot = read_store(self.engine, now)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("/metrics: the store does not answer: %s", exc.__class__.__name__)
            snapshot = None
        if snapshot is not None:
            StoreCollector._last_names = tuple((r[0], r[1]) for r in snapshot.services)
        labels = Labels.of(StoreCollector._last_names, self.workflows)
        yield from relabel(self.recorded(), labels)
        if snapshot is not None:
            yield from store_families(snapshot, labels, now)
        up = GaugeMetricFamily("genhook_store_up", "1 when this scrape could read the store.")
        up.add_metric([], 1 if snapshot is not None else 0)
        yield up


def render(runtime: Runtime) -> bytes:
    """:func:`exposition` of a runtime's store, clock and installed workflows."""
    return exposition(runtime.store.engine, runtime.clock, runtime.catalog.workflows)


def exposition(
    engine: sa.Engine,
    clock: Clock,
    workflows: Iterable[str],
    multiprocess_dir: str | None = None,
) -> bytes:
    """The Prometheus text of every series: ``multiprocess_dir`` (default: this process's
    ``PROMETHEUS_MULTIPROC_DIR``, when set) holds every process's counts."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir or _multiprocess_dir()
    if path is not None and not os.path.isdir(path):
        path = None
    registry.register(StoreCollector(engine, clock, workflows, path))
    return generate_latest(registry)
