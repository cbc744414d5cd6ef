"""The error vocabulary: closed, snake_case, documented, retryability a property of the code."""

from __future__ import annotations

import re
from pathlib import Path

from genhook.errors import ERROR_SPECS, ErrorCode, GenhookError

DOC = Path(__file__).resolve().parent.parent / "docs" / "error-codes.md"


def test_every_code_has_a_spec_and_is_snake_case() -> None:
    """No code is missing its description, and every code is lowercase snake_case."""
    assert set(ERROR_SPECS) == set(ErrorCode)
    for code in ErrorCode:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code.value), code


def test_every_code_is_documented_with_its_retryability() -> None:
    """docs/error-codes.md lists each code with the same retryable flag as the code."""
    text = DOC.read_text(encoding="utf-8")
    for code, spec in ERROR_SPECS.items():
        row = re.search(rf"^\| `{code.value}` \| (yes|no) \|", text, re.MULTILINE)
        assert row, f"{code.value} is not documented"
        assert (row.group(1) == "yes") == spec.retryable, code.value


def test_retryable_comes_from_the_code() -> None:
    """Transient backend failures retry; invalid input and permanent failures do not."""
    assert GenhookError(ErrorCode.BACKEND_TIMEOUT).retryable
    assert GenhookError(ErrorCode.BACKEND_ERROR).retryable
    assert not GenhookError(ErrorCode.BACKEND_REJECTED).retryable
    assert not GenhookError(ErrorCode.UNKNOWN_STYLE).retryable
    assert GenhookError(ErrorCode.UNKNOWN_STYLE, field="target_style").invalid_input
    err = GenhookError(ErrorCode.MISSING_FIELD, "x is missing", field="x")
    assert err.to_dict() == {
        "error_code": "missing_field",
        "error_description": "x is missing",
        "field": "x",
    }
