"""The one store interface: every part of genhook reads and writes jobs and deliveries here.

A job row is the truth about a job. Each state change is one transaction, and the transaction that
ends a job also puts its completion payload into the delivery outbox, so a crash can lose neither.
The parts live in their own modules: ``jobs``, ``deliveries``, ``services`` over ``base``.
"""

from __future__ import annotations

from genhook.status import TERMINAL
from genhook.store.base import Row
from genhook.store.batches import BatchStore
from genhook.store.deliveries import DeliveryStore
from genhook.store.expiry import ExpiryStore
from genhook.store.jobs import JobStore, Lease
from genhook.store.listing import ListingStore
from genhook.store.ops import OpsStore
from genhook.store.retention import RetentionStore
from genhook.store.reviews import ReviewStore
from genhook.store.schedules import ScheduleStore
from genhook.store.services import ServiceStore, key_hash

__all__ = ["TERMINAL", "Lease", "Row", "Store", "key_hash"]


class Store(
    ReviewStore,
    JobStore,
    DeliveryStore,
    ServiceStore,
    OpsStore,
    RetentionStore,
    ListingStore,
    ExpiryStore,
    ScheduleStore,
    BatchStore,
):
    """Jobs, attempts, events, services and the delivery outbox, on SQLite or PostgreSQL."""
