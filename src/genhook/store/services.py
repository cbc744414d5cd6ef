"""Requesting services: creation (the API key shown once, stored hashed) and key look-up."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.delivery.signing import new_secret
from genhook.ids import new_id
from genhook.store.base import StoreBase
from genhook.store.records import Service
from genhook.store.schema import services


def key_hash(api_key: str) -> str:
    """The stored form of an API key: SHA-256 (keys are long random tokens, so this is safe)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class ServiceStore(StoreBase):
    """Services and their credentials."""

    def create_service(
        self, name: str, *, rate_limit: str | None = None, daily_budget: float | None = None
    ) -> dict[str, str]:
        """A new requesting service; its API key is returned here once and stored hashed."""
        api_key = "gh_" + secrets.token_urlsafe(32)
        service_id = new_id("svc")
        secret = new_secret()
        try:
            with self._write() as conn:
                conn.execute(
                    services.insert().values(
                        id=service_id,
                        name=name,
                        api_key_hash=key_hash(api_key),
                        api_key_prefix=api_key[:10],
                        webhook_secret=secret,
                        rate_limit=rate_limit,
                        daily_budget=daily_budget,
                        created_at=self.clock.now(),
                    )
                )
        except IntegrityError as exc:
            raise ValueError(f"a service named {name!r} already exists") from exc
        return {
            "service": name,
            "service_id": service_id,
            "api_key": api_key,
            "webhook_secret": secret,
        }

    def service_for_key(self, api_key: str) -> Service | None:
        """The service owning ``api_key``, read from the database every time: a cache here
        would keep a revoked key working (the API keeps its own, bounded and short-lived)."""
        digest = key_hash(api_key)
        with self._read() as conn:
            row = (
                conn.execute(sa.select(services).where(services.c.api_key_hash == digest))
                .mappings()
                .first()
            )
        return None if row is None else Service.from_row(row)
