"""The ``genhook`` command line."""

from __future__ import annotations

from genhook.cli import (
    engine_cmds,
    ops_cmds,
    purge_cmds,
    schedule_cmds,
    sender_cmds,
    service_cmds,
    submit_cmds,
)
from genhook.cli.base import cli

__all__ = [
    "cli",
    "engine_cmds",
    "main",
    "ops_cmds",
    "purge_cmds",
    "schedule_cmds",
    "sender_cmds",
    "service_cmds",
    "submit_cmds",
]


def main() -> None:
    """Entry point of the ``genhook`` script."""
    cli()
