"""The callback sender as a process of its own (``genhook sender``): the outbox and its HTTP
client, against the same database as every other process of the install.

On PostgreSQL it listens on the install's hub channel, so a worker on any machine that finishes
a job wakes it at once (as it wakes the API processes' own outboxes); on SQLite it polls every
``GENHOOK_POLL_SECONDS``. Any number of senders, and the outboxes of ``genhook serve``, can run
at once: each delivery is leased by the one outbox that claims it. SIGTERM or SIGINT stops
claiming, lets the requests in flight finish (within the delivery timeout) and records them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from genhook.runtime import Runtime
from genhook.wakeup import open_channel

log = logging.getLogger("genhook.sender")


def run_sender(runtime: Runtime, concurrency: int) -> None:
    """Deliver until SIGTERM or SIGINT."""
    asyncio.run(_deliver(runtime, concurrency))


async def _deliver(runtime: Runtime, concurrency: int) -> None:
    from genhook.delivery.outbox import Outbox
    from genhook.delivery.sender import DeliverySender
    from genhook.retention import background_purge

    settings = runtime.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    channel = open_channel(settings.database_url, "sender")
    channel.on(b"delivery", lambda _: runtime.deliveries_signal.notify())
    sender = DeliverySender(
        timeout=settings.delivery_timeout,
        connect_timeout=settings.delivery_connect_timeout,
        allow_private=settings.allow_private_callbacks,
    )
    await sender.start()
    outbox = Outbox(
        runtime.store,
        sender,
        settings.delivery_schedule,
        signal=runtime.deliveries_signal,
        clock=runtime.clock,
        poll_seconds=settings.poll_seconds,
        alert_secret=settings.alert_secret,
        concurrency=concurrency,
    )
    log.info("sender process %s: up to %s deliveries in flight", os.getpid(), concurrency)
    task = asyncio.create_task(outbox.run(stop))
    try:
        async with background_purge(runtime):  # retention, also where roles are split
            await stop.wait()
    finally:
        stop.set()
        runtime.deliveries_signal.notify()
        await task
        await sender.close()
        channel.close()
        runtime.store.close()
