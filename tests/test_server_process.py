"""The real `outagewatch serve` process on a loopback port, over real HTTP.

Includes the durability promise: `kill -9` while a client streams reports, restart, and
every report that got a 202 is counted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(db: Path, port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "OUTAGEWATCH_TOKEN": "tok"}
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, *extra], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"server did not start: {err}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_the_server_process_answers_http(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path / "a.db", port) as proc:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/api/v1/reports", json={"service": "x", "country": "US"})
        assert r.status_code == 202 and r.json()["accepted"] == 1
        services = httpx.get(f"{base}/api/v1/services").json()
        assert len(services) == 13 and {s["status"] for s in services} == {"ok"}
        doc = httpx.get(f"{base}/api/v1/services/x").json()
        assert doc["minutes"][-1]["reports"] == 1
        r = httpx.get(f"{base}/api/v1/incidents/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_kill_9_loses_no_acknowledged_report(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "k.db"
    acked: list[int] = []
    sent: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        # A partner forwarding reports (the operator token): not rate-limited.
        auth = {"Authorization": "Bearer tok"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=auth) as c:
            i = 0
            while not stop.is_set():
                i += 1
                item = {"service": "x", "country": "US", "reporter": f"person-{i}"}
                sent.append(i)
                try:
                    r = c.post("/api/v1/reports", json=item)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 202:
                    acked.append(i)

    with serve(db, port) as proc:
        t = threading.Thread(target=stream)
        t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        t.join(10)
    assert len(acked) >= 300
    with serve(db, port):
        doc = httpx.get(f"http://127.0.0.1:{port}/api/v1/services/x").json()
        counted = sum(m["reports"] for m in doc["minutes"])
        # Every acknowledged report counts; at most the one in flight at the kill is extra.
        assert len(acked) <= counted <= len(sent)
