"""The operations dashboard's pages: Jinja2 templates over the store's operator view, charts
as server-rendered SVG (:mod:`genhook.dashboard.charts`), one stylesheet, no script.

The figures are formatted here once (:func:`pct`, :func:`seconds`, :func:`credits`), for the
pages and for ``genhook ops`` alike, so the terminal and the browser show the same text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
DASH = "\u2013"  # an en dash: no figure (nothing ended in the window)


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal (``97.5%``), an en dash without a figure."""
    return DASH if value is None else f"{value * 100:.1f}%"


def seconds(value: float | None) -> str:
    """Seconds with two decimals (``1.25 s``)."""
    return DASH if value is None else f"{value:.2f} s"


def credits(value: float | None) -> str:
    """Credits with two decimals."""
    return DASH if value is None else f"{value:.2f}"


def count(value: int | float | None) -> str:
    """A whole number with thousands separators."""
    return DASH if value is None else f"{value:,.0f}"


def when(ts: float | None) -> str:
    """An epoch time as UTC, to the second."""
    if ts is None:
        return DASH
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@cache
def environment() -> jinja2.Environment:
    """The templates, HTML-escaped, each undefined name an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, seconds=seconds, credits=credits, count=count, when=when)
    return env


def render(template: str, **context: Any) -> str:
    """One page."""
    return environment().get_template(template).render(**context)
