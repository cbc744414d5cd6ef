"""The delivery log and manual replay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import JSONResponse

from genhook.api.auth import api_store, bearer, owned, runtime_of, service_of
from genhook.api.errors import RESPONSES, error_doc
from genhook.api.jobs import EXPIRED, owned_job
from genhook.api.models import DeliveryLog, ReplayAnswer
from genhook.api.views import delivery_view
from genhook.errors import ErrorCode, GenhookError
from genhook.status import DeliveryStatus

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])


@router.get(
    "/v1/deliveries",
    summary="The delivery log of a job",
    response_model=None,
    responses={200: {"model": DeliveryLog, "description": "Every delivery."}, **EXPIRED},
)
def list_deliveries(request: Request, job_id: str = Query(min_length=1)) -> dict[str, Any]:
    """Every delivery of the job's completion payload, with every attempt."""
    service = service_of(request)
    runtime = runtime_of(request)
    owned_job(api_store(runtime), job_id, service)  # 410 job_expired once purged
    return {"deliveries": [delivery_view(d) for d in api_store(runtime).deliveries(job_id)]}


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    summary="Resend a delivery now",
    status_code=202,
    responses={
        202: {"model": ReplayAnswer, "description": "Due again now."},
        409: error_doc("`delivery_in_flight`: an attempt is in flight; try again."),
    },
)
def replay_delivery(delivery_id: str, request: Request) -> JSONResponse:
    """Send the same message (same ``webhook-id`` and body, fresh timestamp) again now."""
    service = service_of(request)
    runtime = runtime_of(request)
    delivery = owned(api_store(runtime).delivery(delivery_id), service, "delivery")
    if not api_store(runtime).replay(delivery_id):
        raise GenhookError(
            ErrorCode.DELIVERY_IN_FLIGHT, "an attempt of this delivery is in flight; try again"
        )
    runtime.deliveries_signal.notify()
    return JSONResponse(
        {
            "delivery_id": delivery.id,
            "status": DeliveryStatus.PENDING,
            "job_id": delivery.job_id,
        },
        status_code=202,
    )
