"""A process that runs genhook's outbox alone, for crash tests: ``python -m tests.outbox_child
DATABASE_URL [CAP [CONCURRENCY LEASE_AHEAD]]`` (CAP: the per-endpoint and per-service in-flight
caps, so that one turn leases many; CONCURRENCY and LEASE_AHEAD: the outbox's). Kill it to crash
it mid-send."""

from __future__ import annotations

import asyncio
import sys

from genhook.delivery.outbox import Outbox
from genhook.delivery.sender import DeliverySender
from genhook.store.store import Store


async def main(url: str, cap: int | None, lanes: tuple[int, int] | None = None) -> None:
    store = Store(url)
    if cap is not None:
        store.delivery_per_endpoint = store.delivery_per_service = cap
    async with DeliverySender(allow_private=True, timeout=60.0) as sender:
        sizes = {} if lanes is None else {"concurrency": lanes[0], "lease_ahead": lanes[1]}
        outbox = Outbox(store, sender, (5.0,), poll_seconds=0.05, **sizes)
        await outbox.run(asyncio.Event())


if __name__ == "__main__":
    lanes = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None, lanes))
