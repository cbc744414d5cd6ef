"""A full disk under a running `genhook serve` on SQLite: its data folder (database and assets) is
a 24 MiB tmpfs in a private mount namespace; a filler file takes every free byte. Meanwhile a
trigger is answered 503 ``store_unavailable`` with ``Retry-After``, never a 500, and
``/healthz`` says the store cannot write; what was accepted before is all there. Once the
filler is gone the server takes triggers again without a restart and every accepted job
completes. (PostgreSQL's full disk is the server's own business: its outage is
test_database_down's.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import GENHOOK, Genhook, wait_for

# $1 mount point, $2 seed folder, $3 control folder, the rest: the server's argv. Mounts a
# small tmpfs (exit 77 when this machine cannot), copies the seed onto it, starts the server;
# on $3/fill writes a filler until the disk is full (then $3/full), on $3/unfill removes it
# (then $3/room), on $3/stop stops the server.
FILL = """\
set -u
mnt=$1 seed=$2 ctl=$3
shift 3
mount -t tmpfs -o size=24m tmpfs "$mnt" || { echo "cannot mount a tmpfs"; exit 77; }
cp -a "$seed"/. "$mnt"/ || exit 1
"$@" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    if [ -e "$ctl/fill" ] && [ ! -e "$ctl/full" ]; then
        dd if=/dev/zero of="$mnt/filler" bs=64k 2>/dev/null
        sync; touch "$ctl/full"
    fi
    if [ -e "$ctl/unfill" ] && [ ! -e "$ctl/room" ]; then
        rm -f "$mnt/filler"; touch "$ctl/room"
    fi
    if [ -e "$ctl/stop" ]; then kill -TERM "$pid"; wait "$pid"; exit 0; fi
    sleep 0.1
done
wait "$pid"
"""

SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"], scope="module")


@SQLITE_ONLY
def test_a_full_disk_under_serve_answers_503_and_recovers(
    genhook_factory: Callable[..., Genhook], tmp_path: Path
) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here (needs root): {probe.stderr.strip()}")
    seed, mnt, ctl = tmp_path / "seed", tmp_path / "mnt", tmp_path / "ctl"
    for folder in (seed, mnt, ctl):
        folder.mkdir()
    g = genhook_factory()
    script = tmp_path / "fill.sh"
    script.write_text(FILL, encoding="utf-8")
    log_path = tmp_path / "serve.log"
    server = [GENHOOK, "serve", "--port", str(g.port), "--workers", "1"]
    env = {
        **g.env,
        "GENHOOK_DATA_DIR": str(mnt),
        "GENHOOK_DATABASE_URL": f"sqlite:///{mnt}/genhook.db",
    }
    # the service the harness made lives in its own database: make one on the tmpfs's seed
    seed_env = {
        **env,
        "GENHOOK_DATA_DIR": str(seed),
        "GENHOOK_DATABASE_URL": f"sqlite:///{seed}/genhook.db",
    }
    made = subprocess.run(
        [GENHOOK, "services", "create", "full"],
        env=seed_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key = json.loads(made.stdout)["api_key"]
    http = httpx.Client(base_url=g.base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [unshare, "-m", "sh", str(script), str(mnt), str(seed), str(ctl), *server],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: proc.poll() is not None or g._healthy(), 60, "serve on the tmpfs")
        if proc.poll() == 77:
            pytest.skip(f"no tmpfs mount here: {log_path.read_text(errors='replace')}")
        assert proc.poll() is None, log_path.read_text(errors="replace")

        def trigger(item: str) -> httpx.Response:
            return http.post("/v1/workflows/tiny/runs", json={"item_id": item})

        accepted = []
        for i in range(5):
            answer = trigger(f"before-{i}")
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["job_id"])
        for job_id in accepted:
            wait_for(
                lambda j=job_id: http.get(f"/v1/jobs/{j}").json()["status"] == "succeeded",
                60,
                "a job before",
            )

        (ctl / "fill").touch()
        wait_for(lambda: (ctl / "full").exists() or proc.poll() is not None, 60, "the disk full")
        assert proc.poll() is None, log_path.read_text(errors="replace")
        refused = 0
        for i in range(10):
            answer = trigger(f"full-{i}")
            assert answer.status_code in (202, 503), (answer.status_code, answer.text)
            if answer.status_code == 503:
                refused += 1
                assert answer.json()["error_code"] == "store_unavailable", answer.text
                assert answer.headers["retry-after"]
            else:
                accepted.append(answer.json()["job_id"])
        assert refused >= 8, refused  # a page or two may still fit
        health = httpx.get(f"{g.base}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["writable"] is False, health.text
        for job_id in accepted[:5]:  # what was accepted before is all there
            assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

        (ctl / "unfill").touch()
        wait_for(lambda: (ctl / "room").exists(), 30, "room again")
        wait_for(lambda: trigger("after-probe").status_code == 202, 60, "triggers accepted again")
        for i in range(5):
            answer = trigger(f"after-{i}")
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["job_id"])
        for job_id in accepted:
            wait_for(
                lambda j=job_id: http.get(f"/v1/jobs/{j}").json()["status"] == "succeeded",
                120,
                f"job {job_id}",
            )
        wait_for(  # healthy again once its last failed write is old enough
            lambda: httpx.get(f"{g.base}/healthz", timeout=10).status_code == 200,
            90,
            "/healthz 200 again",
            every=1.0,
        )
    finally:
        http.close()
        (ctl / "stop").touch()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    logs = log_path.read_text(errors="replace")
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs, logs[-3000:]
