"""``genhook purge [--dry-run]``: one retention pass now, against the database and storage of
the environment (the background purge of ``genhook serve`` and ``genhook sender`` runs the same
pass every ``GENHOOK_PURGE_INTERVAL``)."""

from __future__ import annotations

import sys

import click

from genhook.cli.base import EXIT_FAILED, build_runtime, cli, load_settings, print_json
from genhook.errors import GenhookError


@cli.command("purge")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what the pass would remove (jobs and their rows, per service) and change nothing.",
)
def purge_cmd(dry_run: bool) -> None:
    """Purge the ended jobs past their service's retention now (their attempts, events,
    deliveries, payloads and assets), in batches of GENHOOK_PURGE_BATCH; prints JSON counts.
    A job whose callback is still pending is kept. Safe beside running genhook processes."""
    from genhook.retention import Purger

    runtime = build_runtime(load_settings())
    try:
        report = Purger.for_runtime(runtime).run_once(dry_run=dry_run)
    except GenhookError as exc:  # store_unavailable
        click.echo(f"error: {exc.code.value}: {exc.description}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        runtime.store.close()
    print_json(report.as_dict())
    if report.assets_failed:
        sys.exit(EXIT_FAILED)
