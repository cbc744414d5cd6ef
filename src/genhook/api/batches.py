"""``POST /v1/workflows/{id}/batches`` and ``GET /v1/batches/{id}``: many triggers at once.

Each item is checked exactly as a single trigger is (:func:`genhook.api.triggers.
checked_submission`: input, envelope, callback target, media URLs), and the valid ones are
admitted together in one transaction by the same admission the single triggers' group commit
runs (:meth:`genhook.store.batches.BatchStore.submit_batch`): limits, dedup, idempotency and the
breakers apply to each item as to a single trigger, and an item refused by any of them gets
its own error in the answer while the others are accepted.

Unlike a single invalid trigger, an invalid item is not recorded as a failed job and nothing
is sent to its ``callback_url``: its error is in the answer, at its index.

Idempotency is per item: an item may carry ``idempotency_key`` (1 to 255 characters; taken off
before the item is checked, so a workflow never sees it), which works as a single trigger's
``Idempotency-Key`` header: the same key with the same item within 24 h answers the job first
made for it (``"replayed": true``), another item under that key is ``idempotency_conflict``.
An ``Idempotency-Key`` header on the batch request gives every item without a key of its own
the key ``HEADER:INDEX``, so a retried batch request makes no second job.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from genhook import metrics
from genhook.api.auth import api_store, bearer, owned, runtime_of, service_of
from genhook.api.errors import RESPONSES, ErrorBody, error_doc
from genhook.api.models import BATCH_LINKS, BatchAccepted, BatchView
from genhook.api.triggers import (
    _check_media_type,
    _check_target_async,
    _idempotency_key,
    _request_hash,
    checked_submission,
)
from genhook.api.views import iso
from genhook.contract.envelope import check_callback_url
from genhook.contract.jsonbody import parse_json
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.ids import new_id
from genhook.retention import expired_batch
from genhook.store.admit import Submission

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])

MAX_ITEMS = 1000
"""The most items one batch takes (``batch_too_large`` past it)."""
MAX_BATCH_BYTES = 16 * 1024 * 1024
"""The body limit of a batch request (a single trigger's is ``GENHOOK_MAX_BODY_BYTES``)."""
ITEM_KEY = "idempotency_key"
"""The name in a batch item that carries its idempotency key (not passed to the workflow)."""
_FIELDS = {"items", "callback_url"}

BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_ITEMS,
                            "description": "Triggers, each as the body of POST "
                            "/v1/workflows/{workflow_id}/runs, each optionally with "
                            "`idempotency_key` (1 to 255 characters).",
                            "items": {"type": "object"},
                        },
                        "callback_url": {
                            "type": "string",
                            "description": "Where the batch callback (`batch.completed`, with "
                            "counts) goes once every job the batch created has ended.",
                        },
                    },
                }
            }
        },
    }
}


def _bad(why: str, field: str | None = "items") -> InvalidInput:
    return InvalidInput(ErrorCode.INVALID_BATCH, why, field=field)


def parse_batch(body: Any) -> tuple[list[Any], str | None]:
    """``(items, callback_url)`` of a batch body, or ``InvalidInput`` with a stable code:
    ``invalid_batch``, ``batch_too_large``, ``unknown_field``, ``invalid_callback_url``."""
    if not isinstance(body, dict):
        raise _bad('a batch is a JSON object: {"items": [trigger, ...]}', field=None)
    for name in body:
        if name not in _FIELDS:
            raise InvalidInput(
                ErrorCode.UNKNOWN_FIELD,
                f"a batch takes items and callback_url, not {name!r}",
                field=name,
            )
    items = body.get("items")
    if items is None:
        raise _bad("the batch has no items")
    if not isinstance(items, list):
        raise _bad("items must be an array of triggers")
    if not items:
        raise _bad("items is empty: a batch has 1 to 1,000 triggers")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(
            ErrorCode.BATCH_TOO_LARGE,
            f"the batch has {len(items)} items, over the limit of {MAX_ITEMS}: split it",
            field="items",
        )
    url = body.get("callback_url")
    return items, None if url is None else check_callback_url(url)


def _item_key(item: Any, index: int, header: str | None) -> tuple[Any, str | None]:
    """The item without its ``idempotency_key``, and its key (the header's ``KEY:INDEX`` when
    it has none of its own)."""
    if not isinstance(item, dict) or ITEM_KEY not in item:
        return item, None if header is None else f"{header}:{index}"
    key = item[ITEM_KEY]
    if not isinstance(key, str) or not 1 <= len(key) <= 255:
        raise _bad("idempotency_key must be a string of 1 to 255 characters", field=ITEM_KEY)
    return {k: v for k, v in item.items() if k != ITEM_KEY}, key


@router.post(
    "/v1/workflows/{workflow_id}/batches",
    status_code=202,
    openapi_extra=BATCH_BODY,
    summary="Trigger a workflow for many items",
    responses={
        202: {
            "model": BatchAccepted,
            "description": "One entry per item, in order.",
            "links": BATCH_LINKS,
        },
        404: error_doc("`unknown_workflow`: no workflow has this id."),
        413: error_doc("`payload_too_large`: the body is over 16 MiB."),
        415: error_doc("`unsupported_media_type`: the body is not JSON."),
        422: {
            "model": ErrorBody,
            "description": "`invalid_batch`, `batch_too_large`, `unknown_field`, "
            "`invalid_callback_url`: the batch itself is refused (nothing is stored). An "
            "invalid item is no 422: its error is its entry of the 202.",
        },
    },
)
async def create_batch(
    workflow_id: str,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Gives each item without its own idempotency_key the key KEY:INDEX.",
        ),
    ] = None,
) -> JSONResponse:
    """Up to 1,000 triggers in one request, accepted in one transaction: ``202 {"batch_id",
    "items"}`` with one entry per item, in order, ``{"index", "job_id"}`` or ``{"index",
    "error": {"error_code", "error_description", "field"}}``. Limits, budgets and the breakers
    apply to each item as to a single trigger (an item past the queue limit gets its own
    ``queue_full``). With ``callback_url``, one signed ``batch.completed`` callback with the
    batch's counts once every job it created has ended."""
    service = service_of(request)
    _check_media_type(request.headers.get("content-type"))
    header = _idempotency_key(request.headers)
    runtime = runtime_of(request)
    wf = runtime.catalog.workflow(workflow_id)
    items, callback_url = parse_batch(parse_json(await request.body()))
    await _check_target_async(callback_url, runtime)
    prepared: list[Submission | GenhookError] = []
    for index, raw in enumerate(items):
        if index and index % 100 == 0:
            await asyncio.sleep(0)  # a long batch's checks leave the loop to other requests
        try:
            item, key = _item_key(raw, index, header)
            digest = _request_hash(wf.id, item) if key else None
            prepared.append(await checked_submission(runtime, service, wf, item, key, digest))
        except InvalidInput as exc:
            prepared.append(exc)
    batch_id = new_id("bat")
    entries = await run_in_threadpool(
        api_store(runtime).submit_batch,
        batch_id=batch_id,
        service_id=service.id,
        workflow_id=wf.id,
        items=prepared,
        callback_url=callback_url,
        callback_private=runtime.settings.allow_private_callbacks,
    )
    created = 0
    for entry in entries:
        if "error" in entry:
            metrics.trigger_refused(service.id, wf.id, ErrorCode(entry["error"]["error_code"]))
        elif not entry.get("replayed") and not entry.get("deduplicated"):
            created += 1
            metrics.trigger_accepted(service.id, wf.id)
    if created:
        runtime.jobs_signal.notify()
    else:
        runtime.deliveries_signal.notify()  # it ended at once: its callback is due
    return JSONResponse(
        {
            "batch_id": batch_id,
            "workflow_id": wf.id,
            "status_url": f"{runtime.settings.public_url}/v1/batches/{batch_id}",
            "items": entries,
        },
        status_code=202,
    )


@router.get(
    "/v1/batches/{batch_id}",
    summary="Get a batch",
    response_model=None,
    responses={
        200: {"model": BatchView, "description": "The batch."},
        410: error_doc("`batch_expired`: the batch was purged by retention."),
    },
)
def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
    """The batch: ``counts`` by outcome (``refused``, and each job status), ``status`` (``open``
    until every job it created has ended, then ``ended``), its items in order, each with its
    ``job_id`` and the job's ``status``, or its ``error``; and ``callback``, the batch callback's
    delivery once it is queued (``delivery_id``, ``status``, ``attempts``, ``last_status_code``,
    ``delivered_at``)."""
    service = service_of(request)
    store = api_store(runtime_of(request))
    found = store.batch(batch_id)
    if found is None:  # 410 batch_expired when retention purged it
        expired_batch(store, batch_id, lambda tombstone: owned(tombstone, service, "batch"))
    batch = owned(found, service, "batch")
    return {
        "batch_id": batch.id,
        "workflow_id": batch.workflow_id,
        "status": "open" if batch.open else "ended",
        "created_at": iso(batch.created_at),
        "ended_at": iso(batch.ended_at),
        "callback_url": batch.callback_url,
        # the batch callback's delivery once queued (replay: POST /v1/deliveries/{id}/replay)
        "callback": None
        if batch.callback is None
        else {**batch.callback, "delivered_at": iso(batch.callback["delivered_at"])},
        "counts": batch.counts(),
        "items": batch.items,
    }
