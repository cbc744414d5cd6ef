"""Acceptance on PostgreSQL: an API process and a worker process that share only the database
learn of each other's work through LISTEN/NOTIFY, not by polling."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.harness import GENHOOK, Genhook, Receiver, verify, wait_for
from tests.databases import database_url

TRIGGER = {
    "product_id": "SKU-PG",
    "product_name": "enamel mug",
    "target_style": "studio_white",
    "target_platform": "thumb",
}


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with database_url("postgresql", tmp_path) as url:
        yield url


def _listeners(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_api_and_worker_wake_each_other_through_the_database(
    tmp_path: Path, pg_url: str, receiver: Receiver
) -> None:
    """With polling every 60 s, a trigger still reaches a separate worker process, and its
    finished job the API's sender, within seconds: each hint went through NOTIFY. The worker
    names the server by another host name than the API (as machines of one deployment may),
    so the one-machine socket bus, named after the URL's host, could not have carried them."""
    genhook = Genhook(tmp_path / "g", GENHOOK_DATABASE_URL=pg_url, GENHOOK_POLL_SECONDS="60")
    elsewhere = sa.make_url(pg_url).set(host="localhost").render_as_string(False)
    assert sa.make_url(pg_url).host != "localhost"
    try:
        genhook.serve(workers=0)
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [GENHOOK, "worker"],
            env={**genhook.env, "GENHOOK_DATABASE_URL": elsewhere},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        genhook.procs.append(worker)
        genhook.logfiles.append(log)
        # both ends listen (the hub in the API process, the worker in its own)
        wait_for(lambda: _listeners(pg_url) >= 2, 60, "the API and the worker to LISTEN")
        # the worker's first claim found nothing; from now on only a hint wakes it in time
        for n in range(3):
            answer = genhook.trigger("product-image", {**TRIGGER, "callback_url": receiver.url})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
            (call,) = receiver.wait_job(job_id, timeout=30)
            assert verify(genhook.secret, call)["status"] == "success", n
    finally:
        genhook.close()
