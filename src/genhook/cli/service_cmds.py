"""Service commands: ``serve``, ``worker``, and the ``services`` group (create, list, update,
rotate-key, rotate-secret)."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from genhook.cli.base import (
    EXIT_FAILED,
    EXIT_INVALID,
    build_runtime,
    cli,
    die_config,
    load_settings,
    print_json,
    setup_logging,
)
from genhook.errors import ErrorCode, GenhookError
from genhook.store.records import Service

if TYPE_CHECKING:
    from genhook.health import HealthServer
    from genhook.store.store import Store

T = TypeVar("T")


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
    processes stop with the server, also when it is killed. SIGTERM or SIGINT: stop accepting,
    drain, and stop the workers and the sender within GENHOOK_SHUTDOWN_SECONDS (30 s; what is
    still running then is handed back), exit 0; a second signal exits at once.
    """
    setup_logging()
    settings = load_settings(host=host, port=port)
    from genhook.service import PortUnavailable, bind, serve
    from genhook.store.db import configure_role

    configure_role(settings, "api")

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


def health_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--health-host`` and ``--health-port`` (``genhook worker`` and ``genhook sender``)."""
    command = click.option(
        "--health-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve GET /healthz and GET /readyz on this port (0: any free port; the port is "
        "logged).  [default: GENHOOK_HEALTH_PORT, else none]",
    )(command)
    return click.option(
        "--health-host",
        default=None,
        help="Interface of the health port.  [default: GENHOOK_HEALTH_HOST, else 127.0.0.1]",
    )(command)


def open_health(role: str, host: str, port: int | None) -> HealthServer | None:
    """The role's health server bound on ``host:port`` (None: no port asked); a port that
    cannot be bound is one line and exit 2, before anything starts."""
    if port is None:
        return None
    from genhook.health import HealthServer

    try:
        server = HealthServer(host, port)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        click.echo(f"genhook {role}: cannot listen on {host}:{port}: {reason}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"genhook {role}: health on http://{host}:{server.port}", err=True)
    return server


MAX_CONCURRENCY = 1024
"""The most jobs one worker process may run at once."""


@cli.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    default=None,
    help="Jobs this process runs at once (jobs waiting on a remote engine cost a thread, not a "
    "core; CPU-bound steps share GENHOOK_CPU_SLOTS).  [default: GENHOOK_WORKER_CONCURRENCY, "
    "else 1]",
)
@click.option("--parent", type=int, default=None, hidden=True)
@health_options
def worker_cmd(
    concurrency: int | None, parent: int | None, health_host: str | None, health_port: int | None
) -> None:
    """Workers only, against the same database (to scale out). SIGTERM or SIGINT: claim
    nothing more, let the jobs in flight end within GENHOOK_SHUTDOWN_SECONDS (30 s), hand back
    what still runs (another worker claims it at once, no retry spent), exit 0; a second
    signal exits at once."""
    from genhook.media.memory import configure_for_rendering
    from genhook.service import adopt_parent, run_worker
    from genhook.store.db import configure_role
    from genhook.supervisor import lower_priority

    if not adopt_parent(parent):  # started by a `genhook serve` that is already gone
        sys.exit(0)
    setup_logging()
    settings = load_settings(health_host=health_host)
    lower_priority(settings.worker_nice)  # before any worker or libvips thread starts
    if concurrency is None:  # the setting, where this install's Settings has it
        concurrency = int(getattr(settings, "worker_concurrency", 1) or 1)
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    # a worker of `genhook serve` (--parent) has the API's health routes, not a port of its own
    port = health_port if health_port is not None or parent is not None else settings.health_port
    health = open_health("worker", settings.health_host, port)
    configure_role(settings, "worker", concurrency)
    configure_for_rendering()
    runtime = build_runtime(settings)
    run_worker(runtime, concurrency, parent=parent, health=health)


@cli.group()
def services() -> None:
    """Requesting services: API keys, signing secrets, limits."""


def _setting_options(update: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The flags ``create`` and ``update`` share (``update``: ``none`` clears a limit, and an
    absent flag leaves its setting as it is)."""
    clear = " (none: no limit)" if update else ""
    options = [
        click.option(
            "--rate-limit",
            default=None,
            metavar="N/PERIOD",
            help=f"Most job starts per window: N/s, N/m, N/h or N/d, e.g. 100/h{clear}.",
        ),
        click.option(
            "--daily-budget",
            default=None,
            metavar="CREDITS",
            help=f"Credits the service may spend per UTC day, 0 or more{clear}.",
        ),
        click.option(
            "--on-budget",
            default=None,
            metavar="hold|fail",
            help="At the budget: keep further jobs waiting (hold, the default) or fail them.",
        ),
        click.option(
            "--queue-limit",
            default=None,
            metavar="N",
            help="Waiting jobs past which triggers get 429 queue_full (default "
            f"GENHOOK_QUEUE_LIMIT, 10,000){' (none: the default)' if update else ''}.",
        ),
        click.option(
            "--retention",
            default=None,
            metavar="DURATION",
            help="How long its ended jobs, payloads and assets are kept, e.g. 30d or 12h "
            f"(default GENHOOK_RETENTION, 30d){' (none: the default)' if update else ''}.",
        ),
        click.option(
            "--test/--no-test" if update else "--test",
            is_flag=True,
            default=None if update else False,
            help='A sandbox service: procedural backend, 0 credits, "test": true in payloads.',
        ),
    ]

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _settings(update: bool, **flags: Any) -> dict[str, Any]:
    """The flags given, parsed and checked as the store's settings; one line and exit 2 on the
    first bad one (never a usage screen)."""
    from genhook.store.services import check_settings

    settings: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue  # not given: update leaves it, create takes the default
        flag = "--" + name.replace("_", "-")
        cleared = update and name != "on_budget" and value == "none"
        try:
            if name == "test":
                settings["sandbox"] = value
            elif cleared:
                settings[name] = None
            elif name == "daily_budget":
                settings[name] = _number(value, flag)
            elif name == "queue_limit":
                settings[name] = _whole(value, flag)
            elif name == "rate_limit":
                settings[name] = value.strip()
            else:
                settings[name] = value
            check_settings(settings)
        except ValueError as exc:
            message = str(exc) if str(exc).startswith("--") else f"{flag}: {exc}"
            _die(message)
    return settings


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag}: not a number: {text!r}") from None


def _whole(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}: not a whole number: {text!r}") from None


def _die(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)


def _store() -> Store:
    """The store alone, migrated: managing services loads no workflow (a broken template does
    not stop a key rotation, and the command answers sooner)."""
    from genhook.store.store import Store

    settings = load_settings()
    try:
        store = Store(settings.database_url)
        store.migrate()
    except ValueError as exc:
        die_config(exc)
    except GenhookError as exc:  # store_unavailable
        _fail(exc)
    return store


def _or_not_found(call: Callable[[], T]) -> T:
    """``call()``, its errors as :func:`_fail` says."""
    try:
        return call()
    except GenhookError as exc:
        _fail(exc)


def _fail(exc: GenhookError) -> NoReturn:
    """One line: an unknown service (``service_not_found``) exits 2, another store error
    (``store_unavailable``) 1."""
    click.echo(f"error: {exc.code.value}: {exc.description}", err=True)
    sys.exit(EXIT_INVALID if exc.code is ErrorCode.SERVICE_NOT_FOUND else EXIT_FAILED)


def service_view(service: Service) -> dict[str, Any]:
    """A service as ``services list`` and ``services update`` print it: never its key or
    secret, only the key's first characters."""
    from genhook.api.views import iso

    return {
        "service": service.name,
        "service_id": service.id,
        "api_key_prefix": service.api_key_prefix,
        "rate_limit": service.rate_limit,
        "daily_budget": service.daily_budget,
        "on_budget": service.on_budget,
        "queue_limit": service.queue_limit,
        "test": service.sandbox,
        "retention": service.retention,
        "paused": service.paused_at is not None,
        "created_at": iso(service.created_at),
    }


@services.command("create")
@click.argument("name")
@_setting_options(update=False)
def services_create(name: str, **flags: Any) -> None:
    """Create a service; prints {"service", "api_key", "webhook_secret"} (the key only now)."""
    settings = _settings(False, **flags)
    store = _store()
    try:
        created = store.create_service(name, **settings)
    except ValueError as exc:
        _die(str(exc))
    print_json(created)


@services.command("list")
def services_list() -> None:
    """Every service as JSON: its settings, never its key or secret."""
    print_json([service_view(s) for s in _store().list_services()])


@services.command("update")
@click.argument("name")
@_setting_options(update=True)
def services_update(name: str, **flags: Any) -> None:
    """Change only the flags given; prints the service as `services list` shows it."""
    settings = _settings(True, **flags)
    store = _store()
    print_json(service_view(_or_not_found(lambda: store.update_service(name, **settings))))


@services.command("rotate-key")
@click.argument("name")
def services_rotate_key(name: str) -> None:
    """A new API key; the old one stops working at once. Prints {"service", "api_key"}."""
    store = _store()
    print_json(_or_not_found(lambda: store.rotate_key(name)))


@services.command("rotate-secret")
@click.argument("name")
@click.option(
    "--overlap",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="How long callbacks are signed with the old secret too (0: not at all).",
)
def services_rotate_secret(name: str, overlap: str) -> None:
    """A new webhook signing secret; during the overlap callbacks carry both signatures.
    Prints {"service", "webhook_secret", "previous_secret_valid_until"}."""
    from genhook.api.views import iso
    from genhook.config_values import parse_duration

    try:
        seconds = parse_duration(overlap)
    except ValueError as exc:
        _die(f"--overlap: {exc}")
    store = _store()
    rotated = _or_not_found(lambda: store.rotate_secret(name, seconds))
    print_json(
        {
            "service": rotated["service"],
            "webhook_secret": rotated["webhook_secret"],
            "previous_secret_valid_until": iso(rotated["previous_secret_until"]),
        }
    )
