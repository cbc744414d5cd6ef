"""The callback sender as a process of its own (``genhook sender``): the outbox and its HTTP
client, against the same database as every other process of the install.

On PostgreSQL it listens on the install's hub channel, so a worker on any machine that finishes
a job wakes it at once (as it wakes the API processes' own outboxes); on SQLite it polls every
``GENHOOK_POLL_SECONDS``. Any number of senders, and the outboxes of ``genhook serve``, can run
at once: each delivery is leased by the one outbox that claims it.

Shutdown: SIGTERM or SIGINT stops claiming at once (``/readyz`` answers ``shutting_down``), lets
the requests in flight finish and records their answers, for at most
``GENHOOK_SHUTDOWN_SECONDS``; what is still in flight then is handed back
(:func:`finish_outbox`): its request is abandoned and its lease ended, so another sender sends
it again at once (the same ``webhook-id``). Exit 0. A second signal exits at once; the leases
then run out as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from genhook.delivery.outbox import Outbox
from genhook.delivery.sender import DeliverySender
from genhook.health import FORCED_EXIT, HealthServer, Shutdown, healthz, readiness
from genhook.runtime import Runtime
from genhook.wakeup import open_channel

log = logging.getLogger("genhook.sender")


def run_sender(runtime: Runtime, concurrency: int, health: HealthServer | None = None) -> None:
    """Deliver until SIGTERM or SIGINT (then within the shutdown bound); ``health``: answer
    ``/healthz`` and ``/readyz`` there meanwhile."""
    asyncio.run(_deliver(runtime, concurrency, health))


async def finish_outbox(
    task: asyncio.Task[None], outbox: Outbox, sender: DeliverySender, seconds: float
) -> int:
    """Wait up to ``seconds`` for a stopping outbox's ``task`` (its requests in flight answered
    and recorded); past that, abandon what is still in flight (the outbox stopped, its HTTP
    clients closed) and end those deliveries' leases, so another outbox claims each at once.
    How many deliveries were handed back."""
    done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
    if done:
        task.result()
        return 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sender.close()  # the requests still in flight fail now; nothing records them
    mine = outbox.name
    handed = await asyncio.to_thread(outbox.store.expire_dead_leases, lambda owner: owner == mine)
    log.warning("outbox %s: handed back %d deliveries in flight at shutdown", mine, handed)
    return int(handed)


async def _deliver(runtime: Runtime, concurrency: int, health: HealthServer | None) -> None:
    from genhook.retention import background_purge

    settings = runtime.settings
    stop = asyncio.Event()
    shutdown = Shutdown(settings.shutdown_seconds)
    shutdown.on_begin(stop.set)
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        if not shutdown.begin():  # the second signal: at once
            os._exit(FORCED_EXIT + sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
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
    if health is not None:
        health.start(
            lambda: healthz(runtime.store),
            lambda: readiness(
                runtime,
                runtime.store,
                role="sender",
                backends=False,
                storage=False,  # delivers payloads, writes no asset
                shutdown=shutdown,
            ),
        )
    try:
        async with background_purge(runtime):  # retention, also where roles are split
            await stop.wait()
    finally:
        shutdown.begin()
        stop.set()
        runtime.deliveries_signal.notify()
        await finish_outbox(task, outbox, sender, shutdown.remaining())
        await sender.close()
        if health is not None:
            health.close()
        channel.close()
        runtime.store.close()
