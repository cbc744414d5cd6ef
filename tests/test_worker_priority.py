"""Worker processes run nicer than the API (GENHOOK_WORKER_NICE): every thread, from the start.

Real processes only: the niceness a process runs at is read from ``/proc`` (each thread's
``stat``), as the kernel's scheduler sees it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genhook.config import ConfigError, Settings
from tests.acceptance.harness import Genhook, wait_for
from tests.acceptance.test_failures import _children

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _thread_niceness(pid: int) -> dict[int, int]:
    """The niceness of each live thread of ``pid`` (field 19 of ``/proc/PID/task/TID/stat``)."""
    found: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended
        found[int(tid)] = int(fields[16])
    return found


def _started(g: Genhook, pid: int) -> bool:
    """The worker process ``pid`` logged that its worker threads run (so it has set its
    niceness: that comes before)."""
    return f"worker process {pid}: " in g.logs()


CHILD = """
import json, os, threading
from genhook.supervisor import lower_priority

def tids():
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}

stop = threading.Event()
early = threading.Thread(target=stop.wait)
early.start()
base = os.getpriority(os.PRIO_PROCESS, 0)
got = lower_priority(4)
late_nice = []
late = threading.Thread(target=lambda: late_nice.append(os.getpriority(os.PRIO_PROCESS, 0)))
late.start()
late.join()
before_cap = tids()
capped = lower_priority(100)
after_cap = tids()
stop.set()
early.join()
print(json.dumps({"base": base, "got": got, "early": before_cap[early.native_id],
                  "late": late_nice[0], "all": list(before_cap.values()), "capped": capped,
                  "all_capped": list(after_cap.values())}))
"""


def test_lower_priority_sets_every_thread_and_the_ones_started_later() -> None:
    """A thread started before the call is set too (Linux keeps niceness per thread); one
    started after inherits it; the niceness stops at 19."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    expected = min(19, seen["base"] + 4)
    assert seen["got"] == expected
    assert seen["early"] == expected and seen["late"] == expected
    assert set(seen["all"]) == {expected}
    assert seen["capped"] == 19 and set(seen["all_capped"]) == {19}


def test_the_setting_takes_0_to_19_and_defaults_to_10() -> None:
    assert Settings.from_env({}).worker_nice == 10
    assert Settings.from_env({"GENHOOK_WORKER_NICE": "0"}).worker_nice == 0
    assert Settings.from_env({"GENHOOK_WORKER_NICE": " 19 "}).worker_nice == 19
    for bad in ("20", "-1", "low"):
        with pytest.raises(ConfigError, match=r"GENHOOK_WORKER_NICE: .*0 to 19"):
            Settings.from_env({"GENHOOK_WORKER_NICE": bad})


def test_serve_starts_its_workers_10_nicer_than_the_api(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """`serve --workers 1` as shipped: every thread of the worker process at the API's
    niceness + 10; the API's own threads keep theirs."""
    g = genhook_factory()
    server = g.serve(workers=1)
    (worker,) = wait_for(lambda: _children(server.pid), 60, "a worker process")
    wait_for(lambda: _started(g, worker), 60, "the worker process to start")
    api = _thread_niceness(server.pid)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert set(api.values()) == {base}
    threads = _thread_niceness(worker)
    assert len(threads) > 1  # worker threads and libraries' threads, all of them
    assert set(threads.values()) == {min(19, base + 10)}


def test_a_standalone_worker_takes_the_setting(genhook_factory: Callable[..., Genhook]) -> None:
    """`genhook worker` with GENHOOK_WORKER_NICE=3: every thread 3 nicer than its starter."""
    g = genhook_factory(GENHOOK_WORKER_NICE="3")
    proc = g.worker()
    wait_for(lambda: _started(g, proc.pid), 60, "the worker to start")
    threads = _thread_niceness(proc.pid)
    assert set(threads.values()) == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)}


@pytest.fixture
def genhook_factory(tmp_path: Path) -> Iterator[Callable[..., Genhook]]:
    """Installs in ``tmp_path`` (the acceptance harness's), closed after the test."""
    made: list[Genhook] = []

    def make(**env: str) -> Genhook:
        made.append(Genhook(tmp_path / f"g{len(made)}", **env))
        return made[-1]

    yield make
    for g in made:
        g.close()
