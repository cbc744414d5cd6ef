"""`genhook services create|list|update|rotate-key|rotate-secret` as an operator runs them: real
processes on a real SQLite file; the store's service methods on SQLite and PostgreSQL; the key
epoch that makes a rotated key stop working at once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from genhook.api.auth import KeyCache
from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.store.services import EPOCH_SUFFIX, FileEpoch, check_settings, key_hash
from genhook.store.store import Store
from tests.conftest import CliResult

Genhook = Callable[..., CliResult]
LISTED = {
    "service",
    "service_id",
    "api_key_prefix",
    "rate_limit",
    "daily_budget",
    "on_budget",
    "queue_limit",
    "test",
    "retention",
    "paused",
    "created_at",
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store the commands (run in ``tmp_path``) use: ``./var/genhook.db``."""
    opened: list[Store] = []

    def open_store() -> Store:
        store = Store(f"sqlite:///{tmp_path / 'var' / 'genhook.db'}")
        store.migrate()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def ok(result: CliResult) -> object:
    assert result.code == 0, result.stderr
    return result.json


def refused(result: CliResult, code: int = 2) -> str:
    """The one line a refused command prints on stderr (nothing on stdout)."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_create_with_every_flag_is_listed_without_key_or_secret(genhook: Genhook) -> None:
    made = ok(
        genhook(
            "services",
            "create",
            "shop",
            "--rate-limit",
            "100/h",
            "--daily-budget",
            "250.5",
            "--on-budget",
            "fail",
            "--queue-limit",
            "40",
            "--test",
            "--retention",
            "7d",
        )
    )
    ok(genhook("services", "create", "crm"))
    assert isinstance(made, dict) and set(made) >= {"service", "api_key", "webhook_secret"}
    listing = genhook("services", "list")
    listed = ok(listing)
    assert isinstance(listed, list)
    assert [s["service"] for s in listed] == ["crm", "shop"]
    assert all(set(s) == LISTED for s in listed)
    shop = listed[1]
    assert shop == {
        "service": "shop",
        "service_id": made["service_id"],
        "api_key_prefix": made["api_key"][:10],
        "rate_limit": "100/h",
        "daily_budget": 250.5,
        "on_budget": "fail",
        "queue_limit": 40,
        "test": True,
        "retention": "7d",
        "paused": False,
        "created_at": shop["created_at"],
    }
    assert shop["created_at"].endswith("Z")
    crm = listed[0]
    assert (crm["rate_limit"], crm["daily_budget"], crm["on_budget"]) == (None, None, "hold")
    assert (crm["queue_limit"], crm["test"], crm["retention"]) == (None, False, None)
    assert made["api_key"] not in listing.stdout and "whsec_" not in listing.stdout


def test_update_changes_only_the_flags_given_and_none_clears(genhook: Genhook) -> None:
    ok(
        genhook(
            "services", "create", "shop", "--rate-limit", "2/h", "--daily-budget", "5", "--test"
        )
    )
    first = ok(genhook("services", "update", "shop", "--queue-limit", "3", "--on-budget", "fail"))
    assert isinstance(first, dict)
    assert (first["rate_limit"], first["daily_budget"], first["test"]) == ("2/h", 5.0, True)
    assert (first["queue_limit"], first["on_budget"]) == (3, "fail")
    second = ok(
        genhook(
            "services",
            "update",
            "shop",
            "--rate-limit",
            "none",
            "--daily-budget",
            "none",
            "--no-test",
        )
    )
    assert isinstance(second, dict)
    assert (second["rate_limit"], second["daily_budget"], second["test"]) == (None, None, False)
    assert (second["queue_limit"], second["on_budget"]) == (3, "fail")
    unchanged = ok(genhook("services", "update", "shop"))
    assert unchanged == second
    assert ok(genhook("services", "list")) == [second]


@pytest.mark.parametrize(
    ("command", "flag", "value", "says"),
    [
        ("create", "--rate-limit", "100/y", "--rate-limit: not a rate limit"),
        ("create", "--rate-limit", "0/h", "--rate-limit: not a rate limit"),
        ("update", "--rate-limit", "fast", "--rate-limit: not a rate limit"),
        ("create", "--daily-budget", "-1", "--daily-budget: must be"),
        ("update", "--daily-budget", "lots", "--daily-budget: not a number"),
        ("create", "--daily-budget", "nan", "--daily-budget: must be"),
        ("create", "--daily-budget", "none", "--daily-budget: not a number"),
        ("create", "--queue-limit", "0", "--queue-limit: must be"),
        ("update", "--queue-limit", "2.5", "--queue-limit: not a whole number"),
        ("create", "--on-budget", "drop", "--on-budget: must be hold or fail"),
        ("update", "--on-budget", "none", "--on-budget: must be hold or fail"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(
    genhook: Genhook, db: Callable[[], Store], command: str, flag: str, value: str, says: str
) -> None:
    db().create_service("shop", queue_limit=7)
    line = refused(
        genhook("services", command, "shop" if command == "update" else "new", flag, value)
    )
    assert line.startswith(f"error: {says}"), line
    names = [s.name for s in db().list_services()]
    assert names == ["shop"]  # nothing created
    assert db().service_by_name("shop").queue_limit == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args",
    [
        ("update", "ghost", "--queue-limit", "3"),
        ("rotate-key", "ghost"),
        ("rotate-secret", "ghost"),
    ],
)
def test_an_unknown_service_is_one_line_and_exit_2(genhook: Genhook, args: tuple[str]) -> None:
    ok(genhook("services", "create", "shop"))
    line = refused(genhook("services", *args))
    assert line == "error: service_not_found: no service named 'ghost'"


def test_rotate_key_replaces_the_key_and_raises_the_epoch(
    genhook: Genhook, db: Callable[[], Store]
) -> None:
    """The old key no longer finds the service; the new one does; ``services list`` shows the
    new prefix; and a process that already had the epoch mapped sees it raised."""
    made = ok(genhook("services", "create", "shop"))
    assert isinstance(made, dict)
    store = db()
    before = store.key_epoch()
    assert before is not None
    assert store.service_for_key(made["api_key"]) is not None
    rotated = ok(genhook("services", "rotate-key", "shop"))
    assert isinstance(rotated, dict) and set(rotated) == {"service", "api_key"}
    new_key = rotated["api_key"]
    assert rotated["service"] == "shop" and new_key.startswith("gh_")
    assert new_key != made["api_key"]
    assert store.key_epoch() == before + 1  # seen through the mapping, no query
    assert store.service_for_key(made["api_key"]) is None
    found = store.service_for_key(new_key)
    assert found is not None and found.id == made["service_id"]
    assert found.key_rotated_at is not None
    assert found.webhook_secret == made["webhook_secret"]  # the secret is another rotation
    listed = ok(genhook("services", "list"))
    assert isinstance(listed, list) and listed[0]["api_key_prefix"] == new_key[:10]


def test_rotate_secret_stores_the_old_secret_for_the_overlap(
    genhook: Genhook, db: Callable[[], Store]
) -> None:
    made = ok(genhook("services", "create", "shop"))
    assert isinstance(made, dict)
    started = time.time()
    rotated = ok(genhook("services", "rotate-secret", "shop", "--overlap", "2h"))
    ended = time.time()
    assert isinstance(rotated, dict)
    assert set(rotated) == {"service", "webhook_secret", "previous_secret_valid_until"}
    assert rotated["webhook_secret"].startswith("whsec_")
    assert rotated["webhook_secret"] != made["webhook_secret"]
    service = db().service_by_name("shop")
    assert service is not None
    assert service.webhook_secret == rotated["webhook_secret"]
    assert service.previous_secret == made["webhook_secret"]
    until = service.previous_secret_until
    assert until is not None and started + 7200 <= until <= ended + 7200
    shown = rotated["previous_secret_valid_until"]
    assert shown.endswith("Z")
    assert abs(datetime.fromisoformat(shown).timestamp() - until) < 0.001
    # the default overlap is 24 h, and a second rotation keeps only the secret it replaced
    again = ok(genhook("services", "rotate-secret", "shop"))
    assert isinstance(again, dict)
    service = db().service_by_name("shop")
    assert service is not None and service.previous_secret == rotated["webhook_secret"]
    assert service.previous_secret_until is not None
    assert service.previous_secret_until - time.time() > 24 * 3600 - 120
    # --overlap 0: the old secret stops signing at once
    none = ok(genhook("services", "rotate-secret", "shop", "--overlap", "0"))
    assert isinstance(none, dict) and none["previous_secret_valid_until"] is None
    service = db().service_by_name("shop")
    assert service is not None and service.previous_secret is None


def test_rotate_secret_refuses_a_bad_overlap(genhook: Genhook) -> None:
    ok(genhook("services", "create", "shop"))
    line = refused(genhook("services", "rotate-secret", "shop", "--overlap", "soon"))
    assert line.startswith("error: --overlap: not a duration"), line


# -- the store's methods, on both databases --------------------------------------------------------


def test_store_update_rotate_and_look_up(store: Store) -> None:
    made = store.create_service("shop", rate_limit="10/m", queue_limit=5, sandbox=True)
    service = store.service_by_name("shop")
    assert service is not None and (service.queue_limit, service.sandbox) == (5, True)
    assert store.service_by_name("ghost") is None
    updated = store.update_service("shop", daily_budget=3.0, on_budget="fail", rate_limit=None)
    assert (updated.daily_budget, updated.on_budget, updated.rate_limit) == (3.0, "fail", None)
    assert (updated.queue_limit, updated.sandbox) == (5, True)
    assert [s.name for s in store.list_services()] == ["shop"]
    for call in (
        lambda: store.update_service("ghost", queue_limit=2),
        lambda: store.rotate_key("ghost"),
        lambda: store.rotate_secret("ghost", 60),
    ):
        with pytest.raises(GenhookError) as caught:
            call()
        assert caught.value.code is ErrorCode.SERVICE_NOT_FOUND
    with pytest.raises(ValueError, match="--queue-limit"):
        store.update_service("shop", queue_limit=0)
    with pytest.raises(ValueError, match="not a service setting"):
        store.update_service("shop", api_key_hash="x")
    rotated = store.rotate_key("shop")
    assert store.service_for_key(made["api_key"]) is None
    assert store.service_for_key(rotated["api_key"]) is not None
    # PostgreSQL has no shared epoch: the API then looks every key up
    expected_epoch = store.engine.dialect.name == "sqlite"
    assert (store.key_epoch() is not None) is expected_epoch


def test_check_settings_accepts_what_the_contract_names() -> None:
    assert check_settings({"rate_limit": "100/h", "daily_budget": 0, "on_budget": "hold"}) == {
        "rate_limit": "100/h",
        "daily_budget": 0.0,
        "on_budget": "hold",
    }
    assert check_settings({"queue_limit": None, "sandbox": 1}) == {
        "queue_limit": None,
        "sandbox": True,
    }
    for bad in ({"daily_budget": float("inf")}, {"queue_limit": True}, {"on_budget": None}):
        with pytest.raises(ValueError):
            check_settings(bad)


# -- the key epoch and the API's key cache -----------------------------------------------------


def test_the_epoch_file_is_shared_by_processes(tmp_path: Path) -> None:
    """A raise in another process is read through this process's mapping; concurrent raises
    (four processes, 50 each) lose none."""
    path = tmp_path / f"genhook.db{EPOCH_SUFFIX}"
    epoch = FileEpoch(path)
    assert epoch.read() == 0
    script = (
        "import sys; from pathlib import Path; from genhook.store.services import FileEpoch\n"
        "e = FileEpoch(Path(sys.argv[1]))\n"
        "for _ in range(50): e.bump()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert epoch.read() == 200
    assert path.stat().st_mode & 0o077 == 0
    epoch.close()


def test_key_cache_drops_an_entry_of_another_epoch() -> None:
    clock = ManualClock()
    cache = KeyCache(clock, ttl=5.0)
    digest = key_hash("gh_k")
    cache.put(digest, "shop", 7)  # type: ignore[arg-type]
    assert cache.get(digest, 7) == "shop"
    assert cache.get(digest, 8) is None  # raised since: looked up again
    assert cache.get(digest, 7) is None and len(cache) == 0  # and dropped
    cache.put(digest, "shop", 8)  # type: ignore[arg-type]
    clock.advance(5.0)
    assert cache.get(digest, 8) is None  # the TTL still holds
