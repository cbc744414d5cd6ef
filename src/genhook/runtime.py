"""Explicit wiring at start-up: one object holds every long-lived part of a genhook process."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from genhook.backends.base import BackendRegistry
from genhook.backends.defaults import BackendDefaults
from genhook.catalog import Catalog
from genhook.clock import Clock, SystemClock
from genhook.config import Settings
from genhook.cpu import process_gate
from genhook.delivery.ssrf import Resolver, SystemResolver
from genhook.engine import Engine
from genhook.presets import load_presets
from genhook.pricing import load_pricing, shipped_pricing
from genhook.signals import Signal
from genhook.storage import AssetStorage, open_storage
from genhook.store.store import Store


@dataclass
class Runtime:
    """Settings, store, workflow catalog, storage and the in-process signals, built once.

    The API uses the catalog alone and builds no backend; :attr:`engine` (the catalog with its
    backends) is built on first use, which only worker processes make.
    """

    settings: Settings
    store: Store
    catalog: Catalog
    storage: AssetStorage
    clock: Clock = field(default_factory=SystemClock)
    resolver: Resolver = field(default_factory=SystemResolver)
    jobs_signal: Signal = field(default_factory=Signal)
    deliveries_signal: Signal = field(default_factory=Signal)
    events_signal: Signal = field(default_factory=Signal)
    _engine: Engine | None = field(default=None, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        """Open (and migrate) the store, load and check every workflow, open storage."""
        clock = clock or SystemClock()
        store = Store(settings.database_url, clock)
        store.alert_url = settings.alert_url
        store.default_queue_limit = settings.default_queue_limit
        store.backend_concurrency = settings.backend_concurrency
        store.backend_rates = settings.backend_rates
        store.backend_breaker_failures = settings.backend_breaker_failures
        store.backend_probe_seconds = settings.backend_probe_seconds
        store.delivery_per_service = settings.delivery_per_service
        store.delivery_per_endpoint = settings.delivery_per_endpoint
        store.endpoint_disable_seconds = settings.endpoint_disable_seconds
        store.endpoint_disable_deliveries = settings.endpoint_disable_deliveries
        store.migrate()
        catalog = load_catalog(settings)
        storage = open_storage(settings)
        return cls(settings, store, catalog, storage, clock)

    @property
    def engine(self) -> Engine:
        """The runner on this catalog, its backends built from the settings on first use."""
        with self._engine_lock:
            if self._engine is None:
                _install_fetcher(self.settings)
                self._engine = Engine(
                    self.catalog,
                    BackendRegistry.from_entry_points(self.settings),
                    process_gate(self.settings),
                )
            return self._engine


def load_catalog(settings: Settings) -> Catalog:
    """Presets and workflows from ``settings``, priced by its pricing file (a bad file is a
    ConfigError; a workflow naming an unpriced backend, a TemplateError); no backend is built."""
    path = settings.pricing_file
    return Catalog.load(
        settings.workflows_dir,
        presets=load_presets(settings.presets_dir),
        pricing=load_pricing(path) if path is not None else shipped_pricing(),
        defaults=BackendDefaults.from_settings(settings),
    )


def load_engine(settings: Settings) -> Engine:
    """The catalog and backends from ``settings`` (each backend built by its factory), the
    process's CPU gate, and its media fetcher (inputs by URL) from its limits and policy."""
    _install_fetcher(settings)
    return Engine(
        load_catalog(settings),
        BackendRegistry.from_entry_points(settings),
        process_gate(settings),
    )


def _install_fetcher(settings: Settings) -> None:
    """The process's media fetcher (inputs by URL), from the settings' limits and policy
    (imported here: only processes that run workflows fetch)."""
    from genhook.media.fetch import MediaFetcher, install_fetcher

    install_fetcher(MediaFetcher.from_settings(settings))
