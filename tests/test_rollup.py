"""Compaction's fold and the day-block encoder against a row-by-row reference.

`fold` sums and encodes all the day blocks of a compaction step in one vectorised pass
(`codec.encode_blocks`); the reference here builds each block alone from the format that
store/codec.py describes, in plain Python. Stored blocks must stay the same bytes: the
reference is compared byte for byte on random steps (raw hours, existing blocks at every
resolution, blocks due for coarsening, counts of every width), with the problems' hashes
made to collide (string order within the blocks that hold two of them), and for the sort
that does not fit one integer key."""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict

import numpy as np
import pytest

from outagewatch.pipeline.pipeline import CountRows
from outagewatch.store import codec
from outagewatch.store.base import CHUNK_DTYPE, chunks, unpack
from outagewatch.store.rollup import DayRow, Drained, RawRow, Retention, fold, raw_rows_of_day

D0 = 20_000  # a UTC day number
COUNTRIES = [b"US", b"GB", b"DE", b"FR", b"JP"]
PROBLEMS = [b"app", b"login", b"website", b"other", b"a-very-long-problem-name-of-32-c"]
Row = tuple[int, bytes, bytes, int]


def reference_block(rows: list[Row]) -> tuple[int, bytes]:
    """(total, block) of rows (m, country, problem, n), duplicates summed: keys in the order
    of the block's own countries then problems as codec._codes orders them, each key's
    buckets ascending (the first absolute, then deltas), counts in the narrowest type."""
    sums: dict[tuple[bytes, bytes], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for m, c, p, n in rows:
        sums[(c, p)][m] += n
    if not sums:
        return 0, zlib.compress(struct.pack("<BBIII", 1, 0, 0, 0, 0))
    rank: dict[int, dict[bytes, int]] = {}
    for col in (0, 1):
        _, distinct = codec._codes(np.array([k[col] for k in sums], ("S2", "S32")[col]))
        rank[col] = {bytes(v): i for i, v in enumerate(distinct)}
    keys = sorted(sums, key=lambda k: (rank[0][k[0]], rank[1][k[1]]))
    deltas, counts = [], []
    for k in keys:
        buckets = sorted(sums[k])
        deltas += [b - a for a, b in zip([0, *buckets], buckets, strict=False)]
        counts += [sums[k][b] for b in buckets]
    lo, hi = min(counts), max(counts)
    code = 3 if lo < 0 or hi >= 1 << 32 else 0 if hi < 1 << 8 else 1 if hi < 1 << 16 else 2
    text = b"\n".join(c + b"\t" + p for c, p in keys)
    body = b"".join(
        (
            struct.pack("<BBIII", 1, code, len(keys), len(counts), len(text)),
            text,
            struct.pack(f"<{len(keys)}I", *[len(sums[k]) for k in keys]),
            bytes(d & 0xFF for d in deltas),
            bytes(d >> 8 for d in deltas),
            struct.pack(f"<{len(counts)}{'BHIq'[code]}", *counts),
        )
    )
    return sum(counts), zlib.compress(body, 3)


def reference_fold(
    raw: list[RawRow], blocks: list[DayRow], now: float, retention: Retention
) -> list[DayRow]:
    """fold, one day at a time: each block's rows and raw hours at the resolution it is due."""
    today = int(now // 86_400)
    existing = {(s, d): (res, data) for s, d, res, _, data in blocks}
    out = []
    for s, d in sorted({(s, h // 24) for s, h, _ in raw} | set(existing)):
        res, data = existing.get((s, d), (1, b""))
        want = max(retention.resolution(d, today), res)
        rows: list[Row] = []
        if data:
            rows += [(m // (want // res), c, p, n) for m, c, p, n in codec.decode(data).tolist()]
        for _, hour, chunk in (r for r in raw if (r[0], r[1] // 24) == (s, d)):
            rows += [
                ((hour % 24 * 60 + m) // want, c, p, n) for m, c, p, n in unpack(chunk).tolist()
            ]
        out.append((s, d, want, *reference_block(rows)))
    return out


def random_rows(rng: np.random.Generator, n: int, buckets: int) -> np.ndarray:
    """n rows (duplicates of (m, c, p) possible), counts mostly small, some of every width."""
    rows = np.empty(n, CHUNK_DTYPE)
    rows["m"] = rng.integers(0, buckets, n)
    rows["c"] = rng.choice(COUNTRIES[: rng.integers(1, len(COUNTRIES) + 1)], n)
    rows["p"] = rng.choice(PROBLEMS[: rng.integers(1, len(PROBLEMS) + 1)], n)
    width = rng.choice([1 << 7, 1 << 15, 1 << 31, 1 << 40], p=[0.7, 0.1, 0.1, 0.1])
    rows["n"] = rng.integers(1, width, n)
    return rows


def random_step(seed: int) -> tuple[list[RawRow], list[DayRow], float, Retention]:
    """A compaction step: raw hours of a few services and days, existing blocks of some of
    them (at any resolution, some with no raw hours: due for coarsening)."""
    rng = np.random.default_rng(seed)
    retention = Retention(minute_days=int(rng.integers(1, 4)), rollup_days=int(rng.integers(4, 7)))
    now = (D0 + 8) * 86_400.0
    raw: list[RawRow] = []
    for s in ("a", "b", "c")[: rng.integers(1, 4)]:
        for hour in sorted(rng.choice(8 * 24, int(rng.integers(0, 30)), replace=False)):
            rows = random_rows(rng, int(rng.integers(0, 40)), 60)
            raw.append((s, D0 * 24 + int(hour), rows.tobytes()))
    blocks: list[DayRow] = []
    for s in ("a", "b", "d"):
        for day in sorted(rng.choice(8, int(rng.integers(0, 4)), replace=False)):
            res = int(rng.choice(codec.RESOLUTIONS))
            rows = codec.summed(random_rows(rng, int(rng.integers(0, 50)), 1440 // res))
            blocks.append((s, D0 + int(day), res, codec.total(rows), codec.encode(rows)))
    return raw, blocks, now, retention


@pytest.mark.parametrize("seed", range(40))
def test_fold_writes_the_blocks_of_a_day_at_a_time_reference(seed: int) -> None:
    raw, blocks, now, retention = random_step(seed)
    assert fold(raw, blocks, now, retention) == reference_fold(raw, blocks, now, retention)


def test_a_step_of_nothing_folds_to_nothing() -> None:
    assert fold([], [], (D0 + 1) * 86_400.0, Retention()) == []
    assert len(raw_rows_of_day([])) == 0


@pytest.mark.parametrize("seed", range(10))
def test_fold_is_the_reference_when_problem_hashes_collide(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every problem hashes alike: blocks with two problems order them as strings.
    monkeypatch.setattr(codec, "_MIX", np.zeros(4, np.uint64))
    raw, blocks, now, retention = random_step(seed)
    assert fold(raw, blocks, now, retention) == reference_fold(raw, blocks, now, retention)


def random_counts(seed: int) -> CountRows:
    """Counted rows as the pipeline drains them (integer columns into vocabularies), over
    days D0..D0+7: some (service, day)s also in `random_step`'s raw hours and blocks."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(0, 400))
    services = ["b", "a", "e"]  # not sorted: the vocabulary's order is the pipeline's
    countries = [c.decode() for c in COUNTRIES[::-1]]
    problems = [p.decode() for p in PROBLEMS] + ["ünïcode-problem-name-past-32-bytes-long"]
    minute = D0 * 1440 + rng.integers(0, 8 * 1440, n)
    return CountRows(
        minute.astype(np.int64),
        rng.integers(0, len(services), n).astype(np.int32),
        rng.integers(0, len(countries), n).astype(np.int32),
        rng.integers(0, len(problems), n).astype(np.int32),
        rng.choice([1, 300, 70_000, 1 << 33], n).astype(np.int64),
        services, countries, problems,
    )  # fmt: skip


@pytest.mark.parametrize("collide", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_fold_of_counts_as_columns_is_their_fold_as_packed_hours(
    seed: int, collide: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay's commits hand `fold` the pipeline's rows as integer columns (`counts`), coded
    once per value rather than packed and hashed per row: the same blocks, byte for byte,
    as those rows packed into raw hours (`base.chunks`), beside raw hours and blocks."""
    if collide:  # every problem hashes alike: string order, from packed rows
        monkeypatch.setattr(codec, "_MIX", np.zeros(4, np.uint64))
    raw, blocks, now, retention = random_step(seed)
    counts = random_counts(seed)
    packed = [(s, h, chunk.tobytes()) for s, h, chunk in chunks(counts)]
    folded = fold(raw, blocks, now, retention, Drained.of(counts))
    assert folded == fold(raw + packed, blocks, now, retention)


@pytest.mark.parametrize("n", [0, 1, 7, 2000])
def test_a_block_is_the_reference_bytes(n: int) -> None:
    rows = random_rows(np.random.default_rng(n), n, 1440)
    summed = codec.summed(rows)
    assert (codec.total(summed), codec.encode(summed)) == reference_block(rows.tolist())


def test_a_days_raw_hours_are_summed_by_minute_of_the_day() -> None:
    rng = np.random.default_rng(5)
    hours = [(D0 * 24 + h, random_rows(rng, 300, 60)) for h in (0, 5, 5, 23)]
    expected: dict[tuple[int, bytes, bytes], int] = defaultdict(int)
    for hour, rows in hours:
        for m, c, p, n in rows.tolist():
            expected[(hour % 24 * 60 + m, c, p)] += n
    got = raw_rows_of_day([(hour, rows.tobytes()) for hour, rows in hours])
    assert {(m, c, p): n for m, c, p, n in got.tolist()} == expected
    assert len(got) == len(expected) and np.all(np.diff(got["m"].astype(int)) >= 0)


@pytest.mark.parametrize("width", [1, 2, 3, 7])
def test_codes_of_values_narrower_than_a_word_are_in_byte_order(width: int) -> None:
    # Their hash is their bytes as a big-endian number: np.unique's order of the strings.
    rng = np.random.default_rng(width)
    pool = rng.integers(0, 256, (40, width), np.uint8).view(f"S{width}").ravel()
    values = pool[rng.integers(0, len(pool), 5000)]
    inv, distinct = codec._codes(values)
    expected, expected_inv = np.unique(values, return_inverse=True)
    assert distinct.tolist() == expected.tolist() and inv.tolist() == expected_inv.tolist()


def test_grouping_keys_too_wide_for_one_integer_sort_by_each_column() -> None:
    rng = np.random.default_rng(3)
    cols = [rng.integers(0, 1 << 40, 300) for _ in range(3)]
    cols = [c[rng.integers(0, 300, 3000)] for c in cols]  # duplicates of a few tuples
    n = rng.integers(0, 100, 3000)
    first, sums = codec._grouped(cols, n)
    expected: dict[tuple[int, ...], int] = defaultdict(int)
    for *key, v in zip(*cols, n.tolist(), strict=True):
        expected[tuple(key)] += v
    got = {tuple(int(c[i]) for c in cols): int(s) for i, s in zip(first, sums, strict=True)}
    assert got == expected
    assert list(got) == sorted(expected)


@pytest.mark.parametrize("in_time_order", [True, False])
def test_grouping_by_bucket_is_the_sorts(in_time_order: bool) -> None:
    """`grouping.grouped_by_bucket` (a counting sort by bucket, each bucket's rows by minute
    where they are not in order already) gives `codec._grouped`'s arrays: the same first
    row of each (bucket, minute), the same sums, in the same order; with rows in time order
    (a drain's) and shuffled, empty buckets, and repeats of a (bucket, minute)."""
    from outagewatch.store.grouping import grouped_by_bucket

    rng = np.random.default_rng(8)
    m = np.sort(rng.integers(0, 400, 20_000)) if in_time_order else rng.integers(0, 400, 20_000)
    bucket = rng.integers(0, 900, 20_000) * 2  # odd buckets empty
    n = rng.integers(1, 50, 20_000)
    first, sums = grouped_by_bucket(bucket, m, n, 2_000)
    want_first, want_sums = codec._grouped((bucket, m), n)
    np.testing.assert_array_equal(first, want_first)
    np.testing.assert_array_equal(sums, want_sums)
    assert len(first) < 20_000  # some (bucket, minute) repeat
