"""Shared fixtures: the shipped presets, node registry and engine, a migrated store on each
database (and the same on an injected clock, ``flow``), and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from genhook.clock import ManualClock
from genhook.engine import Engine
from genhook.presets import Presets, load_presets
from genhook.store.schema import services
from genhook.store.store import Store
from genhook.workflow.registry import NodeRegistry
from tests.databases import database_url

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "workflows" / "samples"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on SQLite and on PostgreSQL, closed after the test."""
    with database_url(request.param, tmp_path) as url:
        s = Store(url)
        s.migrate()
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def flow(store: Store) -> Store:
    """The migrated ``store`` on a :class:`~genhook.clock.ManualClock` (the flow-control tests
    move time by hand)."""
    store.clock = ManualClock()
    return store


def new_service(store: Store, name: str, **values: Any) -> str:
    """A new service's id; ``values`` set columns of its row (limits, budget, ...)."""
    service_id = store.create_service(name)["service_id"]
    if values:
        with store._write() as conn:
            conn.execute(services.update().where(services.c.id == service_id).values(**values))
    return service_id


@pytest.fixture(scope="session")
def presets() -> Presets:
    return load_presets()


@pytest.fixture(scope="session")
def nodes() -> NodeRegistry:
    return NodeRegistry.from_entry_points()


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine.load()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def genhook(tmp_path: Path) -> Callable[..., CliResult]:
    """Run the installed ``genhook`` command in a subprocess, as a user would."""

    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        exe = Path(sys.executable).with_name("genhook")
        proc = subprocess.run(
            [str(exe), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            timeout=120,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
