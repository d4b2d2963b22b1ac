"""Peak memory, each case in a fresh process so the cases do not mix.

(a) replay: the `outagewatch replay` CLI on the bench_replay input (2,000,000 lines, 8 days,
    120 services), its peak RSS (the child's ru_maxrss), via `bench_replay.run_replay`.
(b) warm: a pipeline holding 100,000 warm series (as in bench_tick) whose learned state is
    8 weeks old, after building it and running 60 ticks; plus the size of its saved state.

The baseline is a fixed-size model per series: 48 profile slots (2 day types x 24 hours),
a level, a dispersion, an observation count and a 128-minute ring of counts and
expectations. Nothing is appended per minute, so memory depends on the number of series,
not on how much history was learned: 8 weeks of learning is the same arrays as 1 day, and
(b) checks this by running more ticks and comparing.

    .venv/bin/python benchmarks/bench_memory.py [--quick]

Target: <= 1 GiB each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    GIB,
    N_SERVICES,
    build_warm_pipeline,
    maxrss_bytes,
    mib,
    rss_now_bytes,
    table_row,
)
from bench_replay import ReplayRun, make_input, run_replay
from outagewatch.detect.series import SEASON_SLOTS
from outagewatch.pipeline.pipeline import dump_state

TARGET = GIB
EIGHT_WEEKS_MIN = 8 * 7 * 1440
_MARK = "BENCH-MEMORY-RESULT "


# ==================================================================== case (b), in the child
def warm_case(services: int, ticks: int, more_ticks: int) -> dict[str, Any]:
    """Runs in its own process: build, tick, measure this process' peak RSS."""
    t0 = time.perf_counter()
    wp = build_warm_pipeline(services, nobs=EIGHT_WEEKS_MIN)
    p = wp.pipeline
    pool = wp.draw_counts(16)
    built_rss = maxrss_bytes()
    for k in range(ticks):
        wp.fill_minute(pool[k % len(pool)])
        wp.tick()
    peak = maxrss_bytes()
    now = rss_now_bytes()
    state = dump_state(p)
    state_len = len(state)
    del state
    peak_with_dump = maxrss_bytes()
    for k in range(more_ticks):
        wp.fill_minute(pool[k % len(pool)])
        wp.tick()
    state_len_later = len(dump_state(p))
    s = p.series
    return {
        "series": wp.n,
        "capacity": len(s.svc),
        "ring": s.ring,
        "season_slots": SEASON_SLOTS,
        "nobs": EIGHT_WEEKS_MIN,
        "ticks": ticks,
        "built_peak": built_rss,
        "peak": peak,
        "rss_now": now,
        "state_bytes": state_len,
        "peak_with_dump": peak_with_dump,
        "more_ticks": more_ticks,
        "rss_later": rss_now_bytes(),
        "state_bytes_later": state_len_later,
        "total_ticks": p.stats.ticks,
        "seconds": time.perf_counter() - t0,
    }


def run_warm_child(services: int, ticks: int, more_ticks: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-warm",
        f"--services={services}",
        f"--ticks={ticks}",
        f"--more-ticks={more_ticks}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            result: dict[str, Any] = json.loads(line[len(_MARK) :])
            return result
    raise RuntimeError(f"no result from the child:\n{done.stdout}\n{done.stderr}")


# ==================================================================== case (a)
def replay_case(lines: int, days: float, services: int) -> tuple[ReplayRun, int]:
    workdir = Path(tempfile.mkdtemp(prefix="outagewatch-bench-memory-"))
    try:
        inp = make_input(workdir, lines, days, services)
        return run_replay(inp, workdir / "replay.db"), inp.lines
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ok(n: int) -> str:
    return "met" if n <= TARGET else "OVER"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small inputs, a few seconds")
    ap.add_argument("--child-warm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--services", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ticks", type=int, default=60, help=argparse.SUPPRESS)
    ap.add_argument("--more-ticks", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child_warm:
        res = warm_case(args.services or N_SERVICES, args.ticks, args.more_ticks or 0)
        print(_MARK + json.dumps(res), flush=True)
        return 0

    if args.quick:
        r_lines, r_days, r_services = 100_000, 2.0, 20
        w_services, w_ticks, w_more = 200, 20, 20
    else:
        r_lines, r_days, r_services = 2_000_000, 8.0, 120
        w_services, w_ticks, w_more = N_SERVICES, args.ticks, 600

    # (a) replay
    run, n_lines = replay_case(r_lines, r_days, r_services)
    print(
        f"(a) replay of {n_lines:,} lines ({r_days:g} days, {r_services} services), CLI in a "
        f"fresh process pinned to {run.pinned}: peak RSS {mib(run.maxrss_bytes)} "
        f"({run.wall_s:.1f} s, {run.opened} incidents) -- target <= 1 GiB: "
        f"{_ok(run.maxrss_bytes)}"
    )

    # (b) warm pipeline
    w = run_warm_child(w_services, w_ticks, w_more)
    print(
        f"(b) {w['series']:,} warm series (array capacity {w['capacity']:,}), learned state "
        f"8 weeks old (nobs set to {w['nobs']:,} min), in a fresh process: peak RSS "
        f"{mib(w['peak'])} after building + {w['ticks']} ticks (building alone "
        f"{mib(w['built_peak'])}); saved state len(dump_state(p)) = {w['state_bytes']:,} "
        f"bytes ({mib(w['state_bytes'])}); peak incl. dump_state {mib(w['peak_with_dump'])} "
        f"-- target <= 1 GiB: {_ok(w['peak'])}"
    )
    print(
        f"    the baseline is a fixed-size model per series ({w['season_slots']} profile "
        f"slots, level, dispersion, a {w['ring']}-minute ring): memory does not grow with "
        f"history. After {w['more_ticks']} more ticks ({w['total_ticks']} in all): RSS "
        f"{mib(w['rss_later'] or 0)} (was {mib(w['rss_now'] or 0)}), state "
        f"{w['state_bytes_later']:,} bytes (was {w['state_bytes']:,})"
    )
    figure = (
        f"replay {n_lines:,} lines: {mib(run.maxrss_bytes)}; "
        f"{w['series']:,} warm series + {w['ticks']} ticks: {mib(w['peak'])} "
        f"(state {mib(w['state_bytes'])})"
    )
    print(table_row("peak memory (ru_maxrss, fresh process per case)", figure, "<= 1 GiB each"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
