"""``genhook sender``: the callback sender alone (to scale out)."""

from __future__ import annotations

import click

from genhook.cli.base import build_runtime, cli, load_settings, setup_logging


@cli.command("sender")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Callback requests in flight at once in this process.",
)
def sender_cmd(concurrency: int) -> None:
    """The callback sender alone, against the same database (to scale out). Stops on SIGTERM
    or SIGINT once the requests in flight are answered and recorded."""
    from genhook.sender_role import run_sender

    setup_logging()
    runtime = build_runtime(load_settings())
    run_sender(runtime, concurrency)
