"""Fixtures: a running genhook (real processes) and a real callback receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import Genhook, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def genhook_factory(tmp_path: Path) -> Iterator[Callable[..., Genhook]]:
    made: list[Genhook] = []

    def make(**env: str) -> Genhook:
        g = Genhook(tmp_path / f"g{len(made)}", **env)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Genhook]:
    """A `genhook serve` with two embedded workers, on its own data dir, shared by a module."""
    g = Genhook(tmp_path_factory.mktemp("service"))
    g.serve(workers=2)
    yield g
    g.close()
