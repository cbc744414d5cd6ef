"""Which IP addresses and host names a callback may reach, under the two callback policies.

* Default (production): public unicast addresses only.
* ``GENHOOK_ALLOW_PRIVATE_CALLBACKS`` (``allow_private``, for local development and tests): also
  loopback (127.0.0.0/8, ::1) and the private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
  IPv6 unique-local fc00::/7). Nothing else: the switch lifts no other special-purpose range.
* Never, under either policy: link-local addresses and every cloud metadata endpoint
  (:data:`ALWAYS_REFUSED_V4`, :data:`ALWAYS_REFUSED_V6`, and the names in
  :data:`METADATA_NAMES`), because a callback there hands the caller the machine's credentials.

IPv6 addresses that embed an IPv4 address (IPv4-mapped and -compatible, NAT64 64:ff9b::/96, 6to4
2002::/16, Teredo) are judged by the IPv4 addresses they embed, under the same policy; an IPv6
address with a zone id is never allowed (zone ids only mean something for non-global scopes).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 ranges that are never a public callback target (IANA special-purpose registry, RFC 6890).
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

#: What ``allow_private`` opens: loopback and the RFC 1918 ranges (IPv6: ::1 and fc00::/7).
PRIVATE_V4: tuple[ipaddress.IPv4Network, ...] = (
    _V4("127.0.0.0/8"),
    _V4("10.0.0.0/8"),
    _V4("172.16.0.0/12"),
    _V4("192.168.0.0/16"),
)
_UNIQUE_LOCAL_V6 = _V6("fc00::/7")

#: Refused under every policy: link-local and cloud metadata endpoints.
ALWAYS_REFUSED_V4: tuple[ipaddress.IPv4Network, ...] = (
    _V4("169.254.0.0/16"),  # link-local: AWS, GCP, Azure, OCI, DigitalOcean metadata
    # (169.254.169.254), AWS ECS task metadata (169.254.170.2), Tencent (169.254.0.23)
    _V4("100.100.100.200/32"),  # Alibaba Cloud metadata
    _V4("168.63.129.16/32"),  # Azure wire server (a public-looking address inside Azure)
    _V4("192.0.0.192/32"),  # Oracle Cloud metadata
)
ALWAYS_REFUSED_V6: tuple[ipaddress.IPv6Network, ...] = (
    _V6("fe80::/10"),  # link-local
    _V6("fd00:ec2::/32"),  # AWS Nitro services: metadata fd00:ec2::254, DNS, NTP, EKS/ECS agents
    _V6("fd20:ce::254/128"),  # Google Cloud metadata over IPv6
)

#: Host names of metadata services, refused before any lookup (the addresses they resolve to
#: are refused too, so this list only saves a lookup and says why).
METADATA_NAMES = (
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
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

_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
_MAPPED_V6 = _V6("::ffff:0:0/96")  # IPv4-mapped
_COMPATIBLE_V6 = _V6("::/96")  # deprecated IPv4-compatible (also holds :: and ::1)
_NAT64_V6 = _V6("64:ff9b::/96")  # well-known NAT64 prefix, the IPv4 address in the low 32 bits
_TEREDO_V6 = _V6("2001::/32")
_SIXTOFOUR_V6 = _V6("2002::/16")

_IPV4_CANDIDATE = re.compile(r"[0-9A-Fa-fXx.]+")


def _embedded_v4(bare: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address stands for, None when it embeds none."""
    if bare in _MAPPED_V6 or bare in _NAT64_V6 or bare in _COMPATIBLE_V6:
        return [ipaddress.IPv4Address(bare.packed[-4:])]
    if bare in _SIXTOFOUR_V6:
        return [ipaddress.IPv4Address(bare.packed[2:6])]
    if bare in _TEREDO_V6:
        teredo = bare.teredo
        return list(teredo) if teredo is not None else []
    return None


def address_allowed(ip: IPAddress, *, allow_private: bool) -> bool:
    """True when a callback may connect to ``ip`` under the policy (see the module's text)."""
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in ALWAYS_REFUSED_V4):
            return False
        if allow_private and any(ip in net for net in PRIVATE_V4):
            return True
        return not any(ip in net for net in NON_PUBLIC_V4)
    if ip.scope_id:
        return False
    bare = ipaddress.IPv6Address(ip.packed)
    if any(bare in net for net in ALWAYS_REFUSED_V6):
        return False
    if bare == _LOOPBACK_V6:  # inside ::/96, but not an IPv4-compatible address
        return allow_private
    embedded = _embedded_v4(bare)
    if embedded is not None:
        return bool(embedded) and all(
            address_allowed(v4, allow_private=allow_private) for v4 in embedded
        )
    if allow_private and bare in _UNIQUE_LOCAL_V6:
        return True
    if bare not in GLOBAL_UNICAST_V6:
        return False
    return not any(bare in net for net in NON_PUBLIC_V6)


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is a public unicast address that any callback may reach."""
    return address_allowed(ip, allow_private=False)


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why a callback may not connect to ``ip`` (starting "non-public address"), or None."""
    if address_allowed(ip, allow_private=allow_private):
        return None
    if allow_private:
        return (
            f"non-public address {ip} (link-local, cloud metadata or reserved: refused even "
            "with GENHOOK_ALLOW_PRIVATE_CALLBACKS)"
        )
    return f"non-public address {ip}"


def metadata_name(host: str) -> bool:
    """True when ``host`` names a cloud metadata service (or, for dotted names, one under it)."""
    name = normalize_host(host)
    return name in METADATA_NAMES or any(
        name.endswith("." + known) for known in METADATA_NAMES if "." in known
    )


def normalize_host(host: str) -> str:
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
    h = normalize_host(host)
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


def parse_address(addr: str) -> IPAddress | None:
    """An address as a resolver returns it (plain notation), None if it is not one."""
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        return None
