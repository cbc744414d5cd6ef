"""SSRF guards of callback URLs: IP literals in any spelling, resolved names, connect-time DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from genhook.delivery.addresses import is_public_address, literal_address
from genhook.delivery.ssrf import (
    CallbackBlocked,
    GuardedResolver,
    SystemResolver,
    check_callback_target,
)
from genhook.errors import ErrorCode, InvalidInput
from tests.netns import run_isolated


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


def refused_literal(url: str, *, allow_private: bool) -> str:
    """The description of the refusal of ``url``, which must come without a DNS lookup."""
    dns = FakeDNS()
    with pytest.raises(InvalidInput) as info:
        check_callback_target(url, allow_private=allow_private, resolver=dns)
    assert info.value.code is ErrorCode.INVALID_CALLBACK_URL
    assert info.value.field == "callback_url"
    assert "non-public" in info.value.description
    assert dns.calls == []
    return info.value.description


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_non_public_literal_refused_without_resolving(url: str) -> None:
    """A non-public IP literal, in any spelling, is refused and no DNS lookup happens."""
    refused_literal(url, allow_private=False)


#: What GENHOOK_ALLOW_PRIVATE_CALLBACKS opens: loopback and the private ranges, in any spelling.
PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456:789a::1]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
]

#: Link-local and cloud metadata endpoints, in every spelling: refused under every policy.
METADATA_URLS = [
    "http://169.254.169.254/latest",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.169.254./latest",
    "http://2852039166/latest",  # decimal
    "http://0xa9fea9fe/latest",  # hex
    "http://0251.0376.0251.0376/latest",  # octal
    "http://169.254.43518/latest",  # short form
    "http://\uff11\uff16\uff19\uff0e\uff12\uff15\uff14\uff0e\uff11\uff16\uff19"
    "\uff0e\uff12\uff15\uff14/",  # full-width
    "http://169.254.170.2/v2/credentials",  # AWS ECS task metadata
    "http://169.254.0.23/",  # Tencent Cloud
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://[64:ff9b::169.254.169.254]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254
    "http://[fd00:ec2::254]/latest",  # AWS IMDS over IPv6
    "http://[fd00:0ec2:0000::0254]/latest",
    "http://[fd00:ec2::23]/",  # AWS EKS pod identity agent
    "http://[fd20:ce::254]/",  # Google Cloud over IPv6
    "http://[fe80::1]/",  # link-local
    "http://[fe80::a9fe:a9fe]/",
    "http://[fe80::1%25lo]/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud
    "http://168.63.129.16/machine",  # Azure wire server
    "http://192.0.0.192/",  # Oracle Cloud
]

#: Not loopback, not private, not public: refused even with private callbacks allowed.
RESERVED_URLS = [
    "http://0.0.0.0/",
    "http://[::]/",
    "http://100.64.0.1/",  # CGNAT shared space is not a private range
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_loopback_and_private_literals_accepted_when_private_allowed(url: str) -> None:
    """With allow_private, loopback and the private ranges pass, without a DNS lookup."""
    dns = FakeDNS()
    check_callback_target(url, allow_private=True, resolver=dns)
    assert dns.calls == []


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("url", METADATA_URLS + RESERVED_URLS)
def test_metadata_and_link_local_refused_even_when_private_allowed(
    url: str, allow_private: bool
) -> None:
    """Link-local, metadata and reserved addresses, in any spelling, stay refused either way."""
    description = refused_literal(url, allow_private=allow_private)
    if allow_private:
        assert "refused even with GENHOOK_ALLOW_PRIVATE_CALLBACKS" in description


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "host",
    [
        "metadata.google.internal",
        "METADATA.Google.Internal.",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "computeMetadata.metadata.google.internal",
    ],
)
def test_metadata_names_refused_without_a_lookup(host: str, allow_private: bool) -> None:
    """The metadata services' well-known names are refused before any lookup, either way."""
    dns = FakeDNS({host.lower().rstrip("."): ["93.184.216.34"]})
    with pytest.raises(InvalidInput) as info:
        check_callback_target(f"http://{host}/v1/", allow_private=allow_private, resolver=dns)
    assert "cloud metadata service" in info.value.description
    assert dns.calls == []


@pytest.mark.parametrize("addr", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
def test_name_resolving_to_metadata_refused_when_private_allowed(addr: str) -> None:
    """With allow_private a name is still resolved, and one metadata address refuses it."""
    dns = FakeDNS({"hooks.test": ["10.0.0.5", addr]})
    with pytest.raises(InvalidInput) as info:
        check_callback_target("http://hooks.test:8080/cb", allow_private=True, resolver=dns)
    assert addr in info.value.description
    assert dns.calls == [("hooks.test", 8080)]


def test_name_resolving_to_loopback_and_private_accepted_when_private_allowed() -> None:
    """With allow_private a name resolving to loopback and private addresses passes."""
    dns = FakeDNS({"receiver.test": ["127.0.0.1", "::1", "10.0.0.5", "fd12::5"]})
    check_callback_target("http://receiver.test:9/", allow_private=True, resolver=dns)
    assert dns.calls == [("receiver.test", 9)]


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
        ("168.63.129.16", False),  # Azure wire server: public-looking, inside Azure only
        ("100.100.100.200", False),
        ("fd00:ec2::254", False),
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


def test_unresolvable_name_refused_when_private_allowed() -> None:
    """With allow_private a name must still resolve (else nothing can be said of its target)."""
    with pytest.raises(InvalidInput) as info:
        check_callback_target("http://receiver.test:9/", allow_private=True, resolver=FakeDNS())
    assert "does not resolve" in info.value.description


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


def test_guarded_resolver_allow_private_keeps_loopback_and_private_only() -> None:
    """With allow_private the guard keeps loopback and private addresses, and still drops
    link-local and metadata ones."""
    answer = ["169.254.169.254", "10.0.0.1", "fd00:ec2::254", "::1", "fe80::1", "127.0.0.1"]
    guard = GuardedResolver(FakeAsyncDNS({"lan.example": answer}), allow_private=True)
    out = asyncio.run(guard.resolve("lan.example", 80, family=socket.AF_UNSPEC))
    assert [r["host"] for r in out] == ["10.0.0.1", "::1", "127.0.0.1"]


@pytest.mark.parametrize("allow_private", [False, True])
def test_guarded_resolver_blocks_a_rebinding_to_metadata_under_either_policy(
    allow_private: bool,
) -> None:
    """A name resolving to the metadata address at connect time is blocked, either way."""
    dns = FakeAsyncDNS({"rebind.example": ["169.254.169.254", "fd00:ec2::254"]})
    guard = GuardedResolver(dns, allow_private=allow_private)
    with pytest.raises(CallbackBlocked) as info:
        asyncio.run(guard.resolve("rebind.example", 80, family=socket.AF_UNSPEC))
    assert str(info.value) == (
        "blocked: rebind.example resolves to non-public address 169.254.169.254, fd00:ec2::254"
    )


def test_guarded_resolver_blocks_metadata_names_without_a_lookup() -> None:
    """A metadata service's name is blocked at connect time before the inner resolver is asked."""
    dns = FakeAsyncDNS({"metadata.google.internal": ["93.184.216.34"]})
    guard = GuardedResolver(dns, allow_private=True)
    with pytest.raises(CallbackBlocked):
        asyncio.run(guard.resolve("metadata.google.internal", 80, family=socket.AF_UNSPEC))
    assert dns.calls == []


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


NETNS_ADDRESSES = [
    "169.254.169.254/32",
    "100.100.100.200/32",
    "168.63.129.16/32",
    "10.9.8.7/32",
    "172.16.0.1/32",
    "192.168.1.1/32",
    "100.64.0.1/32",
    "198.18.0.1/32",
    "fd00:ec2::254/128",
    "fd12::7/128",
]


def test_private_callbacks_never_reach_metadata_for_real() -> None:
    """In a loopback-only network namespace where 169.254.169.254 (and the other metadata
    addresses) really answer, genhook with private callbacks allowed refuses them at trigger time
    and at connect time, in every spelling and behind names; loopback and private addresses it
    does reach. The receiver, not genhook, says what got through."""
    report = {
        url: r
        for url, r in run_isolated("tests.ssrf_probe", NETNS_ADDRESSES).items()
        if not url.startswith("production ")
    }
    reached = {url for url, r in report.items() if r["reached"]}
    accepted = {url for url, r in report.items() if r["accepted"]}
    private = {
        "http://10.9.8.7:8089/hook",
        "http://[fd12::7]:8089/hook",
        "http://lan.test:8089/hook",
        "http://127.0.0.1:8089/hook",
    }
    assert reached == private
    assert accepted == private
    for url, result in report.items():
        if url not in private:
            assert result["outcome"] == "blocked", (url, result)
            assert str(result["error"]).startswith("blocked: "), (url, result)


def test_the_production_policy_refuses_every_forbidden_form_for_real() -> None:
    """The SSRF matrix: with private callbacks not allowed (production), over 40 forbidden
    forms (loopback in decimal, octal, hex, short and full-width forms, IPv6 loopback, mapped
    and compatible, the unspecified address, every private, CGNAT, link-local, metadata,
    benchmark, multicast, reserved and broadcast range, names resolving inside or half inside,
    a rebinding name, non-http schemes, credentials) are refused at trigger time and not sent
    by the sender, inside a loopback-only namespace where those addresses really answer: the
    receiver listening on all of them (the canary) gets no request."""
    report = {
        url.removeprefix("production "): r
        for url, r in run_isolated("tests.ssrf_probe", NETNS_ADDRESSES).items()
        if url.startswith("production ")
    }
    assert len(report) >= 40
    for url, result in report.items():
        assert result["accepted"] is False, url
        assert result["reached"] is False, url
        assert result["outcome"] != "delivered", (url, result)
