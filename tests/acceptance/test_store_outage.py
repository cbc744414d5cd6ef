"""A database outage under a running `genhook serve`: 503 store_unavailable with Retry-After on
every route, no connection reset, one log line per failure, and service again afterwards.

The database is a throwaway PostgreSQL database that stops answering: new connections are
disallowed and the open ones terminated, as when the server goes down; then it comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Genhook, wait_for
from tests.databases import database_url
from tests.test_store_errors import refuse_connections


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


# the outage is a PostgreSQL server that stops answering; SQLite, a file, has no such outage
# (its failures, a full disk and a read-only file system, are test_store_errors' and
# test_readonly_store's)
@pytest.mark.parametrize("db_kind", ["postgresql"], scope="module")
def test_a_postgresql_outage_answers_503_and_recovers(
    pg_url: str, genhook_factory: Callable[..., Genhook]
) -> None:
    g = genhook_factory(GENHOOK_DATABASE_URL=pg_url)
    g.serve(workers=1)
    before = g.trigger("tiny", {"item_id": "before"})
    assert before.status_code == 202
    job_id = before.json()["job_id"]
    g.wait_status(job_id, {"succeeded"})

    refuse_connections(pg_url, allow=False)
    try:
        answers: list[httpx.Response] = []
        resets: list[str] = []
        for n in range(30):  # one keep-alive client, as a caller's connection pool would be
            try:
                if n % 3 == 0:
                    answers.append(g.trigger("tiny", {"item_id": f"down-{n}"}))
                elif n % 3 == 1:
                    answers.append(g.http.get(f"/v1/jobs/{job_id}"))
                else:
                    answers.append(g.http.get("/healthz"))
            except httpx.TransportError as exc:
                resets.append(repr(exc))
        assert resets == [], "a connection was reset"
        for r in answers:
            assert r.status_code == 503, r.text
            if r.url.path != "/healthz":
                assert r.json()["error_code"] == "store_unavailable"
                assert int(r.headers["retry-after"]) >= 1
    finally:
        refuse_connections(pg_url, allow=True)

    wait_for(lambda: g.http.get("/healthz").status_code == 200, 30, "health after the outage")
    after = g.trigger("tiny", {"item_id": "after"})
    assert after.status_code == 202
    g.wait_status(after.json()["job_id"], {"succeeded"})
    assert g.job(job_id)["status"] == "succeeded", "nothing accepted before is lost"
    logs = g.logs()
    assert "Exception in ASGI application" not in logs
    assert logs.count("store unavailable: POST /v1/workflows/tiny/runs") == 10
