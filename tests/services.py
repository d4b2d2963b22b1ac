"""Real PostgreSQL and NATS JetStream for tests: found running, else started (else installed).

`postgres_url()` and `nats_url()` return a URL of a server that answers. When none answers,
they start Debian's `postgresql` / `nats-server` (installing the package with apt-get when it
is missing). When that fails too the test fails under `CI=true` and is skipped, with the
reason, elsewhere. `fresh_pg_schema()` gives each test its own PostgreSQL schema, so tests
run in parallel (xdist) without seeing each other's rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import quote

import pytest

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_SERVER = "/usr/sbin/nats-server"
START_TIMEOUT_S = 60.0


class ServiceUnavailable(Exception):  # noqa: N818 (reads as a state, not a fault)
    """A service the test needs is not running and could not be started."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(what: str, why: str) -> None:
    msg = f"{what} is not available: {why}"
    if _in_ci():
        pytest.fail(msg + " (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(msg)


_FAILED: dict[str, str] = {}  # what could not be started in this process, and why


def _available(what: str, start: Callable[[], str]) -> str:
    """`start()`'s URL; on failure (remembered: one attempt per process) fail or skip."""
    if what not in _FAILED:
        try:
            return start()
        except (ServiceUnavailable, OSError, subprocess.SubprocessError) as exc:
            _FAILED[what] = str(exc)
    _unavailable(what, _FAILED[what])
    raise AssertionError("unreachable")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _run(cmd: list[str], timeout: float = 600.0) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ServiceUnavailable(f"{' '.join(cmd)} exited {done.returncode}: {' / '.join(tail)}")


def _apt_install(package: str) -> None:
    if shutil.which("apt-get") is None:
        raise ServiceUnavailable(f"the {package} package is missing and apt-get is not here")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    lock = ["flock", "/tmp/outagewatch-apt.lock"] if shutil.which("flock") else []
    _run([*lock, *env_cmd, "apt-get", "update", "-q"], timeout=900)
    _run([*lock, *env_cmd, "apt-get", "install", "-y", "-q", package], timeout=900)


def _wait_port(host: str, port: int, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return
        time.sleep(0.2)
    raise ServiceUnavailable(f"{what} did not listen on {host}:{port} within {START_TIMEOUT_S} s")


# ---------------------------------------------------------------------- PostgreSQL
def _pg_versions() -> list[str]:
    base = Path("/etc/postgresql")
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def _start_postgres() -> None:
    if not _pg_versions() or shutil.which("pg_ctlcluster") is None:
        _apt_install("postgresql")
    versions = _pg_versions()
    if not versions:
        raise ServiceUnavailable("postgresql is installed but has no cluster in /etc/postgresql")
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], 120)
    _wait_port(PG_HOST, PG_PORT, "PostgreSQL")


def _pg_admin_url(db: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"


def _ensure_test_db() -> None:
    import psycopg

    try:
        with psycopg.connect(_pg_admin_url(PG_DB), connect_timeout=5):
            return
    except psycopg.OperationalError as exc:
        if f'database "{PG_DB}" does not exist' not in str(exc):
            raise ServiceUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
    try:
        with psycopg.connect(_pg_admin_url("postgres"), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {PG_DB}")
    except psycopg.errors.DuplicateDatabase:
        pass  # another test worker made it first


@cache
def _postgres() -> str:
    if not _port_open(PG_HOST, PG_PORT):
        _start_postgres()
    _ensure_test_db()
    return _pg_admin_url(PG_DB)


def postgres_url() -> str:
    """URL of the test database on a running PostgreSQL (fails or skips when there is none)."""
    return _available("PostgreSQL", _postgres)


def schema_url(base: str, schema: str) -> str:
    """`base` with a search_path option: every table of the store lives in `schema`."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_pg_schema(prefix: str = "t") -> Iterator[str]:
    """A PostgreSQL URL whose tables go to a new, empty schema, dropped afterwards."""
    import psycopg

    base = postgres_url()
    schema = f"ow_{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# ---------------------------------------------------------------------- NATS
def _start_nats() -> None:
    if not Path(NATS_SERVER).exists():
        _apt_install("nats-server")
    store_dir = "/var/lib/nats-server"
    Path(store_dir).mkdir(parents=True, exist_ok=True)
    args = ["-a", NATS_HOST, "-p", str(NATS_PORT), "-js", "-sd", store_dir]
    args += ["-l", "/var/log/nats-server.log"]
    daemon = ["start-stop-daemon", "--start", "--oknodo", "--background"]
    _run([*daemon, "--exec", NATS_SERVER, "--", *args], 60)
    _wait_port(NATS_HOST, NATS_PORT, "NATS")


@cache
def _nats() -> str:
    if not _port_open(NATS_HOST, NATS_PORT):
        _start_nats()
    return f"nats://{NATS_HOST}:{NATS_PORT}"


def nats_url() -> str:
    """URL of a running NATS server with JetStream (fails or skips when there is none)."""
    return _available("NATS", _nats)


def unique_name(prefix: str) -> str:
    """A name no other test (or test worker) uses: for streams, schemas, workers."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
