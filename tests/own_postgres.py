"""A PostgreSQL server of a test's own (``initdb`` in a fresh folder, on a free port), which the
test may stop and start: never the machine's shared one. Run as the ``postgres`` user (initdb
refuses root), with its socket in its own folder and trust authentication on loopback."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class OwnPostgres:
    """``start()``, ``stop(mode)`` and ``url`` of a throwaway server; ``close()`` removes it."""

    def __init__(self) -> None:
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip("PostgreSQL's server binaries are not installed")
        if os.geteuid() != 0:
            pytest.skip("starting a PostgreSQL server of the test's own needs root (runuser)")
        self.root = Path(tempfile.mkdtemp(prefix="genhook-own-pg-", dir="/tmp"))
        self.data = self.root / "data"
        shutil.chown(self.root, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as_postgres(
            [initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 200\n"
            )
        self.start()
        self._as_postgres(
            [
                _bin("createdb") or "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "genhook",
            ]
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/genhook"

    def _as_postgres(self, args: list[str]) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        assert self.pg_ctl is not None
        self._as_postgres(
            [self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start"]
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: ``immediate`` is a crash (no shutdown checkpoint)."""
        assert self.pg_ctl is not None
        self._as_postgres([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
