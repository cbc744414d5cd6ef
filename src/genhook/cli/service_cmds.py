"""Service commands: ``serve``, ``worker``, ``services create``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from genhook.cli.base import (
    EXIT_INVALID,
    build_runtime,
    cli,
    load_settings,
    print_json,
    setup_logging,
)


@cli.command("serve")
@click.option("--host", default=None, help="Interface to listen on.  [default: 127.0.0.1]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (0: any free port).  [default: 8080]",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=2,
    show_default=True,
    help="Worker processes started, supervised and stopped with the API (0: API and "
    "callback delivery only).",
)
@click.option(
    "--dev",
    is_flag=True,
    help="Ensure a development service and print its API key and secret (kept in the data dir).",
)
def serve_cmd(host: str | None, port: int | None, workers: int, dev: bool) -> None:
    """The HTTP API, the callback sender and N worker processes, in one process tree.

    Uses GENHOOK_DATABASE_URL (default: SQLite in GENHOOK_DATA_DIR, ./var) and local asset files.
    The port is bound before anything starts: a busy port is one line and exit 2. The worker
    processes stop with the server, also when it is killed.
    """
    setup_logging()
    settings = load_settings(host=host, port=port)
    from genhook.service import PortUnavailable, bind, serve

    try:
        sock = bind(settings.host, settings.port)
    except PortUnavailable as exc:
        click.echo(f"genhook serve: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if settings.port == 0:  # the public URL names the port actually bound
        settings = load_settings(host=host, port=sock.getsockname()[1])
    runtime = build_runtime(settings)
    if dev:
        print_json(_dev_service(runtime))
    click.echo(
        f"genhook {settings.public_url}: {len(runtime.catalog.workflows)} workflows, "
        f"{workers} worker processes, database {settings.database_url.split('://')[0]}",
        err=True,
    )
    serve(runtime, sock, workers=workers)


def _dev_service(runtime: Any) -> dict[str, Any]:
    """The development service's credentials, created once and kept in the data dir."""
    path = runtime.settings.data_dir / "dev-service.json"
    if path.is_file():
        saved: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if runtime.store.service_for_key(saved["api_key"]) is not None:
            return saved
    name = "dev"
    n = 1
    while True:
        try:
            created: dict[str, Any] = runtime.store.create_service(name)
            break
        except ValueError:
            n += 1
            name = f"dev-{n}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(created, indent=2), encoding="utf-8")
    path.chmod(0o600)
    return created


@cli.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker threads in this process.",
)
@click.option("--parent", type=int, default=None, hidden=True)
def worker_cmd(concurrency: int, parent: int | None) -> None:
    """Workers only, against the same database (to scale out). Stops on SIGTERM or SIGINT."""
    from genhook.service import adopt_parent, run_worker

    if not adopt_parent(parent):  # started by a `genhook serve` that is already gone
        sys.exit(0)
    setup_logging()
    runtime = build_runtime(load_settings())
    run_worker(runtime, concurrency, parent=parent)


@cli.group()
def services() -> None:
    """Requesting services: API keys, signing secrets, limits."""


@services.command("create")
@click.argument("name")
@click.option("--rate-limit", default=None, metavar="N/PERIOD", help="e.g. 100/h, 10/s.")
@click.option("--daily-budget", type=float, default=None, metavar="CREDITS")
def services_create(name: str, rate_limit: str | None, daily_budget: float | None) -> None:
    """Create a service; prints {"service", "api_key", "webhook_secret"} (the key only now)."""
    from genhook.config import parse_rate

    if rate_limit is not None:
        try:
            parse_rate(rate_limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-limit") from exc
    if daily_budget is not None and daily_budget < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--daily-budget")
    runtime = build_runtime(load_settings())
    try:
        created = runtime.store.create_service(
            name, rate_limit=rate_limit, daily_budget=daily_budget
        )
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    print_json(created)
