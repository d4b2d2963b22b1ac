"""The flood sketches' compiled accumulation (`pipeline.sources._accumulate`) against a plain
numpy formulation of the same sums (what `Sources.add` did before it was compiled), on
random batches: late and out-of-ring reports, pre-aggregated ones, duplicates, reporters and
address blocks or none, minutes that wrap the ring."""

from __future__ import annotations

import numpy as np
import pytest

from outagewatch.pipeline import sources as sk
from outagewatch.pipeline.sources import Sources, block_buckets


def reference_add(
    s: Sources,
    svc: np.ndarray,
    ts: np.ndarray,
    pb: np.ndarray,
    ips: list[str | None],
    counts: np.ndarray,
    kept: np.ndarray,
) -> None:
    single = counts == 1
    if not single.any():
        return
    minute = np.floor(ts / 60.0).astype(np.int64)
    s.newest = max(s.newest, int(minute[single].max()))
    take = single & (minute > s.newest - sk.RING)
    idx = np.flatnonzero(take)
    if len(idx) == 0:
        return
    svc, ts, kept, minute, pb = svc[idx], ts[idx], kept[idx], minute[idx], pb[idx]
    ips = [ips[i] for i in idx.tolist()]
    s._grow(int(svc.max()) + 1)
    slot = minute % sk.RING
    stale = s.minute[svc, slot] != minute
    s.rows[svc[stale], slot[stale]] = 0
    s.minute[svc[stale], slot[stale]] = minute[stale]
    bb = block_buckets(ips, kept)
    cell = (svc * sk.RING + slot) * sk._WIDTH
    sec = (np.floor(ts).astype(np.int64) % 60) // sk.BIN_S
    k = kept.astype(np.int32)
    has_p, has_b = pb >= 0, (bb >= 0) & kept
    flat = s.rows.reshape(-1)
    np.add.at(flat, cell + sk._RAW, 1)
    np.add.at(flat, cell[kept] + sk._CNT, 1)
    np.add.at(flat, cell + sk._SEC + sec, 1)
    np.add.at(flat, cell[has_p] + sk._PR + pb[has_p], 1)
    np.add.at(flat, cell[has_p] + sk._PC + pb[has_p], k[has_p])
    np.add.at(flat, cell[has_b] + sk._BC + bb[has_b], 1)


def random_batch(
    rng: np.random.Generator, t0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    n = int(rng.integers(0, 300))
    svc = rng.integers(0, 6, n)
    # Mostly the last few minutes, some far behind the ring, some spread over it.
    ts = t0 + rng.choice([rng.uniform(-120, 60), rng.uniform(-3000, 60)], n) + rng.uniform(0, 1, n)
    pb = np.where(rng.random(n) < 0.8, rng.integers(0, sk.BUCKETS, n), -1)
    ips: list[str | None] = [
        None if r < 0.5 else f"203.0.{int(r * 100)}.7" if r < 0.9 else "10.1.2.3"
        for r in rng.random(n).tolist()
    ]
    counts = np.where(rng.random(n) < 0.9, 1, rng.integers(2, 50, n))
    kept = rng.random(n) < 0.85
    return svc.astype(np.int64), ts, pb.astype(np.int64), ips, counts.astype(np.int64), kept


@pytest.mark.parametrize("seed", range(20))
def test_compiled_sketches_equal_the_numpy_sums(seed: int) -> None:
    rng = np.random.default_rng(seed)
    new, ref = Sources(), Sources()
    t0 = 1_740_960_000.0
    for step in range(12):
        batch = random_batch(rng, t0 + 45.0 * step)
        new.add(*batch)
        reference_add(ref, *batch)
        assert new.newest == ref.newest
        assert new.dump() == ref.dump()
    assert len(new.rows) == len(ref.rows)


def test_a_slice_of_a_wider_table_is_taken_as_a_column() -> None:
    """The pipeline hands services as a column of its combination table (not contiguous)."""
    table = np.arange(40, dtype=np.int64).reshape(10, 4) % 3
    ts = 1_740_960_000.0 + np.arange(10.0)
    ones = np.ones(10, np.int64)
    a, b = Sources(), Sources()
    a.add(table[:, 1], ts, ones * 3, [None] * 10, ones, np.ones(10, bool))
    b.add(table[:, 1].copy(), ts, ones * 3, [None] * 10, ones, np.ones(10, bool))
    assert a.dump() == b.dump()
