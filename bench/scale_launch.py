"""``genhook worker`` behind a start barrier, for ``bench/scale.py``.

``scale_launch.py READY_FILE worker --concurrency N`` imports the genhook CLI and the modules a
worker loads, creates READY_FILE, waits for SIGUSR1, then runs ``genhook worker --concurrency
N`` in this process (the same entry point as the console script). The bench starts every
system's worker processes this way, so that the clock starts with all of them loaded rather
than while the first ones import and the last ones are still starting on shared cores.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path


def main() -> None:
    ready_file, *args = sys.argv[1:]
    # what `genhook worker` imports before its first claim (the CLI imports it lazily)
    import genhook.cli
    import genhook.engine
    import genhook.service
    import genhook.store.store
    import genhook.worker

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    Path(ready_file).touch()
    signal.sigwait({signal.SIGUSR1})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    sys.argv = ["genhook", *args]
    genhook.cli.main()


if __name__ == "__main__":
    main()
