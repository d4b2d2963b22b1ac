"""Scale-out throughput: events/s from the NATS bus to committed state, with 1 and 2 workers.

Generates simulated reports (the benchmark traffic of `bench_replay.py`), starts N real
`outagewatch worker` processes on a fresh PostgreSQL schema and a fresh JetStream stream,
waits until they have split the partitions, then publishes every line through `NatsBus`
(batches of 1,000 lines, as API nodes would after accepting requests) and measures the time
from the first publish until every partition's committed position has reached the end of
the stream. Workers and the publisher share the machine with PostgreSQL and NATS.

    .venv/bin/python benchmarks/bench_scaleout.py [--quick] [--lines N] [--workers 1,2]

With `--via http` (run by default after the bus runs), the lines go through a real API node
instead (`outagewatch serve --nats-url`, batches of 1,000 reports per POST over 4
connections, operator token): HTTP to committed, the whole scale-out path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson

from _common import generate_reports, table_row, write_catalog
from bench_store import DEFAULT_PG, pg_schema
from outagewatch.bus.nats import NatsBus, connect, partition_of
from outagewatch.catalog import Catalog
from outagewatch.store.postgres import PostgresStore

DEFAULT_NATS = "nats://127.0.0.1:4222"
PARTITIONS = 8
BATCH = 1000
TOKEN = "bench-token"
JSON_TYPE = {"Content-Type": "application/json"}


async def publish(url: str, stream: str, path: Path) -> tuple[int, dict[str, int]]:
    bus = await NatsBus.open(url, stream, PARTITIONS)
    n = 0
    try:
        lines: list[bytes] = []
        services: list[str] = []
        with path.open("rb") as f:
            for raw in f:
                line = raw.rstrip(b"\n")
                lines.append(line)
                services.append(orjson.loads(line)["service"])
                if len(lines) >= BATCH:
                    await bus.publish(lines, services)
                    n += len(lines)
                    lines, services = [], []
        if lines:
            await bus.publish(lines, services)
            n += len(lines)
    finally:
        await bus.close()
    return n, await last_positions(url, stream)


async def last_positions(url: str, stream: str) -> dict[str, int]:
    """The stream sequence of the last message of every partition."""
    nc = await connect(url, "bench")
    last = {}
    try:
        js = nc.jetstream()
        for p in range(PARTITIONS):
            try:
                msg = await js.get_last_msg(stream, f"{stream}.{p}")
            except Exception:  # no message in that partition
                continue
            last[f"partition/{p}"] = int(msg.seq)
    finally:
        await nc.close()
    return last


async def post_http(base: str, nats: str, stream: str, path: Path) -> tuple[int, dict[str, int]]:
    """POST the lines to an API node in batches of BATCH, over 4 connections, in order per
    connection (services are spread over connections by partition, so per-service order
    holds)."""
    queues: list[list[list[dict[str, object]]]] = [[] for _ in range(4)]
    cur: list[list[dict[str, object]]] = [[] for _ in range(4)]
    n = 0
    with path.open("rb") as f:
        for raw in f:
            item = orjson.loads(raw)
            k = partition_of(str(item["service"]), PARTITIONS) % 4
            cur[k].append(item)
            n += 1
            if len(cur[k]) >= BATCH:
                queues[k].append(cur[k])
                cur[k] = []
    for k in range(4):
        if cur[k]:
            queues[k].append(cur[k])

    async def send(batches: list[list[dict[str, object]]]) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=60) as c:
            for b in batches:
                r = await c.post("/api/v1/reports", content=orjson.dumps(b), headers=JSON_TYPE)
                if r.status_code != 202:
                    raise RuntimeError(f"API node answered {r.status_code}: {r.text[:200]}")

    await asyncio.gather(*(send(q) for q in queues))
    return n, await last_positions(nats, stream)


def start_api_node(url: str, nats: str, stream: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", url, "--nats-url", nats]
    cmd += ["--stream", stream, "--partitions", str(PARTITIONS), "serve", "--port", str(port)]
    env = {**os.environ, "OUTAGEWATCH_TOKEN": TOKEN}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API node did not start")


async def drop_stream(url: str, stream: str) -> None:
    nc = await connect(url, "bench")
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def run(n_workers: int, pg_base: str, nats: str, ndjson: Path, catalog: Catalog, via: str) -> float:
    """Events/s from the first publish (or POST) to the last commit with `n_workers`."""
    url, drop = pg_schema(pg_base)
    stream = f"owbench{uuid.uuid4().hex[:8]}"
    store = PostgresStore(url)
    store.save_catalog(catalog.source)
    procs = []
    base = ""
    try:
        if via == "http":
            api, base = start_api_node(url, nats, stream)
            procs.append(api)
        for i in range(n_workers):
            args = ["worker", "--db", url, "--nats-url", nats, "--stream", stream]
            args += ["--partitions", str(PARTITIONS), "--worker-id", f"bench{i}"]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "outagewatch.cli", *args],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 120
        share = PARTITIONS // n_workers
        while True:
            owners = [  # the partitions' (an API node holds the "leader" lease beside them)
                o for name, o, _, live in store.leases() if live and name.startswith("partition/")
            ]
            if len(owners) == PARTITIONS and all(
                owners.count(f"bench{i}") == share for i in range(n_workers)
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not split the partitions: {owners}")
            time.sleep(0.2)
        t0 = time.perf_counter()
        if via == "http":
            n, last = asyncio.run(post_http(base, nats, stream, ndjson))
        else:
            n, last = asyncio.run(publish(nats, stream, ndjson))
        t_pub = time.perf_counter() - t0
        while not all(store.load_position(k) >= v for k, v in last.items()):
            if time.monotonic() > deadline + 3600:
                raise RuntimeError("workers did not catch up within an hour")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        print(
            f"{via}, {n_workers} worker(s): {n / wall:,.0f} events/s ({n:,} lines, sent in "
            f"{t_pub:.2f} s, all committed after {wall:.2f} s)",
            file=sys.stderr,
        )
        return n / wall
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        store.close()
        drop()
        asyncio.run(drop_stream(nats, stream))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="20k lines, 1 day, 20 services")
    ap.add_argument("--lines", type=int, default=None, help="report lines (default 500,000)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument(
        "--via",
        default="bus,http",
        help="bus: publish with NatsBus; http: POST to an API node (`serve --nats-url`)",
    )
    ap.add_argument("--pg", default=os.environ.get("OUTAGEWATCH_BENCH_PG", DEFAULT_PG))
    ap.add_argument("--nats", default=os.environ.get("OUTAGEWATCH_BENCH_NATS", DEFAULT_NATS))
    args = ap.parse_args(argv)
    lines = args.lines or (20_000 if args.quick else 500_000)
    days, services = (1.0, 20) if args.quick else (4.0, 120)
    work = Path(tempfile.mkdtemp(prefix="ow-bench-scaleout-"))
    try:
        ndjson, cat = work / "reports.ndjson", work / "catalog.toml"
        write_catalog(cat, services)
        generate_reports(ndjson, lines, days, services)
        catalog = Catalog.load(str(cat))
        counts = [int(w) for w in args.workers.split(",")]
        vias = args.via.split(",")
        rates = {
            (v, w): run(w, args.pg, args.nats, ndjson, catalog, v) for v in vias for w in counts
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for v in vias:
        figure = "; ".join(f"{w} worker(s) {rates[v, w]:,.0f} events/s" for w in counts)
        figure += f" ({lines:,} lines, {services} services, {PARTITIONS} partitions)"
        what = "HTTP (1 API node) to committed" if v == "http" else "bus to committed"
        print(table_row(f"scale-out, {what}", figure, "2 workers > 1 worker"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
