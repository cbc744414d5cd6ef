"""``GET /metrics``: Prometheus text of every genhook process and of the store.

Open, like ``/healthz``: no key is asked (a scraper is configured with a URL), and any
``Authorization`` header is ignored. It shows service names and volumes, never a key, a secret,
an input or a URL; keep it to the operator's network (docs/operations.md, "Metrics").
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from genhook import metrics
from genhook.api.auth import runtime_of

router = APIRouter()


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}},
            "description": "Prometheus text.",
        }
    },
)
async def metrics_route(request: Request) -> Response:
    """Every series in the Prometheus text format: the counters and histograms of the API and
    of its worker processes, and the store's gauges read now. No key needed."""
    body = await run_in_threadpool(metrics.render, runtime_of(request))
    return Response(body, media_type=metrics.CONTENT_TYPE)
