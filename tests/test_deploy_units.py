"""The systemd units of deploy/systemd: checked by scripts/check_units.sh with
``systemd-analyze verify`` (skipped only where it is absent), and what docs/deploy.md promises of
them (roles, environment files, restart, SIGTERM and a stop timeout beyond the shutdown bound,
hardening), read from the files themselves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genhook.config import Settings
from genhook.service import SUPERVISOR_GRACE

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
SCRIPT = ROOT / "scripts" / "check_units.sh"
GENHOOK = str(Path(sys.executable).with_name("genhook"))
ROLES = {
    "genhook-api.service": ["serve", "--workers", "0"],
    "genhook-worker@.service": ["worker"],
    "genhook-sender.service": ["sender"],
}
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as sections of keys, each with every value it is given (in order)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _run(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "GENHOOK_BIN": GENHOOK, **env},
    )


@needs_analyze
def test_systemd_analyze_verifies_every_unit() -> None:
    done = _run(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "check_units:",
        "verified",
        "genhook-api.service",
        "genhook-sender.service",
        "genhook-worker@9101.service",
    ]


@needs_analyze
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("KillSignal=SIGTERM", "KillSignal=SIGTERM\nTimeoutStopSecs=45"), "Unknown key"),
        (("Restart=always", "Restart=sometimes"), "restart specifier"),
        (("TimeoutStopSec=45", "TimeoutStopSec=forty"), "time value"),
    ],
)
def test_a_broken_unit_fails_the_check(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    """The check is not a formality: a misspelt key or a bad value fails it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    shutil.copytree(UNITS, tmp_path / "deploy" / "systemd")
    unit = tmp_path / "deploy" / "systemd" / "genhook-sender.service"
    text = unit.read_text(encoding="utf-8")
    assert change[0] in text
    unit.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    done = _run(tmp_path / "scripts" / SCRIPT.name)
    assert done.returncode == 1
    assert message in done.stderr and "FAILED" in done.stderr


def test_a_missing_systemd_analyze_is_a_skip_not_a_pass(tmp_path: Path) -> None:
    done = _run(SCRIPT, SYSTEMD_ANALYZE=str(tmp_path / "absent"))
    assert done.returncode == 77
    assert "not verified" in done.stderr


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_unit_runs_its_role_and_stops_within_its_timeout(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[0] == "/opt/genhook/bin/genhook"
    role = ROLES[name]
    assert argv[1] == role[0] and " ".join(role[1:]) in " ".join(argv), argv
    assert service["EnvironmentFile"][0] == "/etc/genhook/genhook.env"
    assert service["Restart"] == ["always"]
    assert service["KillSignal"] == ["SIGTERM"]
    # beyond the graceful-shutdown bound (and serve's grace for its own workers)
    bound = Settings().shutdown_seconds + SUPERVISOR_GRACE
    (stop,) = service["TimeoutStopSec"]
    assert float(stop) > bound, (stop, bound)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "genhook",
    }.items():
        assert service.get(key) == [value], (name, key)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_flag_a_unit_passes_exists(name: str) -> None:
    (exec_start,) = _unit(name)["Service"]["ExecStart"]
    argv = exec_start.split()[1:]
    helped = subprocess.run(
        [GENHOOK, argv[0], "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in helped, (name, flag)
