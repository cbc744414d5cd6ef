"""A template's ``schedules``: parsed and checked with their lines, and their due times.

A schedule fires its workflow on a cron expression read in a time zone, as one named service,
with a fixed trigger (``input``) or with one trigger per item of a CSV or JSONL file or URL
(``items``)::

    schedules:
      - id: weekly
        cron: "0 9 * * MON"
        timezone: Europe/Berlin
        service: shop
        input: {product_id: SKU-1, product_name: Linen shirt}
        missed: skip            # or catch_up
      - id: nightly-catalogue
        cron: "30 2 * * *"
        timezone: UTC
        service: shop
        items: {file: catalogue.csv}      # or {url: https://..., format: jsonl}
        callback_url: https://shop.example/hooks/genhook

Cron is five fields (minute hour day-of-month month day-of-week, names like ``MON`` and ``JAN``
allowed), evaluated by :mod:`cronsim` the way Debian's cron does, in the schedule's IANA time
zone (:mod:`zoneinfo`). Around DST changes:

* a fixed time of day that does not exist on a spring-forward day (``30 2 * * *`` in
  Europe/Berlin on the last Sunday of March) fires once, at the first minute that exists
  (03:00 local, CEST);
* a fixed time of day that happens twice on a fall-back day fires once, the first time
  (02:30 CEST, not again at 02:30 CET);
* an expression whose minute or hour field is ``*`` or a step (``*/30 * * * *``) follows real
  time: the skipped hour has no fires, the repeated hour fires in both its occurrences.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from genhook.config_values import parse_duration
from genhook.errors import GenhookError

SCHEDULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SCHEDULE_KEYS = {
    "id",
    "cron",
    "timezone",
    "service",
    "input",
    "items",
    "missed",
    "grace",
    "callback_url",
    "description",
}
ITEMS_KEYS = {"file", "url", "format"}
FORMATS = ("csv", "jsonl")
MISSED = ("skip", "catch_up")
DEFAULT_GRACE = 60.0
"""Seconds after a due time within which it still counts as on time (fired whatever the
policy); past it, a due time nobody fired is *missed* and follows ``missed``."""
MAX_GRACE = 86400.0
Add = Callable[[tuple[str | int, ...], str], None]
"""How the template checker collects a problem: its path in the document, and the message."""


@dataclass(frozen=True)
class ItemsSource:
    """Where a schedule's items come from: a file (relative to the workflows dir) or a URL."""

    format: str  # csv | jsonl
    file: str | None = None
    url: str | None = None
    base_dir: str = "."  # the folder of the template (the workflows dir)

    @property
    def path(self) -> Path:
        """The file's path (only for ``file``)."""
        assert self.file is not None
        return Path(self.base_dir) / self.file

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "url": self.url, "format": self.format}


@dataclass(frozen=True)
class ScheduleSpec:
    """One checked schedule of a template."""

    workflow_id: str
    id: str
    cron: str
    timezone: str
    service: str
    input: dict[str, Any] | None = None
    items: ItemsSource | None = None
    missed: str = "skip"
    grace: float = DEFAULT_GRACE
    callback_url: str | None = None
    description: str = ""
    zone: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False, repr=False)

    @property
    def key(self) -> str:
        """The schedule's key, unique in the install: ``WORKFLOW:ID``."""
        return f"{self.workflow_id}:{self.id}"

    @property
    def spec_hash(self) -> str:
        """Changes when what decides the due times changes (cron, time zone): the stored next
        due time is then computed again."""
        return hashlib.sha256(f"{self.cron}\n{self.timezone}".encode()).hexdigest()[:16]

    def next_due(self, after: float) -> float:
        """The first due time strictly after ``after`` (epoch seconds)."""
        start = datetime.fromtimestamp(after, self.zone)
        for found in CronSim(self.cron, start):
            t = found.timestamp()
            if t > after:  # a fixed time's naive walk can land before a fall-back start
                return t
        raise ValueError(f"{self.cron!r} has no due time after {start.isoformat()}")

    def latest_due(self, at: float, since: float) -> float | None:
        """The latest due time ``d`` with ``since <= d <= at``, None if there is none.

        Found backwards (cronsim's reverse walk), then checked forwards from there: the reverse
        walk of an interval schedule can land an hour early in a fall-back's repeated hour, and
        the forward walk (:meth:`next_due`) is the reference."""
        start = datetime.fromtimestamp(at, self.zone) + timedelta(seconds=1)
        found: float | None = None
        for candidate in CronSim(self.cron, start, reverse=True):
            t = candidate.timestamp()
            if t <= at:
                found = t
                break
        if found is None or found < since:
            found = self.next_due(since - 0.001)  # the first due time at or after since
            if found > at:
                return None
        while (later := self.next_due(found)) <= at:
            found = later
        return found

    def describe(self) -> dict[str, Any]:
        """What ``schedules list`` and ``GET /v1/schedules`` show of the template's side."""
        return {
            "schedule_id": self.key,
            "workflow_id": self.workflow_id,
            "id": self.id,
            "description": self.description,
            "cron": self.cron,
            "timezone": self.timezone,
            "service": self.service,
            "missed": self.missed,
            "grace_seconds": self.grace,
            "input": self.input,
            "items": None if self.items is None else self.items.describe(),
            "callback_url": self.callback_url,
        }


def iso(t: float | None) -> str | None:
    """UTC ISO 8601 with a ``Z`` (whole seconds)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_schedules(
    add: Add, raw: Any, workflow_id: str, base_dir: Path
) -> tuple[ScheduleSpec, ...]:
    """The template's ``schedules`` list, every problem reported at its path through ``add``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        add(("schedules",), "schedules is a list of schedules, each a mapping with id and cron")
        return ()
    specs: list[ScheduleSpec] = []
    seen: set[str] = set()
    for index, body in enumerate(raw):
        where: tuple[str | int, ...] = ("schedules", index)
        if not isinstance(body, dict):
            add(where, "a schedule is a mapping: id, cron, timezone, service, input or items")
            continue
        spec = _check_one(add, where, body, workflow_id, base_dir)
        if spec is None:
            continue
        if spec.id in seen:
            add((*where, "id"), f"schedule id {spec.id!r} is used twice in this template")
            continue
        seen.add(spec.id)
        specs.append(spec)
    return tuple(specs)


def _check_one(
    add: Add, where: tuple[str | int, ...], body: dict[str, Any], workflow_id: str, base: Path
) -> ScheduleSpec | None:
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        ok = False
        add((*where, key), message)

    for key in body:
        if key not in SCHEDULE_KEYS:
            bad(key, f"unknown key (allowed: {', '.join(sorted(SCHEDULE_KEYS))})")
    sid = body.get("id")
    if not isinstance(sid, str) or not SCHEDULE_ID.match(sid):
        bad("id", "a schedule's id is a lowercase slug like 'weekly-monday'")
    cron = body.get("cron")
    if not isinstance(cron, str) or len(cron.split()) != 5:
        bad("cron", "cron is five fields: minute hour day-of-month month day-of-week")
    else:
        try:
            CronSim(cron, datetime(2026, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            bad("cron", f"not a cron expression: {cron!r} ({exc})")
    tz_name = body.get("timezone", "UTC")
    zone = ZoneInfo("UTC")
    try:
        if not isinstance(tz_name, str):
            raise ValueError(tz_name)
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        bad("timezone", f"not an IANA time zone: {tz_name!r} (e.g. Europe/Berlin, UTC)")
    service = body.get("service")
    if not isinstance(service, str) or not service.strip():
        bad("service", "service names the service the schedule fires as (its budget, limits)")
    missed = body.get("missed", "skip")
    if missed not in MISSED:
        bad("missed", f"missed must be one of {', '.join(MISSED)} (default skip)")
    grace = _grace(bad, body.get("grace"))
    fixed, items = body.get("input"), body.get("items")
    if (fixed is None) == (items is None):
        add(where, "a schedule has exactly one of input (a fixed trigger) and items")
        ok = False
    if fixed is not None and not isinstance(fixed, dict):
        bad("input", "input is the trigger's fields, a mapping")
    source = None if items is None else _items(bad, where, items, base)
    callback = body.get("callback_url")
    if callback is not None:
        from genhook.contract.envelope import check_callback_url

        try:
            check_callback_url(callback)
        except GenhookError as exc:
            bad("callback_url", exc.description)
    description = body.get("description", "")
    if not isinstance(description, str):
        bad("description", "description must be text")
    if not ok:
        return None
    return ScheduleSpec(
        workflow_id=workflow_id,
        id=str(sid),
        cron=str(cron),
        timezone=str(tz_name),
        service=str(service).strip(),
        input=None if fixed is None else dict(fixed),
        items=source,
        missed=str(missed),
        grace=grace,
        callback_url=callback,
        description=str(description).strip(),
        zone=zone,
    )


def _grace(bad: Callable[[str, str], None], raw: Any) -> float:
    if raw is None:
        return DEFAULT_GRACE
    try:
        if isinstance(raw, bool):
            raise ValueError(f"not a duration: {raw!r}")
        seconds = float(raw) if isinstance(raw, int | float) else parse_duration(str(raw))
    except ValueError as exc:
        bad("grace", str(exc))
        return DEFAULT_GRACE
    if not 1 <= seconds <= MAX_GRACE:
        bad("grace", "grace must be at least 1s (a pass is never exactly on time) and at most 24h")
    return seconds


def _items(
    bad: Callable[[str, str], None], where: tuple[str | int, ...], raw: Any, base: Path
) -> ItemsSource | None:
    if not isinstance(raw, dict):
        bad("items", "items is a mapping: file (or url), and format")
        return None
    problems = False
    for key in raw:
        if key not in ITEMS_KEYS:
            bad("items", f"unknown key {key!r} in items (allowed: file, url, format)")
            problems = True
    file, url = raw.get("file"), raw.get("url")
    if (file is None) == (url is None):
        bad("items", "items has exactly one of file and url")
        return None
    if file is not None:
        pure = PurePosixPath(str(file))
        if not isinstance(file, str) or not file or pure.is_absolute() or ".." in pure.parts:
            bad("items", "items.file is a path relative to the workflows dir, inside it")
            return None
    if url is not None:
        from genhook.contract.envelope import check_callback_url

        try:
            check_callback_url(url)
        except GenhookError as exc:
            bad("items", f"items.url: {exc.description.replace('callback_url', 'items.url')}")
            return None
    fmt = raw.get("format")
    if fmt is None:
        name = str(file if file is not None else url).split("?", 1)[0].lower()
        fmt = (
            "jsonl"
            if name.endswith((".jsonl", ".ndjson"))
            else "csv"
            if name.endswith(".csv")
            else None
        )
        if fmt is None:
            bad("items", "items.format is csv or jsonl (it cannot be told from the name)")
            return None
    elif fmt not in FORMATS:
        bad("items", f"items.format must be one of {', '.join(FORMATS)}")
        return None
    if problems:
        return None
    return ItemsSource(format=str(fmt), file=file, url=url, base_dir=str(base))


def check_fixed_inputs(add: Add, workflow: Any) -> None:
    """Each fixed ``input`` must be a valid trigger of ``workflow`` (checked as the API checks
    one); the problem is reported at the offending field's line."""
    from genhook.workflow.inputs import check_trigger

    for index, spec in enumerate(workflow.schedules):
        if spec.input is None:
            continue
        body = dict(spec.input)
        if spec.callback_url is not None:
            body.setdefault("callback_url", spec.callback_url)
        try:
            check_trigger(workflow, body)
        except GenhookError as exc:
            path: tuple[str | int, ...] = ("schedules", index, "input")
            if exc.field and exc.field in spec.input:
                path = (*path, exc.field)
            add(path, f"not a valid trigger of {workflow.id}: {exc.code}: {exc.description}")
