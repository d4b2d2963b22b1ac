"""The compiled kernels, in one of two forms: numba's (compiled on first use, kept in numba's
on-disk cache) or one extension module compiled ahead of time from the same functions
(`numba.pycc`, by `make install`: `runtime.warm.ahead_of_time`).

Every kernel is written once, as a numba function, and decorated with `njit` from here. A
process that asks for the ahead-of-time form before the kernel modules are imported
(`prefer_ahead_of_time`: `replay` does) gets, for each kernel the extension exports, the
extension's function, and never imports numba: numba's import, its compiler's first start
and each cached kernel's load are ~0.4 s of a replay's start-up, a quarter of a quiet
month's replay. Everywhere else, or when the extension is missing or was built from other
sources, CPU or Python (`fresh`), the kernels are numba's dispatchers, as they always were:
servers keep them (numba's kernels release the GIL while they run, `nogil`; the extension's
hold it). `OUTAGEWATCH_AOT=0` in the environment turns the extension off.

The extension exports each kernel the warm-up compiled, once for each set of argument types
it was compiled for (`runtime.warm`: the pipeline's own), with a manifest of those types.
Its functions convert their arguments to those types unchecked (an int64 array passed for
a uint8 one would be read byte by byte, past its end), so every call is first checked as
numba's dispatcher would type it (`checker`, a few microseconds; a replay makes ~1,500
calls). A call of other types goes to numba instead, as does a call of a kernel the
extension does not export: numba is imported then and every kernel becomes numba's
dispatcher wherever a kernel module holds it (kernels that call each other must all be
numba's), exactly what the other form runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import msgspec

F = TypeVar("F", bound=Callable[..., Any])

EXTENSION = "outagewatch._kernels_aot"  # the module `runtime.warm.ahead_of_time` builds
HERE = Path(__file__).parent
STAMP = HERE / "_kernels_aot.sha256"  # what the extension was built from (`fingerprint`)
MANIFEST = HERE / "_kernels_aot.json"  # each exported function's argument types (`checker`)
# The kernels' sources: a constant of another module is compiled into the kernels using it.
SOURCES = (
    "detect/*.py", "linescan.py", "pipeline/dedup.py", "pipeline/sources.py",
    "store/grouping.py", "jit.py",
)  # fmt: skip

Spec = dict[str, Any]  # a numba type, described for `checker`
Extension = tuple[ModuleType, dict[str, list[Spec]]]  # the module, its functions' arguments
Options = dict[str, Any]
# The kernels taken from the extension: (function, numba's options, the stand-in given out)
_registry: list[tuple[Callable[..., Any], Options, Callable[..., Any]]] = []


class _State:
    prefer = False  # `prefer_ahead_of_time` was called
    looked = False  # for the extension
    extension: Extension | None = None
    numba_mode = False  # `to_numba` was called


_state = _State()


def prefer_ahead_of_time() -> None:
    """Kernels imported from now on come from the extension where it has them (module doc);
    kernels imported before stay as they are."""
    _state.prefer = os.environ.get("OUTAGEWATCH_AOT", "1") != "0"


def export_name(f: Callable[..., Any]) -> str:
    """The extension's name for kernel `f`: its module (past the package) and name."""
    module = f.__module__.removeprefix("outagewatch.").replace(".", "_")
    return f"{module}__{f.__name__}"


def fingerprint() -> str:
    """The kernels' sources, this CPU's features and this Python: the extension is compiled
    for the CPU it is built on (`target_cpu = host`, as numba's own kernels are)."""
    h = sources_digest(HERE, SOURCES)
    h.update(f"{sys.version}\0{os.uname().machine}\0{_cpu_flags()}".encode())
    return str(h.hexdigest())


def sources_digest(root: Path, patterns: tuple[str, ...]) -> Any:
    """SHA-256 of the files under `root` that `patterns` match: each one's path (relative
    to `root`) and bytes, in order (also `runtime.warm.drop_stale`'s, for numba's cache)."""
    h = hashlib.sha256()
    for pattern in patterns:
        for f in sorted(root.glob(pattern)):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h


def _cpu_flags() -> str:
    """The CPU's features as Linux lists them (`platform` is not imported for this: ~10 ms)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    return line.strip()
    except OSError:
        pass
    return ""


def fresh() -> bool:
    """Whether the extension exists and was built from these sources for this machine."""
    try:
        stamp = STAMP.read_text(encoding="ascii").strip()
    except OSError:
        return False
    return stamp == fingerprint()


def extension() -> Extension | None:
    """The extension, with the argument types of each function it exports (`MANIFEST`),
    when this process prefers it and it is fresh (looked for once)."""
    if not _state.looked and _state.prefer:
        _state.looked = True
        if fresh():
            try:
                module = importlib.import_module(EXTENSION)
                types = msgspec.json.decode(MANIFEST.read_bytes(), type=dict[str, list[Spec]])
            except (ImportError, OSError, msgspec.DecodeError):
                pass
            else:
                _state.extension = (module, types)
    return _state.extension


def njit(**options: Any) -> Callable[[F], F]:
    """numba's `njit(**options)`, or the extension's function of that kernel (module doc)."""

    def decorate(f: F) -> F:
        if not _state.numba_mode:
            ext = extension()
            if ext is not None:
                kernel: F = _ahead_of_time(f, _exports(ext, export_name(f)))
                _registry.append((f, options, kernel))
                return kernel
        compiled: F = numba_module().njit(**options)(f)
        return compiled

    return decorate


Check = Callable[[Any], bool]


def _exports(ext: Extension, name: str) -> list[tuple[Check, Callable[..., Any]]]:
    """The extension's functions of kernel `name`, one per set of argument types, each with
    the check that arguments are of those types."""
    module, types = ext
    out: list[tuple[Check, Callable[..., Any]]] = []
    k = 0
    while (f := getattr(module, f"{name}__{k}", None)) is not None:
        # A manifest entry this code cannot read: the calls of those types go to numba.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            out.append((checker({"t": types[f"{name}__{k}"]}), f))
        k += 1
    return out


def _ahead_of_time(f: Callable[..., Any], compiled: list[tuple[Check, Callable[..., Any]]]) -> Any:
    """Kernel `f` from the extension (`compiled`: its functions, one per set of argument
    types, none when not exported), going to numba's dispatcher for a call none takes.

    The extension's functions convert their arguments as the types they were compiled for
    say, unchecked (an array of another dtype is read as if it were of theirs), so each
    call is checked first, as numba's dispatcher types its arguments (`checker`)."""
    module, name = f.__module__, f.__name__

    def kernel(*args: Any) -> Any:
        for check, c in compiled:
            if check(args):
                return c(*args)
        to_numba()  # arguments of other types than any compiled for
        return getattr(sys.modules[module], name)(*args)

    kernel.__name__ = name
    kernel.__qualname__ = f.__qualname__
    kernel.__doc__ = f.__doc__
    kernel.__module__ = module
    kernel.py_func = f  # type: ignore[attr-defined]  # as numba's dispatchers have it
    return kernel


def checker(spec: Spec) -> Check:
    """Whether a value is of the numba type `spec` describes (`runtime.warm.describe`), as
    numba's `typeof` would type it: {"a": [dtype, ndim, layout, mutable, aligned]} an array
    (a read-only one only for a read-only type; layout "A" any strides), {"t": [...]} a
    tuple of those, {"s": dtype} a scalar (Python's int, float and bool as int64, float64
    and bool, numpy's scalars as their own dtype)."""
    import numpy as np

    kind, value = next(iter(spec.items()))
    if kind == "t":
        parts = [checker(x) for x in value]
        size = len(parts)

        def tuple_of(x: Any) -> bool:
            if type(x) is not tuple or len(x) != size:
                return False
            for c, v in zip(parts, x, strict=True):  # noqa: SIM110 (~2x faster than all() of a
                if not c(v):  # generator (every call of a kernel runs this)
                    return False
            return True

        return tuple_of
    if kind == "a":
        dtype = np.dtype(value[0])
        ndim: int = value[1]
        layout: str = value[2]
        mutable: bool = value[3]
        aligned: bool = value[4]
        contiguous = {"C": "c_contiguous", "F": "f_contiguous"}.get(layout)

        def array(x: Any) -> bool:
            if type(x) is not np.ndarray or x.ndim != ndim:
                return False
            if x.dtype is not dtype and x.dtype != dtype:  # mostly numpy's one instance
                return False
            flags = x.flags
            if contiguous is not None and not getattr(flags, contiguous):
                return False
            return (flags.writeable or not mutable) and (flags.aligned or not aligned)

        return array
    if kind == "s":
        python = {"int64": int, "float64": float, "bool": bool}.get(value)
        numpy = np.dtype(value).type

        def scalar(x: Any) -> bool:
            t = type(x)
            if t is numpy:
                return True
            return t is python and (t is not int or -(2**63) <= x < 2**63)

        return scalar
    raise ValueError(f"unknown type description {spec!r}")


def to_numba() -> None:
    """Every kernel taken from the extension becomes numba's dispatcher, wherever a kernel
    module holds it (its own and the modules that import it by name), and kernels imported
    later are numba's."""
    if _state.numba_mode:
        return
    _state.numba_mode = True
    nb = numba_module()
    swap = {id(kernel): nb.njit(**options)(f) for f, options, kernel in _registry}
    for module in {f.__module__ for f, _, _ in _registry}:
        space = vars(sys.modules[module])
        for name, value in list(space.items()):
            if id(value) in swap:
                space[name] = swap[id(value)]


def numba_module() -> ModuleType:
    """numba, imported without the parts no kernel here uses (`_lean_import`)."""
    if "numba" not in sys.modules:
        _lean_import()
    import numba

    return numba


def _lean_import() -> None:
    """Import numba without scipy and PyYAML, and its array math without scipy's BLAS.

    numba imports scipy only to check its version and PyYAML only to read a
    `.numba_config.yaml` (none here unless one is in the working directory); its array-math
    module imports `scipy.linalg.cython_blas` when it loads only to know whether
    `np.convolve` and `np.correlate` may be compiled, which no kernel here uses (dot products
    and linear algebra look for BLAS again when compiled, and find it). Together ~0.1 s of
    a process's start. Modules imported already are left as they are."""
    blocked = ["scipy", "scipy.linalg.cython_blas"]
    if not Path(".numba_config.yaml").exists():
        blocked.append("yaml")
    blocked = [m for m in blocked if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]  # `import m` raises ImportError
    try:
        import numba
        import numba.np.arraymath  # noqa: F401
    finally:
        for m in blocked:
            del sys.modules[m]
