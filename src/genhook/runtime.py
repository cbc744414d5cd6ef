"""Explicit wiring at start-up: one object holds every long-lived part of a genhook process."""

from __future__ import annotations

from dataclasses import dataclass, field

from genhook.backends.base import BackendRegistry
from genhook.clock import Clock, SystemClock
from genhook.config import Settings
from genhook.delivery.ssrf import Resolver, SystemResolver
from genhook.engine import Engine
from genhook.presets import load_presets
from genhook.signals import Signal
from genhook.storage import LocalStorage
from genhook.store.store import Store


@dataclass
class Runtime:
    """Settings, store, engine, storage and the in-process signals, built once."""

    settings: Settings
    store: Store
    engine: Engine
    storage: LocalStorage
    clock: Clock = field(default_factory=SystemClock)
    resolver: Resolver = field(default_factory=SystemResolver)
    jobs_signal: Signal = field(default_factory=Signal)
    deliveries_signal: Signal = field(default_factory=Signal)
    events_signal: Signal = field(default_factory=Signal)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        """Open (and migrate) the store, load and check every workflow, open storage."""
        clock = clock or SystemClock()
        store = Store(settings.database_url, clock)
        store.migrate()
        engine = load_engine(settings)
        storage = LocalStorage.from_url(settings.storage_url, settings.public_url)
        return cls(settings, store, engine, storage, clock)


def load_engine(settings: Settings) -> Engine:
    """Presets, workflows and backends from ``settings`` (each backend built by its factory)."""
    return Engine.load(
        settings.workflows_dir,
        presets=load_presets(settings.presets_dir),
        backends=BackendRegistry.from_entry_points(settings),
    )
