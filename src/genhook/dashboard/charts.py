"""Charts as inline SVG, rendered on the server: no script, no CDN, nothing to load.

Each chart is a ``viewBox`` drawing that scales to its box (so it reads on a phone), with a
``<title>`` per bar or point for the exact figure, and an ``aria-label`` saying what it shows.
Colours come from CSS classes (``dashboard.css``), so the page's Content-Security-Policy needs
no inline style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 320.0, 120.0
LEFT, RIGHT, TOP, BOTTOM = 34.0, 6.0, 8.0, 18.0
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM


def step_label(ts: float, step: float) -> str:
    """A step's start as the axis shows it: ``14:00`` for hours, ``Mon 06h`` for longer steps."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%H:%M") if step <= 3600 else moment.strftime("%a %Hh")


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(f * power for f in (1.0, 2.0, 5.0, 10.0) if f * power >= value * (1 - 1e-9))


def _number(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


def _frame(title: str, steps: Sequence[float], step: float, top: float, unit: str) -> list[str]:
    """The chart's opening, axis lines, its top figure and the first and last step labels."""
    first = step_label(steps[0], step) if steps else ""
    last = step_label(steps[-1], step) if steps else ""
    top_label = f"{_number(top)}{unit}"
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PLOT_H}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + PLOT_H}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP + PLOT_H / 2}" x2="{WIDTH - RIGHT}" '
        f'y2="{TOP + PLOT_H / 2}"/>',
        f'<text class="tick" x="{LEFT - 3}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(top_label)}</text>",
        f'<text class="tick" x="{LEFT - 3}" y="{TOP + PLOT_H}" text-anchor="end">0</text>',
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 4}">{escape(first)}</text>',
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end">'
        f"{escape(last)}</text>",
    ]


def bars(
    title: str,
    steps: Sequence[float],
    step: float,
    layers: Sequence[tuple[str, str, Sequence[float]]],
    *,
    unit: str = "",
) -> Markup:
    """Stacked bars, one per step: ``layers`` are (name, CSS class, value per step), drawn
    bottom up."""
    totals = [sum(layer[2][i] for layer in layers) for i in range(len(steps))]
    top = _nice_max(max(totals, default=0.0))
    parts = _frame(title, steps, step, top, unit)
    slot = PLOT_W / max(1, len(steps))
    width = max(1.0, slot * 0.8)
    for i, start in enumerate(steps):
        base = TOP + PLOT_H
        x = LEFT + i * slot + (slot - width) / 2
        for name, css, values in layers:
            value = values[i]
            if value <= 0:
                continue
            h = PLOT_H * value / top
            base -= h
            tip = f"{step_label(start, step)}: {_number(value)}{unit} {name}"
            parts.append(
                f'<rect class="{css}" x="{x:.2f}" y="{base:.2f}" width="{width:.2f}" '
                f'height="{h:.2f}"><title>{escape(tip)}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(
    title: str,
    steps: Sequence[float],
    step: float,
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    unit: str = "",
    top: float | None = None,
    scale: float = 1.0,
) -> Markup:
    """Lines over the steps: ``series`` are (name, CSS class, value per step, None where there
    is no figure: the line breaks there). Values are multiplied by ``scale`` (100 for rates
    shown as percent); ``top`` fixes the axis maximum."""
    scaled = [[None if v is None else v * scale for v in values] for _, _, values in series]
    highest = max((v for values in scaled for v in values if v is not None), default=0.0)
    top = top if top is not None else _nice_max(highest)
    parts = _frame(title, steps, step, top, unit)
    slot = PLOT_W / max(1, len(steps))
    for (name, css, _), values in zip(series, scaled, strict=True):
        run: list[str] = []
        for i, value in enumerate(values):
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline class="{css}" points="{" ".join(run)}"/>')
                run = []
                continue
            x = LEFT + i * slot + slot / 2
            y = TOP + PLOT_H - PLOT_H * min(value, top) / top
            run.append(f"{x:.2f},{y:.2f}")
            tip = f"{step_label(steps[i], step)}: {_number(value)}{unit} {name}"
            parts.append(
                f'<circle class="{css}" cx="{x:.2f}" cy="{y:.2f}" r="1.8">'
                f"<title>{escape(tip)}</title></circle>"
            )
        if len(run) > 1:
            parts.append(f'<polyline class="{css}" points="{" ".join(run)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float], title: str) -> Markup:
    """A tiny bar strip for a table cell (a workflow's trigger volume over the chart's steps)."""
    top = max(values, default=0.0) or 1.0
    w, h = 84.0, 18.0
    slot = w / max(1, len(values))
    parts = [
        f'<svg class="spark" viewBox="0 0 {w:g} {h:g}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for i, value in enumerate(values):
        if value > 0:
            bar = max(1.0, h * value / top)
            parts.append(
                f'<rect class="bar-triggers" x="{i * slot:.2f}" y="{h - bar:.2f}" '
                f'width="{max(0.8, slot * 0.8):.2f}" height="{bar:.2f}"/>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
