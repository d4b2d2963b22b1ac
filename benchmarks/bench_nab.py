"""`outagewatch score` on the Numenta Anomaly Benchmark (NAB v1.1, 58 real and artificial series).

Runs `../shared/nab/run_nab.py` (from the repository root) with the real CLI,
`.venv/bin/outagewatch score --input {in} --output {out}`, once per NAB file, with its
causality check required (`--require-causal`: a prefix of a few files is re-scored and the
scores must not change), and prints NAB's three profile scores (0 = flag nothing,
100 = perfect). NAB is looked for in `../shared/nab` beside the repository (or `$NAB_MIRROR`,
or `--nab DIR`). `--quick` validates the outputs of the two shortest files only (no score).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table_row

ROOT = Path(__file__).resolve().parents[1]
NAB = Path(os.environ.get("NAB_MIRROR") or ROOT.parent / "shared" / "nab")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PUBLISHED = (
    "ARTime 74.9, Numenta HTM 70.5, CAD OSE 69.9, Skyline 58.2, KNN CAD 58.0, Relative Entropy 54.6"
)


def cli() -> Path:
    """The `outagewatch` executable of the repository's venv (else beside this Python)."""
    venv = ROOT / ".venv" / "bin" / "outagewatch"
    return venv if venv.exists() else Path(sys.executable).parent / "outagewatch"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="2 short files, outputs checked, no score")
    ap.add_argument("--nab", type=Path, default=NAB, help=f"the NAB tree (default {NAB})")
    ap.add_argument("--jobs", type=int, default=2, help="files scored in parallel (default 2)")
    ap.add_argument("--workdir", type=Path, help="keep the run here (default: a temporary dir)")
    args = ap.parse_args(argv)
    runner = args.nab / "run_nab.py"
    if not runner.is_file():
        print(
            f"bench_nab: NAB not found: {runner} is missing (expected the NAB tree with "
            "run_nab.py in ../shared/nab beside the repository; or give --nab DIR)",
            file=sys.stderr,
        )
        return 2
    exe = cli()
    if not exe.exists():
        print(f"bench_nab: {exe} is missing (run `make install`)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-nab-") as tmp:
        workdir = args.workdir or Path(tmp) / "run"
        cmd = [
            sys.executable,
            str(runner),
            f"{exe} score --input {{in}} --output {{out}}",
            "--name", "outagewatch",
            "--workdir", str(workdir),
            "--scorer", "own",
            "--jobs", str(args.jobs),
            "--require-causal",
        ]  # fmt: skip
        if args.quick:
            cmd.append("--smoke")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        print(f"bench_nab: run_nab.py exited with status {done.returncode}", file=sys.stderr)
        return 1
    if "causality check passed" not in done.stderr:
        print(done.stderr[-3000:], file=sys.stderr)
        print("bench_nab: run_nab.py did not report a passed causality check", file=sys.stderr)
        return 1
    if args.quick:
        print(f"NAB smoke: outputs of 2 files valid and causal ({wall:.1f} s)")
        print(table_row("NAB smoke (2 files)", "outputs valid, causal", "(smoke test)"))
        return 0
    scores: dict[str, float] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        if name in PROFILES:
            scores[name] = float(value)
    if set(scores) != set(PROFILES):
        print(done.stdout + done.stderr[-3000:], file=sys.stderr)
        print("bench_nab: run_nab.py printed no scores", file=sys.stderr)
        return 1
    for p in PROFILES:
        print(f"{p}={scores[p]:.1f}")
    figure = (
        f"standard {scores['standard']:.1f}, low FP {scores['reward_low_FP_rate']:.1f}, "
        f"low FN {scores['reward_low_FN_rate']:.1f} (58 files, causality check passed, "
        f"{wall:.0f} s on {args.jobs} jobs)"
    )
    print(table_row("NAB v1.1 via `outagewatch score`", figure, ">= 55 standard"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
