"""Commands that need no server: ``run``, ``workflows list|show|validate``, ``backends list``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from genhook.cli.base import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    cli,
    die_template,
    load_catalog,
    load_engine,
    load_settings,
    print_json,
)
from genhook.contract.completion import failure_payload
from genhook.contract.jsonbody import parse_json
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError, InvalidInput, TemplateError
from genhook.ids import new_job_id
from genhook.presets import load_presets
from genhook.sinks import DirectorySink
from genhook.workflow.inputs import check_trigger
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import Workflow, load_workflow

RUN_EXAMPLE = """\b
Example (paste it as it is, from any folder):

\b
    genhook run product-image --out assets --input '{"product_id": "SKU-1",
      "product_name": "Linen Shirt", "target_style": "minimal",
      "target_platform": "instagram_feed"}'
"""


@cli.command("run", epilog=RUN_EXAMPLE)
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

    Prints the completion payload (JSON) on stdout, and one line on stderr when it failed.
    Exit 0 on success, 2 on invalid input, 1 on a failed job. The trigger's envelope
    (callback_url and the other reserved fields) is checked, but nothing is sent.
    """
    engine = load_engine()
    job_id = new_job_id()
    try:
        wf = _resolve_workflow(engine, workflow)
    except GenhookError as exc:
        _refuse(job_id, workflow, exc)
    try:
        checked = check_trigger(wf, _read_input(input_))
    except InvalidInput as exc:
        _refuse(job_id, wf.id, exc)
    outcome = engine.execute(
        wf,
        checked.input,
        DirectorySink(out),
        job_id=job_id,
        client_metadata=checked.envelope.client_metadata,
    )
    print_json(outcome.payload.to_json())
    if outcome.error is None:
        sys.exit(EXIT_OK)
    _say(outcome.error)
    sys.exit(EXIT_INVALID if outcome.error.invalid_input else EXIT_FAILED)


def _refuse(job_id: str, workflow_id: str, error: GenhookError) -> NoReturn:
    """Nothing was run: the failed payload (``attempts`` 0, as the server says), exit 2."""
    print_json(
        failure_payload(
            job_id=job_id, workflow_id=workflow_id, external_id=None, error=error, attempts=0
        ).to_json()
    )
    _say(error)
    sys.exit(EXIT_INVALID)


def _say(error: GenhookError) -> None:
    """The one human line on stderr: the code, what was wrong, the field."""
    where = f" (field {error.field})" if error.field else ""
    click.echo(f"genhook run: {error.code.value}: {error.description}{where}", err=True)


def _resolve_workflow(engine: Engine, name: str) -> Workflow:
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        try:
            return load_workflow(path, engine.presets, engine.nodes)
        except TemplateError as exc:
            die_template(exc)
    return engine.workflow(name)


def _read_input(value: str) -> Any:
    """The trigger from stdin, inline JSON or a file, parsed as strictly as the API does."""
    if value == "-":
        return parse_json(sys.stdin.buffer.read())
    if value.lstrip().startswith(("{", "[")):
        return parse_json(value)
    try:
        data = Path(value).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            ErrorCode.INPUT_NOT_FOUND,
            f"cannot read the input file {value!r}: {exc.strerror or exc} "
            "(--input takes a JSON file, inline JSON, or - for standard input)",
        ) from None
    return parse_json(data)


@cli.group()
def workflows() -> None:
    """List, show and validate workflow templates."""


@workflows.command("list")
def workflows_list() -> None:
    """The loaded templates: id, version, description."""
    catalog = load_catalog()
    print_json(
        [
            {"workflow_id": w.id, "version": w.version, "description": w.description}
            for w in catalog.workflows.values()
        ]
    )


@workflows.command("show")
@click.argument("workflow_id")
def workflows_show(workflow_id: str) -> None:
    """The same JSON as GET /v1/workflows/{id}: input schema, error codes, nodes."""
    catalog = load_catalog()
    try:
        print_json(catalog.describe(workflow_id))
    except GenhookError as exc:
        click.echo(f"error: {exc.description}", err=True)
        sys.exit(EXIT_INVALID)


@workflows.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def workflows_validate(files: tuple[Path, ...]) -> None:
    """Check templates; print each problem as FILE:LINE: where: what. Exit 2 if any."""
    presets, nodes = load_presets(load_settings().presets_dir), NodeRegistry.from_entry_points()
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
@click.option("--offline", is_flag=True, help="Configured only: do not probe the engines.")
def backends_list(offline: bool) -> None:
    """Each backend: what it makes (image, video) and whether it is ready.

    Ready means configured and answering a short probe now (at most a few seconds); with
    --offline, configured only. `detail` says why a backend is not ready.
    """
    from genhook.backends import readiness
    from genhook.backends.base import BackendRegistry

    registry = BackendRegistry.from_entry_points(load_settings())
    print_json(readiness(registry, offline=offline))
