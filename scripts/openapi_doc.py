"""Render genhook's HTTP API reference (docs/api.md) from the app's own OpenAPI document.

    python scripts/openapi_doc.py docs/api.md     # write the file
    python scripts/openapi_doc.py --check docs/api.md   # exit 1 if the file is not current
    python scripts/openapi_doc.py                 # print to standard output

The app is built in process, exactly as ``genhook serve`` builds it (``Runtime.build`` on a
throw-away data directory, then ``create_app``), and ``app.openapi()`` is rendered route by route
in the order the app registers them: method, path, summary, description, parameters, request body
and responses. The hand-written part (authentication, the error shape and status codes, examples
taken from a running server) follows, from ``MANUAL`` below.

The output depends only on the code: JSON is written with sorted keys, nothing carries a time or
a machine path, so a test can compare the committed docs/api.md with a fresh rendering.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from genhook.api.app import create_app
from genhook.config import Settings
from genhook.errors import ERROR_SPECS, ErrorCode
from genhook.paths import shipped_dir
from genhook.runtime import Runtime

#: What every ``asset_url`` and ``status_url`` in the examples starts with.
EXAMPLE_BASE = "http://127.0.0.1:8080"
JOB = "job_01m8j11hxhtd3wmn5za6yabae0"
BAD_JOB = "job_01m8j11w1e1ytsycgcmnash6vh"
RETRIED_JOB = "job_01m8j13g92bq6pjz5ax9177232"
RETRIED_MSG = "msg_01m8j13njs7zz9ae2dexat8wea"
FILE = "sku-123-linen-shirt-instagram-feed-1080x1080.jpg"
PROMPT = (
    "Product photograph of Linen Shirt, natural lifestyle scene, warm home interior, candid, "
    "golden hour lighting, 35mm lens, f/2.8, shallow depth of field"
)
NEGATIVE = "blurry, low resolution, watermark, deformed product, studio backdrop, oversaturated"
STYLES = "studio_white, lifestyle, minimal, luxury, vibrant, editorial, tech, corporate, nature"
CALLBACK = "https://shop.example.com/hooks/genhook"


def openapi_document() -> dict[str, Any]:
    """``app.openapi()`` of an app built the way ``genhook serve`` builds it."""
    with tempfile.TemporaryDirectory(prefix="genhook-openapi-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            workflows_dir=shipped_dir("workflows"),  # the shipped ones, whatever the environment
            host="127.0.0.1",
            port=8080,
        ).resolved()
        runtime = Runtime.build(settings)
        try:
            return create_app(runtime).openapi()
        finally:
            runtime.store.close()


# -- rendering the generated part ----------------------------------------------------------------


def _text(description: str) -> str:
    """A docstring as Markdown: reST ``literals`` become `code`."""
    return re.sub(r"``([^`]+)``", r"`\1`", description.strip())


def _cell(text: str) -> str:
    """Text that is safe inside one Markdown table cell."""
    return " ".join(_text(text).split()).replace("|", "\\|")


def _schema_summary(schema: dict[str, Any]) -> str:
    """A short, human description of a JSON Schema for a table cell."""
    if not schema:
        return "any JSON"
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_summary(schema.get('items', {}))}"
    limits = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("maximum", "max"),
    ):
        if key in schema:
            limits.append(f"{label} {schema[key]}")
    if "enum" in schema:
        limits.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    return f"{kind}" + (f" ({', '.join(limits)})" if limits else "")


def _json_block(data: Any) -> list[str]:
    # Examples keep the API's own field order (deterministic: it is the order in this file).
    return ["```json", json.dumps(data, indent=2, ensure_ascii=False), "```"]


def render_operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    """One route: heading, summary, description, parameters, request body, responses."""
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}.**", ""]
    if op.get("description"):
        lines += [_text(op["description"]), ""]
    params = op.get("parameters", [])
    if params:
        lines += [
            "Parameters:",
            "",
            "| name | in | required | schema | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} "
                f"| {_schema_summary(p.get('schema', {}))} | {_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        required = "required" if body.get("required") else "optional"
        for media, content in sorted(body.get("content", {}).items()):
            schema = content.get("schema", {})
            lines.append(f"Request body ({required}), `{media}`: {_schema_summary(schema)}.")
            if schema.get("description"):
                lines.append(_cell(schema["description"]))
            lines.append("")
    lines += ["Responses (as the OpenAPI document declares them):", ""]
    lines += ["| status | description | content |", "| --- | --- | --- |"]
    for status, response in sorted(op.get("responses", {}).items()):
        content = response.get("content", {})
        kinds = (
            ", ".join(
                f"`{media}` {_schema_summary(c.get('schema', {}))}"
                for media, c in sorted(content.items())
            )
            or "-"
        )
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {kinds} |")
    lines.append("")
    return lines


def render_generated(doc: dict[str, Any]) -> list[str]:
    """The route-by-route reference from the OpenAPI document."""
    info = doc.get("info", {})
    lines = [
        "## Routes",
        "",
        f"Generated from the OpenAPI {doc.get('openapi', '')} document of "
        f"{info.get('title', 'genhook')} {info.get('version', '')} (served at `/openapi.json`, "
        "browsable at `/docs`).",
        "",
        _text(info.get("description", "")),
        "",
        "| method | path | summary |",
        "| --- | --- | --- |",
    ]
    operations = [
        (path, method, op)
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if isinstance(op, dict)
    ]
    for path, method, op in operations:
        lines.append(f"| {method.upper()} | `{path}` | {_cell(op.get('summary', ''))} |")
    lines.append("")
    for path, method, op in operations:
        lines += render_operation(path, method, op)
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        lines += [
            "### Components",
            "",
            "Schemas the document refers to: " + ", ".join(f"`{n}`" for n in sorted(schemas)) + ".",
            "Each describes an answer exactly as it is sent (required fields, null where a field",
            "may be null; fields that only some answers carry are optional), and every error,",
            "from any route, has the `ErrorBody` shape in [Errors](#errors) below;",
            "`/openapi.json` has them in full (the fuzz test checks real answers against them).",
            "",
        ]
        if "HTTPValidationError" in schemas:
            lines[-1:-1] = [
                'FastAPI declares `HTTPValidationError` (`{"detail": [...]}`) for 422 on some',
                "routes; genhook never answers with it.",
            ]
    return lines


# -- the hand-written part -----------------------------------------------------------------------


def _status_rows() -> list[str]:
    from genhook.api.errors import STATUS

    by_status: dict[int, list[ErrorCode]] = {}
    for code, status in STATUS.items():
        by_status.setdefault(status, []).append(code)
    invalid = [c for c, spec in ERROR_SPECS.items() if spec.invalid_input and c not in STATUS]
    by_status.setdefault(422, []).extend(invalid)
    notes = {
        401: "No `Authorization: Bearer <api_key>`, or an unknown key. Also sends "
        "`WWW-Authenticate: Bearer`.",
        403: "The job or delivery belongs to another service.",
        404: "No such route, job, delivery or asset; or no workflow with this id (a trigger to "
        "an unknown workflow is not recorded and nothing is sent to its `callback_url`).",
        405: "The route exists but not with this method.",
        409: "The `Idempotency-Key` was used within 24 h with another body; or the job to "
        "cancel has already ended.",
        410: "The job ended longer ago than its service's retention and was purged "
        "(`GET /v1/jobs/{job_id}`), or the asset's job was ([retention](retention.md)).",
        413: "The body is larger than `GENHOOK_MAX_BODY_BYTES` (256 KiB by default).",
        415: "The body declares a `Content-Type` that is not JSON (`application/json` or "
        "`application/*+json`) on `POST .../runs` or `.../dry-run`; a body sent without "
        "`Content-Type` is read as JSON.",
        416: "`GET /assets/...` with a `Range` that starts past the end of the file; "
        "`Content-Range: bytes */SIZE` says the size.",
        429: "`too_many_streams`: the service already has `GENHOOK_MAX_STREAMS_PER_SERVICE` "
        "event streams open (20 by default); `Retry-After` says when to try again.",
        422: "Invalid input. On `POST .../runs` the answer also carries `job_id` (the trigger is "
        "recorded as a failed job; `null` for a body that is not strict JSON, which is not "
        "recorded); a malformed query parameter is `invalid_value`.",
        500: "An unexpected error inside genhook (logged on the server; no traceback is sent).",
        503: "`store_unavailable`: the database does not answer or cannot write now (down, full, "
        "read-only); nothing was changed or lost, and every route may answer it. `server_busy`: "
        "`GENHOOK_MAX_CONNECTIONS` connections are open. Try again after `Retry-After` (seconds).",
    }
    rows = ["| status | `error_code` | when |", "| --- | --- | --- |"]
    for status in sorted(by_status):
        codes = ", ".join(f"`{c.value}`" for c in by_status[status])
        rows.append(f"| {status} | {codes} | {notes.get(status, '')} |")
    rows += [
        "",
        '`GET /healthz` answers `200 {"status": "ok", "database": true, "writable": true}` when',
        "the database answers and can write (a probe row written in a transaction that is rolled",
        "back, and no write of the store's failed in the last 15 s); otherwise `503` with",
        '`"status": "unavailable"`, which of `database` and `writable` is false, and `reason`',
        "(what the database said).",
    ]
    return rows


def _sse(event_id: int, status: str, data: dict[str, Any]) -> list[str]:
    return [
        f"id: {event_id}",
        f"event: {status}",
        "data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        "",
    ]


def _examples() -> dict[str, Any]:
    output = {
        "asset_url": f"{EXAMPLE_BASE}/assets/{JOB}/{FILE}",
        "asset_type": "image",
        "format": "jpeg",
        "width": 1080,
        "height": 1080,
        "platform_code": "instagram_feed",
        "bytes": 68365,
        "sha256": "129e269f9a7eaf3a982bc6f9d006b1d6e1c5f3f2a9874376657a003344242297",
        "alt_text": "Linen Shirt in a lifestyle product shot",
        "filename_suggestion": FILE,
        "caption": "Linen Shirt",
    }
    result = {
        "schema_version": "1",
        "event": "job.completed",
        "job_id": JOB,
        "workflow_id": "product-image",
        "status": "success",
        "external_id": "SKU-123",
        "outputs": [output],
        "seo": {
            "alt_text": output["alt_text"],
            "filename_suggestion": FILE,
            "caption": "Linen Shirt",
        },
        "metadata": {
            "prompt_used": PROMPT,
            "negative_prompt": NEGATIVE,
            "model_id": "procedural/procedural-v1",
            "credit_cost": 0.0,
            "processing_time_seconds": 0.683,
            "attempts": 1,
            "seed": 885260827,
            "generations": 1,
        },
        "quality_warning": None,
        "error": None,
        "timestamp": "2026-11-28T21:30:09.902151Z",
    }
    accepted = {
        "job_id": JOB,
        "status": "queued",
        "workflow_id": "product-image",
        "status_url": f"{EXAMPLE_BASE}/v1/jobs/{JOB}",
        "created_at": "2026-11-28T21:30:09.201Z",
    }
    job = {
        **accepted,
        "status": "succeeded",
        "workflow_version": 1,
        "external_id": "SKU-123",
        "callback_url": CALLBACK,
        "updated_at": "2026-11-28T21:30:09.902Z",
        "finished_at": "2026-11-28T21:30:09.902Z",
        "next_attempt_at": None,
        "cancel_requested": False,
        "attempts": [
            {
                "number": 1,
                "worker": "web-1:21521:j1zf8jg2",
                "started_at": "2026-11-28T21:30:09.207Z",
                "ended_at": "2026-11-28T21:30:09.902Z",
                "outcome": "succeeded",
                "error": None,
            }
        ],
        "result": result,
    }
    invalid = {
        "error_code": "unknown_style",
        "error_description": f"'target_style' = 'baroque' is not one of: {STYLES}",
        "field": "target_style",
        "job_id": BAD_JOB,
    }
    attempt_log = [
        (1, "2026-11-28T21:31:18.520Z", 500, "HTTP 500", 11.5),
        (2, "2026-11-28T21:31:19.539Z", 429, "HTTP 429", 3.6),
        (3, "2026-11-28T21:31:22.566Z", 302, "redirect not followed (HTTP 302)", 8.4),
        (4, "2026-11-28T21:31:23.578Z", 204, None, 3.0),
    ]
    deliveries = {
        "deliveries": [
            {
                "delivery_id": RETRIED_MSG,
                "webhook_id": RETRIED_MSG,
                "job_id": RETRIED_JOB,
                "url": CALLBACK,
                "status": "delivered",
                "attempts": 4,
                "next_attempt_at": None,
                "created_at": "2026-11-28T21:31:18.486Z",
                "delivered_at": "2026-11-28T21:31:23.578Z",
                "attempt_log": [
                    {"number": n, "at": at, "status_code": code, "error": err, "duration_ms": ms}
                    for n, at, code, err, ms in attempt_log
                ],
            }
        ]
    }
    sse = [": genhook job events", ""]
    sse += _sse(1, "queued", {"job_id": JOB, "status": "queued", "at": accepted["created_at"]})
    sse += _sse(
        2,
        "running",
        {
            "job_id": JOB,
            "status": "running",
            "at": "2026-11-28T21:30:09.207Z",
            "detail": {"attempt": 1},
        },
    )
    sse += _sse(
        3,
        "succeeded",
        {
            "job_id": JOB,
            "status": "succeeded",
            "at": "2026-11-28T21:30:09.902Z",
            "result": {"schema_version": "1", "event": "job.completed", "job_id": JOB, "…": "…"},
        },
    )
    retrying = _sse(
        3,
        "retrying",
        {
            "job_id": RETRIED_JOB,
            "status": "retrying",
            "at": "2026-11-28T21:31:13.242Z",
            "detail": {
                "error": {
                    "error_code": "backend_rate_limited",
                    "error_description": "openai rate limit (HTTP 429, rate_limit: slow down)",
                    "field": None,
                },
                "retry_at": 1795901477.242043,
            },
        },
    )
    retrying += _sse(
        4,
        "running",
        {
            "job_id": RETRIED_JOB,
            "status": "running",
            "at": "2026-11-28T21:31:17.263Z",
            "detail": {"attempt": 2},
        },
    )
    return {
        "accepted": accepted,
        "job": job,
        "invalid": invalid,
        "deliveries": deliveries,
        "sse": "\n".join(sse).rstrip("\n"),
        "retrying": "\n".join(retrying).rstrip("\n"),
    }


MANUAL = """\
## Authentication

Every `/v1` route takes `Authorization: Bearer <api_key>`, the key of one requesting service
(`genhook services create NAME` prints it once; `genhook serve --dev` keeps a development one in
`$GENHOOK_DATA_DIR/dev-service.json`). A service sees only its own jobs and deliveries: another
service's id answers 403, an unknown id 404. Open without a key: `GET
/v1/schemas/completion-v1.json` (a schema is no secret; receivers validate callbacks against it),
`GET /healthz`, `GET /openapi.json`, `GET /docs` and `GET /assets/...` (asset URLs hold the
job's random id, so they are unguessable; anyone holding an `asset_url` can fetch it).

Requests and answers are JSON (`application/json`), except the event stream
(`text/event-stream`), the asset bytes (their own type, e.g. `image/jpeg`) and the completion
schema (`application/schema+json`). Times are RFC 3339 UTC with milliseconds and a `Z`.

## Errors

Every error, from any route, is one JSON object (never an HTML page or a traceback):

```json
{"error_code": "not_found", "error_description": "no such job", "field": null}
```

`error_code` is from the closed list in [error-codes.md](error-codes.md); `field` names the
trigger field at fault exactly as sent, or is null. The 422 answer to a trigger adds `job_id`.

@@status_rows@@

## Examples

All taken from a running server (`genhook serve --dev`); ids, times and hashes will differ.

### Trigger: `POST /v1/workflows/product-image/runs`

```sh
curl -s -X POST http://127.0.0.1:8080/v1/workflows/product-image/runs \\
  -H "Authorization: Bearer $GENHOOK_KEY" -H "Content-Type: application/json" \\
  -H "Idempotency-Key: product-SKU-123-created" \\
  -d '{"product_id": "SKU-123", "product_name": "Linen Shirt", "target_style": "lifestyle",
       "target_platform": "instagram_feed", "callback_url": "@@callback@@"}'
```

`202 Accepted` (the job row is committed before this answer is sent):

@@accepted@@

The same `Idempotency-Key` with the same body (and workflow) within 24 h answers `200` with the
same `job_id` and the job's current `status`. "The same body" means the same JSON value: spacing
and key order do not count (a client that re-serialises its retry still gets its job, by
design); any other value, `409 idempotency_conflict`. Keys are per service, 1 to 255 characters.

### Invalid trigger: `422`

`"target_style": "baroque"` (no such style):

@@invalid@@

The trigger is recorded as a `failed` job under that `job_id` (`GET /v1/jobs/{job_id}` shows it,
with the failed completion payload under `result`), and when its `callback_url` is itself valid
the same failed payload (`"event": "job.failed"`, `"status": "failed"`, `"outputs": []`,
`"error"` as above, `"attempts": 0`) is delivered there. It is never retried. `POST .../dry-run`
answers the same 422 without `job_id`: nothing is recorded or sent.

### Job: `GET /v1/jobs/{job_id}`

@@job@@

`status` is `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`. `attempts`
lists every claim of the job by a worker with its `outcome` (`succeeded`, `failed`,
`cancelled`, `retrying`, `lost`) and error; `next_attempt_at` is set while `retrying`;
`result` is null until the job ends, then the completion payload exactly as delivered to
`callback_url` (see [payload.md](payload.md)).

`GET /v1/jobs?external_id=SKU-123` answers `{"jobs": [...], "next_cursor"}`, each in this
shape, newest first, 100 a page. The job also shows `retry_of` (the job it is a retry of, or
null), `retried_by` (the jobs made by retrying it, oldest first) and `batch_id` (the batch
that made it, or null).

### Listing: `GET /v1/jobs`

```sh
curl -sG http://127.0.0.1:8080/v1/jobs -H "Authorization: Bearer $GENHOOK_KEY" \\
  -d status=failed,cancelled -d created_after=2026-11-28T00:00:00Z -d limit=100
```

`{"jobs": [...], "next_cursor": "c1.WzE3..."}`: the calling service's jobs, newest first (by
creation, then id), each in the shape above. Send `next_cursor` back as `cursor`, with the same
filters, until it is `null`. The cursor is a position, not an offset: jobs accepted meanwhile
are newer than it and never shift a page, so a walk lists every job that existed when it began
once; a page costs the same at any depth (see [benchmarks](benchmarks.md)). Filters, combined
with AND: `status` (one, or several separated by commas), `workflow_id`, `external_id`,
`created_after` and `created_before` (ISO 8601 with an offset; `created_after <= created_at <
created_before`); `limit` 1 to 500 (default 50). A bad filter is `422 invalid_value` with
`field` naming it; a cursor that does not decode, or that was made for other filters, `422
invalid_cursor` (field `cursor`): start again without one.

### Retry: `POST /v1/jobs/{job_id}/retry`

`202` with the trigger's answer and `retry_of`: `{"job_id", "status": "queued", "workflow_id",
"status_url", "created_at", "retry_of"}`. The new job has the ended job's input, workflow
version, external id, callback URL and envelope (`callback_events`, `client_metadata`,
`priority`; not `deadline`, which was about the first job), and goes through the service's flow
control like a trigger: it may wait (`hold_reason`), be refused at the queue limit (`429
queue_full`), and its budget and backend breakers apply when it starts; a deduplication key does
not return the old job. `Idempotency-Key` works as for a trigger (the same key again: `200`, the
same retry). `409 not_retryable` while the job has not ended (or for a trigger refused as
invalid input, which would be refused again), `409 workflow_changed` when the installed
workflow's version is no longer the job's; another service's job `403`, an unknown one `404`.

### Cancel: `POST /v1/jobs/{job_id}/cancel`

`202` with `{"job_id", "status", "cancel_requested": true}`: `status` is `cancelled` for a job
that was `queued` or `retrying` (it ended at once), `running` for one that will stop before its
next step. A job that has already ended: `409 not_cancellable`.

### Event stream: `GET /v1/jobs/{job_id}/events`

```sh
curl -sN http://127.0.0.1:8080/v1/jobs/$JOB_ID/events -H "Authorization: Bearer $GENHOOK_KEY"
```

`text/event-stream`: a comment line first, then one event per state change, in order. `id` is
the event's number (send it back as `Last-Event-ID` to resume after it), `event` the new status,
`data` one line of JSON. The terminal event (`succeeded`, `failed` or `cancelled`) carries the
completion payload under `result`, and the server then closes the stream. While nothing happens,
a `: keep-alive` comment comes every `GENHOOK_POLL_SECONDS` (1 s). A service may hold
`GENHOOK_MAX_STREAMS_PER_SERVICE` streams at once (20 by default); one more answers
`429 too_many_streams` with `Retry-After` (close a stream, or poll `GET /v1/jobs/{job_id}`).

```text
@@sse@@
```

A retry shows as a `retrying` event whose `detail` has the error and `retry_at` (in Unix seconds,
unlike every other time in the API), followed by a `running` event for the next attempt (here the
backend's `Retry-After: 4` stretched a 1 s wait to 4 s):

```text
@@retrying@@
```

### Assets: `GET /assets/{job_id}/{filename}`

The bytes behind an `asset_url`, with their `Content-Type`, `Content-Length`, `Accept-Ranges:
bytes`, `Cache-Control: public, max-age=31536000, immutable` (the bytes under a URL never change)
and an `ETag` that is the file's SHA-256 in quotes, the `sha256` of the payload's output:

```sh
curl -sI http://127.0.0.1:8080/assets/$JOB_ID/@@file@@
curl -s -H "Range: bytes=0-1023" -o head.jpg http://127.0.0.1:8080/assets/$JOB_ID/@@file@@
```

`HEAD` answers the headers alone. `Range: bytes=...` answers `206` with `Content-Range` (several
ranges: `multipart/byteranges`); a range that starts past the end, `416 range_not_satisfiable`
with `Content-Range: bytes */SIZE`; a `Range` in another unit or malformed is ignored (`200`, the
whole file), as RFC 9110 asks. `If-None-Match` with the `ETag` (or `*`) answers `304` with no
body; `If-Range` with the `ETag` keeps a range request conditional.

### Deliveries: `GET /v1/deliveries?job_id=...`

One delivery (one message, one `webhook-id`) per ended job that has a `callback_url`, with every
attempt. `status` is `pending` (waiting for `next_attempt_at`), `sending`, `delivered` or
`failed` (gave up, or the receiver answered 410). This one met a 500, a 429 with
`Retry-After: 3` (the next attempt came 3 s later), and a redirect, before a 204 (from a server run
with `GENHOOK_DELIVERY_SCHEDULE=1s,1s,1s,1s`):

@@deliveries@@

`POST /v1/deliveries/{delivery_id}/replay` answers `202 {"delivery_id", "status": "pending",
"job_id"}` and sends the same message (same `webhook-id`, same body, a fresh timestamp and
signature) at once. See [webhooks.md](webhooks.md).
"""


def render_manual() -> list[str]:
    """The hand-written part, with its examples filled in."""
    ex = _examples()

    def block(name: str) -> str:
        return "\n".join(_json_block(ex[name]))

    values = {
        "status_rows": "\n".join(_status_rows()),
        "callback": CALLBACK,
        "file": FILE,
        "accepted": block("accepted"),
        "invalid": block("invalid"),
        "job": block("job"),
        "deliveries": block("deliveries"),
        "sse": ex["sse"],
        "retrying": ex["retrying"],
    }
    text = MANUAL
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    return text.rstrip("\n").split("\n")


def render(doc: dict[str, Any]) -> str:
    """The whole of docs/api.md."""
    lines = [
        "# HTTP API reference",
        "",
        "<!-- Generated by scripts/openapi_doc.py from the app's OpenAPI document; do not edit.",
        "     Regenerate: .venv/bin/python scripts/openapi_doc.py docs/api.md -->",
        "",
        "The routes below are rendered from the OpenAPI document the server itself publishes;",
        "[Authentication](#authentication), [Errors](#errors) and [Examples](#examples) after",
        "them say what the document does not: the error shape, the status codes and what real",
        "answers look like. Webhooks: [webhooks.md](webhooks.md); job states and retries:",
        "[retries.md](retries.md); the payload: [payload.md](payload.md).",
        "",
    ]
    lines += render_generated(doc)
    lines += render_manual()
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    text = render(openapi_document())
    if not paths:
        sys.stdout.write(text)
        return 0
    target = Path(paths[0])
    if check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"{target} is not current: run python scripts/openapi_doc.py {target}")
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
