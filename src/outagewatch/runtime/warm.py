"""Fill numba's on-disk cache of the detection kernels, so that no command compiles (and
write the table of public holidays, `geo.write_holiday_table`, so that none computes them;
and compile the package's bytecode, `bytecode`, so that none compiles its modules either).

The kernels (`detect.kernels`, `detect.quiet`) are compiled with `cache=True`: the machine
code is written next to their source (`detect/__pycache__`, or numba's user-wide cache
directory when the package directory is read-only) and loaded by every later process. This
runs the pipeline on a small simulated stream (a warm-up day, then a surge) so that every
kernel is compiled with exactly the argument types the pipeline uses. `make install` runs it,
and `make` runs it again whenever a file of `detect/` changed.

numba checks a cached kernel against its own source file only: a kernel that calls one in
another file (`detect.quiet` calls `detect.cusum`) keeps the old callee after that file
changes. So the cache is dropped first whenever the sources of `detect/` differ from those
it was filled from (`drop_stale`).

    python -m outagewatch.runtime.warm
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from outagewatch import geo
from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder
from outagewatch.pipeline.dedup import MIN_CAPACITY, Dedup
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

START = 1_740_960_000.0  # 2025-03-03T00:00:00Z


def warm() -> int:
    """Run the pipeline through quiet runs, learning, ordinary ticks and an incident;
    returns the number of incidents it opened (one)."""
    traffic = [ServiceTraffic("x", 2.0, {"US": 0.7, "GB": 0.3}, {"app": 1.0})]
    surge = Surge("x", START + 1560 * 60, [40.0] * 10, name="warm")
    lines = simulate(traffic, START, 1620, [surge], seed=1).lines
    p = Pipeline(catalog=Catalog.demo())
    p.ingest(EventDecoder(Catalog.demo()).decode(lines).reports)
    opened = sum(1 for t in p.drain_transitions() if t.action == "opened")
    load_state(dump_state(p), catalog=Catalog.demo())  # a restart: the state's kernels
    dedup_tables()
    return opened


def dedup_tables() -> None:
    """The deduplication tables' other kernels: growing them (more people in a batch than
    the first tables hold), turning a generation by the clock, and a state's tables."""
    d = Dedup(60.0)
    n = 4 * MIN_CAPACITY
    ts = [START + i / 10 for i in range(n)]
    for a, b in ((0, 8), (8, n)):  # the second grows tables that hold people
        part = ts[a:b]
        persons = [f"p{i}" for i in range(a, b)]
        d.filter_stream(["x"] * len(part), persons, part, [1] * len(part), np.asarray(part))
    d.filter_stream(["x"], ["a\nb"], [START], [1], np.asarray([START]))  # one text alone
    d.rotate(START + 3600.0)
    Dedup(60.0).load(d.dump())


def drop_stale(here: Path | None = None) -> int:
    """Delete numba's cache files in `detect/__pycache__` (or `here`'s) when the sources of
    the package are not those the cache was filled from; returns how many were deleted."""
    if here is None:
        import outagewatch.detect

        here = Path(outagewatch.detect.__file__).parent
    digest = hashlib.sha256()
    for src in sorted(here.glob("*.py")):
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    cache = here / "__pycache__"
    stamp = cache / "numba-sources.sha256"
    want = digest.hexdigest()
    try:
        if stamp.read_text() == want:
            return 0
    except OSError:
        pass
    dropped = 0
    for f in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
        f.unlink(missing_ok=True)
        dropped += 1
    try:
        cache.mkdir(exist_ok=True)
        stamp.write_text(want)
    except OSError:  # a read-only package: numba caches elsewhere (see the module doc)
        pass
    return dropped


def holiday_table() -> None:
    """Write the table of public holidays (geo.py) when it is missing or stale."""
    if geo.holiday_table() is None:
        # A read-only package: calendars come from `holidays` as they are needed.
        with contextlib.suppress(OSError):
            geo.write_holiday_table()


def bytecode(here: Path | None = None) -> bool:
    """Write the bytecode (`__pycache__/*.pyc`) of every module of the package, as pip does
    for installed packages: an editable install has none, and where the environment asks
    Python not to write it (PYTHONDONTWRITEBYTECODE) every process would compile each
    module it imports from source (~0.06 s of a replay's start-up). Returns whether every
    module compiled (a read-only package: Python compiles them in memory, as before)."""
    import compileall

    if here is None:
        import outagewatch

        here = Path(outagewatch.__file__).parent
    return bool(compileall.compile_dir(here, quiet=1))


def main() -> int:
    t0 = time.perf_counter()
    bytecode()
    holiday_table()
    drop_stale()
    opened = warm()
    print(f"numba kernels ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0 if opened == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
