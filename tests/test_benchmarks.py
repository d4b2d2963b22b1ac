"""The benchmark scripts still run (small inputs) and end with a results-table row."""

from __future__ import annotations

import re
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
    run_quick(script)


@pytest.mark.parametrize("shape", ["varied", "unicode"])
def test_the_replay_benchmark_takes_other_line_shapes(shape: str) -> None:
    """The same reports in another producer's line shape: the same incidents as plain."""
    plain = run_quick("bench_replay.py", "--case", "sparse")
    other = run_quick("bench_replay.py", "--case", "sparse", "--shape", shape)
    found = re.compile(r"CLI found (\d+) incidents")
    assert found.findall(other) == found.findall(plain) != []
    assert f"{shape} lines" in other


def run_quick(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    cells = [c.strip() for c in last.strip("|").split("|")]
    assert len(cells) == 5 and all(cells), last
    return done.stdout
