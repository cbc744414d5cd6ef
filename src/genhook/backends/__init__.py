"""Generation backends, and what ``genhook backends list`` reports about each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from genhook.backends.base import PROBE_TIMEOUT, BackendRegistry, BackendStatus, probe


def readiness(
    registry: BackendRegistry, *, offline: bool = False, timeout: float = PROBE_TIMEOUT
) -> list[dict[str, Any]]:
    """One row per backend: its kinds, and whether it is ready, with the reason when not.

    Ready means configured and answering a probe now (all backends are probed at once, so the
    whole answer takes about ``timeout`` at most); ``offline`` means configured only, no probe.
    """
    names = registry.names()
    backends = [registry.get(name) for name in names]
    if offline:
        statuses = [backend.status() for backend in backends]
    else:
        with ThreadPoolExecutor(max_workers=max(1, len(backends))) as pool:
            statuses = list(pool.map(lambda b: _checked(b, timeout), backends))
    return [
        {
            "backend": name,
            "kinds": sorted(backend.kinds),
            "ready": status.ready,
            "detail": status.detail,
            "checked": not offline,
        }
        for name, backend, status in zip(names, backends, statuses, strict=True)
    ]


def _checked(backend: Any, timeout: float) -> BackendStatus:
    status: BackendStatus = backend.status()
    return probe(backend, timeout) if status.ready else status
