"""The kernels compiled ahead of time (`outagewatch.jit`, built by `make install`): a replay
with them gives what numba's kernels give and imports no numba; a call with arguments of
other types than they were compiled for goes to numba instead of being misread; and they
are not used once any kernel source changed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outagewatch import jit

START = 1_740_960_000.0  # 2025-03-03T00:00:00Z


def require_extension() -> None:
    if jit.fresh():
        return
    message = "the kernels' extension is not built or stale: `make install` builds it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def stream(path: Path) -> Path:
    """Two days of two services' reports with an outage of one of them on the second."""
    from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

    traffic = [
        ServiceTraffic("x", 3.0, {"US": 0.7, "GB": 0.3}, {"app": 0.6, "login": 0.4}),
        ServiceTraffic("y", 1.0, {"US": 0.5, "DE": 0.5}, {"app": 1.0}),
    ]
    surge = Surge("x", START + 2300 * 60, [30.0] * 20, name="outage")
    lines = simulate(traffic, START, 2880, [surge], seed=7).lines
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


PROBE = """
import json, sys
from outagewatch.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "numba": "numba" in sys.modules,
                  "extension": "outagewatch._kernels_aot" in sys.modules}))
"""


def replay(db: Path, f: Path, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "--db", str(db), "replay", "--no-progress", str(f)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["code"] == 0
    return doc


def rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def test_a_replay_on_the_extension_stores_what_numbas_kernels_store(tmp_path: Path) -> None:
    require_extension()
    f = stream(tmp_path / "r.ndjson")
    ahead = replay(tmp_path / "aot.db", f)
    numba = replay(tmp_path / "jit.db", f, OUTAGEWATCH_AOT="0")
    assert ahead == {"code": 0, "numba": False, "extension": True}
    assert numba == {"code": 0, "numba": True, "extension": False}
    incidents = rows(tmp_path / "aot.db", "incidents")
    assert len(incidents) >= 1  # the outage
    assert incidents == rows(tmp_path / "jit.db", "incidents")
    for table in ("count_days", "minute_counts", "transitions"):
        assert rows(tmp_path / "aot.db", table) == rows(tmp_path / "jit.db", table)


FALLBACK = """
import json, sys
import numpy as np
from outagewatch import jit
jit.prefer_ahead_of_time()
from outagewatch import linescan
from outagewatch.detect import cusum, quiet
k0, k1 = np.uint64(1), np.uint64(2)
text = np.frombuffer(b"someone@example", np.uint8).copy()
before = int(linescan.siphash(text, k0, k1))
numba_before = "numba" in sys.modules
# Of another dtype: the extension would read its 8-byte items as bytes (and past the end).
wide = int(linescan.siphash(text.astype(np.int64), k0, k1))
print(json.dumps({
    "before": before, "numba_before": numba_before, "wide": wide,
    "numba_after": "numba" in sys.modules,
    "dispatchers": [
        type(m).__name__ for m in (linescan.siphash, cusum.step_columns, quiet.step_columns)
    ],
}))
"""


def test_arguments_of_other_types_go_to_numba_not_to_the_extension(tmp_path: Path) -> None:
    require_extension()
    out = subprocess.run(
        [sys.executable, "-c", FALLBACK],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert not doc["numba_before"] and doc["numba_after"]
    from outagewatch import linescan

    text = np.frombuffer(b"someone@example", np.uint8).copy()
    k0, k1 = np.uint64(1), np.uint64(2)
    assert doc["before"] == int(linescan.siphash(text, k0, k1))
    assert doc["wide"] == int(linescan.siphash(text.astype(np.int64), k0, k1))
    # Every kernel is numba's now, also where another kernel module holds it by name.
    assert doc["dispatchers"] == ["CPUDispatcher"] * 3


def test_checker_types_arguments_as_numba_does() -> None:
    array = jit.checker({"a": ["float64", 1, "C", True, True]})
    assert array(np.zeros(3))
    assert not array(np.zeros(3, np.float32))  # another dtype
    assert not array(np.zeros((3, 1)))  # another number of dimensions
    assert not array(np.zeros(6)[::2])  # not contiguous
    assert not array([0.0, 1.0])  # not an array
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    assert not array(frozen)  # a kernel compiled for a writable array may write to it
    assert jit.checker({"a": ["float64", 1, "C", False, True]})(np.zeros(3))
    assert jit.checker({"a": ["float64", 1, "A", True, True]})(np.zeros(6)[::2])
    number = jit.checker({"s": "int64"})
    assert number(3) and number(np.int64(3))
    assert not number(3.0) and not number(True) and not number(2**63) and not number(np.int32(3))
    assert jit.checker({"s": "float64"})(1.5) and not jit.checker({"s": "float64"})(1)
    assert jit.checker({"s": "bool"})(True) and not jit.checker({"s": "bool"})(1)
    assert jit.checker({"s": "uint64"})(np.uint64(1)) and not jit.checker({"s": "uint64"})(1)
    pair = jit.checker({"t": [{"s": "int64"}, {"a": ["int8", 2, "C", True, True]}]})
    assert pair((1, np.zeros((2, 2), np.int8)))
    assert not pair([1, np.zeros((2, 2), np.int8)]) and not pair((1,))
    assert not pair((1, np.zeros((2, 2), np.int16)))


def test_the_extension_is_stale_once_a_kernel_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rel in ("detect/kernels.py", "detect/series.py", "linescan.py", "pipeline/dedup.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    (tmp_path / "jit.py").write_text("# jit\n")
    (tmp_path / "cli.py").write_text("# not a kernel source\n")
    monkeypatch.setattr(jit, "HERE", tmp_path)
    monkeypatch.setattr(jit, "STAMP", tmp_path / "_kernels_aot.sha256")
    assert not jit.fresh()  # never built
    jit.STAMP.write_text(jit.fingerprint() + "\n")
    assert jit.fresh()
    (tmp_path / "cli.py").write_text("# changed\n")
    assert jit.fresh()
    for rel in ("detect/series.py", "linescan.py", "pipeline/dedup.py", "jit.py"):
        jit.STAMP.write_text(jit.fingerprint() + "\n")
        (tmp_path / rel).write_text((tmp_path / rel).read_text() + "X = 1\n")
        assert not jit.fresh(), rel


def test_types_only_a_kernel_passes_are_not_exported() -> None:
    """A kernel compiled as another kernel's callee may have argument types no Python call
    has (an omitted default: linescan._intern's `max_probes`; a constant); the build leaves
    those out and describes the rest for `checker` (a build on a new machine compiles every
    kernel, callees included, where one with numba's cache warm loads only the callers)."""
    import importlib

    from outagewatch.runtime.warm import describable, describe

    types: Any = importlib.import_module("numba.core.types")  # untyped

    assert not describable(types.Omitted(32))
    assert not describable(types.IntegerLiteral(24))  # a callee given a constant
    assert not describable(types.Tuple((types.int64, types.IntegerLiteral(24))))
    array = types.Array(types.float32, 2, "C")
    pair = types.Tuple((array, types.int64))
    assert describe(pair) == {"t": [{"a": ["float32", 2, "C", True, True]}, {"s": "int64"}]}
    assert jit.checker(describe(pair))((np.zeros((2, 2), np.float32), 3))
    assert describe(types.boolean) == {"s": "bool"} and describe(types.uint64) == {"s": "uint64"}
