"""The compact encoding of kept history: one block per service and day (UTC).

A block holds the day's counted reports by bucket, country and problem at one resolution
(`res` minutes per bucket: 1, 15 or 60). Rows are the store's packed chunk rows
(`CHUNK_DTYPE`: `m` is the bucket within the day, `c` the country, `p` the problem, `n` the
count). On disk a block is zlib-compressed columns: the distinct (country, problem) keys once,
then for each key its number of rows, the bucket deltas (u2, low bytes then high bytes)
and the counts in the narrowest
unsigned type that holds them. A day of minute detail for a service with a dozen countries
and problems is a few hundred bytes instead of ~100 KB of packed rows.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from numpy.typing import NDArray

from outagewatch.errors import StoreError
from outagewatch.store.base import CHUNK_DTYPE

DAY_MIN = 1440
RESOLUTIONS = (1, 15, 60)  # minutes per bucket, finest first
_VERSION = 1
_LEVEL = 3  # zlib level: 9 is a few times slower for under 1% smaller blocks
_HEAD = struct.Struct("<BBIII")  # version, count type, keys, rows, key text length
_COUNT_TYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<i8"))


def empty() -> NDArray[np.void]:
    return np.empty(0, CHUNK_DTYPE)


def total(rows: NDArray[np.void]) -> int:
    return int(rows["n"].sum())


_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], np.uint64
)


def _codes(col: NDArray[np.bytes_]) -> tuple[NDArray[np.int64], NDArray[np.bytes_]]:
    """(index of each value in the distinct values, the distinct values) of a bytes column,
    by hashing its words (np.unique on the strings themselves is ten times slower); the
    hash is checked against the values, with np.unique as the fallback."""
    values = np.ascontiguousarray(col)
    width = values.dtype.itemsize
    if width % 8 == 0:
        words = values.view("<u8").reshape(len(values), width // 8)
        with np.errstate(over="ignore"):
            h = (words * _MIX[: width // 8]).sum(axis=1, dtype=np.uint64)
    elif width <= 8:
        h = np.zeros(len(values), np.uint64)
        for i in range(width):
            h = (h << np.uint64(8)) | values.view("u1").reshape(len(values), width)[:, i]
    else:
        u, inv = np.unique(values, return_inverse=True)
        return inv.ravel().astype(np.int64), u
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel().astype(np.int64)
    distinct = values[first]
    if not np.array_equal(distinct[inv], values):  # a hash collision: sort the strings
        u, inv2 = np.unique(values, return_inverse=True)
        return inv2.ravel().astype(np.int64), u
    return inv, distinct


def _keys(
    rows: NDArray[np.void],
) -> tuple[NDArray[np.int64], NDArray[np.bytes_], NDArray[np.bytes_]]:
    """An integer per row naming its (country, problem), and the distinct countries and
    problems it indexes (key = country index * len(problems) + problem index)."""
    ci, cu = _codes(rows["c"])
    pi, pu = _codes(rows["p"])
    return ci * len(pu) + pi, cu, pu


def summed(rows: NDArray[np.void]) -> NDArray[np.void]:
    """The rows with duplicates of (m, c, p) summed, sorted by m."""
    if len(rows) == 0:
        return empty()
    k, cu, pu = _keys(rows)
    nk = len(cu) * len(pu)
    uniq, inv = np.unique(rows["m"].astype(np.int64) * nk + k, return_inverse=True)
    out = np.empty(len(uniq), CHUNK_DTYPE)
    kk = uniq % nk
    out["m"] = uniq // nk
    out["c"] = cu[kk // len(pu)]
    out["p"] = pu[kk % len(pu)]
    # Exact: counts are far below 2**53.
    out["n"] = np.bincount(inv.ravel(), rows["n"].astype(np.float64), len(uniq)).astype(np.int64)
    return out


def encode(rows: NDArray[np.void]) -> bytes:
    """The compressed bytes of a block's rows (any order; (m, c, p) must be unique)."""
    if len(rows) == 0:
        return zlib.compress(_HEAD.pack(_VERSION, 0, 0, 0, 0))
    full, cu, pu = _keys(rows)
    present, kinv = np.unique(full, return_inverse=True)
    kinv = kinv.ravel()
    m = rows["m"].astype(np.int32)
    order = np.lexsort((m, kinv))
    k, m, n = kinv[order], m[order], rows["n"][order]
    per_key = np.bincount(k, minlength=len(present)).astype("<u4")
    dm = np.diff(m, prepend=0)
    starts = np.concatenate(([0], np.cumsum(per_key)[:-1])).astype(np.int64)
    dm[starts] = m[starts]  # each key's first bucket is absolute
    top = int(n.max())
    code = 3 if int(n.min()) < 0 else 0 if top < 1 << 8 else 1 if top < 1 << 16 else 2
    if code == 2 and top >= 1 << 32:
        code = 3
    text = b"\n".join(
        bytes(cu[i // len(pu)]) + b"\t" + bytes(pu[i % len(pu)]) for i in present.tolist()
    )
    body = b"".join(
        (
            _HEAD.pack(_VERSION, code, len(present), len(rows), len(text)),
            text,
            per_key.tobytes(),
            # Low bytes of the deltas, then high bytes (mostly zero): compresses better.
            dm.astype("<u2").view("u1").reshape(-1, 2).T.tobytes(),
            n.astype(_COUNT_TYPES[code]).tobytes(),
        )
    )
    return zlib.compress(body, _LEVEL)


def decode(data: bytes) -> NDArray[np.void]:
    """The rows of a block written by `encode`."""
    try:
        body = zlib.decompress(data)
        version, code, nkeys, nrows, tlen = _HEAD.unpack_from(body)
    except (zlib.error, struct.error) as exc:
        raise StoreError(f"a stored history block is damaged: {exc}") from None
    if version != _VERSION:
        raise StoreError(f"a stored history block has unknown version {version}")
    out = np.empty(nrows, CHUNK_DTYPE)
    if nrows == 0:
        return out
    pos = _HEAD.size
    text = body[pos : pos + tlen]
    pos += tlen
    pairs = [line.split(b"\t", 1) for line in text.split(b"\n")]
    per_key = np.frombuffer(body, "<u4", nkeys, pos).astype(np.int64)
    pos += 4 * nkeys
    planes = np.frombuffer(body, "u1", 2 * nrows, pos).reshape(2, nrows).astype(np.int64)
    dm = planes[0] | (planes[1] << 8)
    pos += 2 * nrows
    out["n"] = np.frombuffer(body, _COUNT_TYPES[code], nrows, pos)
    k = np.repeat(np.arange(nkeys), per_key)
    starts = np.concatenate(([0], np.cumsum(per_key)[:-1]))
    # Undo the deltas within each key: a cumulative sum restarted at each key's first row.
    cs = np.cumsum(dm)
    base = np.repeat(cs[starts] - dm[starts], per_key)
    out["m"] = cs - base
    countries = np.array([c for c, _ in pairs], "S2")
    problems = np.array([p for _, p in pairs], "S32")
    out["c"] = countries[k]
    out["p"] = problems[k]
    return out


def coarsen(rows: NDArray[np.void], res_from: int, res_to: int) -> NDArray[np.void]:
    """The rows at a coarser resolution (buckets summed)."""
    if res_to == res_from or len(rows) == 0:
        return rows
    if res_to < res_from or res_to % res_from:
        raise ValueError(f"cannot turn {res_from}-minute buckets into {res_to}-minute ones")
    out = rows.copy()
    out["m"] = rows["m"] // (res_to // res_from)
    return summed(out)


def merge(a: NDArray[np.void], b: NDArray[np.void]) -> NDArray[np.void]:
    """Two blocks' rows of one day at one resolution, summed."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    return summed(np.concatenate((a, b)))


def per_minute(rows: NDArray[np.void], res: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(minute of the day, count) spreading each bucket evenly over its minutes (the sum is
    kept: the remainder goes to the bucket's first minutes), for per-minute charts of coarse
    history."""
    m = rows["m"].astype(np.int64)
    n = rows["n"].astype(np.int64)
    if res == 1:
        return m, n
    offs = np.arange(res, dtype=np.int64)
    minutes = (m[:, None] * res + offs[None, :]).ravel()
    share = (n[:, None] // res + (offs[None, :] < (n % res)[:, None])).ravel()
    return minutes, share
