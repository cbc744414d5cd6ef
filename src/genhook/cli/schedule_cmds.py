"""``genhook schedules list|pause|resume``: the template schedules and their state.

They read and write the database directly (``GENHOOK_DATABASE_URL``) and the templates of
``GENHOOK_WORKFLOWS_DIR``, as the other operator commands do: no server, no key. A schedule is
named by its id ``WORKFLOW:ID`` (``product-image:weekly``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from genhook.cli.base import EXIT_INVALID, build_runtime, cli, load_settings, print_json
from genhook.errors import GenhookError


@cli.group("schedules")
def schedules() -> None:
    """Template schedules: list them, pause and resume one."""


def _runtime() -> Any:
    return build_runtime(load_settings())


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON of GET /v1/schedules.")
@click.option("--service", default=None, help="Only the schedules that fire as this service.")
def schedules_list(as_json: bool, service: str | None) -> None:
    """Every schedule: cron, time zone, service, policy, next due time, last outcome."""
    from genhook.scheduling.control import list_views

    runtime = _runtime()
    try:
        views = list_views(runtime, service)
    finally:
        runtime.store.close()
    if as_json:
        print_json({"schedules": views})
        return
    _table(views)


def _table(views: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    if not views:
        console.print("no schedules (a template declares them under schedules:)")
        return
    table = Table(title="Schedules", title_justify="left")
    for name in ("schedule", "cron", "timezone", "service", "missed", "next due", "last"):
        table.add_column(name)
    for v in views:
        last = "-"
        if v["last_outcome"]:
            last = f"{v['last_outcome']} {v['last_due_at']}"
            if v["last_error"]:
                last += f": {v['last_error']}"
        table.add_row(
            escape(v["schedule_id"]),
            escape(v["cron"]),
            escape(v["timezone"]),
            escape(v["service"]) + ("" if v["service_found"] else " (no such service)"),
            v["missed"],
            "paused" if v["paused"] else str(v["next_due_local"]),
            escape(last),
        )
    console.print(table)


def _set(schedule_id: str, paused: bool) -> None:
    from genhook.scheduling.control import find_spec, set_paused

    runtime = _runtime()
    try:
        spec = find_spec(runtime, schedule_id)
        view = set_paused(runtime, spec, paused, by="cli")
    except GenhookError as exc:
        click.echo(f"error: {exc.code}: {exc.description}", err=True)
        sys.exit(EXIT_INVALID)
    finally:
        runtime.store.close()
    print_json(view)


@schedules.command("pause")
@click.argument("schedule_id")
def schedules_pause(schedule_id: str) -> None:
    """Pause SCHEDULE_ID (WORKFLOW:ID): no due time fires until it is resumed (JSON out)."""
    _set(schedule_id, True)


@schedules.command("resume")
@click.argument("schedule_id")
def schedules_resume(schedule_id: str) -> None:
    """Resume SCHEDULE_ID: due next at its first due time after now; the times of the pause
    are not fired (JSON out)."""
    _set(schedule_id, False)
