"""Settings from the environment: durations, schedules, defaults that depend on each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from genhook.config import ConfigError, Settings, parse_rate, parse_schedule


def test_schedules_parse_units() -> None:
    """`30s,2m,8m` and friends become seconds."""
    assert parse_schedule("30s,2m,8m") == (30.0, 120.0, 480.0)
    assert parse_schedule("250ms, 1.5h,2d") == (0.25, 5400.0, 172800.0)
    assert parse_schedule("") == ()


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    """Defaults: retry 30s,2m,8m; delivery 5s..10h; SQLite and files under the data dir."""
    s = Settings.from_env({"GENHOOK_DATA_DIR": str(tmp_path)})
    assert s.retry_schedule == (30.0, 120.0, 480.0)
    assert s.delivery_schedule == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert s.database_url == f"sqlite:///{tmp_path / 'genhook.db'}"
    assert s.storage_url.startswith("file://") and s.storage_url.endswith("/assets")
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.allow_private_callbacks is False and s.admin_key is None


def test_wildcard_host_gives_a_usable_public_url() -> None:
    """Listening on 0.0.0.0 still hands callers a URL they can reach."""
    assert Settings.from_env({}, host="0.0.0.0", port=9000).public_url == "http://127.0.0.1:9000"
    assert Settings.from_env({}, host="::1", port=9000).public_url == "http://[::1]:9000"
    explicit = Settings.from_env({"GENHOOK_PUBLIC_URL": "https://gen.example.com/"})
    assert explicit.public_url == "https://gen.example.com"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"GENHOOK_RETRY_SCHEDULE": "30 seconds"}, "GENHOOK_RETRY_SCHEDULE"),
        ({"GENHOOK_ALLOW_PRIVATE_CALLBACKS": "maybe"}, "GENHOOK_ALLOW_PRIVATE_CALLBACKS"),
        ({"GENHOOK_LEASE_SECONDS": "5s", "GENHOOK_HEARTBEAT_SECONDS": "10s"}, "HEARTBEAT"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], name: str) -> None:
    """A bad value is refused with a message naming the variable."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_rate_limits_parse() -> None:
    """`100/h` is 100 per 3600 s; nonsense is refused."""
    assert parse_rate("100/h") == (100, 3600.0)
    with pytest.raises(ValueError):
        parse_rate("fast")
