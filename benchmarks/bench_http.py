"""Ingest over HTTP on loopback: the real `outagewatch serve` process against a load generator.

Starts `outagewatch serve` (fresh SQLite, operator token) and drives it from a separate
process (benchmarks/loadgen.py, raw asyncio HTTP/1.1, bounded connections):

1. batched `POST /api/v1/reports` of 100 reports each — target >= 20,000 reports/s;
2. single-report `POST /api/v1/reports` — target >= 5,000 requests/s with p99 < 50 ms;
3. `GET /api/v1/services/x` p99 while single reports are posted at half the rate of (2).

Every 202 means the batch is in the SQLite journal (WAL, synchronous=FULL, group commit)
and counted. The requests carry the operator token (a partner forwarding reports).

    .venv/bin/python benchmarks/bench_http.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import table_row

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_bodies(path: Path, batch: int, n: int = 500) -> None:
    countries = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA")
    problems = ("app", "website", "login", "spaces")
    with path.open("wb") as f:
        k = 0
        for _ in range(n):
            items = []
            for _ in range(batch):
                k += 1
                items.append(
                    {
                        "service": "x",
                        "country": countries[k % len(countries)],
                        "problem": problems[k % len(problems)],
                        "reporter": f"person-{k}",
                    }
                )
            f.write(json.dumps(items[0] if batch == 1 else items).encode() + b"\n")


def loadgen(url: str, bodies: Path | None, connections: int, seconds: float, **kw: Any) -> Any:
    cmd = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--url",
        url,
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
        "--token",
        TOKEN,
    ]
    if bodies is not None:
        cmd += ["--bodies", str(bodies)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="2-second phases")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per phase (default 10)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OUTAGEWATCH_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(tmp / "b.db"), "serve"]
    server = subprocess.Popen([*cmd, "--port", str(port)], env=env)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        write_bodies(tmp / "b100.ndjson", 100)
        write_bodies(tmp / "b1.ndjson", 1, 5000)
        url = f"{base}/api/v1/reports"
        batch = loadgen(url, tmp / "b100.ndjson", 16, seconds)
        single = loadgen(url, tmp / "b1.ndjson", 64, seconds)
        half = max(single["rps"] / 2, 1.0)
        # The half-rate ingest and the reads run together, as two load-generator processes.
        ingest = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "loadgen.py"),
                "--url",
                url,
                "--bodies",
                str(tmp / "b1.ndjson"),
                "--connections",
                "32",
                "--seconds",
                str(seconds),
                "--rate",
                str(half),
                "--token",
                TOKEN,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        reads = loadgen(f"{base}/api/v1/services/x", None, 4, seconds, method="GET", rate=20)
        ingest_out = json.loads(ingest.communicate()[0])
        total = httpx.get(f"{base}/api/v1/services/x").json()["minutes"]
        counted = sum(m["reports"] for m in total)
    finally:
        server.terminate()
        server.wait(30)
    batch_reports = batch["rps"] * 100
    print(f"batched POST (100/request, 16 conns): {json.dumps(batch)}")
    print(f"single POST (64 conns): {json.dumps(single)}")
    print(f"half-rate ingest during reads: {json.dumps(ingest_out)}")
    print(f"GET /services/x during that ingest (20/s): {json.dumps(reads)}")
    print(f"reports counted on the chart afterwards: {counted:,}")
    print(
        table_row(
            "HTTP ingest, batched (100 reports/POST)",
            f"{batch_reports:,.0f} reports/s, p99 {batch['p99_ms']} ms",
            ">= 20,000 reports/s",
        )
    )
    print(
        table_row(
            "HTTP ingest, one report/POST",
            f"{single['rps']:,.0f} requests/s, p99 {single['p99_ms']} ms",
            ">= 5,000 requests/s, p99 < 50 ms",
        )
    )
    print(
        table_row(
            "GET /services/{id} while ingesting at half rate",
            f"p99 {reads['p99_ms']} ms ({ingest_out['rps']:,.0f} reports/s alongside)",
            "(reported)",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
