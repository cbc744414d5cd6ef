"""``genhook submit WORKFLOW --from FILE``: a CSV or JSONL catalogue sent to a running service.

Every row becomes one trigger, sent in batches (``POST /v1/workflows/{id}/batches``, ``--chunk``
rows a request). CSV values are strings: each is turned into the type the workflow's
``input_schema`` gives its column (``GET /v1/workflows/{id}``); an empty cell is a field not
given. A value that does not convert is sent as it is, so that the service refuses the row and
names the field.

Resuming: each row's idempotency key is ``submit-`` and the SHA-256 of the workflow id and the
row's trigger (canonical JSON), so the same row sent again within the service's 24 h
idempotency window answers the job it made the first time instead of making another. After an
interruption, the same command sends the file again; the rows the service had accepted come
back as already accepted, and only the others make jobs. Two identical rows are one job.

Exit status: 0 when every row is accepted (now or before), 1 when some row was refused (the
summary names each: row, field, code), 2 when nothing could be sent (no key, the file or the
workflow cannot be read, the service does not answer).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from genhook.cli.base import EXIT_FAILED, EXIT_INVALID, EXIT_OK, cli

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_CHUNK = 500
MAX_TRIES = 8
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_JSON_ENVELOPE = {"client_metadata", "callback_events"}


def row_key(workflow_id: str, trigger: dict[str, Any]) -> str:
    """A row's idempotency key: ``submit-`` + sha256 of the workflow id and its trigger."""
    canonical = json.dumps([workflow_id, trigger], sort_keys=True, separators=(",", ":"))
    return "submit-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    return [k for k in kinds if k != "null"]


def coerce(value: str, schema: dict[str, Any]) -> Any:
    """A CSV cell as the JSON type its property declares (the text itself if it does not
    convert: the service then names the field)."""
    for kind in _types(schema):
        converted = _convert(value, kind, schema)
        if converted is not _NOT:
            return converted
    return value


_NOT = object()


def _convert(value: str, kind: str, schema: dict[str, Any]) -> Any:
    """``value`` as a ``kind``, or ``_NOT``. An array cell is JSON, or comma-separated items."""
    text = value.strip()
    try:
        if kind == "string":
            return value
        if kind == "integer":
            return int(text)
        if kind == "number":
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        if kind == "boolean":
            lowered = text.lower()
            return True if lowered in _TRUE else False if lowered in _FALSE else _NOT
        if kind == "object":
            parsed = json.loads(text)
            return parsed if isinstance(parsed, dict) else _NOT
        if kind == "array":
            if text.startswith("["):
                parsed = json.loads(text)
                return parsed if isinstance(parsed, list) else _NOT
            items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            return [coerce(p.strip(), items or {}) for p in text.split(",") if p.strip()]
    except ValueError:
        return _NOT
    return _NOT


def csv_trigger(record: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """A CSV record as a trigger: empty cells left out, declared columns typed, the envelope's
    JSON columns (``client_metadata``, ``callback_events``) parsed."""
    trigger: dict[str, Any] = {}
    for name, value in record.items():
        if name is None or value is None or value == "":
            continue  # a cell past the header's columns, or an empty one: not given
        if name in properties:
            trigger[name] = coerce(value, properties[name])
        elif name in _JSON_ENVELOPE:
            try:
                trigger[name] = json.loads(value)
            except ValueError:
                trigger[name] = [p.strip() for p in value.split(",")] if "," in value else value
        else:
            trigger[name] = value
    return trigger


@dataclass
class Row:
    number: int  # 1-based: the n-th record (CSV: after the header; JSONL: the n-th line)
    trigger: Any
    problem: dict[str, Any] | None = None  # refused before sending (a line that is no JSON)


def read_rows(path: Path, kind: str, properties: dict[str, Any]) -> Iterator[Row]:
    """The file's records as triggers (``kind`` csv or jsonl)."""
    if kind == "csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for number, record in enumerate(csv.DictReader(handle), 1):
                yield Row(number, csv_trigger(record, properties))
        return
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield Row(number, json.loads(line))
            except ValueError as exc:
                yield Row(
                    number,
                    None,
                    {"error_code": "invalid_json", "error_description": str(exc), "field": None},
                )


@dataclass
class Tally:
    """What became of the rows."""

    accepted: int = 0  # new jobs
    already: int = 0  # accepted by an earlier run (or an identical row): no new job
    deduplicated: int = 0  # the workflow's dedup key matched an earlier job
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.accepted + self.already + self.deduplicated + len(self.refused)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.total,
            "accepted": self.accepted,
            "already_accepted": self.already,
            "deduplicated": self.deduplicated,
            "refused": self.refused,
        }


class Failed(Exception):
    """Nothing more can be sent (exit 2)."""


def _retry_after(response: httpx.Response, tries: int) -> float:
    try:
        return max(0.1, min(60.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return min(30.0, 0.5 * 2.0**tries)


def send_chunk(
    http: httpx.Client, workflow_id: str, rows: list[Row], tally: Tally, seen: dict[str, int]
) -> None:
    """One batch request for ``rows`` (retried on 429, 503 and lost connections: the keys make
    a resend safe), its entries added to ``tally``."""
    items: list[dict[str, Any]] = []
    sent: list[Row] = []
    for row in rows:
        if row.problem is not None:
            tally.refused.append({"row": row.number, **row.problem})
            continue
        if not isinstance(row.trigger, dict):
            tally.refused.append(
                {
                    "row": row.number,
                    "error_code": "invalid_body",
                    "error_description": "the row is not a JSON object",
                    "field": None,
                }
            )
            continue
        key = row_key(workflow_id, row.trigger)
        if key in seen:  # an identical row earlier in the file: the same job
            tally.already += 1
            continue
        seen[key] = row.number
        items.append({**row.trigger, "idempotency_key": key})
        sent.append(row)
    if not items:
        return
    for tries in range(MAX_TRIES):
        try:
            response = http.post(f"/v1/workflows/{workflow_id}/batches", json={"items": items})
        except httpx.TransportError as exc:
            if tries == MAX_TRIES - 1:
                raise Failed(f"the service does not answer: {exc}") from exc
            time.sleep(min(30.0, 0.5 * 2.0**tries))
            continue
        if response.status_code in (429, 502, 503, 504) and tries < MAX_TRIES - 1:
            time.sleep(_retry_after(response, tries))
            continue
        if response.status_code != 202:
            raise Failed(_describe(response))
        break
    for row, entry in zip(sent, response.json()["items"], strict=True):
        if "error" in entry:
            tally.refused.append({"row": row.number, **entry["error"]})
        elif entry.get("replayed"):
            tally.already += 1
        elif entry.get("deduplicated"):
            tally.deduplicated += 1
        else:
            tally.accepted += 1


def _describe(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"HTTP {response.status_code} {body['error_code']}: {body['error_description']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _kind(path: Path, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _summary(tally: Tally, workflow_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"{workflow_id}: {tally.total} rows: {tally.accepted} accepted, "
        f"{tally.already} already accepted, {tally.deduplicated} deduplicated, "
        f"{len(tally.refused)} refused"
    )
    if tally.refused:
        table = Table("row", "field", "error_code", "error_description", title="refused rows")
        for item in tally.refused:
            table.add_row(
                str(item["row"]),
                str(item.get("field") or "-"),
                str(item["error_code"]),
                str(item.get("error_description") or ""),
            )
        console.print(table)


def _count_rows(path: Path, kind: str) -> int | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            if kind == "csv":
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
            return sum(1 for line in handle if line.strip())
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


@cli.command("submit")
@click.argument("workflow")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CSV (header row) or JSONL (one trigger object a line) file.",
)
@click.option(
    "--url",
    envvar="GENHOOK_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The running service's base URL (or GENHOOK_URL).",
)
@click.option("--key", envvar="GENHOOK_API_KEY", help="The service's API key (or GENHOOK_API_KEY).")
@click.option(
    "--format",
    "kind",
    type=click.Choice(["csv", "jsonl"]),
    help="The file's format (default: by its suffix, .csv is CSV, anything else JSONL).",
)
@click.option(
    "--chunk",
    type=click.IntRange(1, 1000),
    default=DEFAULT_CHUNK,
    show_default=True,
    help="Rows per batch request.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def submit(
    workflow: str,
    source: Path,
    url: str,
    key: str | None,
    kind: str | None,
    chunk: int,
    as_json: bool,
) -> None:
    """Send every row of a CSV or JSONL file to a running service as a trigger of WORKFLOW.

    Prints a summary (accepted, already accepted, refused rows with row, field and code); exit
    0 when every row is accepted, 1 when some row was refused, 2 when nothing could be sent.
    Run it again after an interruption: each row's idempotency key is derived from the row, so
    rows accepted before make no second job (within the service's 24 h idempotency window).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if not key:
        click.echo("error: an API key is needed: --key or GENHOOK_API_KEY", err=True)
        sys.exit(EXIT_INVALID)
    kind = _kind(source, kind)
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "genhook-submit"}
    tally = Tally()
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120) as http:
            try:
                found = http.get(f"/v1/workflows/{workflow}")
            except httpx.TransportError as exc:
                raise Failed(f"the service at {url} does not answer: {exc}") from exc
            if found.status_code != 200:
                raise Failed(_describe(found))
            properties = found.json().get("input_schema", {}).get("properties", {})
            seen: dict[str, int] = {}
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[refused]} refused"),
                console=Console(stderr=True),
                disable=as_json,
            )
            with progress:
                task = progress.add_task(
                    f"{workflow} <- {source.name}", total=_count_rows(source, kind), refused=0
                )
                pending: list[Row] = []
                for row in read_rows(source, kind, properties):
                    pending.append(row)
                    if len(pending) >= chunk:
                        send_chunk(http, workflow, pending, tally, seen)
                        progress.update(task, advance=len(pending), refused=len(tally.refused))
                        pending = []
                if pending:
                    send_chunk(http, workflow, pending, tally, seen)
                    progress.update(task, advance=len(pending), refused=len(tally.refused))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        click.echo(f"error: cannot read {source}: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except Failed as exc:
        click.echo(f"error: {exc} ({tally.total} rows done before)", err=True)
        sys.exit(EXIT_INVALID)
    if as_json:
        click.echo(json.dumps(tally.as_dict(), indent=2, ensure_ascii=False))
    else:
        _summary(tally, workflow)
    sys.exit(EXIT_FAILED if tally.refused else EXIT_OK)
