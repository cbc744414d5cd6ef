"""``genhook sender``: the callback sender alone (to scale out)."""

from __future__ import annotations

import click

from genhook.cli.base import build_runtime, cli, load_settings, setup_logging
from genhook.cli.service_cmds import health_options, open_health


@cli.command("sender")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Callback requests in flight at once in this process.",
)
@health_options
def sender_cmd(concurrency: int, health_host: str | None, health_port: int | None) -> None:
    """The callback sender alone, against the same database (to scale out). SIGTERM or
    SIGINT: claim nothing more, record the answers to the requests in flight within
    GENHOOK_SHUTDOWN_SECONDS (30 s), hand back what is still in flight (another sender sends
    it at once), exit 0; a second signal exits at once."""
    from genhook.sender_role import run_sender
    from genhook.store.db import configure_role

    setup_logging()
    settings = load_settings(health_host=health_host, health_port=health_port)
    health = open_health("sender", settings.health_host, settings.health_port)
    configure_role(settings, "sender", concurrency)
    runtime = build_runtime(settings)
    run_sender(runtime, concurrency, health)
