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
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from outagewatch import geo, jit
from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder
from outagewatch.pipeline.dedup import MIN_CAPACITY, Dedup
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate
from outagewatch.store.base import CHUNK_DTYPE
from outagewatch.store.codec import decode, encode

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
    history_blocks()
    return opened


def history_blocks() -> None:
    """The kernel that groups a history block's rows (`store.grouping`), as a replay's
    commits call it."""
    rows = np.zeros(3, CHUNK_DTYPE)
    rows["m"], rows["n"] = [2, 1, 2], [1, 2, 3]
    rows["c"], rows["p"] = [b"US", b"GB", b"US"], [b"app", b"app", b"app"]
    decode(encode(rows))


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
    cache = here / "__pycache__"
    stamp = cache / "numba-sources.sha256"
    want = jit.sources_digest(here, ("*.py",)).hexdigest()
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


def ahead_of_time() -> list[str]:
    """Compile every kernel the warm-up called, for each set of argument types it was called
    with, into one extension module beside the package's modules (`outagewatch.jit`),
    and stamp it with the sources it came from (`jit.fingerprint`). Run after `warm` in the
    same process. Returns the names exported; none when the package is read-only (the
    kernels stay numba's)."""
    import importlib
    import warnings

    from numba.core.registry import CPUDispatcher

    pycc: Any = importlib.import_module("numba.pycc")  # untyped

    if not os.access(jit.HERE, os.W_OK):
        return []
    cc = pycc.CC(jit.EXTENSION.rpartition(".")[2])
    cc.output_dir = str(jit.HERE)
    cc.target_cpu = "host"  # as numba compiles its own (`jit.fingerprint` names the CPU)
    exported = []
    manifest: dict[str, list[jit.Spec]] = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("outagewatch.") or module is None:
            continue
        for found in vars(module).values():
            if not isinstance(found, CPUDispatcher) or found.py_func.__module__ != name:
                continue
            value: Any = found  # numba's types are partial
            if not value.signatures:  # inlined into its callers, or not called from Python
                continue
            # One export per set of argument types (a kernel called by another kernel with
            # other types than from Python has several): `jit` tries each in turn.
            # Types only a kernel passes (an omitted default) are not a Python call's.
            sigs = [a for a in value.signatures if all(describable(t) for t in a)]
            for k, args in enumerate(sigs):
                returns = value.overloads[args].signature.return_type
                export = f"{jit.export_name(value.py_func)}__{k}"
                cc.export(export, returns(*args))(value.py_func)
                manifest[export] = [describe(a) for a in args]
            if sigs:
                exported.append(f"{name}.{value.__name__}")
    jit.STAMP.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending deprecation
        cc.compile()
    jit.MANIFEST.write_bytes(msgspec.json.encode(manifest))
    jit.STAMP.write_text(jit.fingerprint() + "\n", encoding="ascii")
    return exported


def describable(t: Any) -> bool:
    """Whether `describe` takes numba type `t` (what a call from Python can pass), into a
    description `jit.checker` reads."""
    try:
        jit.checker(describe(t))
    except (TypeError, ValueError):
        return False
    return True


def describe(t: Any) -> jit.Spec:
    """numba type `t` of a kernel's argument, for `jit.checker`."""
    from numba.core import types

    if isinstance(t, types.Literal):  # a callee specialised on a constant argument
        raise TypeError(f"{t} is a constant a kernel passes, not a Python call's argument")
    if isinstance(t, types.Array):
        return {"a": [str(t.dtype), t.ndim, t.layout, t.mutable, t.aligned]}
    if isinstance(t, types.BaseTuple):
        return {"t": [describe(x) for x in getattr(t, "types")]}  # noqa: B009  (untyped)
    if isinstance(t, types.Boolean):
        return {"s": "bool"}
    if isinstance(t, types.Integer | types.Float):
        return {"s": str(t)}
    raise TypeError(f"a kernel's argument of type {t} cannot be compiled ahead of time")


def main() -> int:
    t0 = time.perf_counter()
    bytecode()
    holiday_table()
    drop_stale()
    opened = warm()
    print(f"numba kernels ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if not jit.fresh():
        t1 = time.perf_counter()
        try:
            names = ahead_of_time()
        except Exception as exc:  # no C compiler, say: the kernels stay numba's (jit.py)
            print(f"kernels not compiled ahead of time: {exc!r}", file=sys.stderr)
        else:
            took = time.perf_counter() - t1
            print(f"{len(names)} kernels compiled ahead of time ({took:.1f} s)", file=sys.stderr)
    return 0 if opened == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
