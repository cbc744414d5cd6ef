"""``genhook submit`` against a real `genhook serve` (SQLite and PostgreSQL): a 500-row CSV whose
submit process is killed (SIGKILL) halfway and run again makes exactly one job per row; CSV
strings are typed by the workflow's input_schema; refused rows are named (row, field, code)
and the exit status says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import GENHOOK, TINY_FLOW, Genhook, wait_for

# the tiny workflow with typed columns beside its id (the nodes use only item_id)
CATALOG_FLOW = (
    TINY_FLOW.replace("id: tiny", "id: catalog", 1)
    .replace(
        "    item_id: {type: string, minLength: 1}\n",
        "    item_id: {type: string, minLength: 1}\n"
        "    quantity: {type: integer, minimum: 0}\n"
        "    price: {type: number}\n"
        "    featured: {type: boolean}\n"
        "    tags: {type: array, items: {type: string}}\n",
        1,
    )
    .replace("description: The smallest", "description: Catalogue rows, the smallest", 1)
)


@pytest.fixture
def shop(genhook_factory: Any) -> Genhook:
    g: Genhook = genhook_factory()
    (g.tmp / "flows" / "catalog.yaml").write_text(CATALOG_FLOW, encoding="utf-8")
    g.serve(workers=2)
    return g


class SlowProxy:
    """An HTTP relay on loopback that holds each request ``delay`` seconds before passing it on
    (so that a submit run is still sending when the test kills it)."""

    def __init__(self, target: str, delay: float) -> None:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else None
                time.sleep(relay.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization",)}
                headers["content-type"] = "application/json"
                answer = httpx.request(
                    self.command, target + self.path, content=body, headers=headers, timeout=60
                )
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay

            def log_message(self, *args: Any) -> None:
                return

        self.delay = delay
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow(shop: Genhook) -> Iterator[SlowProxy]:
    proxy = SlowProxy(shop.base, 0.25)
    yield proxy
    proxy.close()


def _csv(path: Path, rows: int) -> Path:
    lines = ["item_id,quantity,price,featured,tags"]
    lines += [f'row-{n},{n},{n}.5,{"yes" if n % 2 else "no"},"a,b{n}"' for n in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _submit(g: Genhook, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**g.env, "GENHOOK_URL": url or g.base, "GENHOOK_API_KEY": g.key}
    return subprocess.run(
        [GENHOOK, "submit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _jobs_per_row(g: Genhook) -> dict[str, int]:
    rows = g.rows(
        "SELECT external_id, count(*) AS n FROM jobs WHERE external_id LIKE 'row-%' "
        "GROUP BY external_id"
    )
    return {r["external_id"]: int(r["n"]) for r in rows}


def test_killed_halfway_and_run_again_every_row_is_exactly_one_job(
    shop: Genhook, slow: SlowProxy, tmp_path: Path
) -> None:
    source = _csv(tmp_path / "catalogue.csv", 500)
    env = {**shop.env, "GENHOOK_URL": slow.url, "GENHOOK_API_KEY": shop.key}
    proc = subprocess.Popen(
        [GENHOOK, "submit", "catalog", "--from", str(source), "--chunk", "20"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: sum(_jobs_per_row(shop).values()) >= 200, 120, "200 rows accepted")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)  # a request the proxy held is passed on, answered to no one
    before = _jobs_per_row(shop)
    assert 200 <= sum(before.values()) < 500, "killed halfway"
    assert set(before.values()) == {1}

    again = _submit(shop, "catalog", "--from", str(source), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads(again.stdout)
    assert summary["rows"] == 500 and summary["refused"] == []
    assert summary["already_accepted"] == sum(before.values())
    assert summary["accepted"] == 500 - sum(before.values())
    after = _jobs_per_row(shop)
    assert after == {f"row-{n}": 1 for n in range(500)}
    # the same through the API, and the CSV strings were typed by the input_schema
    for n in (0, 7, 499):
        found = shop.http.get("/v1/jobs", params={"external_id": f"row-{n}"}).json()["jobs"]
        assert len(found) == 1
    [job] = shop.rows("SELECT input FROM jobs WHERE external_id = 'row-7'")
    given = job["input"] if isinstance(job["input"], dict) else json.loads(job["input"])
    assert given == {
        "item_id": "row-7",
        "quantity": 7,
        "price": 7.5,
        "featured": True,
        "tags": ["a", "b7"],
    }
    # a third run makes nothing new
    third = json.loads(_submit(shop, "catalog", "--from", str(source), "--json").stdout)
    assert (third["accepted"], third["already_accepted"]) == (0, 500)


def test_refused_rows_are_named_and_the_exit_status_says_so(shop: Genhook, tmp_path: Path) -> None:
    source = tmp_path / "mixed.csv"
    source.write_text(
        "item_id,quantity,price\n"
        "ok-1,1,2.5\n"
        "ok-2,many,2\n"  # row 2: quantity is no integer
        ",3,1\n"  # row 3: no item_id
        "ok-4,-1,1\n"  # row 4: under the minimum
        "ok-5,5,5\n",
        encoding="utf-8",
    )
    done = _submit(shop, "catalog", "--from", str(source), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["accepted"] == 2
    named = [(r["row"], r["field"], r["error_code"]) for r in summary["refused"]]
    assert named == [
        (2, "quantity", "invalid_type"),
        (3, "item_id", "missing_field"),
        (4, "quantity", "invalid_value"),
    ]
    # the table for a person: the same rows, and the counts line
    table = _submit(shop, "catalog", "--from", str(source))
    assert table.returncode == 1
    assert "2 already accepted" in table.stdout and "3 refused" in table.stdout
    assert "quantity" in table.stdout and "missing_field" in table.stdout

    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"item_id": "j-1", "quantity": 1}\n\nnot json\n[1]\n', encoding="utf-8")
    done = _submit(shop, "catalog", "--from", str(lines), "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["accepted"] == 1
    assert [(r["row"], r["error_code"]) for r in summary["refused"]] == [
        (3, "invalid_json"),
        (4, "invalid_body"),
    ]

    unknown = _submit(shop, "no-such-workflow", "--from", str(source))
    assert unknown.returncode == 2 and "unknown_workflow" in unknown.stderr
    nokey = subprocess.run(
        [GENHOOK, "submit", "catalog", "--from", str(source), "--url", shop.base],
        env={k: v for k, v in shop.env.items() if k != "GENHOOK_API_KEY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nokey.returncode == 2 and "GENHOOK_API_KEY" in nokey.stderr
