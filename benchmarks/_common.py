"""Helpers shared by the benchmark scripts: inputs, warm pipelines, measurements, table rows.

The scripts are run as `python benchmarks/<name>.py`, so this directory is on `sys.path`
and `import _common` works without a package.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from outagewatch import geo
from outagewatch.detect.series import SeriesKey
from outagewatch.pipeline.pipeline import Pipeline
from outagewatch.settings import PipelineSettings
from outagewatch.sim.simulate import benchmark_traffic
from outagewatch.sim.simulate import main as simulate_main

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
START = "2025-03-03T00:00:00Z"  # a Monday, the simulator's default start
START_EPOCH = int(dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp())


# ==================================================================== table rows
def machine() -> str:
    """CPU, logical cores and Python version of this machine, for the table row."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def today_utc() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def table_row(benchmark: str, figure: str, target: str) -> str:
    """The final line of every benchmark: `| benchmark | figure | target | machine | date |`."""
    cells = (benchmark, figure, target, machine(), today_utc())
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f} MiB"


# ==================================================================== inputs
def write_catalog(path: Path, n_services: int, seed: int = 0) -> None:
    """A catalog naming every service of the simulator's benchmark traffic."""
    parts = []
    for t in benchmark_traffic(n_services, seed):
        problems = ", ".join(f'"{p}"' for p in t.problems if p != "other")
        parts.append(f"[services.{t.service}]\nproblems = [{problems}]\n")
    path.write_text("\n".join(parts), encoding="utf-8")


def generate_reports(path: Path, lines: int, days: float, services: int, seed: int = 0) -> None:
    """Write the simulator's deterministic benchmark NDJSON (in this process)."""
    argv = [
        "benchmark",
        f"--lines={lines}",
        f"--days={days}",
        f"--services={services}",
        f"--start={START}",
        f"--seed={seed}",
        f"--out={path}",
    ]
    rc = simulate_main(argv)
    if rc != 0:
        raise RuntimeError(f"the simulator failed with exit status {rc}")


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            n += chunk.count(b"\n")
    return n


# ==================================================================== memory
def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    raw = resource.getrusage(who).ru_maxrss
    return int(raw) if sys.platform == "darwin" else int(raw) * KIB


def rss_now_bytes() -> int | None:
    """The current resident set size from /proc (Linux), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int) -> int:
    """The current resident set size of process `pid` (Linux /proc), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise RuntimeError(f"no VmRSS for process {pid}")


# ==================================================================== a server over HTTP
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_process(
    db: Path, token: str, extra: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`outagewatch serve` on a free loopback port, started and ready: (process, base URL).
    Stopped (SIGTERM, final commit) on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OUTAGEWATCH_TOKEN": token}
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(db), "serve"]
    proc = subprocess.Popen([*cmd, "--port", str(port), *extra], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("outagewatch serve did not start")
            time.sleep(0.1)
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadgen_command(
    url: str,
    *,
    connections: int,
    seconds: float,
    bodies: Path | None = None,
    token: str | None = None,
    rate: float | None = None,
    method: str = "POST",
    latencies: Path | None = None,
) -> list[str]:
    """The command line of benchmarks/loadgen.py (its own process: the client's CPU is not
    the measuring process's)."""
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--method", method]
    cmd += ["--connections", str(connections), "--seconds", str(seconds)]
    if bodies is not None:
        cmd += ["--bodies", str(bodies)]
    if token:
        cmd += ["--token", token]
    if rate:
        cmd += ["--rate", str(rate)]
    if latencies is not None:
        cmd += ["--latencies", str(latencies)]
    return cmd


def run_loadgen(url: str, **kw: Any) -> dict[str, Any]:
    """Run benchmarks/loadgen.py to the end (arguments as `loadgen_command`): its JSON."""
    out = subprocess.run(loadgen_command(url, **kw), check=True, capture_output=True, text=True)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


# ==================================================================== warm pipelines
N_SERVICES = 2_000
N_COUNTRIES = 30
N_PROBLEMS = 19  # 1 total + 30 countries + 19 problems = 50 series per service


@dataclass
class WarmPipeline:
    pipeline: Pipeline
    n: int  # series
    rng: np.random.Generator
    next_minute: int  # the minute the next tick closes

    def fill_minute(self, counts: NDArray[np.float32]) -> None:
        """Put one minute of counts (as ingestion would) into the slot of `next_minute`."""
        s = self.pipeline.series
        s.ring_count[self.next_minute % s.ring, : self.n] = counts

    def draw_counts(self, k: int) -> list[NDArray[np.float32]]:
        """k minutes of Poisson counts drawn from each series' level."""
        level = self.pipeline.series.level[: self.n]
        return [self.rng.poisson(level).astype(np.float32) for _ in range(k)]

    def tick(self) -> None:
        """Close exactly one minute (`next_minute`)."""
        p = self.pipeline
        before = p.stats.ticks
        p.advance_to((self.next_minute + 1) * 60.0)
        if p.stats.ticks != before + 1:
            raise RuntimeError(f"advance_to ran {p.stats.ticks - before} ticks, expected 1")
        self.next_minute += 1


def build_warm_pipeline(
    n_services: int = N_SERVICES,
    *,
    nobs: int | None = None,
    seed: int = 0,
    start_epoch: int = START_EPOCH + 10 * 3600,
) -> WarmPipeline:
    """A pipeline whose series are all warm and eligible to fire.

    Every service has 1 total, 30 country (real ISO codes) and 19 problem (p00..p18) series.
    Levels are lognormal rates clipped to 0.01..50 reports/min, profiles flat (1.0), and the
    128-minute ring holds Poisson counts and the matching expectations, as after a long run.
    The clock is started (the first `advance_to` only sets it); no tick has run yet.
    """
    settings = PipelineSettings()
    p = Pipeline(settings)
    s = p.series
    countries = sorted(geo.COUNTRIES)[:N_COUNTRIES]
    problems = [f"p{i:02d}" for i in range(N_PROBLEMS)]
    width = max(3, len(str(n_services - 1)))
    for i in range(n_services):
        sid = f"svc-{i:0{width}d}"
        s.get(SeriesKey(sid, "total"))
        for c in countries:
            s.get(SeriesKey(sid, "country", c))
        for pr in problems:
            s.get(SeriesKey(sid, "problem", pr))
    n = len(s)
    rng = np.random.default_rng(seed)
    level = np.clip(rng.lognormal(mean=0.0, sigma=1.5, size=n), 0.01, 50.0)
    s.level[:n] = level
    s.nobs[:n] = settings.warmup_minutes + 1 if nobs is None else nobs
    s.season[:n] = 1.0
    s.weekend_seen[:n] = True
    s.disp[:n] = 0.05
    for row in range(s.ring):  # row by row: no (ring x n) int64 temporary in the peak
        s.ring_count[row, :n] = rng.poisson(level)
    s.ring_expected[:, :n] = level.astype(np.float32)
    wp = WarmPipeline(pipeline=p, n=n, rng=rng, next_minute=start_epoch // 60)
    before = p.stats.ticks
    p.advance_to(float(start_epoch))  # starts the clock: no tick
    if p.stats.ticks != before:
        raise RuntimeError("the first advance_to ran a tick")
    return wp
