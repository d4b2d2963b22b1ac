"""A soak: the real `outagewatch serve` at 80% of its measured capacity for 10 minutes.

Starts `outagewatch serve` (fresh SQLite, operator token), measures its capacity for
single-report `POST /api/v1/reports` (64 connections, no rate cap: the 202s per second),
then posts at 80% of that rate for `--minutes`, one load-generator run (benchmarks/loadgen.py,
its own process) a minute, while this process samples the server's RSS every 2 s. Prints
each minute's throughput, p99 and RSS, then the table row: throughput, p99 over the whole
soak, RSS after the first minute (warm) and at the end: flat when no queue or state grows
without bound.

The bodies are single reports from a crowd of 50,000 people, cycled: a person reporting again
within the dedup window counts once, so the window holds a bounded crowd, as in life.

    .venv/bin/python benchmarks/bench_soak.py [--quick] [--minutes 10] [--rate R]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import MIB, rss_of, run_loadgen, serve_process, table_row

TOKEN = "bench-token"
CONNECTIONS = 64
PEOPLE = 50_000
SHARE = 0.8  # of the measured capacity


def write_bodies(path: Path, people: int = PEOPLE) -> None:
    countries = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA")
    problems = ("app", "website", "login", "spaces")
    with path.open("wb") as f:
        for k in range(people):
            item = {
                "service": "x",
                "country": countries[k % len(countries)],
                "problem": problems[k % len(problems)],
                "reporter": f"person-{k}",
            }
            f.write(json.dumps(item).encode() + b"\n")


class RssSampler(threading.Thread):
    """The server's RSS every `every_s` seconds: (seconds since start, bytes)."""

    def __init__(self, pid: int, every_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic() - self._t0, rss_of(self.pid)))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((time.monotonic() - self._t0, rss_of(self.pid)))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    ap.add_argument(
        "--rate", type=float, default=None, help="requests/s to soak at (default: 80%% of capacity)"
    )
    ap.add_argument("--quick", action="store_true", help="a short run (~25 s) to check the script")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or (args.rate is not None and args.rate <= 0):
        ap.error("--minutes and --rate must be positive")
    segment_s = 8.0 if args.quick else 60.0
    segments = 2 if args.quick else max(1, round(args.minutes * 60 / segment_s))
    capacity_s = 3.0 if args.quick else 15.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    bodies = tmp / "reports.ndjson"
    write_bodies(bodies)
    with serve_process(tmp / "s.db", TOKEN) as (server, base):
        url = f"{base}/api/v1/reports"
        capacity = None
        if args.rate is None:
            cap = run_loadgen(
                url, bodies=bodies, connections=CONNECTIONS, seconds=capacity_s, token=TOKEN
            )
            capacity = cap["statuses"].get("202", 0) / cap["seconds"]
            print(f"capacity ({capacity_s:.0f} s, {CONNECTIONS} connections): {json.dumps(cap)}")
            if capacity <= 0:
                raise SystemExit("no report was accepted while measuring capacity")
        rate = args.rate if args.rate is not None else SHARE * (capacity or 0.0)
        print(f"soak: {segments} x {segment_s:.0f} s at {rate:,.0f} requests/s")
        sampler = RssSampler(server.pid)
        sampler.start()
        statuses: Counter[str] = Counter()
        seconds = 0.0
        latencies: list[np.ndarray[Any, Any]] = []
        rss_after: list[int] = []  # at the end of each segment
        for k in range(segments):
            lat_file = tmp / f"lat-{k}.npy"
            seg = run_loadgen(
                url,
                bodies=bodies,
                connections=CONNECTIONS,
                seconds=segment_s,
                token=TOKEN,
                rate=rate,
                latencies=lat_file,
            )
            latencies.append(np.load(lat_file))
            statuses.update(seg["statuses"])
            seconds += seg["seconds"]
            rss_after.append(rss_of(server.pid))
            print(
                f"{k * segment_s:.0f}-{(k + 1) * segment_s:.0f} s:"
                f" {seg['statuses'].get('202', 0) / seg['seconds']:,.0f} accepted/s,"
                f" p50 {seg['p50_ms']} ms, p99 {seg['p99_ms']} ms, max {seg['max_ms']} ms,"
                f" statuses {seg['statuses']}, server RSS {rss_after[-1] / MIB:,.0f} MiB"
            )
        sampler.stop()
    samples = sampler.samples
    lat = np.concatenate(latencies)
    p99 = float(np.percentile(lat, 99))
    accepted = statuses.get("202", 0)
    others = sum(n for s, n in statuses.items() if s != "202")
    # Flat means: no growth once warm. The first segment warms up (the crowd fills the
    # dedup window, buffers reach their working size), so compare its end with the end.
    rss_start, rss_warm, rss_end = samples[0][1], rss_after[0], samples[-1][1]
    rss_max = max(b for _, b in samples)
    minutes = segments * segment_s / 60
    print(f"all: {dict(statuses)} in {seconds:,.0f} s; p99 {p99:.2f} ms")
    print(
        "server RSS (MiB) every ~30 s: "
        + " ".join(f"{b / MIB:.0f}" for t, b in samples[:: max(1, round(30 / sampler.every_s))])
    )
    print(
        f"server RSS: start {rss_start / MIB:,.0f} MiB, after {segment_s:.0f} s"
        f" {rss_warm / MIB:,.0f} MiB, end {rss_end / MIB:,.0f} MiB, max {rss_max / MIB:,.0f} MiB"
    )
    of = f" (80% of {capacity:,.0f})" if capacity is not None else ""
    at = "80% of capacity" if capacity is not None else f"{rate:,.0f} requests/s"
    refused = f", {others:,} not 202" if others else ", all 202"
    print(
        table_row(
            f"Soak: one report/POST at {at} for {minutes:g} min",
            f"{accepted / seconds:,.0f} requests/s{of}{refused}, p99 {p99:.1f} ms,"
            f" RSS {rss_warm / MIB:,.0f} MiB after {segment_s:.0f} s, {rss_end / MIB:,.0f} MiB"
            " at end",
            "RSS flat; p99 < 50 ms",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
