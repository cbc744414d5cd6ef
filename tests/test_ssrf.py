"""SSRF guards of callback URLs: IP literals in any spelling, resolved names, connect-time DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from genhook.delivery.ssrf import (
    CallbackBlocked,
    GuardedResolver,
    SystemResolver,
    check_callback_target,
    is_public_address,
    literal_address,
)
from genhook.errors import ErrorCode, InvalidInput


@dataclass
class FakeDNS:
    """The outside world's DNS: a fixed table; names not in it do not resolve."""

    table: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


class FakeAsyncDNS(AbstractResolver):
    """An aiohttp resolver answering from a fixed table."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for addr in self.table[host]
        ]

    async def close(self) -> None:
        pass


NON_PUBLIC_URLS = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "http://2130706433/",  # decimal
    "http://017700000001/",  # octal, one part
    "http://0177.0.0.1/",  # octal
    "http://00000177.0.0.01/",  # octal with extra zeros
    "http://0x7f.0.0.1/",  # hex
    "http://0x7F.1/",  # hex, short
    "http://0x7f000001/",  # hex, one part
    "http://127.1/",  # short form
    "http://127.0.0.1./",  # trailing dot
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",  # full-width digits and dots
    "http://[::1]/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::10.0.0.1]/",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo, client 192.0.2.45
    "http://[fe80::1]/",  # link-local
    "http://[fe80::1%25eth0]/",  # link-local with zone id
    "http://[fc00::1]/",  # unique-local
    "http://[fd12:3456:789a::1]/",
    "http://[ff02::1]/",  # multicast
    "http://[2001:db8::1]/",  # documentation
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/",  # CGNAT
    "http://224.0.0.1/",  # multicast
    "http://239.255.255.250/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",  # broadcast
    "http://192.0.2.1/",  # TEST-NET-1
    "http://198.51.100.7/",  # TEST-NET-2
    "http://203.0.113.9/",  # TEST-NET-3
    "http://198.18.0.1/",  # benchmarking
    "http://192.0.0.8/",  # IETF protocol assignments
]

PUBLIC_URLS = [
    "http://93.184.216.34/hook",
    "https://93.184.216.34:8443/hook",
    "http://1.1.1.1/",
    "http://[2606:4700::1111]/hook",
    "http://[::ffff:93.184.216.34]/",  # IPv4-mapped public
    "http://[64:ff9b::93.184.216.34]/",  # NAT64 of a public address
    "http://[2002:5db8:d822::1]/",  # 6to4 of 93.184.216.34
    "http://1572395042/",  # decimal 93.184.216.34
]


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_non_public_literal_refused_without_resolving(url: str) -> None:
    """A non-public IP literal, in any spelling, is refused and no DNS lookup happens."""
    dns = FakeDNS()
    with pytest.raises(InvalidInput) as info:
        check_callback_target(url, allow_private=False, resolver=dns)
    assert info.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert info.value.field == "callback_url"
    assert "non-public" in info.value.description
    assert dns.calls == []


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_non_public_literal_accepted_when_private_allowed(url: str) -> None:
    """With allow_private every non-public literal passes (only the syntax is checked)."""
    dns = FakeDNS()
    check_callback_target(url, allow_private=True, resolver=dns)
    assert dns.calls == []


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_literal_accepted(url: str) -> None:
    """A public IP literal is accepted without a DNS lookup."""
    dns = FakeDNS()
    check_callback_target(url, allow_private=False, resolver=dns)
    assert dns.calls == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("FE80::1%25eth0", "fe80::1%25eth0"),
        ("\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11", "127.0.0.1"),
    ],
)
def test_literal_address_parses_every_spelling(host: str, expected: str) -> None:
    """literal_address maps each legacy or bracketed spelling onto its address."""
    assert literal_address(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host", ["example.com", "1e100.net", "deadbeef", "123.abc", "0x7g.0.0.1", "256.1.1.1", ""]
)
def test_literal_address_is_none_for_names(host: str) -> None:
    """A host that is not an IP literal gives None."""
    assert literal_address(host) is None


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("2a00:1450:4001::200e", True),
        ("127.0.0.1", False),
        ("10.255.0.1", False),
        ("169.254.169.254", False),
        ("100.127.255.255", False),
        ("100.128.0.1", True),
        ("172.32.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::192.168.0.1", False),
        ("64:ff9b:1::1", False),
        ("2002:c0a8:101::1", False),
        ("2002:808:808::1", True),
        ("fec0::1", False),
        ("100::1", False),
        ("3fff::1", False),
        ("2001:2::1", False),
    ],
)
def test_is_public_address_table(addr: str, public: bool) -> None:
    """is_public_address gives the expected verdict for edge addresses on both sides."""
    assert is_public_address(ipaddress.ip_address(addr)) is public


def test_zone_id_is_never_public() -> None:
    """An IPv6 address carrying a zone id is not public, even on a global prefix."""
    assert not is_public_address(ipaddress.IPv6Address("2606:4700::1111%eth0"))


def test_name_resolving_to_public_and_private_is_refused() -> None:
    """One private address among the resolved ones is enough to refuse, and it is named."""
    dns = FakeDNS({"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(InvalidInput) as info:
        check_callback_target("https://mixed.example/hook", allow_private=False, resolver=dns)
    assert info.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert info.value.field == "callback_url"
    assert "10.0.0.5" in info.value.description
    assert dns.calls == [("mixed.example", 443)]


def test_name_resolving_to_private_ipv6_is_refused() -> None:
    """A name with only a unique-local IPv6 address is refused."""
    dns = FakeDNS({"v6.example": ["fd00::1"]})
    with pytest.raises(InvalidInput):
        check_callback_target("http://v6.example/", allow_private=False, resolver=dns)


def test_name_resolving_to_public_only_is_accepted_with_port() -> None:
    """A name whose every address is public passes; the URL's port is passed to the resolver."""
    dns = FakeDNS({"hooks.example": ["93.184.216.34", "2606:4700::1111"]})
    check_callback_target("http://HOOKS.example:8080/cb", allow_private=False, resolver=dns)
    assert dns.calls == [("hooks.example", 8080)]


def test_unresolvable_name_is_refused_and_says_so() -> None:
    """A name that does not resolve is refused, with a description saying it does not resolve."""
    with pytest.raises(InvalidInput) as info:
        check_callback_target("https://nowhere.example/", allow_private=False, resolver=FakeDNS())
    assert info.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert info.value.field == "callback_url"
    assert "does not resolve" in info.value.description


def test_name_resolving_to_nothing_is_refused() -> None:
    """An empty answer is refused like a failed lookup."""
    dns = FakeDNS({"empty.example": []})
    with pytest.raises(InvalidInput):
        check_callback_target("https://empty.example/", allow_private=False, resolver=dns)


def test_names_are_not_resolved_when_private_allowed() -> None:
    """With allow_private a name is not looked up at all, so an unresolvable one passes."""
    dns = FakeDNS()
    check_callback_target("http://receiver.test:9/", allow_private=True, resolver=dns)
    assert dns.calls == []


def test_localhost_refused_with_the_system_resolver() -> None:
    """The real system resolver maps localhost onto loopback, which is refused."""
    assert "127.0.0.1" in SystemResolver().resolve("127.0.0.1", 80)
    with pytest.raises(InvalidInput) as info:
        check_callback_target(
            "http://localhost:8080/", allow_private=False, resolver=SystemResolver()
        )
    assert "non-public" in info.value.description


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.216.34/",
        "javascript:alert(1)",
        "http://",
        "/relative/path",
        "http://user:pw@93.184.216.34/",
        "http://93.184.216.34:0/",
        "http://93.184.216.34/ x",
        "http://[::1/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_syntax_errors_keep_code_and_field(url: str, allow_private: bool) -> None:
    """A malformed URL is refused with invalid_callback_url on field callback_url either way."""
    with pytest.raises(InvalidInput) as info:
        check_callback_target(url, allow_private=allow_private, resolver=FakeDNS())
    assert info.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert info.value.field == "callback_url"
    assert info.value.to_dict()["error_code"] == "invalid_callback_url"


def test_guarded_resolver_drops_non_public_addresses() -> None:
    """At connect time only the public addresses of a mixed answer are handed to the client."""
    inner = FakeAsyncDNS({"mixed.example": ["10.0.0.1", "93.184.216.34", "fd00::2", "2606::1"]})
    guard = GuardedResolver(inner)
    out = asyncio.run(guard.resolve("mixed.example", 443, family=socket.AF_UNSPEC))
    assert [r["host"] for r in out] == ["93.184.216.34", "2606::1"]
    assert all(r["port"] == 443 for r in out)


def test_guarded_resolver_blocks_when_nothing_public_remains() -> None:
    """A name resolving to private addresses only raises CallbackBlocked, an OSError."""
    guard = GuardedResolver(FakeAsyncDNS({"inside.example": ["192.168.0.10", "::1"]}))
    with pytest.raises(CallbackBlocked) as info:
        asyncio.run(guard.resolve("inside.example", 80, family=socket.AF_UNSPEC))
    assert isinstance(info.value, OSError)
    assert str(info.value).startswith("blocked: ")
    assert "192.168.0.10" in str(info.value)


def test_guarded_resolver_allow_private_keeps_everything() -> None:
    """With allow_private the guard passes every address through."""
    guard = GuardedResolver(FakeAsyncDNS({"lan.example": ["10.0.0.1"]}), allow_private=True)
    out = asyncio.run(guard.resolve("lan.example", 80, family=socket.AF_UNSPEC))
    assert [r["host"] for r in out] == ["10.0.0.1"]


def test_guarded_resolver_wraps_a_blocking_resolver() -> None:
    """A blocking Resolver is usable inside the guard, with the right address families."""
    guard = GuardedResolver(FakeDNS({"hooks.example": ["93.184.216.34", "2606:4700::1111"]}))
    out = asyncio.run(guard.resolve("hooks.example", 80, family=socket.AF_UNSPEC))
    assert [(r["host"], r["family"]) for r in out] == [
        ("93.184.216.34", socket.AF_INET),
        ("2606:4700::1111", socket.AF_INET6),
    ]
    only_v4 = asyncio.run(guard.resolve("hooks.example", 80, family=socket.AF_INET))
    assert [r["host"] for r in only_v4] == ["93.184.216.34"]


def test_guarded_resolver_judges_legacy_literals_itself() -> None:
    """A hex-spelled loopback handed to the resolver is blocked without asking the inner one."""
    dns = FakeDNS()
    guard = GuardedResolver(dns)
    with pytest.raises(CallbackBlocked):
        asyncio.run(guard.resolve("0x7f.0.0.1", 80, family=socket.AF_UNSPEC))
    assert dns.calls == []
