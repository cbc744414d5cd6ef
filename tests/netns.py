"""Run a test program inside a Linux network namespace that has loopback only.

Tests in which genhook could connect to a non-loopback address (the SSRF guards, driven for real)
run their probe here: ``unshare --net`` gives a namespace with no route anywhere, ``lo`` is
brought up, and the addresses a test needs (169.254.169.254, a private 10.x address, ...) are
added to ``lo``, so a connection that the guard lets through reaches a receiver in the same
namespace, never the host's network or a real metadata service.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def only_loopback() -> bool:
    """True inside a namespace whose only interface is ``lo`` (checked by every probe)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # per namespace, unlike /sys
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def run_isolated(module: str, addresses: list[str], timeout: float = 60.0) -> Any:
    """Run ``python -m module`` in a loopback-only namespace with ``addresses`` on ``lo``; the
    JSON it prints last. Skips when this machine cannot make a network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare and ip are needed for a network namespace")
    unshare = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    setup = ["ip link set lo up", *(f"ip addr add {shlex.quote(a)} dev lo" for a in addresses)]
    probe = f"{shlex.quote(sys.executable)} -m {shlex.quote(module)}"
    try:
        made = subprocess.run([*unshare, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no network namespace here: {exc}")
    if made.returncode != 0:
        pytest.skip(f"no network namespace here: {made.stderr.decode(errors='replace').strip()}")
    done = subprocess.run(
        [*unshare, "sh", "-c", " && ".join([*setup, f"exec {probe}"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
