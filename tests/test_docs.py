"""Published docs stay in step with the code: the generated API reference, the error codes, the
routes and the command line.

The contract (docs/contract.md) also names what is not built yet; those marks are held to the
code in both directions: an unmarked route or command must exist, and a route or command marked
"Not built yet" must not, so that whoever builds it also takes the mark away.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import click

from genhook.cli import cli
from genhook.errors import ErrorCode

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONTRACT = DOCS / "contract.md"
NOT_BUILT = "Not built yet"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_api_reference_is_current() -> None:
    """docs/api.md is exactly what scripts/openapi_doc.py renders from the app's OpenAPI."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "openapi_doc.py"), "--check", "docs/api.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_contract_is_published() -> None:
    """docs/contract.md carries the public contract."""
    text = _read(CONTRACT)
    assert "POST /v1/workflows/{workflow_id}/runs" in text
    assert "completion-v1.json" in text


# -- error codes ---------------------------------------------------------------------------------


def test_error_codes_documented_are_the_codes() -> None:
    """docs/error-codes.md's table lists exactly the ErrorCode values: none missing, none extra."""
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (?:yes|no) \|", _read(DOCS / "error-codes.md"), re.M)
    assert len(rows) == len(set(rows)), "a code is listed twice"
    documented, codes = set(rows), {c.value for c in ErrorCode}
    assert not codes - documented, f"not in docs/error-codes.md: {sorted(codes - documented)}"
    assert not documented - codes, f"documented but not in ErrorCode: {sorted(documented - codes)}"


# -- routes --------------------------------------------------------------------------------------


@cache
def _openapi() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import openapi_doc
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    document: dict[str, Any] = openapi_doc.openapi_document()
    return document


def _app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app serves, from its own OpenAPI document."""
    return {
        (method.upper(), path)
        for path, item in _openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete", "head")
    }


def _rows(text: str, first: str) -> Iterator[tuple[str, str]]:
    """(first cell, whole row) of each Markdown table row whose first cell starts with ``first``."""
    for line in text.splitlines():
        if line.startswith(f"| `{first}"):
            yield line.split(" | ", 1)[0], line


_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE|HEAD) (/[^`?\s]*)")


def _contract_routes() -> dict[tuple[str, str], bool]:
    """Each route of the contract's tables: True when built, False when marked not built."""
    routes: dict[tuple[str, str], bool] = {}
    for cell, row in _rows(_read(CONTRACT), ""):
        for method, path in _ROUTE.findall(cell):
            path = re.sub(r"/…$", "/{job_id}/{filename}", path)  # `GET /assets/…`
            # a route of several rows (``GET /v1/jobs``: two queries) is built if one row is
            routes[(method, path)] = routes.get((method, path), False) or (
                f"**{NOT_BUILT}.**" not in row
            )
    return routes


def test_contract_routes_match_the_app() -> None:
    """Every contract route not marked "Not built yet" is served; every marked one is not; and
    every route the app serves is in the contract."""
    app = _app_routes()
    contract = _contract_routes()
    assert len(contract) > 20, "the contract's route table was not found"
    missing = sorted(r for r, built in contract.items() if built and r not in app)
    assert not missing, f"in docs/contract.md without a 'Not built yet' mark, not served: {missing}"
    stale = sorted(r for r, built in contract.items() if not built and r in app)
    assert not stale, f"served, but docs/contract.md says 'Not built yet': {stale}"
    unlisted = sorted(
        r
        for r in app - set(contract)
        if r[0] != "HEAD" and r[1] not in ("/openapi.json", "/docs", "/docs/oauth2-redirect")
    )
    assert not unlisted, f"served but not in docs/contract.md: {unlisted}"


def test_api_reference_lists_every_route() -> None:
    """docs/api.md has a section for every route of the app (HEAD included)."""
    text = _read(DOCS / "api.md")
    for method, path in sorted(_app_routes()):
        assert f"### `{method} {path}`" in text, (method, path)


# -- the command line ----------------------------------------------------------------------------


def _command_tree() -> dict[str, click.Command]:
    """Every command by its full name (``genhook services create``), groups included."""
    tree: dict[str, click.Command] = {}

    def walk(command: click.Command, name: str) -> None:
        tree[name] = command
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                walk(sub, f"{name} {sub_name}")

    walk(cli, "genhook")
    return tree


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts} | {
        "--help"
    }


_SPAN = re.compile(r"`((?:\.venv/bin/)?genhook(?: [^`]*)?)`")
_FENCE_LINE = re.compile(r"^\s*(?:\$ )?(?:\.venv/bin/)?(genhook(?: .*)?)$")


def _mentions(text: str) -> Iterator[str]:
    """Each command line the text shows: inline code spans, and lines of fenced code blocks."""
    for span in _SPAN.findall(text):
        yield span.removeprefix(".venv/bin/")
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and (match := _FENCE_LINE.match(line)):
            yield match.group(1).split("  #", 1)[0]


def _resolve(mention: str) -> tuple[str, list[str], str | None]:
    """(command name, options it uses, unknown sub-command or None) of one mention."""
    tree = _command_tree()
    words = mention.replace("[", " ").replace("]", " ").replace("|", " ").split()
    name = "genhook"
    unknown = None
    for word in words[1:]:
        if word.startswith("-"):
            break
        if f"{name} {word}" in tree:
            name = f"{name} {word}"
        elif isinstance(tree[name], click.Group) and re.fullmatch(r"[a-z][a-z-]*", word):
            unknown = f"{name} {word}"
            break
        else:
            break
    options = [w.split("=", 1)[0] for w in words if re.fullmatch(r"--[a-z][a-z-]*(=.*)?", w)]
    return name, options, unknown


def _not_built_cli() -> tuple[set[str], set[str]]:
    """Commands and ``command --option``s that docs/contract.md marks as not built yet."""
    commands: set[str] = set()
    options: set[str] = set()
    for cell, row in _rows(_read(CONTRACT), "genhook"):
        names = [_resolve(span) for span in _SPAN.findall(cell)]
        if f"**{NOT_BUILT}.**" in row:
            for name, _, unknown in names:
                commands.add(unknown or name)
        elif f"**{NOT_BUILT}:**" in row:
            marked = row.split(f"**{NOT_BUILT}:**", 1)[1]
            for name, _, _ in names:
                options |= {f"{name} {opt}" for opt in re.findall(r"`(--[a-z-]+)`", marked)}
    return commands, options


def _doc_files() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def test_documented_commands_and_options_exist() -> None:
    """Every ``genhook ...`` shown in the docs and the README names a command and options that
    exist, unless the contract marks them not built yet; and what it marks does not exist."""
    tree = _command_tree()
    not_built, not_built_options = _not_built_cli()
    problems = []
    for path in _doc_files():
        for mention in _mentions(_read(path)):
            name, options, unknown = _resolve(mention)
            if unknown is not None:
                prefix = any(unknown == c or unknown.startswith(f"{c} ") for c in not_built)
                if not prefix:
                    problems.append(f"{path.name}: `{mention}`: no command {unknown!r}")
                continue
            for option in options:
                known = option in _options(tree[name])
                if not known and f"{name} {option}" not in not_built_options:
                    problems.append(f"{path.name}: `{mention}`: {name} has no {option}")
    assert not problems, "\n".join(problems)
    stale = sorted(c for c in not_built if c in tree)
    stale += sorted(
        o for o in not_built_options if o.rsplit(" ", 1)[1] in _options(tree[o.rsplit(" ", 1)[0]])
    )
    assert not stale, f"built, but docs/contract.md says 'Not built yet': {stale}"


def test_every_command_and_option_is_documented() -> None:
    """Every command of the command line, and every option it takes (but hidden ones and
    ``--help``), is shown somewhere in the docs or the README."""
    shown: dict[str, set[str]] = {}
    for path in _doc_files():
        for mention in _mentions(_read(path)):
            name, options, unknown = _resolve(mention)
            if unknown is None:
                shown.setdefault(name, set()).update(options)
    problems = []
    for name, command in _command_tree().items():
        if command.hidden or isinstance(command, click.Group):
            continue  # a group is shown through its commands
        if name not in shown:
            problems.append(f"{name}: not shown in any doc")
            continue
        for param in command.params:
            if (
                isinstance(param, click.Option)
                and not param.hidden
                and not set(param.opts) & shown[name]
            ):
                problems.append(f"{name} {param.opts[0]}: not shown in any doc")
    assert not problems, "\n".join(problems)
