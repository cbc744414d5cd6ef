"""A read-only database is seen, at start and under a running server.

Root ignores file modes, so "read-only" is made the way production meets it, with real mounts:

- at start: the folder holding the SQLite file is a read-only bind mount in a user and mount
  namespace (``unshare -rm``); ``genhook serve`` and ``genhook worker`` exit 2 with one line on
  stderr naming the problem and GENHOOK_DATA_DIR / GENHOOK_DATABASE_URL;
- under a running ``genhook serve``: a bind mount cannot be remounted read-only while files on
  it are open for writing (EBUSY), so the database lives on an ext4 loop file system mounted
  ``errors=remount-ro`` in a private mount namespace, and an ext4 error (``trigger_fs_error``)
  makes the kernel turn it read-only, as a failing disk does. ``/healthz`` answers 503 with
  ``writable: false`` and a trigger 503 ``store_unavailable`` with ``Retry-After``, never 500.

Each test skips, saying why, only when this machine cannot make the namespace or the mount.

The mounts are about a SQLite file, so those tests run on SQLite only (``db_kind`` pinned).
PostgreSQL's equivalent is a server that goes read-only under a running ``genhook serve``
(``default_transaction_read_only``, as a standby or an operator's switch does): the last test.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.acceptance.harness import GENHOOK, Genhook, wait_for
from tests.databases import PG_ADMIN

SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"], scope="module")
"""A read-only SQLite file or folder is made with mounts: these tests are about SQLite."""

UNSHARE = shutil.which("unshare")

# bind-mount $1 read-only over itself, then run the rest of the arguments
READ_ONLY_BIND = (
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
)

# $1 image, $2 mount point, $3 seed folder, $4 control folder, the rest: the server's argv.
# Mounts the image (exit 77 when this machine cannot), copies the seed onto it, starts the
# server, and on $4/make-read-only triggers an ext4 error (the kernel remounts it read-only)
# and says so in $4/read-only; stops the server on $4/stop.
TURN_READ_ONLY = """\
set -u
img=$1 mnt=$2 seed=$3 ctl=$4
shift 4
if ! mount -o loop,errors=remount-ro "$img" "$mnt"; then
    echo "cannot mount an ext4 loop file system"; exit 77
fi
dev=$(basename "$(findmnt -n -o SOURCE "$mnt")")
trigger=/sys/fs/ext4/$dev/trigger_fs_error
[ -w "$trigger" ] || { echo "no writable $trigger"; exit 77; }
cp -a "$seed"/. "$mnt"/ || exit 1
"$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT
while [ ! -e "$ctl/make-read-only" ]; do
    kill -0 $pid 2>/dev/null || exit 1
    sleep 0.05
done
echo 1 > "$trigger" || exit 1
touch "$ctl/read-only"
while [ ! -e "$ctl/stop" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
"""


def read_only_bind_or_skip(folder: Path) -> None:
    """Skip unless this machine makes a read-only bind mount in a user+mount namespace."""
    if UNSHARE is None:
        pytest.skip("unshare (util-linux) is not installed")
    target = folder / ".read-only-probe"
    probe = subprocess.run(
        [UNSHARE, "-rm", "sh", "-c", READ_ONLY_BIND, "sh", str(folder), "touch", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if target.exists() or "Read-only file system" not in probe.stderr:
        target.unlink(missing_ok=True)
        pytest.skip(f"no read-only bind mount in a user namespace here: {probe.stderr.strip()}")


def start_on_read_only(g: Genhook, folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``genhook argv...`` with ``folder`` read-only; a process that keeps running fails."""
    read_only_bind_or_skip(folder)
    bind = [UNSHARE or "unshare", "-rm", "sh", "-c", READ_ONLY_BIND, "sh", str(folder)]
    try:
        return subprocess.run(
            [*bind, GENHOOK, *argv],
            env=g.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"genhook {argv[0]} started on a read-only database: {exc}") from exc


def close_cleanly(db: Path) -> None:
    """Checkpoint the WAL and remove -wal and -shm, as a clean shutdown leaves the folder."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    assert not db.with_name(db.name + "-shm").exists()


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], db: Path) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("store error: the database "), line
    assert str(db) in line
    assert "read-only" in line or "readonly" in line, line
    assert "GENHOOK_DATA_DIR" in line and "GENHOOK_DATABASE_URL" in line, line


@SQLITE_ONLY
@pytest.mark.parametrize("clean", [False, True], ids=["wal-files-left", "closed-cleanly"])
def test_serve_on_a_read_only_data_dir_exits_2_with_one_line(
    genhook_factory: Callable[..., Genhook], clean: bool
) -> None:
    g = genhook_factory()  # the database made, writable, in its data dir
    data_dir = Path(g.env["GENHOOK_DATA_DIR"])
    db = data_dir / "genhook.db"
    assert db.is_file()
    if clean:
        close_cleanly(db)
    result = start_on_read_only(g, data_dir, "serve", "--port", str(g.port), "--workers", "1")
    assert_one_line_exit_2(result, db)


@SQLITE_ONLY
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_read_only_database_beside_a_writable_data_dir_exits_2(
    genhook_factory: Callable[..., Genhook], tmp_path: Path, command: str
) -> None:
    """The data dir can be written, the database's folder cannot (before the fix: healthy)."""
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "genhook.db"
    g = genhook_factory(GENHOOK_DATABASE_URL=f"sqlite:///{db}")
    assert db.is_file()
    argv = ["serve", "--port", str(g.port), "--workers", "1"] if command == "serve" else ["worker"]
    result = start_on_read_only(g, folder, *argv)
    assert_one_line_exit_2(result, db)


def assert_refuses_writes(g: Genhook) -> None:
    """/healthz 503 (answers, not writable) and triggers 503 store_unavailable, Retry-After."""
    answers: list[httpx.Response] = []
    for n in range(3):  # health first: it must know before any write has failed
        answers.append(g.http.get("/healthz"))
        answers.append(g.trigger("tiny", {"item_id": f"read-only-{n}"}))
    for r in answers:
        assert r.status_code == 503, (r.url, r.status_code, r.text)
        if r.url.path == "/healthz":
            assert r.json()["database"] is True and r.json()["writable"] is False, r.text
        else:
            assert r.json()["error_code"] == "store_unavailable", r.text
            assert int(r.headers["retry-after"]) >= 1


@SQLITE_ONLY
def test_a_store_that_turns_read_only_under_serve_answers_503(
    genhook_factory: Callable[..., Genhook], tmp_path: Path
) -> None:
    if UNSHARE is None or shutil.which("mkfs.ext4") is None or shutil.which("findmnt") is None:
        pytest.skip("unshare, mkfs.ext4 or findmnt (util-linux, e2fsprogs) is not installed")
    probe = subprocess.run([UNSHARE, "-m", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here (needs root): {probe.stderr.strip()}")
    seed, mnt, ctl = tmp_path / "seed", tmp_path / "mnt", tmp_path / "ctl"
    for folder in (seed, mnt, ctl):
        folder.mkdir()
    image = tmp_path / "store.img"
    with image.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60)
    g = genhook_factory(GENHOOK_DATABASE_URL=f"sqlite:///{seed / 'genhook.db'}")
    db = mnt / "genhook.db"
    script = tmp_path / "turn-read-only.sh"
    script.write_text(TURN_READ_ONLY, encoding="utf-8")
    log_path = tmp_path / "serve.log"
    server = [GENHOOK, "serve", "--port", str(g.port), "--workers", "1"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [UNSHARE, "-m", "sh", str(script), str(image), str(mnt), str(seed), str(ctl), *server],
            env={**g.env, "GENHOOK_DATABASE_URL": f"sqlite:///{db}"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or g._healthy(), 60, "serve on the loop file system"
        )
        if proc.poll() == 77:
            pytest.skip(f"no ext4 loop mount here: {log_path.read_text(errors='replace')}")
        assert proc.poll() is None, log_path.read_text(errors="replace")
        before = g.trigger("tiny", {"item_id": "before"})
        assert before.status_code == 202, before.text
        g.wait_status(before.json()["job_id"], {"succeeded"})

        (ctl / "make-read-only").touch()
        wait_for(lambda: (ctl / "read-only").exists() or proc.poll() is not None, 30, "read-only")
        assert proc.poll() is None, log_path.read_text(errors="replace")

        assert_refuses_writes(g)
    finally:
        (ctl / "stop").touch()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    logs = log_path.read_text(errors="replace")
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs, logs


@pytest.mark.parametrize("db_kind", ["postgresql"], scope="module")
def test_a_postgresql_that_turns_read_only_under_serve_answers_503(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """The PostgreSQL equivalent: the server refuses writes (``default_transaction_read_only``
    on the database, its sessions reconnected) under a running ``genhook serve``: /healthz
    503 ``writable: false``, a trigger 503 ``store_unavailable`` with Retry-After, never 500;
    writable again, it accepts and runs the next trigger."""
    g = genhook_factory()
    g.serve(workers=1)
    before = g.trigger("tiny", {"item_id": "before"})
    assert before.status_code == 202, before.text
    g.wait_status(before.json()["job_id"], {"succeeded"})
    name = sa.make_url(g.database_url).database
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    switch = 'ALTER DATABASE "{}" {} default_transaction_read_only{}'
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(switch.format(name, "SET", " = on"))
            conn.exec_driver_sql(  # the open sessions keep their setting: they reconnect
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        assert_refuses_writes(g)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(switch.format(name, "RESET", ""))
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        admin.dispose()
    wait_for(lambda: g.http.get("/healthz").status_code == 200, 30, "health, writable again")
    after = g.trigger("tiny", {"item_id": "after"})
    assert after.status_code == 202, after.text
    g.wait_status(after.json()["job_id"], {"succeeded"})
    assert "Traceback" not in g.logs() and "Exception in ASGI application" not in g.logs()
