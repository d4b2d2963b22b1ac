"""Fill numba's on-disk cache of the detection kernels, so that no command compiles.

The kernels (`detect.kernels`, `detect.quiet`) are compiled with `cache=True`: the machine
code is written next to their source (`detect/__pycache__`, or numba's user-wide cache
directory when the package directory is read-only) and loaded by every later process. This
runs the pipeline on a small simulated stream (a warm-up day, then a surge) so that every
kernel is compiled with exactly the argument types the pipeline uses. `make install` runs it.

    python -m outagewatch.runtime.warm
"""

from __future__ import annotations

import sys
import time

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder
from outagewatch.pipeline.pipeline import Pipeline
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
    return sum(1 for t in p.drain_transitions() if t.action == "opened")


def main() -> int:
    t0 = time.perf_counter()
    opened = warm()
    print(f"numba kernels ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0 if opened == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
