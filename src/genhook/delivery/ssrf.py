"""Server-side request forgery guards for callback URLs.

A ``callback_url`` comes from a requesting system, so genhook must not let it reach the
operator's own network or a cloud metadata service. Which addresses a callback may reach, under
the default policy and under ``GENHOOK_ALLOW_PRIVATE_CALLBACKS``, is
:mod:`genhook.delivery.addresses`; two checks apply it:

* :func:`check_callback_target`, when a trigger arrives: IP literals in any spelling (decimal,
  octal, hex, short forms, trailing dot, bracketed IPv6, zone ids, full-width digits) must be
  allowed, and a name must resolve, to allowed addresses only.
* :class:`GuardedResolver`, inside the HTTP client at connect time: every address a name resolves
  to that is not allowed is dropped, so a name that was public when the trigger came and points
  inside later (DNS rebinding) still cannot be reached. A host that is an IP literal (in any
  spelling) is also refused by the sender before any connection, with :func:`literal_address`
  (the spellings a client might fold differently: see ``sender.blocked_literal``).

``allow_private=True`` opens loopback and the private ranges only; link-local and metadata
addresses stay refused. The syntax check of :mod:`genhook.contract.envelope` always applies.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from genhook.contract.envelope import check_callback_url
from genhook.delivery.addresses import (
    address_allowed,
    literal_address,
    metadata_name,
    normalize_host,
    parse_address,
    refusal,
)
from genhook.errors import ErrorCode, InvalidInput


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


def _reach(allow_private: bool) -> str:
    if allow_private:
        return "callbacks may only reach public, loopback and private addresses"
    return "callbacks may only reach public internet addresses"


def check_callback_target(url: str, *, allow_private: bool, resolver: Resolver) -> None:
    """Refuse (``InvalidInput``, code ``invalid_callback_url``) a callback URL genhook may not call.

    Always: the syntax check of :func:`genhook.contract.envelope.check_callback_url`; an
    IP-literal host must be an address the policy allows; a name must not be a metadata service's,
    must resolve, and every address it resolves to must be allowed (one is enough to refuse).
    """
    check_callback_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = literal_address(host)
    if literal is not None:
        why = refusal(literal, allow_private=allow_private)
        if why is not None:
            raise _bad(f"callback_url host {host} is the {why}; {_reach(allow_private)}")
        return
    name = normalize_host(host)
    if ":" in name or not name:
        raise _bad(f"callback_url host {host} is not a valid host name or IP address")
    if metadata_name(name):
        raise _bad(f"callback_url host {host} is a cloud metadata service; refused")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        resolved = resolver.resolve(name, port)
    except (OSError, UnicodeError) as exc:
        raise _bad(f"callback_url host {host} does not resolve ({exc}); refused") from exc
    if not resolved:
        raise _bad(f"callback_url host {host} resolves to no address; refused")
    blocked = [a for a in resolved if not _allowed_text(a, allow_private)]
    if blocked:
        raise _bad(
            f"callback_url host {host} resolves to non-public address {', '.join(blocked)}; "
            f"{_reach(allow_private)}"
        )


def _allowed_text(addr: str, allow_private: bool) -> bool:
    ip = parse_address(addr)
    return ip is not None and address_allowed(ip, allow_private=allow_private)


class CallbackBlocked(OSError):
    """A callback host resolved, at connect time, to no address the policy allows."""


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops every address the callback policy refuses, at connect time.

    Wraps ``inner``: an aiohttp resolver (default: a ``ThreadedResolver``, created on first use)
    or a blocking :class:`Resolver` (run in a thread). When no allowed address remains, or the
    host is a metadata service's name, raises :class:`CallbackBlocked`, which the sender's
    client (:mod:`genhook.delivery.http1`) records as ``blocked``. ``allow_private`` keeps
    loopback and private addresses too.
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
        if metadata_name(host):
            raise CallbackBlocked(f"blocked: {host} is a cloud metadata service")
        results = await self._lookup(host, port, family)
        if family in (socket.AF_INET, socket.AF_INET6):
            results = [r for r in results if r["family"] == family]
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no address")
        kept = [r for r in results if _allowed_text(r["host"], self._allow_private)]
        if not kept:
            seen = ", ".join(dict.fromkeys(r["host"] for r in results))
            raise CallbackBlocked(f"blocked: {host} resolves to non-public address {seen}")
        return kept

    async def close(self) -> None:
        """Close the inner resolver if this resolver created it."""
        if self._owns_inner and isinstance(self._inner, AbstractResolver):
            await self._inner.close()


def _result(host: str, addr: str, port: int) -> ResolveResult:
    ip = parse_address(addr)
    family = socket.AF_INET6 if ip is not None and ip.version == 6 else socket.AF_INET
    return ResolveResult(
        hostname=host,
        host=addr,
        port=port,
        family=family,
        proto=0,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )
