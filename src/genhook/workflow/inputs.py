"""Validate a trigger against a workflow's input schema, mapping each failure to a stable code.

``field`` in the error is always the top-level input field as the caller sent it, never a path
into a node; the description says what was wrong and, for nested values, where.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from genhook.delivery.urls import check_callback_url
from genhook.errors import ErrorCode, InvalidInput
from genhook.workflow.template import Workflow

# When one field breaks several rules, report the most telling first.
_PRIORITY = {"required": 0, "type": 1, "enum": 2}


@lru_cache(maxsize=64)
def _validator(workflow: Workflow) -> Draft202012Validator:
    schema = copy.deepcopy(workflow.input_schema)
    schema["properties"].pop("callback_url", None)  # checked by its own rule, for its own code
    return Draft202012Validator(schema)


def validate_trigger(workflow: Workflow, body: Any) -> dict[str, Any]:
    """The trigger with schema defaults filled in; :class:`InvalidInput` on the first fault."""
    if not isinstance(body, dict):
        raise InvalidInput(ErrorCode.INVALID_BODY, "the trigger must be a JSON object")
    errors = list(_validator(workflow).iter_errors(body))
    if errors:
        raise min((_to_input_error(workflow, e, body) for e in errors), key=lambda x: x[0])[1]
    if body.get("callback_url") is not None:
        check_callback_url(body["callback_url"])
    trigger = dict(body)
    for name, prop in workflow.input_schema["properties"].items():
        if name not in trigger and "default" in prop:
            trigger[name] = copy.deepcopy(prop["default"])
    return trigger


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
        return rank, InvalidInput(ErrorCode.INVALID_VALUE, error.message)
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
        allowed = ", ".join(map(str, expected))
        return rank, InvalidInput(
            code, f"'{name}' = {error.instance!r} is not one of: {allowed}", field=name
        )
    return rank, InvalidInput(ErrorCode.INVALID_VALUE, f"'{where}': {error.message}", field=name)
