"""The benchmark scripts still run (small inputs) and end with a results-table row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script",
    [
        "bench_replay.py",
        "bench_tick.py",
        "bench_memory.py",
        "bench_detection.py",
        "bench_http.py",
        "bench_store.py",
        "bench_scaleout.py",
        "bench_soak.py",
        "bench_nab.py",  # NAB's 2 shortest files; needs ../shared/nab (or $NAB_MIRROR)
    ],
)
def test_quick_run_prints_a_table_row(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    cells = [c.strip() for c in last.strip("|").split("|")]
    assert len(cells) == 5 and all(cells), last
