"""The HTTP application: routes over the runtime, and nothing else.

The app mounts routes and request-level middleware only. What runs beside it in the API process
(wake-up hub, worker processes, callback sender and outbox) is wired by :mod:`genhook.service`
and handed in as ``lifespan``; without one, the app serves requests and starts nothing (tests,
the OpenAPI document).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from genhook import __version__
from genhook.api import (
    batches,
    dashboard,
    deliveries,
    errors,
    jobs,
    meta,
    ops,
    ops_endpoints,
    reviews,
    triggers,
)
from genhook.api import metrics as metrics_routes
from genhook.api import schedules as schedule_routes
from genhook.api.limits import BodyLimit, NoNul
from genhook.runtime import Runtime

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]
"""What FastAPI's ``lifespan`` takes: the app in, an async context manager out."""

DESCRIPTION = """A JSON trigger in; generated, quality-checked, multi-platform assets and a signed
completion payload out. Every `/v1` route takes `Authorization: Bearer <api_key>`."""


def create_app(
    runtime: Runtime, *, lifespan: Lifespan | None = None, trigger_lane: bool = True
) -> FastAPI:
    """The app over ``runtime``; ``lifespan`` starts and stops the process's background parts.
    ``trigger_lane`` False: triggers go through FastAPI's route like every other request (the
    tests compare the two)."""
    app = FastAPI(
        title="genhook",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # no OpenTelemetry here (metrics are Prometheus'): without this FastAPI asks the
        # OpenTelemetry providers on every request whether they are configured
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    for module in (triggers, batches, jobs, deliveries, meta, ops, ops_endpoints, dashboard):
        app.include_router(module.router)
    app.include_router(reviews.router)  # the review queue: the service's and the operator's
    app.include_router(reviews.ops_router)
    app.include_router(reviews.dashboard_router)
    app.include_router(metrics_routes.router)  # GET /metrics, open (see its module)
    app.include_router(schedule_routes.router)  # a service's key or the operator key
    if trigger_lane:  # innermost: the body limit and the catch-all still apply
        app.add_middleware(triggers.TriggerLane)
    app.add_middleware(
        BodyLimit,
        limit=runtime.settings.max_body_bytes,
        # a batch (up to 1,000 triggers) has a limit of its own
        larger={"/batches": max(batches.MAX_BATCH_BYTES, runtime.settings.max_body_bytes)},
    )
    app.add_middleware(NoNul)  # outside the trigger lane: no route sees a NUL in path or query
    errors.install(app)  # last: its catch-all middleware wraps every other one
    return app
