"""The process tree of `genhook serve`: workers die with it, instances do not collide, the port.

Real processes only: `genhook serve` is started and killed like an operator (or a crash) would.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.acceptance.harness import Genhook, wait_for
from tests.acceptance.test_failures import _alive, _children


def test_workers_die_with_a_killed_serve(genhook_factory: Callable[..., Genhook]) -> None:
    """SIGKILL of `serve --workers 2` leaves no worker running (no orphans that keep claiming)."""
    g = genhook_factory()
    server = g.serve(workers=2)
    workers = wait_for(
        lambda: (kids := _children(server.pid)) and len(kids) == 2 and kids, 30, "2 workers"
    )
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to exit")
