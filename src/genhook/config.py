"""Configuration from the environment (``GENHOOK_*``), read and validated in this one place.

Every setting of a genhook process, the backends' included, is a field of :class:`Settings`;
no other module reads the environment. :meth:`Settings.from_env` converts each variable, fills
the defaults that depend on others and checks the whole (a database URL genhook can open, a
workflows folder that exists and holds templates, ...). A bad value raises :class:`ConfigError`,
whose one-line message names the variable and what it accepts; the command line prints it and
exits 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genhook.config_values import (
    ConfigError,
    backend_counts,
    backend_rates,
    boolean,
    parse_duration,
    parse_rate,
    parse_schedule,
    positive_int,
)
from genhook.paths import shipped_dir

__all__ = [
    "BACKEND_NAMES",
    "ComfyUISettings",
    "ConfigError",
    "DiffusersSettings",
    "HostedSettings",
    "OpenAISettings",
    "S3Settings",
    "Settings",
    "parse_duration",
    "parse_rate",
    "parse_schedule",
]

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
BACKEND_NAMES = ("procedural", "comfyui", "openai", "replicate", "fal", "diffusers")
"""The shipped backends (a plugin may add more: ``GENHOOK_IMAGE_BACKEND`` accepts any name)."""


@dataclass(frozen=True)
class OpenAISettings:
    """The ``openai`` backend: an OpenAI-compatible Images API (``GENHOOK_OPENAI_*``)."""

    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    timeout: float = 120.0
    model: str = "gpt-image-1"


@dataclass(frozen=True)
class ComfyUISettings:
    """The ``comfyui`` backend: a ComfyUI server (``GENHOOK_COMFYUI_*``).

    ``workflow`` is an API-format graph of the operator's (None: the shipped text-to-image
    graph); ``timeout`` bounds one run, from submission to the last file fetched."""

    url: str = "http://127.0.0.1:8188"
    workflow: Path | None = None
    video_workflow: Path | None = None
    """An API-format graph for ``kind: video`` (None: the shipped Wan 2.1 text-to-video one)."""
    timeout: float = 600.0
    stall_timeout: float = 300.0
    """How long our prompt may wait while no prompt ahead of it finishes; then
    ``backend_timeout``, and it is deleted from the queue."""


@dataclass(frozen=True)
class HostedSettings:
    """A hosted engine's API (``replicate``: ``GENHOOK_REPLICATE_*``; ``fal``:
    ``GENHOOK_FAL_*``): where it is, the key, the default models, and the bound of one run."""

    base_url: str
    key: str | None = None
    model: str = ""
    video_model: str = ""
    timeout: float = 600.0


REPLICATE = HostedSettings(
    "https://api.replicate.com/v1",
    model="black-forest-labs/flux-schnell",
    video_model="wan-video/wan-2.2-t2v-fast",
)
FAL = HostedSettings(
    "https://queue.fal.run",
    model="fal-ai/flux/schnell",
    video_model="fal-ai/wan/v2.2-a14b/text-to-video",
)


@dataclass(frozen=True)
class DiffusersSettings:
    """The ``diffusers`` backend: a local pipeline directory (``GENHOOK_DIFFUSERS_*``)."""

    model_dir: Path | None = None
    device: str = "auto"


S3_URL_MODES = ("presigned", "public", "redirect")
S3_MAX_EXPIRY = 7 * 86400.0
"""The longest a SigV4 presigned URL may be valid (S3's own limit)."""


@dataclass(frozen=True)
class S3Settings:
    """Assets on S3-compatible storage (``GENHOOK_STORAGE_URL=s3://bucket/prefix``): the
    endpoint (None: AWS S3 of the region), how ``asset_url`` is made (``url_mode``; None:
    ``public`` when ``public_url`` is set, else ``presigned``), the base of public URLs, how
    long a presigned URL is valid, and the AWS variables (None: the client's own chain)."""

    endpoint_url: str | None = None
    url_mode: str | None = None
    public_url: str | None = None
    url_expiry: float = S3_MAX_EXPIRY
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None

    @property
    def mode(self) -> str:
        """The URL mode in force."""
        return self.url_mode or ("public" if self.public_url else "presigned")


@dataclass(frozen=True)
class Settings:
    """Every setting of a genhook process. See docs/operations.md for each variable."""

    data_dir: Path = Path("var")
    database_url: str = ""
    storage_url: str = ""
    public_url: str = ""
    workflows_dir: Path | None = None
    presets_dir: Path | None = None
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
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_connections: int = 1000
    host: str = "127.0.0.1"
    port: int = 8080
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    comfyui: ComfyUISettings = field(default_factory=ComfyUISettings)
    replicate: HostedSettings = REPLICATE
    fal: HostedSettings = FAL
    diffusers: DiffusersSettings = field(default_factory=DiffusersSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    # what ``backend: default`` means in a generate node, for images and for video (issue 9)
    image_backend: str = "procedural"
    video_backend: str = "procedural"
    # inputs by URL: the most bytes one input may have, and the seconds its fetch may take
    input_max_bytes: int = 20 * 1024 * 1024
    input_timeout: float = 30.0
    # flow control and cost (issue 7)
    pricing_file: Path | None = None  # None: the shipped presets/pricing.yaml
    alert_url: str | None = None
    alert_secret: str | None = None
    # per backend: most jobs running at once across every worker, and most starts per window
    backend_concurrency: Mapping[str, int] = field(default_factory=dict)
    backend_rates: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    # the backend breaker: transient failures in a row that open it, and the wait between probes
    backend_breaker_failures: int = 5
    backend_probe_seconds: float = 30.0
    # the endpoint breaker: an endpoint whose every attempt failed for this long, over at least
    # endpoint_disable_deliveries deliveries, is disabled
    endpoint_disable_seconds: float = 6 * 3600.0
    endpoint_disable_deliveries: int = 10
    # the sender: attempts in flight per service and per endpoint, and the connect timeout
    delivery_per_service: int = 16
    delivery_per_endpoint: int = 8
    delivery_connect_timeout: float = 5.0
    default_queue_limit: int = 10_000
    # retention (issue 10): how long ended jobs, payloads and assets are kept where a service
    # sets none, how often the background purge runs, and the most jobs per purge transaction
    retention_seconds: float = 30 * 86400.0
    purge_interval: float = 600.0
    purge_batch: int = 500
    # worker processes run this much nicer than the process that starts them (issue 8)
    worker_nice: int = 10
    # jobs one worker process runs at once where `genhook worker` is given no --concurrency
    # (also the workers `genhook serve --workers N` starts), and the CPU gate's slots per
    # worker process (0: the cores it may run on)
    worker_concurrency: int = 1
    cpu_slots: int = 0
    # split roles (issue 10): the health/readiness port of `genhook worker` and `genhook
    # sender` (None: none), the bound of a graceful shutdown, and the PostgreSQL pool and
    # timeouts (db_pool_size None: sized by the role; a timeout of 0: none)
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    shutdown_seconds: float = 30.0
    db_pool_size: int | None = None
    db_pool_timeout: float = 10.0
    db_statement_timeout: float = 30.0
    db_lock_timeout: float = 10.0
    db_idle_transaction_timeout: float = 120.0

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
            workflows_dir=self.workflows_dir or shipped_dir("workflows"),
            presets_dir=self.presets_dir or shipped_dir("presets"),
            pricing_file=self.pricing_file
            or (self.presets_dir or shipped_dir("presets")) / "pricing.yaml",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``GENHOOK_*`` variables; ``overrides`` (command-line flags) win."""
        env = os.environ if env is None else env
        values = _read(env, _TABLE)
        values.update({k: v for k, v in overrides.items() if v is not None})
        openai = _read(env, _OPENAI_TABLE)
        openai["api_key"] = _first(env, "GENHOOK_OPENAI_API_KEY", "OPENAI_API_KEY")
        values["openai"] = OpenAISettings(**openai)
        comfyui = _read(env, _COMFYUI_TABLE)
        values["comfyui"] = ComfyUISettings(**comfyui)
        replicate = _read(env, _hosted_table("GENHOOK_REPLICATE"))
        replicate["key"] = _first(env, "GENHOOK_REPLICATE_API_TOKEN", "REPLICATE_API_TOKEN")
        values["replicate"] = replace(REPLICATE, **replicate)
        fal = _read(env, _hosted_table("GENHOOK_FAL"))
        fal["key"] = _first(env, "GENHOOK_FAL_KEY", "FAL_KEY")
        values["fal"] = replace(FAL, **fal)
        values["diffusers"] = DiffusersSettings(**_read(env, _DIFFUSERS_TABLE))
        s3 = _read(env, _S3_TABLE)
        s3["access_key_id"] = _first(env, "AWS_ACCESS_KEY_ID")
        s3["secret_access_key"] = _first(env, "AWS_SECRET_ACCESS_KEY")
        s3["session_token"] = _first(env, "AWS_SESSION_TOKEN")
        s3["region"] = _first(env, "AWS_REGION", "AWS_DEFAULT_REGION")
        values["s3"] = S3Settings(**s3)
        settings = cls(**values).resolved()
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work together; each message names its variable."""
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ConfigError(
                "GENHOOK_HEARTBEAT_SECONDS: must be shorter than GENHOOK_LEASE_SECONDS "
                f"({self.heartbeat_seconds:g}s >= {self.lease_seconds:g}s)"
            )
        scheme = self.database_url.split("://", 1)[0] if "://" in self.database_url else ""
        if scheme not in DATABASE_SCHEMES:
            raise ConfigError(
                f"GENHOOK_DATABASE_URL: scheme {scheme or self.database_url[:20]!r} is not "
                "supported; accepts sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"
            )
        if urlsplit(self.storage_url).scheme not in ("file", "s3"):
            raise ConfigError(
                f"GENHOOK_STORAGE_URL: scheme {urlsplit(self.storage_url).scheme!r} is not "
                "supported; accepts file:///PATH or s3://BUCKET[/PREFIX]"
            )
        if urlsplit(self.storage_url).scheme == "s3":
            _check_s3(self.storage_url, self.s3)
        public = urlsplit(self.public_url)
        if public.scheme not in ("http", "https") or not public.hostname:
            raise ConfigError(
                "GENHOOK_PUBLIC_URL: not an http(s) URL; accepts e.g. https://gen.example.com"
            )
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(f"GENHOOK_DATA_DIR: {self.data_dir} is not a directory")
        _check_folder("GENHOOK_WORKFLOWS_DIR", self.workflows_dir, "*.yaml workflow templates")
        _check_folder("GENHOOK_PRESETS_DIR", self.presets_dir, "*.yaml preset files")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: {self.port} is not a port; accepts 0 to 65535")
        _check_openai(self.openai)
        _check_engines(self)
        if self.pricing_file is not None and not self.pricing_file.is_file():
            raise ConfigError(
                f"GENHOOK_PRICING_FILE: {self.pricing_file} is not a file; accepts a YAML file "
                "of backend: model: {per_image: CREDITS, per_video_second: CREDITS}"
            )
        if self.alert_url is not None:
            parts = urlsplit(self.alert_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    "GENHOOK_ALERT_URL: not an http(s) URL; accepts e.g. https://ops.example.com/hook"
                )
            if not (self.alert_secret or "").startswith("whsec_"):
                raise ConfigError(
                    "GENHOOK_ALERT_SECRET: needed with GENHOOK_ALERT_URL; accepts a Standard "
                    "Webhooks secret whsec_<base64>"
                )


Table = Mapping[str, tuple[str, Callable[[str], Any]]]


def _read(env: Mapping[str, str], table: Table) -> dict[str, Any]:
    """Each set variable of ``table`` converted; a value that does not convert is refused."""
    values: dict[str, Any] = {}
    for var, (name, convert) in table.items():
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[name] = convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{var}: {exc}") from exc
    return values


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _positive_seconds(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration (use e.g. 30s, 2m, 250ms)")
    return seconds


def _seconds(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < 0:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 2m, 250ms, or 0)")
    return seconds


def _port(text: str) -> int:
    digits = text.strip()
    if digits.isdigit() and int(digits) <= 65535:
        return int(digits)
    raise ValueError(f"not a port: {text!r} (use 0 to 65535; 0: any free port)")


def _niceness(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ValueError(f"not a niceness: {text!r} (use a whole number from 0 to 19, e.g. 10)")
    return value


def _check_folder(var: str, path: Path | None, holds: str) -> None:
    if path is None:
        return
    if not path.is_dir():
        raise ConfigError(f"{var}: {path} is not a directory; accepts a folder of {holds}")
    if not any(path.glob("*.yaml")):
        raise ConfigError(f"{var}: {path} holds no {holds}")


def _check_openai(openai: OpenAISettings) -> None:
    parts = urlsplit(openai.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "GENHOOK_OPENAI_BASE_URL: not an http(s) URL; accepts e.g. https://api.openai.com/v1"
        )
    key = openai.api_key
    if key is not None and not (key.isascii() and key.isprintable()):
        raise ConfigError(
            "GENHOOK_OPENAI_API_KEY: has characters an HTTP header cannot carry; "
            "accepts printable ASCII"
        )


def _check_engines(settings: Settings) -> None:
    """The remote engines' URLs are http(s), their secrets can travel in a header, the
    operator's ComfyUI graph and diffusers folder exist, the default backends are names."""
    for var, url in (
        ("GENHOOK_COMFYUI_URL", settings.comfyui.url),
        ("GENHOOK_REPLICATE_BASE_URL", settings.replicate.base_url),
        ("GENHOOK_FAL_BASE_URL", settings.fal.base_url),
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{var}: not an http(s) URL: {url[:80]!r}")
    for var, secret in (
        ("GENHOOK_REPLICATE_API_TOKEN", settings.replicate.key),
        ("GENHOOK_FAL_KEY", settings.fal.key),
    ):
        if secret is not None and not (secret.isascii() and secret.isprintable()):
            raise ConfigError(
                f"{var}: has characters an HTTP header cannot carry; accepts printable ASCII"
            )
    for var, graph in (
        ("GENHOOK_COMFYUI_WORKFLOW", settings.comfyui.workflow),
        ("GENHOOK_COMFYUI_VIDEO_WORKFLOW", settings.comfyui.video_workflow),
    ):
        if graph is not None and not graph.is_file():
            raise ConfigError(f"{var}: {graph} is not a file; accepts an API-format graph (JSON)")
    folder = settings.diffusers.model_dir
    if folder is not None and not folder.is_dir():
        raise ConfigError(
            f"GENHOOK_DIFFUSERS_MODEL_DIR: {folder} is not a directory; accepts a diffusers "
            "pipeline folder (its model_index.json at the top)"
        )
    if settings.diffusers.device.split(":", 1)[0] not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(
            f"GENHOOK_DIFFUSERS_DEVICE: {settings.diffusers.device!r}; accepts auto, cpu, cuda, "
            "cuda:N or mps"
        )
    for var, name in (
        ("GENHOOK_IMAGE_BACKEND", settings.image_backend),
        ("GENHOOK_VIDEO_BACKEND", settings.video_backend),
    ):
        if not name.replace("_", "").replace("-", "").isalnum() or name == "default":
            raise ConfigError(
                f"{var}: {name[:40]!r} is not a backend name; accepts e.g. "
                + ", ".join(BACKEND_NAMES)
            )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def _check_s3(storage_url: str, s3: S3Settings) -> None:
    """An S3 storage URL names a bucket; the endpoint and public base are http(s) URLs; the
    URL mode is known; a presigned URL's expiry is within SigV4's 7 days."""
    parts = urlsplit(storage_url)
    if not _BUCKET.match(parts.netloc) or parts.query or parts.fragment:
        raise ConfigError(
            f"GENHOOK_STORAGE_URL: {storage_url[:80]!r} names no bucket; accepts "
            "s3://BUCKET[/PREFIX] (a bucket name of 3 to 63 lowercase letters, digits, dots "
            "and hyphens)"
        )
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if any(not _PREFIX_SEGMENT.match(s) for s in segments):
        raise ConfigError(
            f"GENHOOK_STORAGE_URL: prefix {parts.path[:80]!r}; accepts folders of letters, "
            "digits, dots, hyphens and underscores (e.g. s3://bucket/genhook/assets)"
        )
    for var, url in (
        ("GENHOOK_S3_ENDPOINT_URL", s3.endpoint_url),
        ("GENHOOK_S3_PUBLIC_URL", s3.public_url),
    ):
        if url is None:
            continue
        given = urlsplit(url)
        if given.scheme not in ("http", "https") or not given.hostname:
            raise ConfigError(f"{var}: not an http(s) URL: {url[:80]!r}")
    if s3.url_mode is not None and s3.url_mode not in S3_URL_MODES:
        raise ConfigError(
            f"GENHOOK_S3_URL_MODE: {s3.url_mode[:40]!r}; accepts " + ", ".join(S3_URL_MODES)
        )
    if not 1 <= s3.url_expiry <= S3_MAX_EXPIRY:
        raise ConfigError(
            f"GENHOOK_S3_URL_EXPIRY: {s3.url_expiry:g}s is out of range; accepts 1s to 7d "
            "(the longest a SigV4 presigned URL is valid)"
        )
    if (s3.access_key_id is None) != (s3.secret_access_key is None):
        raise ConfigError(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither (neither: the "
            "client's own credential chain: web identity, container or instance credentials)"
        )


def _name(text: str) -> str:
    return text.strip().lower()


_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GENHOOK_DATA_DIR": ("data_dir", Path),
    "GENHOOK_DATABASE_URL": ("database_url", str.strip),
    "GENHOOK_STORAGE_URL": ("storage_url", str.strip),
    "GENHOOK_PUBLIC_URL": ("public_url", str.strip),
    "GENHOOK_WORKFLOWS_DIR": ("workflows_dir", Path),
    "GENHOOK_PRESETS_DIR": ("presets_dir", Path),
    "GENHOOK_RETRY_SCHEDULE": ("retry_schedule", parse_schedule),
    "GENHOOK_DELIVERY_SCHEDULE": ("delivery_schedule", parse_schedule),
    "GENHOOK_ADMIN_KEY": ("admin_key", str),
    "GENHOOK_ALLOW_PRIVATE_CALLBACKS": ("allow_private_callbacks", boolean),
    "GENHOOK_LEASE_SECONDS": ("lease_seconds", _positive_seconds),
    "GENHOOK_HEARTBEAT_SECONDS": ("heartbeat_seconds", _positive_seconds),
    "GENHOOK_DELIVERY_TIMEOUT": ("delivery_timeout", _positive_seconds),
    "GENHOOK_MAX_BODY_BYTES": ("max_body_bytes", positive_int),
    "GENHOOK_POLL_SECONDS": ("poll_seconds", _positive_seconds),
    "GENHOOK_MAX_STREAMS_PER_SERVICE": ("max_streams_per_service", positive_int),
    "GENHOOK_MAX_HEADER_BYTES": ("max_header_bytes", positive_int),
    "GENHOOK_HEADER_TIMEOUT": ("header_timeout", _positive_seconds),
    "GENHOOK_KEEPALIVE_TIMEOUT": ("keepalive_timeout", _positive_seconds),
    "GENHOOK_MAX_CONNECTIONS": ("max_connections", positive_int),
    "GENHOOK_PRICING_FILE": ("pricing_file", Path),
    "GENHOOK_ALERT_URL": ("alert_url", str.strip),
    "GENHOOK_ALERT_SECRET": ("alert_secret", str.strip),
    "GENHOOK_BACKEND_CONCURRENCY": ("backend_concurrency", backend_counts),
    "GENHOOK_BACKEND_RATES": ("backend_rates", backend_rates),
    "GENHOOK_BACKEND_BREAKER_FAILURES": ("backend_breaker_failures", positive_int),
    "GENHOOK_BACKEND_PROBE_SECONDS": ("backend_probe_seconds", _positive_seconds),
    "GENHOOK_ENDPOINT_DISABLE_AFTER": ("endpoint_disable_seconds", _positive_seconds),
    "GENHOOK_ENDPOINT_DISABLE_DELIVERIES": ("endpoint_disable_deliveries", positive_int),
    "GENHOOK_DELIVERY_PER_SERVICE": ("delivery_per_service", positive_int),
    "GENHOOK_DELIVERY_PER_ENDPOINT": ("delivery_per_endpoint", positive_int),
    "GENHOOK_DELIVERY_CONNECT_TIMEOUT": ("delivery_connect_timeout", _positive_seconds),
    "GENHOOK_QUEUE_LIMIT": ("default_queue_limit", positive_int),
    "GENHOOK_RETENTION": ("retention_seconds", _positive_seconds),
    "GENHOOK_PURGE_INTERVAL": ("purge_interval", _positive_seconds),
    "GENHOOK_PURGE_BATCH": ("purge_batch", positive_int),
    "GENHOOK_WORKER_NICE": ("worker_nice", _niceness),
    "GENHOOK_WORKER_CONCURRENCY": ("worker_concurrency", positive_int),
    "GENHOOK_CPU_SLOTS": ("cpu_slots", positive_int),
    "GENHOOK_IMAGE_BACKEND": ("image_backend", _name),
    "GENHOOK_VIDEO_BACKEND": ("video_backend", _name),
    "GENHOOK_INPUT_MAX_BYTES": ("input_max_bytes", positive_int),
    "GENHOOK_INPUT_TIMEOUT": ("input_timeout", _positive_seconds),
    "GENHOOK_HEALTH_HOST": ("health_host", str.strip),
    "GENHOOK_HEALTH_PORT": ("health_port", _port),
    "GENHOOK_SHUTDOWN_SECONDS": ("shutdown_seconds", _seconds),
    "GENHOOK_DB_POOL_SIZE": ("db_pool_size", positive_int),
    "GENHOOK_DB_POOL_TIMEOUT": ("db_pool_timeout", _positive_seconds),
    "GENHOOK_DB_STATEMENT_TIMEOUT": ("db_statement_timeout", _seconds),
    "GENHOOK_DB_LOCK_TIMEOUT": ("db_lock_timeout", _seconds),
    "GENHOOK_DB_IDLE_TRANSACTION_TIMEOUT": ("db_idle_transaction_timeout", _seconds),
}

_OPENAI_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GENHOOK_OPENAI_BASE_URL": ("base_url", lambda text: text.strip().rstrip("/")),
    "GENHOOK_OPENAI_TIMEOUT": ("timeout", _positive_seconds),
    "GENHOOK_OPENAI_MODEL": ("model", str.strip),
}

_COMFYUI_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GENHOOK_COMFYUI_URL": ("url", lambda text: text.strip().rstrip("/")),
    "GENHOOK_COMFYUI_WORKFLOW": ("workflow", Path),
    "GENHOOK_COMFYUI_VIDEO_WORKFLOW": ("video_workflow", Path),
    "GENHOOK_COMFYUI_TIMEOUT": ("timeout", _positive_seconds),
    "GENHOOK_COMFYUI_STALL_TIMEOUT": ("stall_timeout", _positive_seconds),
}


_S3_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GENHOOK_S3_ENDPOINT_URL": ("endpoint_url", lambda text: text.strip().rstrip("/")),
    "GENHOOK_S3_URL_MODE": ("url_mode", _name),
    "GENHOOK_S3_PUBLIC_URL": ("public_url", lambda text: text.strip().rstrip("/")),
    "GENHOOK_S3_URL_EXPIRY": ("url_expiry", _positive_seconds),
}


def _hosted_table(prefix: str) -> dict[str, tuple[str, Callable[[str], Any]]]:
    return {
        f"{prefix}_BASE_URL": ("base_url", lambda text: text.strip().rstrip("/")),
        f"{prefix}_MODEL": ("model", str.strip),
        f"{prefix}_VIDEO_MODEL": ("video_model", str.strip),
        f"{prefix}_TIMEOUT": ("timeout", _positive_seconds),
    }


_DIFFUSERS_TABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GENHOOK_DIFFUSERS_MODEL_DIR": ("model_dir", Path),
    "GENHOOK_DIFFUSERS_DEVICE": ("device", _name),
}
