"""Test-only "hosts": Linux network namespaces on a bridge, so that genhook's roles run as on
separate machines of one deployment (the multi-host rehearsal).

:func:`hosts_network` makes a bridge in the root namespace with an address of a test-only range
(``10.213.N.1/24``, N free on this machine), and :meth:`Namespaces.host` one namespace per
host, joined to the bridge by a veth pair, with the next address of that /24 and nothing else:
no default route, no other interface than ``lo`` and ``eth0``. A process started on a host
(:meth:`Host.popen`) runs in its namespace and in a UTS namespace of its own whose host name is
the host's, so genhook's ``host:pid`` lease owners differ between hosts as between machines.
Everything a host can reach is on the bridge: the test's own servers in the root namespace bind
the bridge address (:attr:`Namespaces.gateway`), and :class:`Forwarder` relays a TCP port there
to a loopback-only server (the machine's PostgreSQL).

Names are unique per run (``gh<pid>-<token>-<host>`` namespaces, ``ghb<token>`` bridges), so
parallel runs never collide; :meth:`Namespaces.close` (and the next run, for what a killed run
left behind) removes them. Where the machine makes no namespaces (not root, no ``ip``),
:func:`hosts_network` gives :class:`Loopback` instead: every host is a plain process on
127.0.0.1, and :attr:`Loopback.reason` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

RANGE = ipaddress.ip_network("10.213.0.0/16")
"""The test-only private range the rehearsal's /24s are cut from (never routed anywhere)."""
_NS = re.compile(r"^gh(\d+)-[0-9a-f]{6}-")
_ALIAS = "genhook-test-hosts"
_ENTER = 'hostname "$0" && exec "$@"'


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make the hosts' namespaces, or None when it can
    (``GENHOOK_TEST_HOSTS=loopback`` asks for the fallback, to try it where namespaces work)."""
    if os.environ.get("GENHOOK_TEST_HOSTS") == "loopback":
        return "GENHOOK_TEST_HOSTS=loopback"
    if os.geteuid() != 0:
        return "not root: network namespaces and veth pairs need CAP_NET_ADMIN"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no {tool} command"
    probe = f"gh{os.getpid()}-{secrets.token_hex(3)}-probe"  # swept like a host if left
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


@dataclass
class Host:
    """One host: a name, its address, and (with namespaces) its network namespace."""

    name: str
    address: str
    netns: str | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this host (the process is ``argv[0]`` itself: each step execs)."""
        if self.netns is None:
            return list(argv)
        enter = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", _ENTER]
        return [*enter, self.name, *argv]

    def popen(
        self, argv: Sequence[str], env: Mapping[str, str], log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host; its pid is the program's own (signals reach it)."""
        return subprocess.Popen(
            self.command(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )


class Network(Protocol):
    """Where the hosts live: namespaces on a bridge, or loopback."""

    isolated: bool
    gateway: str
    reason: str

    def host(self, name: str) -> Host: ...

    def close(self) -> None: ...


@dataclass
class Loopback:
    """The fallback: every host a plain process on loopback (``reason`` says why)."""

    reason: str
    isolated: bool = False
    gateway: str = "127.0.0.1"
    hosts: dict[str, Host] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.hosts.setdefault(name, Host(name, "127.0.0.1"))

    def close(self) -> None:
        return


@dataclass
class Namespaces:
    """A bridge in the root namespace and one network namespace per host on it."""

    token: str
    subnet: ipaddress.IPv4Network
    bridge: str
    isolated: bool = True
    reason: str = "network namespaces on a bridge"
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (the test's servers bind it)."""
        return str(self.subnet.network_address + 1)

    @classmethod
    def create(cls) -> Namespaces:
        sweep()
        token = secrets.token_hex(3)
        bridge = f"ghb{token}"
        lock = Path(tempfile.gettempdir()) / "genhook-test-hosts.lock"
        with lock.open("w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # two runs never pick one /24
            subnet = _free_subnet()
            net = cls(token, subnet, bridge)
            try:
                _ip("link", "add", bridge, "type", "bridge")
                _ip("link", "set", "dev", bridge, "alias", f"{_ALIAS} {os.getpid()}")
                _ip("addr", "add", f"{net.gateway}/{subnet.prefixlen}", "dev", bridge)
                _ip("link", "set", bridge, "up")
            except BaseException:
                net.close()
                raise
        return net

    def host(self, name: str) -> Host:
        """The host ``name`` (made on first use): a namespace joined to the bridge."""
        if name in self.hosts:
            return self.hosts[name]
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
            raise ValueError(f"host name {name!r}: lower-case letters, digits and -")
        index = len(self.hosts)
        netns = f"gh{os.getpid()}-{self.token}-{name}"
        veth = f"gh{self.token}{index:x}"
        address = str(self.subnet.network_address + 10 + index)
        host = Host(name, address, netns)
        self.hosts[name] = host
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        """Kill what still runs on the hosts, delete their namespaces (their veths go with
        them) and the bridge. Safe to call twice."""
        for host in self.hosts.values():
            if host.netns is not None:
                _remove_netns(host.netns)
        _ip("link", "delete", self.bridge, check=False)


def _remove_netns(netns: str) -> None:
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGCONT)  # a stopped process dies of SIGKILL all the same
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "delete", netns, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> None:
    """Remove the namespaces and bridges that runs which are gone left behind (a run killed
    before its finalizers ran)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NS.match(name)
        if match and not _alive(int(match.group(1))):
            _remove_netns(name)
    for path in Path("/sys/class/net").glob("ghb*"):
        try:
            alias = (path / "ifalias").read_text().split()
        except OSError:
            continue
        dead = len(alias) == 2 and alias[1].isdigit() and not _alive(int(alias[1]))
        if alias[:1] == [_ALIAS] and dead:
            _ip("link", "delete", path.name, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`RANGE` that no interface of the root namespace has an address in."""
    used: set[ipaddress.IPv4Network] = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    candidates = [
        net for net in RANGE.subnets(new_prefix=24) if not any(net.overlaps(u) for u in used)
    ]
    if not candidates:
        raise RuntimeError(f"no free /24 left in {RANGE}")
    return random.choice(candidates)


@contextlib.contextmanager
def hosts_network() -> Iterator[Network]:
    """Namespaces on a bridge where the machine allows, else :class:`Loopback`; removed on
    exit whatever happened."""
    reason = namespaces_unavailable()
    net: Network = Loopback(reason) if reason else Namespaces.create()
    try:
        yield net
    finally:
        net.close()


class Forwarder:
    """A TCP relay: listens on ``host`` (an ephemeral port) and pipes every connection to
    ``target`` (e.g. a PostgreSQL that listens on loopback only). Runs its own event loop in
    a thread; :meth:`close` drops every connection."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host = host
        self.target = target
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        assert self._server is not None, "the forwarder did not start"
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._relay, self.host, 0)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


def describe(net: Network) -> str:
    """One line on where the hosts run (printed by the rehearsal)."""
    if isinstance(net, Namespaces):
        hosts = ", ".join(f"{h.name} {h.address}" for h in net.hosts.values())
        return f"hosts in network namespaces on bridge {net.bridge} {net.subnet}: {hosts}"
    return f"hosts as separate processes on loopback (no namespaces: {net.reason})"


__all__ = [
    "Forwarder",
    "Host",
    "Loopback",
    "Namespaces",
    "Network",
    "describe",
    "hosts_network",
    "namespaces_unavailable",
    "sweep",
]
