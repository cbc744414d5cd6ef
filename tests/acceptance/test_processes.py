"""The process tree of `genhook serve`: workers die with it, instances do not collide, the port.

Real processes only: `genhook serve` is started and killed like an operator (or a crash) would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.acceptance.harness import GENHOOK, Genhook, free_port, wait_for
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


def test_a_busy_port_is_one_line_and_exit_2_before_anything_starts(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """`serve` on a port already taken: exit 2 with one clear line, no ready line, no workers."""
    g = genhook_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [GENHOOK, "serve", "--port", str(port), "--workers", "2"],
            env=g.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "address already in use" in lines[0]
    assert "Traceback" not in proc.stderr


def test_two_services_in_two_folders_each_get_wake_ups(tmp_path: Path) -> None:
    """Two `serve`s with the default ./var, started in two folders, both bind their wake-up hub
    (neither logs "wake-ups off") and both serve.

    SQLite only, by nature: it is about the default database, the file under ./var. On
    PostgreSQL the wake-ups go through LISTEN/NOTIFY of each database (test_pg_wakeups)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENHOOK_") or k == "GENHOOK_TEST_PG"
    }
    procs = []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            port = free_port()
            log = (folder / "serve.log").open("wb")
            procs.append(
                (
                    folder,
                    port,
                    log,
                    subprocess.Popen(
                        [GENHOOK, "serve", "--port", str(port), "--workers", "1"],
                        cwd=folder,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        for folder, port, _, _ in procs:
            wait_for(lambda p=port: _answers(p), 60, f"serve in {folder.name}", every=0.1)
            assert (folder / "var" / "genhook.db").is_file()
        for folder, _, _, _ in procs:  # the workers registered: both hubs are up
            log_file = folder / "serve.log"
            wait_for(lambda f=log_file: "worker process" in f.read_text(), 60, "a worker")
        for folder, _, _, _ in procs:
            assert "wake-ups off" not in (folder / "serve.log").read_text()
    finally:
        for _, _, log, proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
