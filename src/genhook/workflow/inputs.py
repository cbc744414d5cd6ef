"""Validate a workflow's input against its schema, mapping each failure to a stable code.

The input is what is left of a trigger once its envelope is split off
(:func:`genhook.contract.envelope.split_trigger`). A field the workflow does not declare is
``unknown_field`` (with the nearest declared name), unless the template says
``additional_fields: ignore``, in which case it is dropped before the workflow sees it.

``field`` in the error is always the top-level input field as the caller sent it, never a path
into a node; the description says what was wrong and, for nested values, where. It states the
limit that was passed and never echoes more than a few dozen characters of the value.

A field declared ``x-media`` is a URL of media genhook will fetch: :func:`validate_input` refuses
(``invalid_value``) one that is not an absolute http(s) URL, carries credentials, or whose host
is an IP literal or name that no policy lets genhook reach (link-local, cloud metadata,
reserved), without a DNS lookup. The deployment's policy (``GENHOOK_ALLOW_PRIVATE_CALLBACKS``)
and what a name resolves to are :func:`check_media_targets`'s, which the edge calls beside the
callback URL's check; the fetch checks again at connect time (:mod:`genhook.media.fetch`).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from genhook.contract.envelope import Envelope, parse_envelope, split_trigger
from genhook.delivery.addresses import literal_address
from genhook.delivery.ssrf import Resolver
from genhook.errors import ErrorCode, InvalidInput
from genhook.media.fetch import check_media_url
from genhook.workflow.template import Workflow

# When one field breaks several rules, report the most telling first.
_PRIORITY = {"required": 0, "type": 1, "enum": 2}
MAX_EXTERNAL_ID = 200
"""The longest external id (``jobs.external_id`` is a 200-character column)."""
ECHO_LIMIT = 40
"""At most this many characters of a value are repeated in an error description."""


@lru_cache(maxsize=64)
def _validator(workflow: Workflow) -> Draft202012Validator:
    return Draft202012Validator(workflow.input_schema)


@lru_cache(maxsize=64)
def _compiled(workflow: Workflow) -> jsonschema_rs.Draft202012Validator:
    """The schema compiled (Rust): answers "valid?" in about a microsecond. An input it calls
    invalid is checked again by :func:`_validator`, the reference, which words the error; an
    input the reference finds valid is accepted whatever the compiled one said."""
    return jsonschema_rs.Draft202012Validator(workflow.input_schema)


def validate_input(workflow: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The input with schema defaults filled in; :class:`InvalidInput` on the first fault."""
    declared = workflow.input_schema["properties"]
    extra = [name for name in given if name not in declared]
    if extra and workflow.additional_fields == "refuse":
        raise _unknown(workflow, extra[0])
    data = {k: v for k, v in given.items() if k in declared}
    if not _compiled(workflow).is_valid(data):
        errors = list(_validator(workflow).iter_errors(data))
        if errors:
            raise min((_to_input_error(workflow, e, data) for e in errors), key=lambda x: x[0])[1]
    for name, prop in declared.items():
        if name not in data and "default" in prop:
            data[name] = copy.deepcopy(prop["default"])
    _check_external_id(workflow, data)
    for name, url in media_urls(workflow, data).items():
        # allow_private=True: only what no deployment may reach is refused here
        check_media_url(url, name, allow_private=True)
    return data


def media_urls(workflow: Workflow, data: Mapping[str, Any]) -> dict[str, str]:
    """The given ``x-media`` fields of a checked input: field -> URL."""
    return {
        name: value for name in workflow.media_inputs if isinstance(value := data.get(name), str)
    }


def check_media_targets(
    workflow: Workflow, data: Mapping[str, Any], *, allow_private: bool, resolver: Resolver
) -> None:
    """Refuse (``invalid_value`` naming the field) a media URL of a checked input that this
    deployment may not fetch: what the callback URL gets at trigger time (its IP literal under
    the policy, its name resolved by ``resolver`` to allowed addresses only). Blocking when a
    host is a name: call it from a thread (the connect-time guard checks again)."""
    for name, url in media_urls(workflow, data).items():
        check_media_url(url, name, allow_private=allow_private, resolver=resolver)


def media_needs_lookup(workflow: Workflow, data: Mapping[str, Any]) -> bool:
    """True when a media URL's host is a name (so :func:`check_media_targets` resolves)."""
    return any(
        literal_address(urlsplit(url).hostname or "") is None
        for url in media_urls(workflow, data).values()
    )


def _check_external_id(workflow: Workflow, data: Mapping[str, Any]) -> None:
    """The caller's id is stored and searched on: it must fit its column, whatever the schema."""
    name = workflow.external_id
    value = None if name is None else data.get(name)
    if value is not None and len(str(value)) > MAX_EXTERNAL_ID:
        raise InvalidInput(
            ErrorCode.INVALID_VALUE,
            f"'{name}' = {echo(value)} is longer than the limit of {MAX_EXTERNAL_ID} characters "
            "for the workflow's external id",
            field=name,
        )


def _unknown(workflow: Workflow, name: str) -> InvalidInput:
    declared = list(workflow.input_schema["properties"])
    near = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return InvalidInput(
        ErrorCode.UNKNOWN_FIELD,
        f"{echo(name)} is not a field of workflow {workflow.id!r}: {hint}"
        f"its fields are {', '.join(declared)}",
        field=name,
    )


def echo(value: Any) -> str:
    """``value`` as it appears in a message, cut to :data:`ECHO_LIMIT` characters."""
    shown = repr(value)
    if len(shown) <= ECHO_LIMIT:
        return shown
    return f"{shown[:ECHO_LIMIT]}... ({_size(value)})"


def _size(value: Any) -> str:
    if isinstance(value, str):
        return f"{len(value)} characters"
    if isinstance(value, list | dict):
        return f"{len(value)} items"
    return "cut"


_LIMITS = {
    "maxLength": ("longer than", "characters"),
    "minLength": ("shorter than", "characters"),
    "maxItems": ("more items than", "items"),
    "minItems": ("fewer items than", "items"),
    "maxProperties": ("more keys than", "keys"),
    "minProperties": ("fewer keys than", "keys"),
    "maximum": ("above", ""),
    "minimum": ("below", ""),
    "exclusiveMaximum": ("not below", ""),
    "exclusiveMinimum": ("not above", ""),
}


def _describe(where: str, error: ValidationError) -> str:
    """What broke which rule, with the limit, and the value cut short."""
    rule = str(error.validator)
    limit: Any = error.validator_value
    value = error.instance
    if rule in _LIMITS:
        relation, unit = _LIMITS[rule]
        size = f" ({len(value)} {unit})" if unit and hasattr(value, "__len__") else ""
        return f"'{where}' = {echo(value)}{size} is {relation} the limit of {limit} {unit}".rstrip()
    if rule == "pattern":
        return f"'{where}' = {echo(value)} does not match the pattern {limit!r}"
    if rule == "enum":
        return f"'{where}' = {echo(value)} is not one of: {', '.join(map(str, limit))}"
    if rule == "const":
        return f"'{where}' = {echo(value)} must be {limit!r}"
    if rule == "format":
        return f"'{where}' = {echo(value)} is not a valid {limit}"
    message = error.message
    if len(message) > 200:
        message = message[:200] + "..."
    return f"'{where}': {message}"


def _to_input_error(
    workflow: Workflow, error: ValidationError, body: dict[str, Any]
) -> tuple[tuple[int, int], InvalidInput]:
    order = list(workflow.input_schema["properties"])
    path = list(error.absolute_path)
    expected: Any = error.validator_value
    if error.validator == "required" and not path:
        missing = [r for r in expected if r not in body]
        name = missing[0] if missing else str(expected[0])
        first = order.index(name) if name in order else len(order)
        return (first, 0), InvalidInput(
            ErrorCode.MISSING_FIELD, f"required field '{name}' is missing", field=name
        )
    rank: tuple[int, int] = (len(order), 9)
    if not path:
        return rank, InvalidInput(ErrorCode.INVALID_VALUE, _describe("(input)", error))
    name = str(path[0])
    where = name + "".join(f"[{p!r}]" for p in path[1:])
    rank = (
        order.index(name) if name in order else len(order),
        _PRIORITY.get(str(error.validator), 5),
    )
    if error.validator == "type":
        got = type(error.instance).__name__
        return rank, InvalidInput(
            ErrorCode.INVALID_TYPE, f"'{where}' must be of type {expected}, got {got}", field=name
        )
    if error.validator == "enum" and len(path) == 1 and name in workflow.enum_codes:
        code = workflow.enum_codes[name]
        return rank, InvalidInput(code, _describe(name, error), field=name)
    return rank, InvalidInput(ErrorCode.INVALID_VALUE, _describe(where, error), field=name)


@dataclass(frozen=True)
class CheckedTrigger:
    """A trigger split and checked at the edge: the workflow's input and the envelope apart."""

    input: dict[str, Any]
    envelope: Envelope


def check_trigger(workflow: Workflow, body: Any) -> CheckedTrigger:
    """Split ``body`` (parsed JSON) and check both parts, the input's faults first."""
    if not isinstance(body, dict):
        raise InvalidInput(ErrorCode.INVALID_BODY, "the trigger must be a JSON object")
    given, envelope = split_trigger(body)
    checked = validate_input(workflow, given)
    return CheckedTrigger(checked, parse_envelope(envelope))
