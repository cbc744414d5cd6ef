"""The dashboard's pages, rendered from the store's operator view (no HTTP here: the routes
in :mod:`genhook.api.dashboard` authenticate and call these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from genhook.dashboard import render
from genhook.dashboard.charts import bars, lines, sparkline
from genhook.store.ops import (
    HOLD_REASONS,
    WINDOWS,
    FailedDelivery,
    Figures,
    HeldJob,
    Series,
    ServiceSummary,
    Summary,
)


@dataclass(frozen=True)
class Chart:
    """One chart: its title, its SVG, and its legend (name and CSS class of each layer)."""

    title: str
    svg: Markup
    legend: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ServiceView:
    """One service's section: its summary, its charts, and a sparkline per workflow."""

    summary: ServiceSummary
    totals: Figures
    charts: tuple[Chart, ...]
    sparks: dict[str, Markup]


def service_charts(name: str, series: Series, values: Sequence[Figures]) -> tuple[Chart, ...]:
    """Trigger volume, outcomes, rates, generation time and credits per job, over the steps."""
    steps, step = series.steps, series.step
    volume = (
        ("accepted", "bar-triggers", [v.triggers - v.refused for v in values]),
        ("refused", "bar-refused", [v.refused for v in values]),
    )
    ended = (
        ("completed", "bar-completed", [v.completed for v in values]),
        ("failed", "bar-failed", [v.failed for v in values]),
        ("cancelled", "bar-cancelled", [v.cancelled for v in values]),
        ("expired", "bar-expired", [v.expired for v in values]),
    )
    rates = (
        ("completion", "line-completion", [v.completion_rate for v in values]),
        ("QC pass", "line-qc", [v.qc_pass_rate for v in values]),
        ("retries", "line-retry", [v.retry_rate for v in values]),
        ("failure", "line-failure", [v.failure_rate for v in values]),
    )
    generation = (
        ("avg generation", "line-generation", [v.avg_generation_seconds for v in values]),
    )
    cost = (("credits per job", "line-credits", [v.credits_per_job for v in values]),)

    def legend(layers: Sequence[tuple[str, str, Any]]) -> tuple[tuple[str, str], ...]:
        return tuple((layer[0], layer[1]) for layer in layers)

    charts = []
    for title, svg, layers in (
        ("Triggers", bars(f"{name}: triggers", steps, step, volume), volume),
        ("Jobs ended", bars(f"{name}: jobs ended", steps, step, ended), ended),
        (
            "Rates (%)",
            lines(f"{name}: rates", steps, step, rates, unit="%", top=100.0, scale=100.0),
            rates,
        ),
        (
            "Avg generation time",
            lines(f"{name}: average generation time", steps, step, generation, unit=" s"),
            generation,
        ),
        ("Credits per job", lines(f"{name}: credits per job", steps, step, cost), cost),
    ):
        charts.append(Chart(title, svg, legend(layers)))
    return tuple(charts)


def _views(summary: Summary, series: Series) -> list[ServiceView]:
    views = []
    for service in summary.services:
        per_step = series.of_service(service.id)
        sparks = {
            w.workflow_id: sparkline(
                [f.triggers for f in series.points.get((service.id, w.workflow_id), ())],
                f"{w.workflow_id}: triggers per step",
            )
            for w in service.workflows
        }
        views.append(
            ServiceView(
                service, service.totals, service_charts(service.name, series, per_step), sparks
            )
        )
    return views


def _chrome(page: str, window: str, csrf: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "page": page,
        "window": window,
        "windows": list(WINDOWS),
        "csrf": csrf,
        "hold_reasons": HOLD_REASONS,
        **extra,
    }


def overview(
    summary: Summary, series: Series, *, csrf: str | None, notice: str | None = None
) -> str:
    """``/dashboard``: backends, then each service's figures, charts and workflows."""
    return render(
        "overview.html",
        **_chrome(
            "overview",
            summary.window,
            csrf,
            summary=summary,
            views=_views(summary, series),
            held_total=sum(sum(s.held.values()) for s in summary.services),
            review_total=sum(s.awaiting_review for s in summary.services),
            failed_total=sum(s.failed_deliveries for s in summary.services),
            chart_caption=_caption(series),
            notice=notice,
        ),
    )


def _caption(series: Series) -> str:
    hours = series.step / 3600
    span = hours * len(series.steps)
    unit = "hour" if hours == 1 else f"{hours:g} hours"
    return f"the last {span:g} hours, by {unit} (UTC; the current step is partial)"


def held(summary: Summary, jobs: Sequence[HeldJob], *, csrf: str | None) -> str:
    """``/dashboard/held``: held jobs by service and reason, and the soonest eligible."""
    return render(
        "held.html", **_chrome("held", summary.window, csrf, summary=summary, jobs=list(jobs))
    )


def failed_deliveries(
    window: str,
    rows: Sequence[FailedDelivery],
    *,
    csrf: str | None,
    notice: str | None = None,
) -> str:
    """``/dashboard/deliveries``: deliveries that gave up, each with a replay button."""
    return render(
        "deliveries.html",
        **_chrome("deliveries", window, csrf, rows=list(rows), notice=notice),
    )


def reviews(
    window: str,
    rows: Sequence[Any],
    *,
    csrf: str | None,
    notice: str | None = None,
    error: str | None = None,
) -> str:
    """``/dashboard/reviews``: the jobs held for review, each with its images, QC figures and
    text, and the approve (with alt text and caption) and reject (with a note) forms."""
    return render(
        "reviews.html",
        **_chrome("reviews", window, csrf, rows=list(rows), notice=notice, error=error),
    )


def login(*, error: str | None = None) -> str:
    """``/dashboard/login``: the operator key, once, for a session cookie."""
    return render("login.html", **_chrome("login", "24h", None, error=error))
