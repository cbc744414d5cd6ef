"""``genhook worker`` behind a start barrier, for ``bench/scale.py``.

``scale_launch.py READY_FILE worker --concurrency N`` runs ``genhook worker --concurrency N``
in this process (the same entry point as the console script) up to the point where the worker
starts claiming: the settings read, the runtime built (workflows loaded, the store opened and
checked, the backends built). There it creates READY_FILE and waits for SIGUSR1, then runs the
worker. The bench
starts every system's worker processes this way (the rivals' likewise build everything before
the barrier), so that the clock starts with all of them loaded, rather than while the first
ones import and the last ones are still starting on shared cores; the worker CPU per job then
counts the jobs' work, not the process's start-up.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    ready_file, *args = sys.argv[1:]
    # blocked before any thread starts, so every thread the start-up makes inherits the block
    # and the start signal can only be taken by the sigwait below (not kill a thread by default)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    import genhook.cli
    import genhook.service

    run_worker = genhook.service.run_worker

    def at_the_barrier(runtime: Any, *a: Any, **kw: Any) -> None:
        assert runtime.engine is not None  # the backends, built on first use
        Path(ready_file).touch()
        signal.sigwait({signal.SIGUSR1})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        run_worker(runtime, *a, **kw)

    genhook.service.run_worker = at_the_barrier  # worker_cmd imports it when it runs
    sys.argv = ["genhook", *args]
    genhook.cli.main()


if __name__ == "__main__":
    main()
