"""Configuration from the environment (``GENHOOK_*``), validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A setting has a value genhook cannot use; the message names the variable."""


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``2m``, ``1.5h``, ``250ms`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 8h, 250ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_schedule(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations: ``30s,2m,8m`` is ``(30.0, 120.0, 480.0)``."""
    if not text.strip():
        return ()
    return tuple(parse_duration(part) for part in text.split(","))


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m|h|d)\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """A rate limit ``N/PERIOD`` (``100/h``, ``10/s``) as (count, period in seconds)."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a rate limit: {text!r} (use N/s, N/m, N/h or N/d, N >= 1)")
    return int(match.group(1)), _UNITS[match.group(2)]


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    """Every setting of a genhook process. See docs/operations.md for each variable."""

    data_dir: Path = Path("var")
    database_url: str = ""
    storage_url: str = ""
    public_url: str = ""
    workflows_dir: Path | None = None
    retry_schedule: tuple[float, ...] = (30.0, 120.0, 480.0)
    delivery_schedule: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    admin_key: str | None = None
    allow_private_callbacks: bool = False
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    delivery_timeout: float = 15.0
    max_body_bytes: int = 256 * 1024
    poll_seconds: float = 1.0
    max_streams_per_service: int = 20
    host: str = "127.0.0.1"
    port: int = 8080

    def resolved(self) -> Settings:
        """Fill the defaults that depend on other settings (database, storage, public URL)."""
        data = self.data_dir
        # a wildcard listen address is no address to give to callers: use loopback instead
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return replace(
            self,
            database_url=self.database_url or f"sqlite:///{data / 'genhook.db'}",
            storage_url=self.storage_url or f"file://{(data / 'assets').resolve()}",
            public_url=(self.public_url or f"http://{host}:{self.port}").rstrip("/"),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``GENHOOK_*`` variables; ``overrides`` (command-line flags) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        table: dict[str, tuple[str, object]] = {
            "GENHOOK_DATA_DIR": ("data_dir", Path),
            "GENHOOK_DATABASE_URL": ("database_url", str),
            "GENHOOK_STORAGE_URL": ("storage_url", str),
            "GENHOOK_PUBLIC_URL": ("public_url", str),
            "GENHOOK_WORKFLOWS_DIR": ("workflows_dir", Path),
            "GENHOOK_RETRY_SCHEDULE": ("retry_schedule", parse_schedule),
            "GENHOOK_DELIVERY_SCHEDULE": ("delivery_schedule", parse_schedule),
            "GENHOOK_ADMIN_KEY": ("admin_key", str),
            "GENHOOK_ALLOW_PRIVATE_CALLBACKS": ("allow_private_callbacks", _bool),
            "GENHOOK_LEASE_SECONDS": ("lease_seconds", parse_duration),
            "GENHOOK_HEARTBEAT_SECONDS": ("heartbeat_seconds", parse_duration),
            "GENHOOK_DELIVERY_TIMEOUT": ("delivery_timeout", parse_duration),
            "GENHOOK_MAX_BODY_BYTES": ("max_body_bytes", int),
            "GENHOOK_POLL_SECONDS": ("poll_seconds", parse_duration),
            "GENHOOK_MAX_STREAMS_PER_SERVICE": ("max_streams_per_service", int),
        }
        for var, (name, convert) in table.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                values[name] = convert(raw)  # type: ignore[operator]
            except ValueError as exc:
                raise ConfigError(f"{var}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.heartbeat_seconds >= settings.lease_seconds:
            raise ConfigError("GENHOOK_HEARTBEAT_SECONDS must be shorter than the lease")
        return settings.resolved()
