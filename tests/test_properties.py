"""Properties of the edge's parsers, checked by Hypothesis over generated input: the SSRF
guard's address parser (every spelling of every IPv4 address, IPv6 forms), the envelope
splitter, the trigger validator and the template loader. Each either answers or refuses with
genhook's own error, never anything else, and what it accepts obeys the stated rule.

Pure functions, no network: the guard's resolver here is a table, and literal addresses must be
judged without it."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from genhook.contract.envelope import RESERVED, parse_envelope, split_trigger
from genhook.delivery.addresses import is_public_address, literal_address
from genhook.delivery.ssrf import check_callback_target
from genhook.engine import Engine
from genhook.errors import ErrorCode, InvalidInput, TemplateError
from genhook.presets import Presets
from genhook.workflow.inputs import check_trigger
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import parse_workflow
from tests.conftest import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(
    max_examples=int(os.environ.get("GENHOOK_PROPERTY_EXAMPLES", "300")),  # reliability: more
    derandomize="GENHOOK_PROPERTY_EXAMPLES" not in os.environ,  # make test: the same cases
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
CODES = {code.value for code in ErrorCode}


class NoLookup:
    """A resolver that must not be asked: literal addresses are judged as written."""

    def resolve(self, host: str, port: int) -> list[str]:
        raise AssertionError(f"looked up {host!r}: a literal address needs no resolver")


class Table:
    """A resolver answering every name with fixed addresses."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    def resolve(self, host: str, port: int) -> list[str]:
        return list(self.addresses)


# -- the SSRF guard's address parser ---------------------------------------------------------


def spellings(value: int) -> list[str]:
    """Every legacy spelling of an IPv4 address that inet_aton (the system resolver) accepts."""
    a, b, c, d = value.to_bytes(4, "big")
    return [
        f"{a}.{b}.{c}.{d}",
        str(value),  # one decimal number
        hex(value),  # one hex number
        f"0{value:o}" if value else "0",  # one octal number
        ".".join(f"0{x:o}" if x else "0" for x in (a, b, c, d)),  # dotted octal
        ".".join(hex(x) for x in (a, b, c, d)),  # dotted hex
        f"{a}.{b}.{(c << 8) | d}",  # a.b.c with a 16-bit last part
        f"{a}.{(b << 16) | (c << 8) | d}",  # a.b with a 24-bit last part
        f"{a}.{b}.{c}.{d}.",  # a trailing dot
    ]


ipv4s = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from(
        [
            int(ipaddress.IPv4Address(a))
            for a in (
                "127.0.0.1",
                "0.0.0.0",
                "10.1.2.3",
                "172.16.0.1",
                "192.168.1.1",
                "169.254.169.254",
                "100.64.0.1",
                "100.100.100.200",
                "224.0.0.1",
                "240.0.0.1",
                "255.255.255.255",
                "198.18.0.1",
                "8.8.8.8",
            )
        ]
    ),
)


@FAST
@given(ipv4s)
def test_every_spelling_of_an_ipv4_address_is_that_address(value: int) -> None:
    expected = ipaddress.IPv4Address(value)
    for text in spellings(value):
        assert socket.inet_aton(text.rstrip(".")) == expected.packed  # what a client connects to
        assert literal_address(text) == expected, text


@FAST
@given(ipv4s, st.booleans())
def test_a_literal_callback_is_refused_exactly_when_its_address_is_not_public(
    value: int, mapped: bool
) -> None:
    """In every spelling, and as an IPv4-mapped IPv6 address, with the production policy
    (private callbacks not allowed) and without a DNS lookup."""
    address = ipaddress.IPv4Address(value)
    hosts = [f"[::ffff:{address}]"] if mapped else spellings(value)
    for host in hosts:
        url = f"https://{host}:8443/hook"
        try:
            check_callback_target(url, allow_private=False, resolver=NoLookup())
        except InvalidInput as exc:
            assert exc.code is ErrorCode.INVALID_CALLBACK_URL and exc.field == "callback_url"
            assert not is_public_address(address), (url, exc.description)
        else:
            assert is_public_address(address), url


@FAST
@given(st.ip_addresses(v=6))
def test_an_ipv6_literal_is_refused_exactly_when_it_is_not_public(address: Any) -> None:
    url = f"http://[{address}]/hook"
    try:
        check_callback_target(url, allow_private=False, resolver=NoLookup())
    except InvalidInput as exc:
        assert exc.code is ErrorCode.INVALID_CALLBACK_URL
        assert not is_public_address(address), url
    else:
        assert is_public_address(address), url


@FAST
@given(st.lists(ipv4s, min_size=1, max_size=4))
def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public(
    values: list[int],
) -> None:
    addresses = [str(ipaddress.IPv4Address(v)) for v in values]
    try:
        check_callback_target(
            "https://hooks.example.com/x", allow_private=False, resolver=Table(addresses)
        )
    except InvalidInput as exc:
        assert exc.code is ErrorCode.INVALID_CALLBACK_URL
        assert not all(is_public_address(ipaddress.ip_address(a)) for a in addresses)
    else:
        assert all(is_public_address(ipaddress.ip_address(a)) for a in addresses)


@FAST
@given(st.text(max_size=80), st.sampled_from(["http://", "https://", "", "ftp://", "//"]))
@example("0x7f.1", "http://")
@example("[::ffff:127.0.0.1]", "http://")
@example("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11", "http://")  # full-width
@example("user:pw@8.8.8.8", "https://")
def test_any_callback_text_is_answered_or_refused_with_the_callback_code(
    host: str, scheme: str
) -> None:
    """Arbitrary text where the host goes: accepted only when it is a public literal or a name
    resolving to a public address, else invalid_callback_url; never another exception."""
    url = f"{scheme}{host}/hook"
    try:
        check_callback_target(url, allow_private=False, resolver=Table(["93.184.216.34"]))
    except InvalidInput as exc:
        assert exc.code is ErrorCode.INVALID_CALLBACK_URL and exc.field == "callback_url"
        return
    assert scheme in ("http://", "https://")
    literal = literal_address(host.rsplit("@", 1)[-1].split("/")[0].split("?")[0])
    assert literal is None or is_public_address(literal)


# -- the envelope splitter -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.one_of(st.sampled_from(RESERVED), st.text(min_size=1, max_size=16))


@FAST
@given(st.dictionaries(keys, json_values, max_size=10))
def test_the_splitter_partitions_a_body_into_input_and_envelope(body: dict[str, Any]) -> None:
    given_input, envelope = split_trigger(body)
    assert set(envelope) <= set(RESERVED)
    assert not set(given_input) & set(RESERVED)
    assert {**given_input, **envelope} == body


@FAST
@given(st.dictionaries(st.sampled_from(RESERVED), json_values, max_size=5))
def test_any_envelope_is_checked_or_refused_naming_its_field(raw: dict[str, Any]) -> None:
    try:
        envelope = parse_envelope(raw)
    except InvalidInput as exc:
        assert exc.field in RESERVED and exc.code.value in CODES
        assert exc.field in raw
        return
    assert envelope.priority in ("low", "normal", "high")
    assert {"job.completed", "job.failed"} <= set(envelope.callback_events)
    if envelope.client_metadata is not None:
        assert envelope.client_metadata == raw["client_metadata"]
        assert len(json.dumps(envelope.client_metadata).encode()) <= 1024 * 2  # JSON text bound
    if envelope.deadline is not None:
        assert math.isfinite(envelope.deadline)


# -- the trigger validator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def product_image() -> Any:
    return Engine.load().workflow("product-image")


VALID = json.loads((SAMPLES / "product-image" / "linen-shirt.json").read_text(encoding="utf-8"))


def _check(workflow: Any, body: Any) -> None:
    """``check_trigger`` answers or refuses with a documented code naming a field as the
    caller sent it or as the workflow declares it (a missing one), or none; never another
    exception."""
    declared = set(workflow.input_schema.get("properties", {}))
    try:
        checked = check_trigger(workflow, body)
    except InvalidInput as exc:
        assert exc.code.value in CODES
        sent = set(body) if isinstance(body, dict) else set()
        assert exc.field is None or exc.field in sent | declared, exc.field
        assert exc.description
        return
    assert isinstance(body, dict)
    assert not set(checked.input) & set(RESERVED)


@FAST
@given(body=json_values)
def test_any_json_value_as_a_trigger_is_checked_or_refused(product_image: Any, body: Any) -> None:
    _check(product_image, body)


@FAST
@given(
    changes=st.dictionaries(
        st.sampled_from([*VALID, *RESERVED, "unknown_field"]), json_values, max_size=4
    ),
    dropped=st.sets(st.sampled_from(sorted(VALID)), max_size=3),
)
def test_a_valid_trigger_with_fields_changed_or_dropped_is_checked_or_refused(
    product_image: Any, changes: dict[str, Any], dropped: set[str]
) -> None:
    body = {k: v for k, v in VALID.items() if k not in dropped}
    body.update(changes)
    _check(product_image, body)


@FAST
@given(name=st.text(min_size=1, max_size=30))
def test_an_undeclared_field_is_refused_by_its_own_name(product_image: Any, name: str) -> None:
    assume(name not in product_image.input_schema.get("properties", {}) and name not in RESERVED)
    with pytest.raises(InvalidInput) as refused:
        check_trigger(product_image, {**VALID, name: "x"})
    assert refused.value.code is ErrorCode.UNKNOWN_FIELD and refused.value.field == name


# -- the template loader ---------------------------------------------------------------------

TEMPLATE = (ROOT / "workflows" / "product-image.yaml").read_text(encoding="utf-8")
LINES = TEMPLATE.splitlines()


@FAST
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(LINES) - 1),
            st.sampled_from(["drop", "dup", "text", "indent"]),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_a_damaged_template_loads_or_lists_its_problems_with_lines(
    presets: Presets, nodes: NodeRegistry, edits: list[tuple[int, str, str]]
) -> None:
    """A shipped template with lines dropped, doubled, replaced or re-indented: it loads, or
    TemplateError lists each problem with where and (when the YAML says) the line."""
    lines = list(LINES)
    for index, how, text in edits:
        index %= len(lines)
        if how == "drop":
            del lines[index]
        elif how == "dup":
            lines.insert(index, lines[index])
        elif how == "text":
            lines[index] = lines[index].split(":")[0] + ": " + text
        else:
            lines[index] = "  " + lines[index]
        if not lines:
            lines = ["id: x"]
    damaged = "\n".join(lines)
    try:
        parse_workflow(damaged, "damaged.yaml", presets, nodes)
    except TemplateError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.message and problem.where
            assert problem.line is None or 1 <= problem.line <= len(lines) + 1


@FAST
@given(document=json_values)
def test_any_yaml_document_loads_or_is_refused_as_a_template(
    presets: Presets, nodes: NodeRegistry, document: Any
) -> None:
    text = yaml.safe_dump(document)
    try:
        parse_workflow(text, "any.yaml", presets, nodes)
    except TemplateError as exc:
        assert exc.problems


def test_a_literal_where_only_another_node_can_give_the_value_is_a_problem(
    presets: Presets, nodes: NodeRegistry
) -> None:
    """Found by the damaged-template property: ``result:`` left empty in a quality check (a
    parameter that takes another node's renders) crashed the loader inside pydantic."""
    text = TEMPLATE.replace("result: ${image.renders}", "result:", 1)
    assert text != TEMPLATE
    with pytest.raises(TemplateError) as refused:
        parse_workflow(text, "empty.yaml", presets, nodes)
    (problem,) = [p for p in refused.value.problems if p.where == "nodes.qc.with.result"]
    assert "from another node" in problem.message and problem.line is not None
