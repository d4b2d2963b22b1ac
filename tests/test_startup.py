"""Start-up: a command imports only what it needs (`--help` no numpy, `replay` no scipy.special,
pandas or web framework), in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from outagewatch.events import encode_report

PROBE = """
import json, sys
from outagewatch.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

HEAVY = ("scipy.special", "pandas", "pyarrow", "fastapi", "starlette", "uvicorn", "httpx")


def modules_after(*argv: str) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], check=False, capture_output=True, text=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return int(doc["code"] or 0), set(doc["modules"])


def test_help_imports_no_numeric_stack() -> None:
    code, mods = modules_after("--help")
    assert code == 0
    assert not {"numpy", "numba", "scipy", *HEAVY} & mods


def test_replay_imports_no_scipy_special_pandas_or_web(tmp_path: Path) -> None:
    f = tmp_path / "r.ndjson"
    f.write_bytes(encode_report("x", 1_741_000_000.0, "US") + b"\n")
    code, mods = modules_after("--db", str(tmp_path / "o.db"), "replay", "--no-progress", str(f))
    assert code == 0
    assert "outagewatch.pipeline.pipeline" in mods
    assert not set(HEAVY) & mods
    # The kernels compiled ahead of time (outagewatch.jit), not numba's; compaction after
    # replay without asyncio.
    assert "outagewatch._kernels_aot" in mods
    assert not {"numba", "llvmlite", "scipy", "asyncio"} & mods
    # Calendars come from the holiday table `make install` wrote (geo.write_holiday_table).
    assert "holidays" not in mods


def test_numbas_kernels_import_numba_without_scipy_or_yaml() -> None:
    """Where the kernels are numba's (servers; a replay without the extension), numba and
    its array math load without scipy, its BLAS or PyYAML (`jit._lean_import`)."""
    code = "import json, sys, outagewatch.detect.quiet; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    mods = set(json.loads(out))
    assert {"numba", "numba.np.arraymath"} <= mods
    assert not {"scipy", "scipy.linalg.cython_blas", "yaml"} & mods


def test_a_fresh_replay_compiles_nothing_once_the_kernels_are_warm(tmp_path: Path) -> None:
    """`make install` runs `python -m outagewatch.runtime.warm`; after it, a replay in a fresh
    process on numba's kernels (`OUTAGEWATCH_AOT=0`: as where the extension is not built)
    loads every kernel from numba's cache (with the types the pipeline uses), and every
    module of the package from its bytecode, even where Python is told not to write
    bytecode itself (PYTHONDONTWRITEBYTECODE, as on the CI machines)."""
    env = {
        **os.environ,
        "NUMBA_DEBUG_CACHE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OUTAGEWATCH_AOT": "0",
    }
    cmd = [sys.executable, "-m", "outagewatch.runtime.warm"]
    warm = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr
    f = tmp_path / "r.ndjson"
    f.write_bytes(b"\n".join(warm_lines()) + b"\n")
    cmd = [sys.executable, "-m", "outagewatch.cli", "--db", str(tmp_path / "o.db"), "replay"]
    out = subprocess.run(
        [*cmd, "--no-progress", str(f)],
        check=False,
        env={**env, "PYTHONVERBOSE": "1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "incidents: 1 opened" in out.stdout
    loaded = {line for line in out.stdout.splitlines() if "data loaded" in line}
    assert any("quiet_scan" in x for x in loaded) and any("window_scan" in x for x in loaded)
    assert any("learn_block" in x for x in loaded)
    assert any("linescan" in x and "scan" in x for x in loaded)  # the line scanner's kernels
    assert "data saved" not in out.stdout + out.stderr  # nothing was compiled
    # `python -v`: "code object from '.../__pycache__/m.cpython-311.pyc'" for bytecode read,
    # "code object from .../m.py" for a module compiled from its source.
    package = str(Path(cli_file()).parent)
    compiled = [
        line
        for line in out.stderr.splitlines()
        if line.startswith("# code object from ") and package in line and line.endswith(".py")
    ]
    assert compiled == []
    assert any(package in line and line.endswith(".pyc'") for line in out.stderr.splitlines())


def cli_file() -> str:
    import outagewatch.cli

    return outagewatch.cli.__file__


def warm_lines() -> list[bytes]:
    from outagewatch.runtime.warm import START
    from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

    traffic = [ServiceTraffic("x", 2.0, {"US": 0.7, "GB": 0.3}, {"app": 1.0})]
    surge = Surge("x", START + 1560 * 60, [40.0] * 10, name="warm")
    return simulate(traffic, START, 1620, [surge], seed=1).lines


def test_the_numba_cache_is_dropped_when_any_kernel_source_changes(tmp_path: Path) -> None:
    """numba revalidates a cached kernel against its own file only; `warm.drop_stale` drops
    every cached kernel when any source of the package changed (a caller kept a stale callee
    once: detect.quiet's cached scan with detect.cusum's old alarm rule)."""
    from outagewatch.runtime.warm import drop_stale

    (tmp_path / "cusum.py").write_text("A = 1\n")
    (tmp_path / "quiet.py").write_text("B = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "quiet.scan-1.py311.nbi").write_bytes(b"i")
    (cache / "quiet.scan-1.py311.1.nbc").write_bytes(b"c")
    assert drop_stale(tmp_path) == 2  # no record of the sources: dropped
    (cache / "quiet.scan-1.py311.nbi").write_bytes(b"i")
    assert drop_stale(tmp_path) == 0  # the same sources: kept
    assert (cache / "quiet.scan-1.py311.nbi").exists()
    (tmp_path / "cusum.py").write_text("A = 2\n")  # the callee changes, not the caller
    assert drop_stale(tmp_path) == 1
    assert not (cache / "quiet.scan-1.py311.nbi").exists()
