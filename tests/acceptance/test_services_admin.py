"""Services managed while `genhook serve` runs: a key rotated by `genhook services rotate-key`
in another process stops working at the running server's very next request, though the server
caches key look-ups; `services update` limits apply and show in `services list`; `rotate-secret`
stores the overlap."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

from genhook.api.auth import KEY_CACHE_SECONDS
from genhook.store.store import Store
from tests.acceptance.harness import GENHOOK, Genhook


def services(g: Genhook, *args: str) -> Any:
    """`genhook services ...` in its own process, against the server's database."""
    done = subprocess.run(
        [GENHOOK, "services", *args], env=g.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def trigger(g: Genhook, key: str, n: int) -> httpx.Response:
    return g.http.post(
        "/v1/workflows/tiny/runs",
        json={"item_id": f"svc-{n}"},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_a_rotated_key_stops_working_at_the_next_request(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """Three rotations in a row. Each key is first used (and so cached by the server) just
    before the rotation; after `rotate-key` returns, the old key's very next request is 401,
    on every route, and the new key's is 202. At least one rotation must finish within the
    cache's lifetime, or the run would not show that the cache was bypassed."""
    g = genhook_factory()
    g.serve(workers=0)
    key = g.key
    n = 0
    within_ttl = 0
    for _ in range(3):
        n += 1
        first_use = time.monotonic()
        accepted = trigger(g, key, n)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert trigger(g, key, n + 100).status_code == 202  # served from the cache
        rotated = services(g, "rotate-key", "shop")
        n += 1
        old = trigger(g, key, n)
        answered = time.monotonic()
        assert old.status_code == 401, old.text
        assert old.json()["error_code"] == "unauthorized"
        stale = {"Authorization": f"Bearer {key}"}
        assert g.http.get(f"/v1/jobs/{job_id}", headers=stale).status_code == 401
        assert g.http.get("/v1/workflows", headers=stale).status_code == 401
        within_ttl += answered - first_use < KEY_CACHE_SECONDS
        key = rotated["api_key"]
        fresh = {"Authorization": f"Bearer {key}"}
        assert g.http.get(f"/v1/jobs/{job_id}", headers=fresh).status_code == 200
        n += 1
        assert trigger(g, key, n).status_code == 202
    assert within_ttl >= 1, "every rotation outlasted the key cache: nothing was shown"
    listed = services(g, "list")
    assert [s["api_key_prefix"] for s in listed] == [key[:10]]


def test_update_applies_to_the_running_server_and_shows_in_list(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """`services update --queue-limit 1` on a running server: the next trigger is the one
    waiting job, the one after it 429 queue_full; `services list` shows every change, and
    clearing the limit lets triggers in again."""
    g = genhook_factory()
    g.serve(workers=0)  # nothing runs: accepted jobs stay waiting
    assert trigger(g, g.key, 1).status_code == 202  # the key is cached before the update
    updated = services(
        g, "update", "shop", "--queue-limit", "2", "--rate-limit", "5/m", "--daily-budget", "9"
    )
    assert (updated["queue_limit"], updated["rate_limit"], updated["daily_budget"]) == (
        2,
        "5/m",
        9.0,
    )
    assert trigger(g, g.key, 2).status_code == 202
    full = trigger(g, g.key, 3)
    assert full.status_code == 429, full.text
    assert full.json()["error_code"] == "queue_full" and "retry-after" in full.headers
    listed = services(g, "list")
    assert len(listed) == 1 and listed[0] == updated
    cleared = services(g, "update", "shop", "--queue-limit", "none", "--rate-limit", "none")
    assert (cleared["queue_limit"], cleared["rate_limit"], cleared["daily_budget"]) == (
        None,
        None,
        9.0,
    )
    assert trigger(g, g.key, 4).status_code == 202
    assert services(g, "list") == [cleared]


def test_rotate_secret_stores_the_overlap(genhook_factory: Callable[..., Genhook]) -> None:
    g = genhook_factory()
    before = time.time()
    rotated = services(g, "rotate-secret", "shop", "--overlap", "1h")
    assert rotated["service"] == "shop" and rotated["webhook_secret"] != g.secret
    store = Store(g.database_url)
    try:
        service = store.service_by_name("shop")
    finally:
        store.close()
    assert service is not None
    assert service.webhook_secret == rotated["webhook_secret"]
    assert service.previous_secret == g.secret
    assert service.previous_secret_until is not None
    assert before + 3600 <= service.previous_secret_until <= time.time() + 3600
