"""The small holes of issue 14 on the serving side: `serve` that cannot start says so in one
line (exit 2); the Atom feed stays well-formed XML whatever the catalog's names hold and
never echoes the Host header; `/healthz` is not ok while the store cannot take writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from outagewatch.catalog import Catalog
from webutil import Clock, free_port, outage, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def serve_cmd(db: Path, port: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "serve", "--port", str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` made read-only even for root (chattr +i), or the test skipped."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_serve_on_a_busy_port_exits_2_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        done = serve_cmd(tmp_path / "p.db", port)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_serve_on_an_unwritable_database_exits_2_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    subprocess.run(
        [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "incidents"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    with immutable(db):
        done = serve_cmd(db, free_port())
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(db) in done.stderr and "write" in done.stderr


def evil_catalog() -> Catalog:
    text = Catalog.demo().source.replace('name = "X"', 'name = "X\\u0001\\u000b\\u001f <b>&"', 1)
    assert text != Catalog.demo().source
    return Catalog.from_toml(text, "evil.toml")


async def test_the_feed_is_well_formed_and_ignores_the_host_header(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, catalog=evil_catalog(), history=("x",)) as (s, c):
        await outage(s, clock)
        r = await c.get("/feeds/incidents.atom", headers={"Host": "evil.example"})
        assert r.status_code == 200
        assert b"evil.example" not in r.content
        root = ET.fromstring(r.content)  # well-formed
        ns = {"a": "http://www.w3.org/2005/Atom"}
        (entry,) = root.findall("a:entry", ns)
        assert entry.findtext("a:title", namespaces=ns, default="").startswith("X <b>&: ")
        inc = (await c.get("/api/v1/incidents")).json()[0]
        link = entry.find("a:link", ns)
        assert link is not None and link.get("href") == f"/incidents/{inc['id']}"
        assert root.findtext("a:id", namespaces=ns, default="").startswith("urn:")


async def test_health_is_not_ok_when_the_wal_is_deleted(tmp_path: Path) -> None:
    async with running(tmp_path, Clock(), db="w.db") as (_, c):
        c._transport.app.state.store_health.every_s = 0  # type: ignore[attr-defined]
        assert (await c.get("/healthz")).status_code == 200
        os.unlink(tmp_path / "w.db-wal")
        r = await c.get("/healthz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unwritable"
        assert "WAL" in r.json()["error"]["message"]


async def test_health_is_not_ok_when_the_store_is_read_only(tmp_path: Path) -> None:
    async with running(tmp_path, Clock(), db="r.db") as (_, c):
        c._transport.app.state.store_health.every_s = 0  # type: ignore[attr-defined]
        assert (await c.get("/healthz")).status_code == 200
        with immutable(tmp_path / "r.db"):
            r = await c.get("/healthz")
        assert r.status_code == 503 and "read-only" in r.json()["error"]["message"], r.text
        assert (await c.get("/healthz")).status_code == 200
