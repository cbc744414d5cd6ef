"""The HTTP application: thin routes over the runtime; workers and the outbox in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from genhook import __version__
from genhook.api import deliveries, errors, jobs, meta, triggers
from genhook.api.limits import BodyLimit
from genhook.delivery.outbox import Outbox
from genhook.delivery.sender import DeliverySender
from genhook.runtime import Runtime
from genhook.supervisor import WorkerProcesses, worker_env
from genhook.wakeup import Bus

DESCRIPTION = """A JSON trigger in; generated, quality-checked, multi-platform assets and a signed
completion payload out. Every `/v1` route takes `Authorization: Bearer <api_key>`."""


def create_app(runtime: Runtime, *, workers: int = 0, deliver: bool = True) -> FastAPI:
    """The app; with ``workers`` worker processes and (``deliver``) the callback outbox."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop_outbox = asyncio.Event()
        bus = Bus(runtime.settings.database_url, "hub")
        bus.on(b"delivery", lambda _: runtime.deliveries_signal.notify())
        bus.on(b"event", lambda _: runtime.events_signal.notify())
        runtime.jobs_signal.subscribe(lambda: bus.broadcast(b"job"))
        processes = WorkerProcesses(workers, worker_env(runtime.settings.public_url))
        processes.start()
        outbox_task = None
        sender = DeliverySender(
            timeout=runtime.settings.delivery_timeout,
            allow_private=runtime.settings.allow_private_callbacks,
        )
        if deliver:
            await sender.start()
            outbox = Outbox(
                runtime.store,
                sender,
                runtime.settings.delivery_schedule,
                signal=runtime.deliveries_signal,
                clock=runtime.clock,
                poll_seconds=runtime.settings.poll_seconds,
            )
            outbox_task = asyncio.create_task(outbox.run(stop_outbox))
        try:
            yield
        finally:
            stop_outbox.set()
            runtime.deliveries_signal.notify()
            await asyncio.to_thread(processes.stop)
            if outbox_task is not None:
                await outbox_task
                await sender.close()
            bus.close()

    app = FastAPI(
        title="genhook",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    for module in (triggers, jobs, deliveries, meta):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    return app
