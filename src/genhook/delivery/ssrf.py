"""Server-side request forgery guards for callback URLs.

A ``callback_url`` comes from a requesting system, so genhook must not let it reach the
operator's own network: loopback, private and link-local ranges, cloud metadata
(169.254.169.254), carrier-grade NAT, multicast, reserved and documentation ranges, and IPv6
forms that embed any of those IPv4 addresses. Two checks keep it out:

* :func:`check_callback_target`, when a trigger arrives: IP literals in any spelling (decimal,
  octal, hex, short forms, trailing dot, bracketed IPv6, zone ids, full-width digits) must be
  public, and a name must resolve, to public addresses only.
* :class:`GuardedResolver`, inside the HTTP client at connect time: every address a name resolves
  to that is not public is dropped, so a name that was public when the trigger came and points
  inside later (DNS rebinding) still cannot be reached. aiohttp does not consult its resolver for
  hosts that look like IP literals, so the sender checks those itself with :func:`literal_address`.

``GENHOOK_ALLOW_PRIVATE_CALLBACKS`` (``allow_private=True``) switches both off, for local
development and tests; the syntax check of :mod:`genhook.contract.envelope` always applies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from typing import Protocol, TypeAlias
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from genhook.contract.envelope import check_callback_url
from genhook.errors import ErrorCode, InvalidInput

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 ranges that are never a callback target (IANA special-purpose registry and RFC 6890).
NON_PUBLIC_V4: tuple[ipaddress.IPv4Network, ...] = (
    _V4("0.0.0.0/8"),  # "this network", incl. unspecified 0.0.0.0
    _V4("10.0.0.0/8"),  # private (RFC 1918)
    _V4("100.64.0.0/10"),  # carrier-grade NAT shared space (RFC 6598)
    _V4("127.0.0.0/8"),  # loopback
    _V4("169.254.0.0/16"),  # link-local, incl. cloud metadata 169.254.169.254
    _V4("172.16.0.0/12"),  # private (RFC 1918)
    _V4("192.0.0.0/24"),  # IETF protocol assignments
    _V4("192.0.2.0/24"),  # documentation TEST-NET-1
    _V4("192.88.99.0/24"),  # deprecated 6to4 relay anycast
    _V4("192.168.0.0/16"),  # private (RFC 1918)
    _V4("198.18.0.0/15"),  # benchmarking
    _V4("198.51.100.0/24"),  # documentation TEST-NET-2
    _V4("203.0.113.0/24"),  # documentation TEST-NET-3
    _V4("224.0.0.0/4"),  # multicast
    _V4("240.0.0.0/4"),  # reserved, incl. broadcast 255.255.255.255
)

#: IPv6 global unicast; everything outside it (loopback, unspecified, link-local fe80::/10,
#: unique-local fc00::/7, site-local, multicast ff00::/8, discard 100::/64, ...) is not public.
GLOBAL_UNICAST_V6 = _V6("2000::/3")

#: Ranges inside 2000::/3 that are still not public.
NON_PUBLIC_V6: tuple[ipaddress.IPv6Network, ...] = (
    _V6("2001:2::/48"),  # benchmarking
    _V6("2001:10::/28"),  # deprecated ORCHID
    _V6("2001:db8::/32"),  # documentation
    _V6("3fff::/20"),  # documentation (RFC 9637)
)

_MAPPED_V6 = _V6("::ffff:0:0/96")  # IPv4-mapped
_COMPATIBLE_V6 = _V6("::/96")  # deprecated IPv4-compatible (also holds :: and ::1)
_NAT64_V6 = _V6("64:ff9b::/96")  # well-known NAT64 prefix, the IPv4 address in the low 32 bits
_TEREDO_V6 = _V6("2001::/32")
_SIXTOFOUR_V6 = _V6("2002::/16")

_IPV4_CANDIDATE = re.compile(r"[0-9A-Fa-fXx.]+")


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is a public unicast address that a callback may reach.

    IPv6 addresses that embed an IPv4 address (IPv4-mapped and -compatible, NAT64 64:ff9b::/96,
    6to4 2002::/16, Teredo) are judged by the IPv4 addresses they embed. An IPv6 address with a
    zone id is never public: zone ids only mean something for non-global scopes.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in NON_PUBLIC_V4)
    if ip.scope_id:
        return False
    bare = ipaddress.IPv6Address(ip.packed)
    if bare in _MAPPED_V6 or bare in _NAT64_V6:
        return is_public_address(ipaddress.IPv4Address(bare.packed[-4:]))
    if bare in _COMPATIBLE_V6:
        # :: and ::1 are in here too; both embed non-public 0.0.0.x.
        return is_public_address(ipaddress.IPv4Address(bare.packed[-4:]))
    if bare in _SIXTOFOUR_V6:
        return is_public_address(ipaddress.IPv4Address(bare.packed[2:6]))
    if bare in _TEREDO_V6:
        teredo = bare.teredo
        return teredo is not None and all(is_public_address(v4) for v4 in teredo)
    if bare not in GLOBAL_UNICAST_V6:
        return False
    return not any(bare in net for net in NON_PUBLIC_V6)


def _normalize_host(host: str) -> str:
    """The host as an HTTP client would see it: brackets off, Unicode folded, trailing dots off."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if not h.isascii():
        # IDNA (UTS #46) folds full-width digits and ideographic full stops, so
        # full-width "127.0.0.1" is connected to as 127.0.0.1; fold the same way.
        h = unicodedata.normalize("NFKC", h).casefold()
        h = h.replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")
    return h.rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The IP address that ``host`` spells, in any spelling; None when ``host`` is a name.

    Accepts the legacy IPv4 forms that ``inet_aton`` (and so the system resolver) accepts:
    decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.0.0.1`` / ``0x7f000001``, short
    ``127.1``; a trailing dot; bracketed IPv6 with an optional zone id (``%eth0`` or ``%25eth0``);
    full-width Unicode digits and dots.
    """
    h = _normalize_host(host)
    if not h:
        return None
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h)
        except ValueError:
            return None
    if not _IPV4_CANDIDATE.fullmatch(h):
        return None
    try:
        packed = socket.inet_aton(h)
    except (OSError, ValueError):
        return None
    return ipaddress.IPv4Address(packed)


class Resolver(Protocol):
    """A blocking name resolver: the addresses ``host`` resolves to, ``OSError`` if none."""

    def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The system resolver (``getaddrinfo``), IPv4 and IPv6."""

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, in resolver order, without duplicates."""
        infos = socket.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
        out: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = str(sockaddr[0])
            if addr not in out:
                out.append(addr)
        return out


def _bad(why: str) -> InvalidInput:
    return InvalidInput(ErrorCode.INVALID_CALLBACK_URL, why, field="callback_url")


def _parse_resolved(addr: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        return None


def check_callback_target(url: str, *, allow_private: bool, resolver: Resolver) -> None:
    """Refuse (``InvalidInput``, code ``invalid_callback_url``) a callback URL genhook may not call.

    Always: the syntax check of :func:`genhook.contract.envelope.check_callback_url`. Unless
    ``allow_private``: an IP-literal host must be a public address; a name must resolve, and every
    address it resolves to must be public (one private address is enough to refuse).
    """
    check_callback_url(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = literal_address(host)
    if literal is not None:
        if not is_public_address(literal):
            raise _bad(
                f"callback_url host {host} is the non-public address {literal}; "
                "callbacks may only reach public internet addresses"
            )
        return
    name = _normalize_host(host)
    if ":" in name or not name:
        raise _bad(f"callback_url host {host} is not a valid host name or IP address")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        resolved = resolver.resolve(name, port)
    except (OSError, UnicodeError) as exc:
        raise _bad(f"callback_url host {host} does not resolve ({exc}); refused") from exc
    if not resolved:
        raise _bad(f"callback_url host {host} resolves to no address; refused")
    blocked = [a for a in resolved if not _is_public_text(a)]
    if blocked:
        raise _bad(
            f"callback_url host {host} resolves to non-public address {', '.join(blocked)}; "
            "callbacks may only reach public internet addresses"
        )


def _is_public_text(addr: str) -> bool:
    ip = _parse_resolved(addr)
    return ip is not None and is_public_address(ip)


class CallbackBlocked(OSError):
    """A callback host resolved, at connect time, to non-public addresses only."""


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops every non-public address at connect time.

    Wraps ``inner``: an aiohttp resolver (default: a ``ThreadedResolver``, created on first use)
    or a blocking :class:`Resolver` (run in a thread). When no public address remains, raises
    :class:`CallbackBlocked`, which aiohttp reports as a connection (DNS) error. With
    ``allow_private`` nothing is dropped.
    """

    def __init__(
        self,
        inner: AbstractResolver | Resolver | None = None,
        *,
        allow_private: bool = False,
    ) -> None:
        self._inner = inner
        self._owns_inner = inner is None
        self._allow_private = allow_private

    async def _lookup(self, host: str, port: int, family: int) -> list[ResolveResult]:
        literal = literal_address(host)
        if literal is not None:
            return [_result(host, str(literal), port)]
        if self._inner is None:
            self._inner = ThreadedResolver()
        inner = self._inner
        if isinstance(inner, AbstractResolver):
            return await inner.resolve(host, port, family=socket.AddressFamily(family))
        addrs = await asyncio.to_thread(inner.resolve, host, port)
        return [_result(host, a, port) for a in addrs]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host`` that a callback may reach; ``CallbackBlocked`` if none."""
        results = await self._lookup(host, port, family)
        if family in (socket.AF_INET, socket.AF_INET6):
            results = [r for r in results if r["family"] == family]
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no address")
        if self._allow_private:
            kept = results
        else:
            kept = [r for r in results if _is_public_text(r["host"])]
        if not kept:
            seen = ", ".join(dict.fromkeys(r["host"] for r in results))
            raise CallbackBlocked(f"blocked: {host} resolves to non-public address {seen}")
        return kept

    async def close(self) -> None:
        """Close the inner resolver if this resolver created it."""
        if self._owns_inner and isinstance(self._inner, AbstractResolver):
            await self._inner.close()


def _result(host: str, addr: str, port: int) -> ResolveResult:
    ip = _parse_resolved(addr)
    family = socket.AF_INET6 if ip is not None and ip.version == 6 else socket.AF_INET
    return ResolveResult(
        hostname=host,
        host=addr,
        port=port,
        family=family,
        proto=0,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )
