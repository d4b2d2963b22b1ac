"""The compact encoding of kept history: one block per service and day (UTC).

A block holds the day's counted reports by bucket, country and problem at one resolution
(`res` minutes per bucket: 1, 15 or 60). Rows are the store's packed chunk rows
(`CHUNK_DTYPE`: `m` is the bucket within the day, `c` the country, `p` the problem, `n` the
count). On disk a block is zlib-compressed columns: the distinct (country, problem) keys once,
then for each key its number of rows, the bucket deltas (u2) and the counts in the narrowest
unsigned type that holds them. A day of minute detail for a service with a dozen countries
and problems is a few hundred bytes instead of ~100 KB of packed rows.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from numpy.typing import NDArray

from outagewatch.errors import StoreError
from outagewatch.store.base import CHUNK_DTYPE, merge_chunks

DAY_MIN = 1440
RESOLUTIONS = (1, 15, 60)  # minutes per bucket, finest first
_VERSION = 1
_HEAD = struct.Struct("<BBIII")  # version, count type, keys, rows, key text length
_COUNT_TYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<i8"))


def empty() -> NDArray[np.void]:
    return np.empty(0, CHUNK_DTYPE)


def total(rows: NDArray[np.void]) -> int:
    return int(rows["n"].sum())


def encode(rows: NDArray[np.void]) -> bytes:
    """The compressed bytes of a block's rows (any order; (m, c, p) must be unique)."""
    if len(rows) == 0:
        return zlib.compress(_HEAD.pack(_VERSION, 0, 0, 0, 0))
    keys, kinv = np.unique(rows[["c", "p"]], return_inverse=True)
    kinv = kinv.ravel()
    m = rows["m"].astype(np.int32)
    order = np.lexsort((m, kinv))
    k, m, n = kinv[order], m[order], rows["n"][order]
    per_key = np.bincount(k, minlength=len(keys)).astype("<u4")
    dm = np.diff(m, prepend=0)
    starts = np.concatenate(([0], np.cumsum(per_key)[:-1])).astype(np.int64)
    dm[starts] = m[starts]  # each key's first bucket is absolute
    top = int(n.max())
    code = 3 if int(n.min()) < 0 else 0 if top < 1 << 8 else 1 if top < 1 << 16 else 2
    if code == 2 and top >= 1 << 32:
        code = 3
    text = b"\n".join(bytes(c) + b"\t" + bytes(p) for c, p in keys.tolist())
    body = b"".join(
        (
            _HEAD.pack(_VERSION, code, len(keys), len(rows), len(text)),
            text,
            per_key.tobytes(),
            dm.astype("<u2").tobytes(),
            n.astype(_COUNT_TYPES[code]).tobytes(),
        )
    )
    return zlib.compress(body, 9)


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
    dm = np.frombuffer(body, "<u2", nrows, pos).astype(np.int64)
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
    return merge_chunks(out, empty())


def merge(a: NDArray[np.void], b: NDArray[np.void]) -> NDArray[np.void]:
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    return merge_chunks(a, b)


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
