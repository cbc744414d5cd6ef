"""Settings from the environment: durations, schedules, defaults that depend on each other."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from genhook.config import ConfigError, Settings, parse_rate, parse_schedule
from tests.conftest import CliResult


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


BAD_SETTINGS = [
    ("GENHOOK_DATABASE_URL", "mysql://root@127.0.0.1/genhook", "sqlite:///"),
    ("GENHOOK_WORKFLOWS_DIR", "{tmp}/no-such-folder", "folder of"),
    ("GENHOOK_WORKFLOWS_DIR", "{tmp}/empty", "holds no"),
    ("GENHOOK_PRESETS_DIR", "{tmp}/no-such-folder", "folder of"),
    ("GENHOOK_STORAGE_URL", "gs://bucket/prefix", "file:///PATH or s3://"),
    ("GENHOOK_PUBLIC_URL", "gen.example.com", "http(s)"),
    ("GENHOOK_DATA_DIR", "{tmp}/a-file", "not a directory"),
    ("GENHOOK_RETRY_SCHEDULE", "30 seconds", "30s"),
    ("GENHOOK_DELIVERY_SCHEDULE", "5s,soon", "30s"),
    ("GENHOOK_ALLOW_PRIVATE_CALLBACKS", "maybe", "true or false"),
    ("GENHOOK_LEASE_SECONDS", "0", "positive"),
    ("GENHOOK_POLL_SECONDS", "-1", "duration"),
    ("GENHOOK_MAX_BODY_BYTES", "lots", "whole number"),
    ("GENHOOK_MAX_CONNECTIONS", "0", "whole number"),
    ("GENHOOK_HEADER_TIMEOUT", "never", "duration"),
    ("GENHOOK_OPENAI_BASE_URL", "api.openai.com", "http(s)"),
    ("GENHOOK_OPENAI_TIMEOUT", "soon", "duration"),
    ("GENHOOK_PRICING_FILE", "{tmp}/no-such-file", "per_image"),
    ("GENHOOK_PRICING_FILE", "{tmp}/a-file", "per_image"),
    ("GENHOOK_OPENAI_API_KEY", "sk-\u00e9t\u00e9", "printable ASCII"),
]


@pytest.mark.parametrize(("var", "value", "accepts"), BAD_SETTINGS)
def test_a_bad_setting_exits_2_with_one_line(
    genhook: Callable[..., CliResult], tmp_path: Path, var: str, value: str, accepts: str
) -> None:
    """`genhook serve` with a bad setting: exit 2, one stderr line naming the variable and what
    it accepts, no traceback (and it never starts: the port stays free)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    env = {"GENHOOK_DATA_DIR": str(tmp_path / "var"), var: value.format(tmp=tmp_path)}
    result = genhook("serve", "--workers", "0", "--port", str(_free_port()), env=env)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert var in lines[0] and accepts in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert value.format(tmp=tmp_path) not in lines[0] or "KEY" not in var, "no secret echoed"


def test_a_bad_flag_setting_exits_2_too(genhook: Callable[..., CliResult]) -> None:
    """`--port 70000` is refused by the command line in one line, exit 2."""
    result = genhook("serve", "--port", "70000")
    assert result.code == 2
    assert "--port" in result.stderr and "Traceback" not in result.stderr


def test_openai_settings_come_from_either_key_variable() -> None:
    """GENHOOK_OPENAI_API_KEY wins over OPENAI_API_KEY; either configures the backend."""
    assert Settings.from_env({"OPENAI_API_KEY": "sk-a"}).openai.api_key == "sk-a"
    both = {"OPENAI_API_KEY": "sk-a", "GENHOOK_OPENAI_API_KEY": "sk-b"}
    assert Settings.from_env(both).openai.api_key == "sk-b"
    assert Settings.from_env({}).openai.api_key is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
