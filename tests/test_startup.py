"""Start-up: a command imports only what it needs (`--help` no numpy, `replay` no scipy.special,
pandas or web framework), in a fresh process."""

from __future__ import annotations

import json
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
