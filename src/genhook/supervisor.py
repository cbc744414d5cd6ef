"""`genhook serve --workers N`: N worker processes beside the API, restarted if they die.

Workers are processes, not threads, so generation (CPU-bound, much of it under the GIL) uses
every core, and a worker that crashes takes neither the API nor its siblings down (its job is
taken over when its lease runs out).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("genhook.supervisor")


class WorkerProcesses:
    """Starts, watches and stops ``count`` ``genhook worker`` processes."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "genhook", "worker"], env=self.env)

    def start(self) -> None:
        """Start the processes and a thread that replaces any that exits."""
        with self._lock:
            self.procs = [self._spawn() for _ in range(self.count)]
        if self.count:
            self._watcher = threading.Thread(
                target=self._watch, name="genhook-supervisor", daemon=True
            )
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                for i, proc in enumerate(self.procs):
                    code = proc.poll()
                    if code is not None and not self._stopping.is_set():
                        log.warning(
                            "worker process %s exited (%s); starting another", proc.pid, code
                        )
                        self.procs[i] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker (each finishes its job), then SIGKILL what is left."""
        self._stopping.set()
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def worker_env(public_url: str) -> dict[str, str]:
    """The environment of a worker process: this one's, with the public URL the API serves."""
    return {**os.environ, "GENHOOK_PUBLIC_URL": public_url}
