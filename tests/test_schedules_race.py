"""Two scheduler processes racing for the same due times, on SQLite and PostgreSQL: each due
time is fired by exactly one of them, with one set of jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from genhook.store.store import Store
from tests.databases import database_url
from tests.test_schedules import FLOW

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 6  # the first only sets the schedules up; five due times are raced for
ITEMS = 25

SCHEDULES = """\
schedules:
  - id: every-minute
    cron: "* * * * *"
    service: shop
    items: {file: items.csv}
  - id: fixed
    cron: "* * * * *"
    service: shop
    input: {item_id: fixed-1}
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_processes_fire_each_due_time_once(kind: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "tiny.yaml").write_text(FLOW + SCHEDULES, encoding="utf-8")
    rows = "".join(f"item-{i}\n" for i in range(ITEMS))
    (flows / "items.csv").write_text("item_id\n" + rows, encoding="utf-8")
    with database_url(kind, tmp_path) as url:
        store = Store(url)
        store.migrate()
        store.create_service("shop")
        minute = 1_800_000_000.0 - 1_800_000_000.0 % 60
        start = minute + 60 - 30  # 30 s before a due time: the first round fires nothing
        wall0 = time.time() + 12  # both are up by then, and tick at the same instants
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.schedule_racer",
                    url,
                    str(flows),
                    str(tmp_path / f"var{n}"),
                    str(start),
                    str(ROUNDS),
                    "60",
                    str(wall0),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            outputs.append([json.loads(line) for line in out.splitlines() if line.startswith("[")])
        try:
            with store.engine.connect() as conn:
                fires = conn.execute(
                    sa.text(
                        "SELECT schedule_key, due_at, created, outcome FROM schedule_fires "
                        "ORDER BY schedule_key, due_at"
                    )
                ).all()
                made = conn.execute(
                    sa.text("SELECT idempotency_key, input FROM jobs ORDER BY idempotency_key")
                ).all()
        finally:
            store.close()
    dues = [start + 30 + 60 * k for k in range(ROUNDS - 1)]
    assert [(f.schedule_key, f.due_at) for f in fires] == [
        (key, due) for key in ("tiny:every-minute", "tiny:fixed") for due in dues
    ]
    assert all(f.outcome == "fired" for f in fires)
    assert [f.created for f in fires] == [ITEMS] * len(dues) + [1] * len(dues)
    # one set of jobs: one per item and due time, none twice
    assert len(made) == (ITEMS + 1) * len(dues)
    assert len({m.idempotency_key for m in made}) == len(made)
    # each round's fires were recorded by one process or the other, never both
    for k in range(ROUNDS):
        firsts = [{f["key"] for f in out[k]} for out in outputs]
        assert not firsts[0] & firsts[1], (k, firsts)
    fired = sum(f["created"] for out in outputs for rnd in out for f in rnd)
    assert fired == len(made)
