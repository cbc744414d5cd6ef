"""The composition root: which long-lived parts each genhook process runs, and their wiring.

- The API process (:func:`serve`): the listening socket (bound before anything else, so a busy
  port fails at once), the wake-up hub, N supervised worker processes, the callback sender and
  its outbox, and the HTTP app, which only mounts routes (:func:`genhook.api.app.create_app`).
- A worker process (:func:`run_worker`): one worker running N jobs at once, its end of the
  wake-up channel, and the watch on the process that started it (a worker dies with its ``serve``).

The command line parses flags and settings and calls these; nothing else starts processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from genhook import metrics
from genhook.health import FORCED_EXIT, HealthServer, Shutdown, Signals, healthz, readiness
from genhook.runtime import Runtime
from genhook.supervisor import WorkerProcesses, die_with_parent, parent_gone, worker_env
from genhook.wakeup import WakeupChannel, open_channel, worker_role

if TYPE_CHECKING:
    from genhook.api.app import Lifespan

log = logging.getLogger("genhook.service")


class PortUnavailable(Exception):
    """The API's address cannot be listened on; the message says which and why, in one line."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {reason or exc}"
            + (" (is another genhook running? choose another --port)" if port else "")
        ) from exc
    return sock


SUPERVISOR_GRACE = 10.0
"""Seconds past the shutdown bound that ``serve`` gives its workers to hand back their jobs and
exit, before it kills what is left."""


def hub_lifespan(
    runtime: Runtime, *, workers: int, deliver: bool = True, shutdown: Shutdown | None = None
) -> Lifespan:
    """The API process's background parts, started with the app and stopped after it.

    When ``shutdown`` begins (the first SIGTERM), the workers are told at once and the outbox
    stops claiming, while the server drains its connections; each has until the shutdown's
    deadline (the workers ``SUPERVISOR_GRACE`` more to hand back and exit)."""
    shutdown = shutdown or Shutdown(runtime.settings.shutdown_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        from genhook.delivery.outbox import Outbox
        from genhook.delivery.sender import DeliverySender
        from genhook.retention import background_purge
        from genhook.scheduling.scheduler import running as scheduler_running
        from genhook.sender_role import finish_outbox

        loop = asyncio.get_running_loop()
        stop_outbox = asyncio.Event()
        hub = _open_hub(runtime)
        processes = WorkerProcesses(workers, worker_env(runtime.settings.public_url))
        processes.start()
        shutdown.on_begin(processes.signal_all)
        shutdown.on_force(lambda: processes.signal_all(signal.SIGKILL))  # at once
        shutdown.on_begin(lambda: _soon(loop, stop_outbox.set))
        outbox_task = None
        sender = DeliverySender(
            timeout=runtime.settings.delivery_timeout,
            connect_timeout=runtime.settings.delivery_connect_timeout,
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
                alert_secret=runtime.settings.alert_secret,
            )
            outbox_task = asyncio.create_task(outbox.run(stop_outbox))
        try:
            # retention (GENHOOK_PURGE_INTERVAL), and the template schedules' loop
            async with background_purge(runtime):
                with scheduler_running(runtime):
                    yield
        finally:
            shutdown.begin()
            stop_outbox.set()
            runtime.deliveries_signal.notify()
            await asyncio.to_thread(processes.stop, shutdown.remaining() + SUPERVISOR_GRACE)
            if outbox_task is not None:
                await finish_outbox(outbox_task, outbox, sender, shutdown.remaining())
                await sender.close()
            hub.close()

    return lifespan


def _soon(loop: asyncio.AbstractEventLoop, call: Any) -> None:
    """``call()`` on ``loop``'s thread (from a signal handler or another thread)."""
    loop.call_soon_threadsafe(call)


def _open_hub(runtime: Runtime) -> WakeupChannel:
    hub = open_channel(runtime.settings.database_url, "hub")
    hub.on(b"delivery", lambda _: runtime.deliveries_signal.notify())
    hub.on(b"event", lambda _: runtime.events_signal.notify())
    runtime.jobs_signal.subscribe(lambda: hub.broadcast(b"job"))
    return hub


def serve(runtime: Runtime, sock: socket.socket, *, workers: int) -> None:
    """Serve the API on the bound ``sock`` until SIGTERM or SIGINT, with ``workers`` workers."""
    import uvicorn

    from genhook.api.app import create_app
    from genhook.api.protocol import guarded_http

    settings = runtime.settings
    # every process of this tree counts into one emptied folder; workers inherit the variable
    metrics.enable_multiprocess(metrics.prepare_multiprocess_dir(settings.data_dir))
    shutdown = Shutdown(settings.shutdown_seconds)
    app = create_app(runtime, lifespan=hub_lifespan(runtime, workers=workers, shutdown=shutdown))
    app.state.shutdown = shutdown  # /readyz answers shutting_down from the first signal
    config = uvicorn.Config(
        app,
        http=guarded_http(settings),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, math.ceil(shutdown.seconds)),
        timeout_keep_alive=int(max(1, settings.keepalive_timeout)),
        server_header=False,
    )
    # the start-up's objects (modules, templates, the app: ~150,000) out of the collector's
    # reach: full collections over them paused the API for ~100 ms every ~10 s under load
    gc.collect()
    gc.freeze()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            """The first SIGTERM or SIGINT: stop accepting, drain, stop the workers and the
            outbox (and exit 0 afterwards: uvicorn's own handler would raise the signal again).
            The second: the workers are killed, and this process exits at once."""
            if shutdown.begin():
                self.should_exit = True
                return
            self.force_exit = True
            shutdown.force()
            os._exit(FORCED_EXIT + sig)

    Server(config).run(sockets=[sock])


def adopt_parent(parent: int | None) -> bool:
    """Die with the supervisor ``parent`` (SIGTERM when it dies); False if it is already gone.

    Called first thing in a supervised worker, before the slow start-up, and again once the
    worker's signal handlers are in place.
    """
    if parent is None:
        return True
    die_with_parent(signal.SIGTERM)
    return not parent_gone(parent)  # it may have died before the request took effect


def run_worker(
    runtime: Runtime,
    concurrency: int,
    *,
    parent: int | None = None,
    health: HealthServer | None = None,
) -> None:
    """One worker running up to ``concurrency`` jobs at once, until SIGTERM or SIGINT, or until
    the ``parent`` supervisor is gone; ``health``: answer ``/healthz`` and ``/readyz`` there.

    Shutdown: the first signal stops claiming at once (``/readyz`` answers ``shutting_down``)
    and lets the jobs in flight end, for at most ``GENHOOK_SHUTDOWN_SECONDS``; the jobs still
    running then are handed back (:meth:`genhook.worker.Worker.hand_back`: another worker may
    claim each at once, the attempt not counted) and the process exits 0 without waiting for
    their threads. A second signal exits at once; the leases then run out as after a crash."""
    from genhook.worker import Worker, apply_backend_limits

    shutdown = Shutdown(runtime.settings.shutdown_seconds)
    stop = threading.Event()
    shutdown.on_begin(stop.set)
    signals = Signals(shutdown, repeat_forces=parent is None)  # serve's force is a SIGKILL
    if not adopt_parent(parent):
        return
    channel = open_channel(runtime.settings.database_url, worker_role())
    channel.on(b"job", lambda _: runtime.jobs_signal.notify())
    runtime.deliveries_signal.subscribe(lambda: channel.to_hub(b"delivery"))
    runtime.events_signal.subscribe(lambda: channel.to_hub(b"event"))
    limits = apply_backend_limits(runtime.store, runtime.engine)
    worker = Worker(
        runtime.store,
        runtime.engine,
        runtime.storage,
        runtime.settings,
        jobs_signal=runtime.jobs_signal,
        deliveries_signal=runtime.deliveries_signal,
        events_signal=runtime.events_signal,
        concurrency=concurrency,
    )
    thread = threading.Thread(target=worker.run, args=(stop,), name="genhook-worker")
    thread.daemon = True
    thread.start()
    schedules = contextlib.ExitStack()
    if parent is None:  # a standalone worker runs the schedules too; serve's workers do not
        from genhook.scheduling.scheduler import running as scheduler_running

        schedules.enter_context(scheduler_running(runtime))
    if health is not None:
        health.start(
            lambda: healthz(runtime.store),
            lambda: readiness(runtime, runtime.store, role="worker", shutdown=shutdown),
        )
    log.info(
        "worker process %s: up to %s jobs at once, %s CPU slots, backend limits %s",
        os.getpid(),
        concurrency,
        runtime.engine.gate.slots,
        limits or "none",
    )
    while not signals.wait(0.5):
        if parent_gone(parent):
            log.warning("worker process %s: its supervisor is gone; stopping", os.getpid())
            shutdown.begin()
            break
        channel.to_hub(b"hello")  # (re)register with the API process, also after it restarts
    schedules.close()
    runtime.jobs_signal.notify()
    thread.join(shutdown.remaining())
    if thread.is_alive():
        try:
            if worker.hand_back():
                channel.broadcast(b"job")  # workers elsewhere: claim them now
        except Exception as exc:  # the store is down: the leases run out instead
            log.warning("worker process %s: could not hand back its jobs: %s", os.getpid(), exc)
    if health is not None:
        health.close()
    channel.close()
    if thread.is_alive():
        # the handed-back jobs' threads stop at their next check and record nothing; a backend's
        # own threads would hold the interpreter's exit, so it ends here, within the bound
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    runtime.store.close()
