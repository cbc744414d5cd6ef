"""Fixtures: a running genhook (real processes) on each store, and a real callback receiver.

``db_kind`` is ``sqlite`` or ``postgresql``: every test that uses ``service``,
``genhook_factory`` or ``db_kind`` runs on both (the test id says which). A test that is about
one store by nature pins it with ``@pytest.mark.parametrize("db_kind", ["sqlite"])`` and says
why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import DATABASES, Genhook, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=DATABASES)
def db_kind(request: pytest.FixtureRequest) -> str:
    """The store a test's genhook runs on (module-scoped, so ``service`` is one per store)."""
    return str(request.param)


@pytest.fixture
def genhook_factory(tmp_path: Path, db_kind: str) -> Iterator[Callable[..., Genhook]]:
    """Genhook installs on ``db_kind`` (a fresh PostgreSQL database each), closed afterwards."""
    made: list[Genhook] = []

    def make(**env: str) -> Genhook:
        g = Genhook(tmp_path / f"g{len(made)}", database=db_kind, **env)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Genhook]:
    """A `genhook serve` with two embedded workers, on its own data dir and ``db_kind``
    database, shared by a module's tests on that store."""
    g = Genhook(tmp_path_factory.mktemp(f"service-{db_kind}"), database=db_kind)
    g.serve(workers=2)
    yield g
    g.close()
