"""Sandboxed Jinja2 text templates shared by the prompt builder and the metadata node.

Templates are written by the workflow's author; trigger data only ever arrives as variables, so
a caller can never inject template code. The sandbox still bars unsafe attribute access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from genhook.errors import ErrorCode, GenhookError

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)
_SPACES = re.compile(r"\s+")
_DANGLING = re.compile(r"\s*,(\s*,)+")


def check_template(source: str, allowed: Iterable[str]) -> str | None:
    """A message if ``source`` does not compile or uses a variable outside ``allowed``."""
    try:
        ast = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on its line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(ast) - set(allowed))
    if unknown:
        return f"template uses undefined variables {unknown} (available: {sorted(allowed)})"
    return None


def check_template_params(params: Mapping[str, Any], keys: Iterable[str]) -> list[tuple[str, str]]:
    """Load-time check of a node's template parameters ``keys``: each compiles, and uses only
    ``input`` (the trigger) and the names the node declares in its ``vars``."""
    allowed = {"input", *(params.get("vars") or {})}
    problems = []
    for key in keys:
        if isinstance(params.get(key), str):
            message = check_template(params[key], allowed)
            if message:
                problems.append((key, message))
    return problems


@lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    return _ENV.from_string(source)


def render_text(source: str, variables: Mapping[str, Any], *, limit: int) -> str:
    """Render ``source`` and tidy it: one line, single spaces, no empty list items, <= limit."""
    try:
        text = _compiled(source).render(**variables)
    except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
        raise GenhookError(ErrorCode.INTERNAL_ERROR, f"template failed: {exc}") from exc
    text = _SPACES.sub(" ", text).strip()
    text = _DANGLING.sub(",", text).strip(" ,")
    return truncate_words(text, limit)


def truncate_words(text: str, limit: int) -> str:
    """``text`` cut at a word boundary so that it is at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.;:")
    return cut + "…"
