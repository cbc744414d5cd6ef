"""Acceptance: the database stopped for 10 s under load. A `genhook serve` with two workers on a
PostgreSQL server of the test's own (never the machine's shared one) takes a steady stream of
triggers; the server is killed (``pg_ctl stop -m immediate``: a crash) and started again 10 s
later. Meanwhile every trigger is answered: 202, or 503 ``store_unavailable`` with
``Retry-After``, never another 5xx or a dropped connection; the processes stay up, back off and
resume; afterwards every trigger that got a 202 completes and its callback arrives, signed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for
from tests.own_postgres import OwnPostgres

DOWN_SECONDS = 10.0


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    yield server
    server.close()


def test_the_database_down_for_10_s_under_load_loses_nothing(
    tmp_path: Path, own_pg: OwnPostgres, receiver: Receiver
) -> None:
    g = Genhook(tmp_path / "g", GENHOOK_DATABASE_URL=own_pg.url)
    try:
        serve = g.serve(workers=2)
        accepted: list[str] = []
        unavailable: list[httpx.Response] = []
        other: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(
                base_url=g.base, headers={"Authorization": f"Bearer {g.key}"}, timeout=30
            ) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {"item_id": f"d-{n}", "callback_url": receiver.url}
                    try:
                        answer = client.post("/v1/workflows/tiny/runs", json=body)
                    except httpx.HTTPError as exc:
                        other.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if answer.status_code == 202:
                        accepted.append(answer.json()["job_id"])
                    elif answer.status_code == 503:
                        unavailable.append(answer)
                        time.sleep(0.2)
                    else:
                        other.append(f"{answer.status_code} {answer.text[:200]}")
                    time.sleep(0.05)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_for(lambda: len(accepted) >= 20, 60, "triggers accepted before the outage")
        before = len(accepted)
        own_pg.stop("immediate")
        time.sleep(DOWN_SECONDS)
        during = len(accepted) - before
        own_pg.start()
        wait_for(lambda: len(accepted) >= before + during + 20, 90, "triggers accepted after")
        stop.set()
        loader.join(30)

        assert other == [], other[:5]  # every answer a 202 or a 503, no dropped connection
        assert unavailable, "no trigger met the outage"
        for answer in unavailable:
            body = answer.json()
            assert body["error_code"] == "store_unavailable", body
            assert int(answer.headers["retry-after"]) >= 1
        assert during <= 2, f"{during} triggers accepted while the database was down"
        assert serve.poll() is None  # the server and its workers stayed up

        wanted = set(accepted)
        wait_for(
            lambda: wanted <= {c.json["job_id"] for c in receiver.calls()},
            180,
            f"the callbacks of {len(wanted)} accepted triggers",
            every=0.5,
        )
        for call in receiver.calls():
            if call.json["job_id"] in wanted:
                assert verify(g.secret, call)["status"] == "success", call.json
        per_job: dict[str, set[str]] = {}
        for call in receiver.calls():
            per_job.setdefault(call.json["job_id"], set()).add(call.headers["webhook-id"])
        assert all(len(ids) == 1 for ids in per_job.values())  # one message per job
    finally:
        g.close()
