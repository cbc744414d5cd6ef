"""`genhook serve` inside a network namespace that has loopback only, reachable from outside.

A test that sends generated input (the fuzzer's callback URLs, input URLs and names) must not let
genhook reach anything but loopback, whatever the input says: its server runs in a namespace of
its own (``unshare --net``), where a callback to a public address or a DNS query finds no route.
The test still talks to it, and it to the test's PostgreSQL, through Unix sockets (a socket file
is seen from both namespaces) and two byte pumps:

    outside  127.0.0.1:PORT ──> api.sock ──> inside 127.0.0.1:PORT (genhook serve)
    inside   127.0.0.1:5432 ──> pg.sock  ──> outside 127.0.0.1:5432 (the test's PostgreSQL)

:func:`start` is the outside half (threads in the test process); ``python -m
tests.acceptance.netns_serve DIR PORT [PGPORT] -- genhook serve ...`` is the inside half: it
brings ``lo`` up, pumps, runs the server and ends with it (SIGTERM is passed on).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

Address = tuple[str, int] | str  # TCP (host, port), or a Unix socket's path


def _open(address: Address) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve_pair(client: socket.socket, target: Address) -> None:
    upstream = _open(target)
    try:
        upstream.connect(target)
    except OSError:
        upstream.close()
        client.close()
        return
    there = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
    there.start()
    _pump(upstream, client)
    there.join()
    client.close()
    upstream.close()


def forward(listen: Address, target: Address) -> Callable[[], None]:
    """Accept on ``listen`` and pump each connection to ``target`` (threads); the closer."""
    server = _open(listen)
    server.bind(listen)
    server.listen(128)

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_serve_pair, args=(client, target), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()

    return close


def available() -> str | None:
    """None when this machine can make a loopback-only namespace; else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=10)
    return None if probe.returncode == 0 else f"no network namespace: {probe.stderr.strip()}"


UNSHARE = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def command(folder: Path, port: int, pg_port: int | None, serve: list[str]) -> list[str]:
    """The command line that runs ``serve`` in a new loopback-only namespace."""
    pg = [] if pg_port is None else [str(pg_port)]
    inside = [sys.executable, "-m", "tests.acceptance.netns_serve", str(folder), str(port), *pg]
    return [*UNSHARE, *inside, "--", *serve]


def start(folder: Path, port: int, pg_port: int | None) -> Callable[[], None]:
    """The outside half: 127.0.0.1:``port`` to the namespace's server, and the namespace's
    PostgreSQL socket to 127.0.0.1:``pg_port``; the closer."""
    closers = [forward(("127.0.0.1", port), str(folder / "api.sock"))]
    if pg_port is not None:
        closers.append(forward(str(folder / "pg.sock"), ("127.0.0.1", pg_port)))

    def close() -> None:
        for closer in closers:
            closer()

    return close


def _inside(argv: list[str]) -> int:
    split = argv.index("--")
    folder, port, *pg = argv[:split]
    serve = argv[split + 1 :]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    names = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()]
    assert names[2:] == ["lo"], f"not a loopback-only namespace: {names[2:]}"
    forward(str(Path(folder) / "api.sock"), ("127.0.0.1", int(port)))
    if pg:
        forward(("127.0.0.1", int(pg[0])), str(Path(folder) / "pg.sock"))
    child = subprocess.Popen(serve)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    return child.wait()


if __name__ == "__main__":
    sys.exit(_inside(sys.argv[1:]))
