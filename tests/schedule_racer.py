"""A scheduler process for the race tests: ticks at given wall-clock instants, each with its
injected clock at the given schedule time, and prints what it fired (one JSON line a round).

    python -m tests.schedule_racer DATABASE_URL WORKFLOWS_DIR DATA_DIR START ROUNDS STEP WALL0
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.runtime import Runtime
from genhook.scheduling.scheduler import Scheduler


def main() -> None:
    url, flows, data, start, rounds, step, wall0 = sys.argv[1:8]
    clock = ManualClock(float(start))
    settings = Settings(data_dir=Path(data), workflows_dir=Path(flows), database_url=url).resolved()
    runtime = Runtime.build(settings, clock=clock)
    scheduler = Scheduler(runtime)
    for k in range(int(rounds)):
        if k:
            clock.advance(float(step))
        time.sleep(max(0.0, float(wall0) + k * 0.7 - time.time()))
        fires = scheduler.tick()
        print(
            json.dumps(
                [{"key": f.schedule_key, "due": f.due_at, "created": f.created} for f in fires]
            ),
            flush=True,
        )
    scheduler.close()
    runtime.store.close()


if __name__ == "__main__":
    main()
