"""The trigger's edge: strict JSON, the envelope split off and checked, the input checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from genhook.contract.envelope import (
    MAX_METADATA_BYTES,
    RESERVED,
    TERMINAL_EVENTS,
    parse_envelope,
    split_trigger,
)
from genhook.contract.jsonbody import MAX_DEPTH, MAX_INT_DIGITS, parse_json
from genhook.engine import Engine
from genhook.errors import InvalidInput
from genhook.presets import Presets
from genhook.workflow.inputs import check_trigger, validate_input
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import parse_workflow
from tests.test_templates import GOOD

VALID = {
    "product_id": "SKU-9",
    "product_name": "Desk Lamp",
    "target_style": "minimal",
    "target_platform": "x_post",
}

HOSTILE: list[tuple[str, bytes, str]] = [
    ("deep nesting", b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", f"limit of {MAX_DEPTH}"),
    ("nesting past the limit", b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", f"limit of {MAX_DEPTH}"),
    ("5000-digit integer", b'{"a": ' + b"9" * 5000 + b"}", f"limit of {MAX_INT_DIGITS} digits"),
    ("lone surrogate", b'{"a": "x\\ud800y"}', "lone surrogate"),
    ("lone surrogate in a key", b'{"a\\udfff": 1}', "lone surrogate"),
    ("NUL", b'{"a": "x\\u0000y"}', "NUL"),
    ("NaN", b'{"a": NaN}', "NaN is not a JSON number"),
    ("Infinity", b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    ("1e999", b'{"a": 1e999}', "out of range"),
    ("duplicate key", b'{"a": 1, "a": 2}', "'a' appears twice"),
    (
        "duplicate callback_url",
        b'{"callback_url": "https://a.example/", "callback_url": "https://b.example/"}',
        "'callback_url' appears twice",
    ),
    ("duplicate nested key", b'{"a": {"b": 1, "b": 1}}', "'b' appears twice"),
    ("not UTF-8", b'{"a": "\xff"}', "not UTF-8"),
    ("syntax", b"{nope", "not JSON"),
]


@pytest.mark.parametrize(("name", "raw", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_json_is_invalid_json(name: str, raw: bytes, says: str) -> None:
    """Each form python's json would accept, crash on or store badly is `invalid_json`."""
    with pytest.raises(InvalidInput) as info:
        parse_json(raw)
    assert info.value.code.value == "invalid_json"
    assert says in info.value.description
    assert len(info.value.description) < 300


def test_fault_names_its_top_level_field() -> None:
    """A NUL deep inside a field's value names that field."""
    with pytest.raises(InvalidInput) as info:
        parse_json(b'{"ok": "x", "product_name": {"inner": ["\\u0000"]}}')
    assert info.value.field == "product_name"


def test_within_the_limits_parses() -> None:
    """Nesting to the limit, 20-digit integers, big floats and all of Unicode are fine."""
    nested: Any = 1
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    body = {"n": nested, "i": 10**MAX_INT_DIGITS - 1, "f": 1e300, "t": "Amélie 東京 \U0001f600"}
    assert parse_json(json.dumps(body)) == body
    assert parse_json(json.dumps(body).encode("utf-8")) == body


def test_split_keeps_the_envelope_apart() -> None:
    """Every reserved name goes to the envelope; everything else stays input."""
    body = {**VALID, **{name: None for name in RESERVED}}
    given, envelope = split_trigger(body)
    assert given == VALID
    assert set(envelope) == set(RESERVED)


def test_envelope_defaults_and_values() -> None:
    """Defaults when absent; values checked and normalised (deadline to epoch seconds, UTC)."""
    empty = parse_envelope({})
    assert empty.callback_url is None and empty.priority == "normal"
    assert empty.callback_events == TERMINAL_EVENTS and empty.client_metadata is None
    full = parse_envelope(
        {
            "callback_url": "https://hooks.example.com/x",
            "callback_events": ["job.started"],
            "client_metadata": {"order": 7},
            "priority": "high",
            "deadline": "2026-11-28T13:00:00+01:00",
        }
    )
    assert full.callback_events == ("job.started", *TERMINAL_EVENTS)
    assert full.deadline == 1795867200.0  # 2026-11-28T12:00:00Z
    assert full.stored() == {
        "callback_events": ["job.started", *TERMINAL_EVENTS],
        "client_metadata": {"order": 7},
        "priority": "high",
        "deadline": 1795867200.0,
    }


BAD_ENVELOPES: list[tuple[dict[str, Any], str, str, str]] = [
    ({"callback_url": "ftp://x.example/"}, "invalid_callback_url", "callback_url", "http"),
    ({"callback_url": "https://x.example/" + "a" * 3000}, "invalid_callback_url", "", "2048"),
    ({"callback_events": "job.failed"}, "invalid_type", "callback_events", "list"),
    ({"callback_events": ["job.done"]}, "invalid_value", "callback_events", "job.started"),
    ({"client_metadata": [1]}, "invalid_type", "client_metadata", "object"),
    (
        {"client_metadata": {"k": "v" * MAX_METADATA_BYTES}},
        "invalid_value",
        "client_metadata",
        f"limit of {MAX_METADATA_BYTES}",
    ),
    ({"priority": "urgent"}, "invalid_value", "priority", "low, normal, high"),
    ({"deadline": 5}, "invalid_type", "deadline", "ISO 8601"),
    ({"deadline": "tomorrow"}, "invalid_value", "deadline", "ISO 8601"),
    ({"deadline": "2026-11-28T12:00:00"}, "invalid_value", "deadline", "UTC offset"),
]


@pytest.mark.parametrize(("raw", "code", "field", "says"), BAD_ENVELOPES)
def test_bad_envelope_fields(raw: dict[str, Any], code: str, field: str, says: str) -> None:
    """Each envelope field is checked with a stable code, naming the field and the rule."""
    with pytest.raises(InvalidInput) as info:
        parse_envelope(raw)
    assert info.value.code.value == code
    assert info.value.field == (field or next(iter(raw)))
    assert says in info.value.description


def test_unknown_field_is_refused_with_the_nearest_name(engine: Engine) -> None:
    """A misspelled field is `unknown_field` naming it and suggesting the declared one."""
    wf = engine.workflow("product-image")
    with pytest.raises(InvalidInput) as info:
        check_trigger(wf, {**VALID, "product_categroy": "lamps"})
    assert info.value.code.value == "unknown_field"
    assert info.value.field == "product_categroy"
    assert "did you mean 'product_category'" in info.value.description


def test_unknown_field_comes_before_the_missing_one(engine: Engine) -> None:
    """`product_nmae` for `product_name`: the misspelling is what the caller needs to see."""
    wf = engine.workflow("product-image")
    body = {k: v for k, v in VALID.items() if k != "product_name"} | {"product_nmae": "x"}
    with pytest.raises(InvalidInput) as info:
        check_trigger(wf, body)
    assert (info.value.code.value, info.value.field) == ("unknown_field", "product_nmae")


def test_ignored_extra_fields_never_reach_the_workflow(
    presets: Presets, nodes: NodeRegistry
) -> None:
    """With `additional_fields: ignore` extra fields are dropped; the envelope still splits."""
    wf = parse_workflow(GOOD + "additional_fields: ignore\n", "t.yaml", presets, nodes)
    body = {
        "item_id": "A",
        "name": "vase",
        "target_style": "minimal",
        "target_platform": "x_post",
        "whole_record": {"crm": 1},
        "callback_url": "https://hooks.example.com/x",
    }
    checked = check_trigger(wf, body)
    assert "whole_record" not in checked.input and "callback_url" not in checked.input
    assert checked.input["count"] == 1  # the default is filled
    assert checked.envelope.callback_url == "https://hooks.example.com/x"


def test_callback_url_is_not_part_of_the_input(engine: Engine) -> None:
    """The checked input (what is seeded and stored as input) is the same with any callback."""
    wf = engine.workflow("product-image")
    plain = check_trigger(wf, VALID).input
    for url in ("https://a.example.com/hook", "https://b.example.com/other"):
        checked = check_trigger(wf, {**VALID, "callback_url": url})
        assert checked.input == plain
        assert checked.envelope.callback_url == url


def test_over_long_field_states_the_limit_and_cuts_the_echo(engine: Engine) -> None:
    """A 5,000-character name: the limit (120) is stated, the echo is a few dozen characters."""
    wf = engine.workflow("product-image")
    with pytest.raises(InvalidInput) as info:
        validate_input(wf, {**VALID, "product_name": "x" * 5000})
    described = info.value.description
    assert info.value.code.value == "invalid_value" and info.value.field == "product_name"
    assert "limit of 120 characters" in described and "5000 characters" in described
    assert len(described) < 200 and "x" * 50 not in described


def test_unknown_enum_value_echo_is_cut(engine: Engine) -> None:
    """An unknown style of 10,000 characters is not echoed whole."""
    wf = engine.workflow("product-image")
    with pytest.raises(InvalidInput) as info:
        validate_input(wf, {**VALID, "target_style": "b" * 10_000})
    assert info.value.code.value == "unknown_style"
    assert "b" * 50 not in info.value.description


def test_external_id_longer_than_its_column_is_refused(
    presets: Presets, nodes: NodeRegistry
) -> None:
    """A schema without maxLength on the external id field: over 200 characters is refused
    (PostgreSQL would refuse to store it), at 200 it is fine."""
    wf = parse_workflow(GOOD, "t.yaml", presets, nodes)
    body = {"name": "vase", "target_style": "minimal", "target_platform": "x_post"}
    assert validate_input(wf, {**body, "item_id": "i" * 200})["item_id"] == "i" * 200
    with pytest.raises(InvalidInput) as info:
        validate_input(wf, {**body, "item_id": "i" * 201})
    assert (info.value.code.value, info.value.field) == ("invalid_value", "item_id")
    assert "limit of 200 characters" in info.value.description
