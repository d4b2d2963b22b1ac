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

import math
import struct
import zlib
from collections.abc import Callable, Sequence

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
_EMPTY = zlib.compress(_HEAD.pack(_VERSION, 0, 0, 0, 0))  # a block of no rows


def empty() -> NDArray[np.void]:
    return np.empty(0, CHUNK_DTYPE)


def total(rows: NDArray[np.void]) -> int:
    return int(rows["n"].sum())


_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], np.uint64
)


def _hashable(values: NDArray[np.bytes_]) -> bool:
    """Whether `_hash_codes` can code a column of these values (else: np.unique)."""
    width = values.dtype.itemsize
    return width % 8 == 0 or width <= 8


def _hash_codes(values: NDArray[np.bytes_]) -> tuple[NDArray[np.int64], NDArray[np.bytes_]] | None:
    """`_codes` by hashing the values' words (a `_hashable` width); None when two distinct
    values share a hash."""
    n, width = len(values), values.dtype.itemsize
    words = None  # what the hash is checked against (nothing: the hash is the bytes)
    if width <= 2:  # the bytes as a big-endian number: a table of the 2**16, not a sort
        small = values.view(f">u{width}").astype(np.intp)
        seen = np.zeros(1 << 16, bool)
        seen[small] = True
        hashes, inv = np.flatnonzero(seen), (np.cumsum(seen) - 1)[small]
    else:
        if width % 8 == 0:  # sum of word * odd constant (mod 2**64), a word at a time
            # (~6x faster than one sum over an axis)
            words = values.view("<u8").reshape(n, width // 8).T
            h = np.zeros(n, np.uint64)
            with np.errstate(over="ignore"):
                for word, mix in zip(words, _MIX, strict=False):
                    h += word * mix
        else:  # the bytes as a big-endian number
            padded = np.zeros((n, 8), np.uint8)
            padded[:, 8 - width :] = values.view("u1").reshape(n, width)
            h = padded.view(">u8").ravel().astype(np.uint64)
        hashes, inv = np.unique(h, return_inverse=True)
        inv = inv.ravel().astype(np.int64)
    # Any row of each hash stands for it (np.unique's return_index would sort stably, ~6x
    # slower), and every row is checked against it, a word at a time (~20x faster than as
    # bytes).
    first = np.empty(len(hashes), np.int64)
    first[inv] = np.arange(n)
    if words is not None and any(not np.array_equal(w[first][inv], w) for w in words):
        return None
    return inv, values[first]


def _codes(col: NDArray[np.bytes_]) -> tuple[NDArray[np.int64], NDArray[np.bytes_]]:
    """(index of each value in the distinct values, the distinct values) of a bytes column,
    by hashing its words (np.unique on the strings themselves is ten times slower); the
    hash is checked against the values, with np.unique as the fallback."""
    values = np.ascontiguousarray(col)
    found = _hash_codes(values) if _hashable(values) else None
    if found is not None:
        return found
    u, inv = np.unique(values, return_inverse=True)  # a hash collision: sort the strings
    return inv.ravel().astype(np.int64), u


def _block_codes(col: NDArray[np.bytes_], block: NDArray[np.int64]) -> NDArray[np.int64]:
    """A code per value of a column of the rows of many blocks (`block`: each row's block),
    ordered within each block as `_codes` of that block's rows alone orders them."""
    values = np.ascontiguousarray(col)
    found = _hash_codes(values) if _hashable(values) else None
    if found is not None:  # no block has a collision: hash order in each
        return found[0]
    if not _hashable(values):  # string order in each
        return _codes(values)[0]
    # A collision: string order in the blocks that hold both values, hash order elsewhere.
    order = np.argsort(block, kind="stable")
    bounds = np.searchsorted(block[order], np.arange(int(block.max()) + 2))
    out = np.empty(len(values), np.int64)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        out[order[a:b]] = _codes(values[order[a:b]])[0]
    return out


def _keys(
    rows: NDArray[np.void],
) -> tuple[NDArray[np.int64], NDArray[np.bytes_], NDArray[np.bytes_]]:
    """An integer per row naming its (country, problem), and the distinct countries and
    problems it indexes (key = country index * len(problems) + problem index)."""
    ci, cu = _codes(rows["c"])
    pi, pu = _codes(rows["p"])
    return ci * len(pu) + pi, cu, pu


def _grouped(
    cols: Sequence[NDArray[np.int64]], n: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(the index of one row of each distinct tuple of `cols` (non-negative integers), the
    sum of `n` over the tuple's rows), tuples in lexicographic order: one sort."""
    spans = [int(c.max()) + 1 for c in cols]
    shift = len(n).bit_length()
    if math.prod(spans) << shift <= 1 << 63:
        # One integer per row: the tuple, then the row's index in the low bits (np.sort of
        # it is ~2x faster than np.argsort of the tuple's integer and a gather).
        code = cols[0]
        for c, span in zip(cols[1:], spans[1:], strict=True):
            code = code * span + c
        packed = np.sort((code << shift) | np.arange(len(n)))
        order, code = packed & ((1 << shift) - 1), packed >> shift
        new = code[1:] != code[:-1]
    else:
        order = np.lexsort(tuple(reversed(cols)))
        new = np.zeros(len(order) - 1, bool)
        for c in cols:
            sc = c[order]
            new |= sc[1:] != sc[:-1]
    starts = np.flatnonzero(np.concatenate(([True], new)))
    return order[starts], np.add.reduceat(n[order], starts)


def summed(rows: NDArray[np.void]) -> NDArray[np.void]:
    """The rows with duplicates of (m, c, p) summed, sorted by m."""
    if len(rows) == 0:
        return empty()
    k, _, _ = _keys(rows)
    first, sums = _grouped((rows["m"].astype(np.int64), k), rows["n"].astype(np.int64))
    out = rows[first]
    out["n"] = sums
    return out


def encode(rows: NDArray[np.void]) -> bytes:
    """The compressed bytes of a block's rows (any order; duplicates of (m, c, p) are
    summed)."""
    return encode_blocks(rows, np.zeros(len(rows), np.int64), 1)[0][1]


def encode_blocks(
    rows: NDArray[np.void], block: NDArray[np.int64], nblocks: int
) -> list[tuple[int, bytes]]:
    """(total, `encode(summed(r))`) of each of `nblocks` blocks, `r` the rows whose `block`
    is its index, all blocks in one pass (a few numpy calls for all, not per block)."""
    if len(rows) == 0:
        return [(0, _EMPTY)] * nblocks
    # A (country, problem) key per row, in the order encode keeps them within a block.
    ci, pi = _block_codes(rows["c"], block), _block_codes(rows["p"], block)

    def texts(r: NDArray[np.int64]) -> list[bytes]:
        pairs = zip(rows["c"][r].tolist(), rows["p"][r].tolist(), strict=True)
        return [c + b"\t" + p for c, p in pairs]

    keyed = (rows["m"].astype(np.int64), rows["n"].astype(np.int64), ci, pi, block)
    return _encode_keyed(keyed, texts, nblocks)


Coded = tuple[
    NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
    NDArray[np.int64], NDArray[np.bytes_], NDArray[np.bytes_],
]  # fmt: skip
"""Rows given by integer columns, (m, n, country, problem, block, countries, problems): the
country and problem of a row are indices into the two tables of values (S2, S32 as a
packed row holds them; see `store.base.code_tables`)."""


def encode_mixed(
    rows: NDArray[np.void], block: NDArray[np.int64], coded: Coded, nblocks: int
) -> list[tuple[int, bytes]]:
    """`encode_blocks` of `rows` (packed, each of block `block`) and the rows `coded`
    together, without packing the coded ones: their values are coded once per table entry,
    not hashed per row. The same bytes as `encode_blocks` of all of them packed (the codes
    order the keys as the values' hashes do, whichever rows they come from)."""
    m, n, country, problem, cblock, countries, problems = coded
    ci = _joint_codes(countries, rows["c"])
    pi = _joint_codes(problems, rows["p"])
    if ci is None or pi is None:  # two values share a hash: string order, from packed rows
        packed = np.zeros(len(m), CHUNK_DTYPE)
        packed["m"], packed["n"] = m, n
        packed["c"], packed["p"] = countries[country], problems[problem]
        return encode_blocks(
            np.concatenate((rows, packed)), np.concatenate((block, cblock)), nblocks
        )
    (ci_table, ci_rows), (pi_table, pi_rows) = ci, pi
    cut = len(rows)

    def texts(r: NDArray[np.int64]) -> list[bytes]:
        out: list[bytes] = []
        for i in r.tolist():
            if i < cut:
                c, p = rows["c"][i], rows["p"][i]
            else:
                c, p = countries[country[i - cut]], problems[problem[i - cut]]
            out.append(bytes(c) + b"\t" + bytes(p))
        return out

    keyed = (
        np.concatenate((rows["m"].astype(np.int64), m)),
        np.concatenate((rows["n"].astype(np.int64), n)),
        np.concatenate((ci_rows, ci_table[country])),
        np.concatenate((pi_rows, pi_table[problem])),
        np.concatenate((block, cblock)),
    )
    return _encode_keyed(keyed, texts, nblocks)


def _joint_codes(
    table: NDArray[np.bytes_], col: NDArray[np.bytes_]
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """Codes of the values of `table` and of `col` in one numbering ordered as `_hash_codes`
    orders values (the order of their hashes); None when some value is not `_hashable` or
    two distinct ones share a hash (the caller packs the rows and codes them by string)."""
    values = np.concatenate((table, np.ascontiguousarray(col, table.dtype)))
    found = _hash_codes(values) if _hashable(values) else None
    if found is None:
        return None
    inv = found[0]
    return inv[: len(table)], inv[len(table) :]


Keyed = tuple[
    NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]
]
"""Rows as (bucket, count, country code, problem code, block), for `_encode_keyed`."""


def _encode_keyed(
    keyed: Keyed,
    texts_of: Callable[[NDArray[np.int64]], list[bytes]],
    nblocks: int,
) -> list[tuple[int, bytes]]:
    """`encode_blocks` of rows given as (bucket, count, country code, problem code, block):
    the codes order a block's keys (country, then problem); `texts_of(rows)` gives the
    "country\tproblem" text of each of those rows."""
    m, n, ci, pi, block = keyed
    key = ci * (int(pi.max()) + 1) + pi
    keys = int(key.max()) + 1
    buckets = (int(block.max()) + 1) * keys
    if buckets <= 4 * len(m) + (1 << 16):  # a table of buckets of about the rows' size
        from outagewatch.store.grouping import grouped_by_bucket

        first, n = grouped_by_bucket(block * keys + key, m, n, buckets)
    else:
        first, n = _grouped((block, key, m), n)
    block, key, m = block[first], key[first], m[first]
    # Each block's rows by key, then bucket: a key's rows are one run, its first bucket
    # absolute, the others deltas.
    kstart = np.flatnonzero(
        np.concatenate(([True], (block[1:] != block[:-1]) | (key[1:] != key[:-1])))
    )
    per_key = np.diff(np.append(kstart, len(m))).astype("<u4")
    dm = np.diff(m, prepend=0)
    dm[kstart] = m[kstart]
    # Low bytes of the deltas, then high bytes (mostly zero): compresses better.
    planes = dm.astype("<u2").view("u1").reshape(-1, 2)
    low, high = np.ascontiguousarray(planes[:, 0]), np.ascontiguousarray(planes[:, 1])
    texts = texts_of(first[kstart])
    at = np.searchsorted(block, np.arange(nblocks + 1)).tolist()
    kat = np.searchsorted(kstart, at).tolist()
    filled = np.flatnonzero(np.diff(at))
    starts = np.asarray(at)[filled]
    totals = np.zeros(nblocks, np.int64)
    totals[filled] = np.add.reduceat(n, starts)
    top = np.zeros(nblocks, np.int64)
    top[filled] = np.maximum.reduceat(n, starts)
    low_n = np.zeros(nblocks, np.int64)
    low_n[filled] = np.minimum.reduceat(n, starts)
    out: list[tuple[int, bytes]] = []
    for i, (total, hi, lo) in enumerate(
        zip(totals.tolist(), top.tolist(), low_n.tolist(), strict=True)
    ):
        a, b, ka, kb = at[i], at[i + 1], kat[i], kat[i + 1]
        if a == b:
            out.append((0, _EMPTY))
            continue
        code = 3 if lo < 0 else 0 if hi < 1 << 8 else 1 if hi < 1 << 16 else 2
        if code == 2 and hi >= 1 << 32:
            code = 3
        text = b"\n".join(texts[ka:kb])
        body = b"".join(
            (
                _HEAD.pack(_VERSION, code, kb - ka, b - a, len(text)),
                text,
                per_key[ka:kb].tobytes(),
                low[a:b].tobytes(),
                high[a:b].tobytes(),
                n[a:b].astype(_COUNT_TYPES[code]).tobytes(),
            )
        )
        out.append((total, zlib.compress(body, _LEVEL)))
    return out


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
    out = rows.copy()
    out["m"] = rows["m"] // factor(res_from, res_to)
    return summed(out)


def factor(res_from: int, res_to: int) -> int:
    """How many buckets of `res_from` minutes one of `res_to` minutes holds."""
    if res_to < res_from or res_to % res_from:
        raise ValueError(f"cannot turn {res_from}-minute buckets into {res_to}-minute ones")
    return res_to // res_from


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
