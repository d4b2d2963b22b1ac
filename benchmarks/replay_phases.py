"""Where a fresh `outagewatch replay` spends its CPU time, phase by phase, in this process.

Run it in a fresh process pinned to one core, as the benchmark runs the CLI:

    taskset -c 0 .venv/bin/python benchmarks/replay_phases.py --db NEW.db --catalog C FILE

It runs the real `outagewatch` command line (`cli.main`) with timers wrapped around its
parts, and prints the CPU seconds (user + system of this process) of each: imports (the
kernels' extension compiled ahead of time included, `outagewatch.jit`), numba (loading the
cached kernels at their first call, where numba's kernels are used: `OUTAGEWATCH_AOT=0`, or
no extension), reading, decoding, deduplication, the
pipeline's ingest and ticks (deduplication and numba excluded), committing to the store
and compaction after the replay. The parts are exclusive: a part's time inside another's
is counted once, in the innermost.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

CPU = time.process_time
T0 = CPU()
SPENT: dict[str, float] = {}
_STACK: list[list[float]] = []  # [start, time spent in inner parts]


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, with its CPU time (less that of inner timed parts) added to SPENT[name]."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _STACK.append([CPU(), 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            start, inner = _STACK.pop()
            took = CPU() - start
            SPENT[name] = SPENT.get(name, 0.0) + took - inner
            if _STACK:
                _STACK[-1][1] += took

    return wrapper


def wrap(owner: Any, attr: str, name: str) -> None:
    """Time `owner.attr` as part `name` (nothing when the code measured has no such part:
    an older tree, for an A/B)."""
    if hasattr(owner, attr):
        setattr(owner, attr, timed(name, getattr(owner, attr)))


def main() -> int:
    try:
        from outagewatch import jit
    except ImportError:  # an older tree, for an A/B: numba's kernels only
        pass
    else:
        if "replay" in sys.argv:
            jit.prefer_ahead_of_time()  # as `cli.cmd_replay` does, before the kernels' import
    from outagewatch import cli
    from outagewatch.events import EventDecoder
    from outagewatch.pipeline.dedup import Dedup
    from outagewatch.pipeline.pipeline import Pipeline
    from outagewatch.runtime import replay as rp
    from outagewatch.runtime.replay_inputs import InputReader

    SPENT["imports"] = CPU() - T0  # numba's import included
    if "numba" in sys.modules:
        import numba.core.dispatcher as nbd

        wrap(nbd.Dispatcher, "_compile_for_args", "numba (cache loads)")
    wrap(EventDecoder, "decode", "decode")
    wrap(EventDecoder, "_reports", "decode: report columns")
    wrap(EventDecoder, "_times", "decode: times")
    wrap(Dedup, "filter_stream", "dedup")
    wrap(Dedup, "filter_indexed", "dedup")
    wrap(Pipeline, "ingest", "pipeline ingest + ticks")
    wrap(Pipeline, "ingest_others", "pipeline ingest + ticks")
    wrap(rp.Replayer, "take_commit", "state dump + drains")
    wrap(rp.Replayer, "commit", "store commit")
    wrap(cli, "_compact_after_replay", "compaction")
    wrap(rp, "numba_without_blas", "numba (cache loads)")  # older trees

    def batches(self: InputReader) -> Any:
        it = orig(self)
        while True:
            t = CPU()
            try:
                b = next(it)
            except StopIteration:
                SPENT["read + split"] = SPENT.get("read + split", 0.0) + CPU() - t
                return
            SPENT["read + split"] = SPENT.get("read + split", 0.0) + CPU() - t
            yield b

    orig = InputReader.batches
    InputReader.batches = batches  # type: ignore[method-assign]
    code = timed("other", cli.main)(sys.argv[1:])
    total = CPU() - T0
    print(f"phases: CPU {total:.2f} s in all", file=sys.stderr)
    for name, s in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"phases:   {name:<26} {s:6.2f} s  {100 * s / total:4.0f}%", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
