"""Shared helpers of the service benches (``accept.py``, ``e2e.py``, ``load_share.py``,
``memory.py``, ``deliver.py``, ``ops_summary.py``).

* :class:`Children`: every subprocess a bench starts, each in its own process group, killed
  (group and all) when the bench ends, however it ends: normal exit, exception, Ctrl-C or
  SIGTERM; on Linux a child also gets SIGKILL if the bench process itself is killed.
  :meth:`Children.serve` starts ``genhook serve`` on a free port and waits for its health check.
* :func:`trigger_body`: a valid, distinct ``product-image`` trigger.
* :func:`post_all`: a fixed-concurrency POST load generator over keep-alive connections.
* :class:`RssSampler`: the peak resident memory of a process tree, sampled from ``/proc``;
  :func:`process_cpu`, :func:`cpu_seconds` (a tree) and :func:`cpu_and_faults` from ``/proc``.

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import aiohttp

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def genhook_command(*args: str) -> list[str]:
    """``genhook ARGS``: the console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("genhook")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-c", "from genhook.cli import main; main()", *args]


def bench_env(**variables: str) -> dict[str, str]:
    """This process's environment without any GENHOOK_* setting, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENHOOK_")}
    env.update(variables)
    return env


def create_service(
    env: Mapping[str, str], name: str = "bench", flags: Sequence[str] = ()
) -> dict[str, str]:
    """``genhook services create NAME [FLAGS]`` in ``env``: its ``api_key``, secret, ..."""
    done = subprocess.run(
        genhook_command("services", "create", name, *flags),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"genhook services create failed: {done.stderr.strip()}")
    created: dict[str, str] = json.loads(done.stdout)
    return created


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the bench process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Child:
    """One subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Block until GET ``url`` answers 200; raise (with the log's tail) if the child exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} in {timeout:.0f} s")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``grace`` seconds."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(ProcessLookupError):  # anything left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Children:
    """The subprocesses of one bench run; all stopped on exit from the ``with`` block.

    SIGTERM and SIGHUP become ``SystemExit`` while the block runs, so that the cleanup runs for
    them as it does for Ctrl-C and exceptions.
    """

    def __init__(self) -> None:
        self._children: list[Child] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _exit_on_signal)
        return self

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
        child = Child(name, argv, env, log)
        self._children.append(child)
        return child

    def serve(
        self, name: str, env: Mapping[str, str], log: Path, *, workers: int = 0
    ) -> tuple[Child, int]:
        """``genhook serve --workers N`` on a free port, once its ``/healthz`` answers 200;
        the child and its port."""
        port = free_port()
        child = self.start(
            name, genhook_command("serve", "--port", str(port), "--workers", str(workers)), env, log
        )
        child.wait_http(f"http://{HOST}:{port}/healthz")
        return child, port

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in reversed(self._children):
            with contextlib.suppress(Exception):
                child.stop()
        for sig, old in self._old.items():
            signal.signal(sig, old)


def temp_root(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for one bench run (databases, logs, assets)."""
    return tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True)


# load generation ---------------------------------------------------------------------------


def trigger_body(i: int, platform: str = "instagram_feed") -> bytes:
    """A valid, distinct product-image trigger (no callback_url; about 240 bytes of JSON)."""
    return json.dumps(
        {
            "product_id": f"SKU-{i:07d}",
            "product_name": f"Washed Linen Shirt {i}",
            "product_category": "menswear",
            "product_description": "Breathable washed-linen shirt with a relaxed fit.",
            "target_style": "lifestyle",
            "target_platform": platform,
        }
    ).encode()


@dataclass
class Answer:
    """One POST: when it was sent, how long it took, its status and JSON body."""

    index: int
    sent: float
    seconds: float
    status: int
    body: Any


@dataclass
class LoadResult:
    """What :func:`post_all` did."""

    answers: list[Answer]
    elapsed: float
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return len(self.answers) / self.elapsed if self.elapsed > 0 else 0.0


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """A keep-alive client with at most ``concurrency`` connections, 127.0.0.1 only."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
        timeout=aiohttp.ClientTimeout(total=120),
        trust_env=False,
    )


async def post_all(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[bytes],
    *,
    headers: Mapping[str, str],
    concurrency: int,
    deadline: float | None = None,
) -> LoadResult:
    """POST every body to ``url`` keeping ``concurrency`` requests in flight.

    Stops taking new bodies once ``time.perf_counter()`` passes ``deadline`` (if given).
    """
    next_index = iter(range(len(bodies)))
    answers: list[Answer] = []
    statuses: collections.Counter[int] = collections.Counter()

    async def lane() -> None:
        for i in next_index:
            if deadline is not None and time.perf_counter() > deadline:
                return
            sent = time.perf_counter()
            async with session.post(url, data=bodies[i], headers=headers) as response:
                raw = await response.read()
                status = response.status
            seconds = time.perf_counter() - sent
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw[:200]
            statuses[status] += 1
            answers.append(Answer(i, sent, seconds, status, body))

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return LoadResult(answers, time.perf_counter() - start, statuses)


def run_async(main: Callable[[], Any]) -> Any:
    """Run the coroutine function ``main`` on uvloop when it is installed (as uvicorn does).

    SIGTERM or SIGHUP cancels ``main`` (so its ``finally`` blocks run inside the loop), then
    raises ``SystemExit`` here, for :class:`Children` to clean up.
    """
    received: list[int] = []

    async def guarded() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

        def cancel(sig: int) -> None:
            received.append(sig)
            task.cancel()

        for sig in previous:
            loop.add_signal_handler(sig, cancel, sig)
        try:
            return await main()
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

    try:
        import uvloop
    except ImportError:
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(guarded())
    except asyncio.CancelledError:
        if received:
            raise SystemExit(128 + received[0]) from None
        raise


# statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine_line() -> str:
    """Cores, load and Python: the context of the figures."""
    import platform

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load},"
        f" python {platform.python_version()}"
    )


# memory ------------------------------------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return found


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant process."""
    pids, i = [root], 0
    while i < len(pids):
        pids.extend(_children_of(pids[i]))
        i += 1
    return pids


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 first); None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of the process ``pid`` alone (every thread; 0 when gone)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else _cpu(fields)


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and minor page faults of the process ``pid`` so far."""
    fields = _stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return _cpu(fields), int(fields[7])


def cpu_seconds(root: int) -> float:
    """User + system CPU time used so far by ``root`` and its descendants (live ones)."""
    return sum(process_cpu(pid) for pid in tree_pids(root))


class RssSampler:
    """The summed VmRSS of a process tree, sampled every ``interval`` s in a thread; its max."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_kib = 0
        self.last_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            total = sum(rss_kib(pid) for pid in tree_pids(self.root))
            self.last_kib = total
            self.peak_kib = max(self.peak_kib, total)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
