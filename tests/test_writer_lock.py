"""One writer per store (store/lock.py): a second `serve` or a `replay` on a database that a
`serve` writes to exits 2 with one line naming the holder; readers still work; a writer killed
with -9 does not block the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from outagewatch.errors import StoreError
from outagewatch.store.lock import WriterLock
from services import fresh_pg_schema
from webutil import free_port, wait_ready

GOOD = b'{"type":"report","service":"x","ts":"2025-03-10T08:31:07Z","country":"US"}\n'


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(db), *args]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=False)


def test_a_second_writer_is_refused_and_a_killed_one_blocks_nothing(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    events = tmp_path / "e.ndjson"
    events.write_bytes(GOOD)
    port = free_port()
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, lambda: "serve did not start")
        second = cli(db, "serve", "--port", str(free_port()))
        assert second.returncode == 2
        err = second.stderr.decode()
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "another process is writing to this database" in err
        assert f"outagewatch serve, pid {proc.pid} on " in err
        replay = cli(db, "replay", str(events))
        assert replay.returncode == 2 and f"pid {proc.pid}" in replay.stderr.decode()
        reader = cli(db, "incidents", "--format", "json")
        assert reader.returncode == 0 and reader.stdout.strip() == b"[]"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        after = cli(db, "replay", str(events))
        assert after.returncode == 0, after.stderr
        assert b"accepted: 1" in after.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_the_lock_is_released_with_the_writer(tmp_path: Path) -> None:
    db = str(tmp_path / "two.db")
    with (
        WriterLock.acquire(db, "replay", db),
        pytest.raises(StoreError, match=r"outagewatch replay, pid \d+ on "),
    ):
        WriterLock.acquire(db, "serve", db)
    WriterLock.acquire(db, "serve", db).release()


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_pg_schema("lock") as url:
        yield url


def test_postgresql_takes_an_advisory_lock_per_schema(pg: str) -> None:
    first = WriterLock.acquire(pg, "serve", "pg")
    try:
        with pytest.raises(StoreError, match=r"pg: another process .*\(outagewatch serve, pid "):
            WriterLock.acquire(pg, "replay", "pg")
        with fresh_pg_schema("lock2") as other:  # another schema: another store
            WriterLock.acquire(other, "replay", "other").release()
    finally:
        first.release()
    WriterLock.acquire(pg, "replay", "pg").release()
