"""The ``genhook`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from genhook.contract.completion import failure_payload
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError, InvalidInput, TemplateError
from genhook.ids import new_job_id
from genhook.presets import load_presets
from genhook.sinks import DirectorySink
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import Workflow, load_workflow

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _engine() -> Engine:
    try:
        return Engine.load()
    except TemplateError as exc:
        _die_template(exc)


def _die_template(exc: TemplateError) -> NoReturn:
    for problem in exc.problems or []:
        click.echo(problem.format(exc.path), err=True)
    if not exc.problems:
        click.echo(str(exc), err=True)
    sys.exit(EXIT_INVALID)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genhook")
def cli() -> None:
    """genhook: a JSON trigger in, finished, quality-checked assets and a completion payload out.

    Start with `genhook workflows list`, then try one workflow on a sample trigger:

        genhook run product-image --input workflows/samples/product-image/linen-shirt.json
    """


@cli.command("run")
@click.argument("workflow")
@click.option(
    "--input",
    "input_",
    required=True,
    metavar="FILE_OR_JSON",
    help="The trigger: a JSON file, inline JSON, or - for standard input.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Where the assets are written.",
)
def run_cmd(workflow: str, input_: str, out: Path) -> None:
    """Run one trigger through WORKFLOW (an id, or a template file), in process, no server.

    Prints the completion payload (JSON). Exit 0 on success, 2 on invalid input, 1 on a failed job.
    """
    engine = _engine()
    job_id = new_job_id()
    try:
        wf = _resolve_workflow(engine, workflow)
    except GenhookError as exc:
        _print_json(
            failure_payload(
                job_id=job_id, workflow_id=workflow, external_id=None, error=exc
            ).to_json()
        )
        sys.exit(EXIT_INVALID)
    try:
        body = _read_input(input_)
    except InvalidInput as exc:
        _print_json(
            failure_payload(job_id=job_id, workflow_id=wf.id, external_id=None, error=exc).to_json()
        )
        sys.exit(EXIT_INVALID)
    outcome = engine.execute(wf, body, DirectorySink(out), job_id=job_id)
    _print_json(outcome.payload.to_json())
    if outcome.error is None:
        sys.exit(EXIT_OK)
    sys.exit(EXIT_INVALID if outcome.error.invalid_input else EXIT_FAILED)


def _resolve_workflow(engine: Engine, name: str) -> Workflow:
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        try:
            return load_workflow(path, engine.presets, engine.nodes)
        except TemplateError as exc:
            _die_template(exc)
    return engine.workflow(name)


def _read_input(value: str) -> Any:
    if value == "-":
        text = sys.stdin.read()
    elif value.lstrip().startswith(("{", "[")):
        text = value
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(ErrorCode.INVALID_JSON, f"cannot read {value}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(ErrorCode.INVALID_JSON, f"input is not JSON: {exc}") from exc


@cli.group()
def workflows() -> None:
    """List, show and validate workflow templates."""


@workflows.command("list")
def workflows_list() -> None:
    """The loaded templates: id, version, description."""
    engine = _engine()
    _print_json(
        [
            {"workflow_id": w.id, "version": w.version, "description": w.description}
            for w in engine.workflows.values()
        ]
    )


@workflows.command("show")
@click.argument("workflow_id")
def workflows_show(workflow_id: str) -> None:
    """The same JSON as GET /v1/workflows/{id}: input schema, error codes, nodes."""
    engine = _engine()
    try:
        _print_json(engine.workflow(workflow_id).describe())
    except GenhookError as exc:
        click.echo(f"error: {exc.description}", err=True)
        sys.exit(EXIT_INVALID)


@workflows.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def workflows_validate(files: tuple[Path, ...]) -> None:
    """Check templates; print each problem as FILE:LINE: where: what. Exit 2 if any."""
    presets, nodes = load_presets(), NodeRegistry.from_entry_points()
    bad = False
    for path in files:
        try:
            wf = load_workflow(path, presets, nodes)
        except TemplateError as exc:
            bad = True
            for problem in exc.problems:
                click.echo(problem.format(exc.path), err=True)
        else:
            click.echo(f"{path}: ok ({wf.id} v{wf.version}, {len(wf.nodes)} nodes)")
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


@cli.group()
def backends() -> None:
    """Generation backends."""


@backends.command("list")
def backends_list() -> None:
    """Each backend: what it makes (image, video) and whether it is ready."""
    from genhook.backends.base import BackendRegistry

    registry = BackendRegistry.from_entry_points()
    rows = []
    for name in registry.names():
        backend = registry.get(name)
        status = backend.status()
        rows.append(
            {
                "backend": name,
                "kinds": sorted(backend.kinds),
                "ready": status.ready,
                "detail": status.detail,
            }
        )
    _print_json(rows)


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("pyvips", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings(**overrides: object) -> Any:
    from genhook.config import ConfigError, Settings

    try:
        return Settings.from_env(None, **overrides)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _runtime(settings: Any) -> Any:
    from genhook.runtime import Runtime

    try:
        return Runtime.build(settings)
    except TemplateError as exc:
        _die_template(exc)
    except ValueError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


@cli.command("serve")
@click.option("--host", default=None, help="Interface to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port to listen on.  [default: 8080]")
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=2,
    show_default=True,
    help="Embedded worker threads (0: API and callback delivery only).",
)
@click.option(
    "--dev",
    is_flag=True,
    help="Ensure a development service and print its API key and secret (kept in the data dir).",
)
def serve_cmd(host: str | None, port: int | None, workers: int, dev: bool) -> None:
    """The HTTP API, the callback sender and N worker processes, in one process tree.

    Uses GENHOOK_DATABASE_URL (default: SQLite in GENHOOK_DATA_DIR, ./var) and local asset files.
    """
    import uvicorn

    from genhook.api.app import create_app

    _logging()
    settings = _settings(host=host, port=port)
    runtime = _runtime(settings)
    if dev:
        _print_json(_dev_service(runtime))
    app = create_app(runtime, workers=workers)
    click.echo(
        f"genhook {settings.public_url}: {len(runtime.engine.workflows)} workflows, "
        f"{workers} workers, database {settings.database_url.split('://')[0]}",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


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
def worker_cmd(concurrency: int) -> None:
    """Workers only, against the same database (to scale out). Stops on SIGTERM or SIGINT."""
    import os
    import signal
    import threading

    from genhook.wakeup import Bus, worker_role
    from genhook.worker import Worker, start_workers

    _logging()
    settings = _settings()
    runtime = _runtime(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bus = Bus(settings.database_url, worker_role())
    bus.on(b"job", lambda _: runtime.jobs_signal.notify())
    runtime.deliveries_signal.subscribe(lambda: bus.to_hub(b"delivery"))
    runtime.events_signal.subscribe(lambda: bus.to_hub(b"event"))
    threads = start_workers(
        concurrency,
        lambda i: Worker(
            runtime.store,
            runtime.engine,
            runtime.storage,
            runtime.settings,
            jobs_signal=runtime.jobs_signal,
            deliveries_signal=runtime.deliveries_signal,
            events_signal=runtime.events_signal,
        ),
        stop,
    )
    click.echo(f"genhook worker {os.getpid()}: {concurrency} threads", err=True)
    while not stop.wait(0.5):
        bus.to_hub(b"hello")  # (re)register with the API process, also after it restarts
    runtime.jobs_signal.notify()
    for thread in threads:
        thread.join(60)
    bus.close()
    runtime.store.close()


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
    runtime = _runtime(_settings())
    try:
        created = runtime.store.create_service(
            name, rate_limit=rate_limit, daily_budget=daily_budget
        )
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    _print_json(created)


def main() -> None:
    """Entry point of the ``genhook`` script."""
    cli()
