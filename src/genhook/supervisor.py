"""`genhook serve --workers N`: N worker processes beside the API, restarted if they die.

Workers are processes, not threads, so generation (CPU-bound, much of it under the GIL) uses
every core, and a worker that crashes takes neither the API nor its siblings down (its job is
taken over when its lease runs out).

Workers die with the process that started them, even when it is killed with SIGKILL and has no
chance to stop them: each asks Linux for a parent-death signal (``PR_SET_PDEATHSIG``, SIGTERM) as
it starts, and, where that is not available or the parent died before the request took effect,
its loop notices that its parent is no longer the supervisor (:func:`parent_gone`). An orphaned
worker would otherwise keep claiming jobs, join the next instance's wake-up hub, and after an
upgrade run old code on a new schema.

Workers run at a lower CPU priority than the API (:func:`lower_priority`,
``GENHOOK_WORKER_NICE``, 10 by default): rendering is CPU-bound and would otherwise take an
equal share of the cores from the process that accepts triggers, which must stay quick. When
the API is idle the workers still get every core; niceness only decides who waits when both
want one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("genhook.supervisor")

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when the thread that forked it exits."""


class WorkerProcesses:
    """Starts, watches and stops ``count`` ``genhook worker`` processes.

    Every process is started from the one watcher thread: Linux sends the parent-death signal
    when the *thread* that forked a child ends, so children of a short-lived thread would die
    with it. The watcher lives until :meth:`stop`.
    """

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "genhook", "worker", "--parent", str(os.getpid())]
        # a process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group)
        # reaches `serve` alone, which stops the workers with one SIGTERM each; were they in
        # its group, the SIGTERM would be their second signal, which exits at once
        return subprocess.Popen(command, env=self.env, process_group=0)

    def start(self) -> None:
        """Start the processes (from the watcher thread) and return once they are started."""
        if not self.count:
            return
        self._watcher = threading.Thread(target=self._watch, name="genhook-supervisor", daemon=True)
        self._watcher.start()
        self._started.wait()

    def _watch(self) -> None:
        try:
            with self._lock:
                self.procs = [self._spawn() for _ in range(self.count)]
        finally:
            self._started.set()
        while not self._stopping.wait(1.0):
            with self._lock:
                for i, proc in enumerate(self.procs):
                    code = proc.poll()
                    if code is not None and not self._stopping.is_set():
                        log.warning(
                            "worker process %s exited (%s); starting another", proc.pid, code
                        )
                        self.procs[i] = self._spawn()
        # live on until the workers have exited: when this thread ends, Linux sends them the
        # parent-death signal, which, coming after the SIGTERM that began their graceful stop,
        # would be their second signal and make them exit at once
        self._stopped.wait()

    def signal_all(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to every worker still running, and start no more; returns at once.

        SIGTERM begins a worker's graceful shutdown (it claims nothing more, and finishes or
        hands back its jobs within ``GENHOOK_SHUTDOWN_SECONDS``; a second SIGTERM changes
        nothing); SIGKILL ends it at once."""
        self._stopping.set()
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker not signalled yet (each finishes or hands back its jobs), wait
        up to ``timeout`` seconds for them all, then SIGKILL what is left."""
        if not self._stopping.is_set():
            self.signal_all(signal.SIGTERM)
        with self._lock:
            procs = list(self.procs)
        deadline = time.monotonic() + timeout
        try:
            for proc in procs:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            self._stopped.set()


def worker_env(public_url: str) -> dict[str, str]:
    """The environment of a worker process: this one's, with the public URL the API serves."""
    return {**os.environ, "GENHOOK_PUBLIC_URL": public_url}


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def parent_gone(parent: int | None) -> bool:
    """True when this process was started by ``parent`` and is no longer its child."""
    return parent is not None and os.getppid() != parent


def lower_priority(increment: int) -> int:
    """Make every thread of this process ``increment`` nicer (at most 19); return the niceness.

    Linux keeps a niceness per thread and a new thread inherits its creator's, so the threads
    that exist already (OpenBLAS starts some when numpy is imported) are each set here, and
    every thread started afterwards inherits the new value. A niceness that is already higher
    is left as it is (an unprivileged process cannot lower it again).
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(19, current + max(0, increment))
    if target == current:
        return current
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{os.getpid()}/task")]
    except OSError:  # no /proc: this thread alone (threads started later inherit it)
        threads = [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < target:
                os.setpriority(os.PRIO_PROCESS, tid, target)
        except (OSError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)
