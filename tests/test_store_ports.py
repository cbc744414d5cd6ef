"""The narrow store ports: each names only what Store has, and each role stays inside its port.

mypy proves the signatures (``genhook.store.ports`` assigns ``Store`` to each port's type); these
tests read the roles' source, so a call through an untyped path (``Any``, a getattr) that mypy
cannot see still fails here.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import genhook
from genhook.store.ports import ApiStore, OutboxStore, WorkerStore
from genhook.store.store import Store

SRC = Path(genhook.__file__).parent


def members(port: type) -> set[str]:
    """The names a port declares (its methods and properties)."""
    return {name for name in vars(port) if not name.startswith("_")}


def store_uses(path: Path) -> set[str]:
    """The names ``path`` reads off a store: ``self.store.X``, ``runtime.store.X`` and
    ``api_store(...).X`` (the API's typed accessor)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        on_store = isinstance(base, ast.Attribute) and base.attr == "store"
        via_accessor = (
            isinstance(base, ast.Call)
            and isinstance(base.func, ast.Name)
            and base.func.id == "api_store"
        )
        if on_store or via_accessor:
            used.add(node.attr)
    return used


@pytest.mark.parametrize("port", [WorkerStore, OutboxStore, ApiStore])
def test_each_port_names_only_what_store_has(port: type, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'ports.db'}")  # instance attributes (clock) count too
    try:
        has = set(dir(store))
    finally:
        store.close()
    names = members(port)
    assert names, f"{port.__name__} declares nothing"
    assert names <= has, names - has
    for name in names:
        declared = vars(port)[name]
        if callable(declared):  # same parameter names, in order, as the concrete store's
            want = list(inspect.signature(declared).parameters)
            assert list(inspect.signature(getattr(Store, name)).parameters) == want, name


@pytest.mark.parametrize(
    ("paths", "port"),
    [
        (["worker.py"], WorkerStore),
        (["delivery/outbox.py"], OutboxStore),
        ([p.relative_to(SRC).as_posix() for p in sorted((SRC / "api").glob("*.py"))], ApiStore),
    ],
)
def test_each_role_uses_only_its_port(paths: list[str], port: type) -> None:
    used = set().union(*(store_uses(SRC / p) for p in paths))
    assert used, f"found no store use in {paths}: the scan no longer sees the role's code"
    assert used <= members(port), f"{paths} use {sorted(used - members(port))} outside the port"


def test_the_scan_sees_a_call_outside_the_port(tmp_path: Path) -> None:
    source = tmp_path / "role.py"
    source.write_text("def f(self):\n    self.store.create_service('x')\n", encoding="utf-8")
    assert store_uses(source) == {"create_service"}
    assert not store_uses(source) <= members(WorkerStore)


def test_routes_reach_the_store_only_through_api_store() -> None:
    """A route reading ``runtime.store`` directly would get the whole Store past mypy."""
    direct = []
    for path in sorted((SRC / "api").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and fn.name == "api_store"
            for node in ast.walk(fn)
        }
        direct += [
            f"{path.name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "store" and id(node) not in allowed
        ]
    assert direct == []
