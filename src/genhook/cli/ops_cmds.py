"""``genhook ops``: the dashboard's figures in the terminal, and ``genhook ops resume``.

Both read and write the database directly (``GENHOOK_DATABASE_URL``), as the other commands
do: no server, no operator key needed (whoever can run this can open the database anyway).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from genhook.cli.base import EXIT_INVALID, build_runtime, cli, load_settings, print_json

if TYPE_CHECKING:
    from genhook.store.ops import Summary


@cli.group("ops", invoke_without_command=True)
@click.option(
    "--window",
    type=click.Choice(["1h", "24h", "7d"]),
    default="24h",
    show_default=True,
    help="The hours the figures cover.",
)
@click.option("--json", "as_json", is_flag=True, help="Print GET /v1/ops/summary's JSON instead.")
@click.pass_context
def ops(ctx: click.Context, window: str, as_json: bool) -> None:
    """The dashboard's figures per service and workflow (tables); `ops resume` a paused service."""
    if ctx.invoked_subcommand is not None:
        return
    runtime = build_runtime(load_settings())
    try:
        summary = runtime.store.ops_summary(window)
    finally:
        runtime.store.close()
    if as_json:
        print_json(summary.as_dict())
        return
    print_tables(summary)


@ops.command("resume")
@click.argument("service")
def ops_resume(service: str) -> None:
    """Resume a service that its breaker paused: its held jobs start (JSON result on stdout)."""
    runtime = build_runtime(load_settings())
    try:
        done = runtime.store.resume_service(service)
    finally:
        runtime.store.close()
    if done is None:
        click.echo(f"error: service_not_found: no service named {service!r}", err=True)
        sys.exit(EXIT_INVALID)
    print_json(done.as_dict())


def print_tables(summary: Summary) -> None:
    """Services, workflows and backends as ``rich`` tables (the dashboard's formatting)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from genhook.dashboard import count, credits, pct, seconds, when

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(
        f"genhook ops: window {summary.window}, since {when(summary.since)} (whole hours), "
        f"as of {when(summary.now)}"
    )
    services = Table(title="Services", title_justify="left")
    for name in ("service", "state", "rate limit", "credits today", "budget", "used"):
        services.add_column(name, justify="right" if name in ("credits today", "used") else "left")
    for name in ("queued", "running", "review", "held", "failed deliveries"):
        services.add_column(name, justify="right")
    for s in summary.services:
        held = ", ".join(f"{r} {n}" for r, n in s.held.items() if n) or "0"
        services.add_row(
            escape(s.name),
            "[red]paused[/red]" if s.paused else "running",
            s.rate_limit or "none",
            credits(s.credits_today),
            credits(s.daily_budget) if s.daily_budget is not None else "none",
            pct(s.budget_used),
            count(s.queued),
            count(s.running),
            count(s.awaiting_review),
            held,
            count(s.failed_deliveries),
        )
    console.print(services)
    workflows = Table(title=f"Workflows, last {summary.window}", title_justify="left")
    workflows.add_column("service")
    workflows.add_column("workflow")
    for name in (
        "triggers",
        "completed",
        "failed",
        "expired",
        "completion",
        "avg generation",
        "QC pass",
        "credits/job",
        "retry rate",
        "failure rate",
    ):
        workflows.add_column(name, justify="right")
    for s in summary.services:
        for w in s.workflows:
            f = w.figures
            workflows.add_row(
                escape(s.name),
                escape(w.workflow_id),
                count(f.triggers),
                count(f.completed),
                count(f.failed),
                count(f.expired),
                pct(f.completion_rate),
                seconds(f.avg_generation_seconds),
                pct(f.qc_pass_rate),
                credits(f.credits_per_job),
                pct(f.retry_rate),
                pct(f.failure_rate),
            )
    console.print(workflows)
    for s in summary.services:
        if s.paused:
            console.print(
                f"[red]{escape(s.name)} is paused[/red] since {when(s.paused_at)}: "
                f"{escape(s.paused_reason or 'no reason recorded')}; "
                f"`genhook ops resume {escape(s.name)}`"
            )
    if summary.backends:
        backends = Table(title="Backends", title_justify="left")
        for name in ("backend", "breaker", "failures in a row", "next probe", "last error"):
            backends.add_column(name)
        for b in summary.backends:
            backends.add_row(
                b.backend, b.state, str(b.failures), when(b.probe_at), escape(b.last_error or "")
            )
        console.print(backends)
