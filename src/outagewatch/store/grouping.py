"""The compiled step of encoding history blocks (`store.codec`): rows grouped by (bucket,
minute) with their counts summed, in that order, without a sort of all of them.

Kept out of `codec` (which servers and every command import) so that only what encodes
blocks loads a kernel (`outagewatch.jit`)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from outagewatch.jit import njit

I64 = NDArray[np.int64]


@njit(cache=True, nogil=True)
def grouped_by_bucket(bucket: I64, m: I64, n: I64, buckets: int) -> tuple[I64, I64]:
    """(the first row of each distinct (bucket, m), the sum of `n` over its rows), in the
    order of (bucket, m): what `codec._grouped` gives for (bucket, m), every bucket in
    [0, buckets). A counting sort by bucket, rows of a bucket in their order, then each
    bucket's rows by m, stably, where they are not in order already (they are when the rows
    come in time order, as a drain's do): O(rows + buckets)."""
    rows = bucket.shape[0]
    start = np.zeros(buckets + 1, np.int64)
    for i in range(rows):
        start[bucket[i] + 1] += 1
    for b in range(buckets):
        start[b + 1] += start[b]
    order = np.empty(rows, np.int64)
    at = start[:-1].copy()
    for i in range(rows):
        b = bucket[i]
        order[at[b]] = i
        at[b] += 1
    ms = np.empty(rows, np.int64)  # m in that order: the passes below read it in sequence
    for t in range(rows):
        ms[t] = m[order[t]]
    first = np.empty(rows, np.int64)
    sums = np.empty(rows, np.int64)
    g = 0
    for b in range(buckets):
        lo, hi = start[b], start[b + 1]
        for t in range(lo + 1, hi):
            if ms[t] < ms[t - 1]:
                by_m = np.argsort(ms[lo:hi], kind="mergesort")
                order[lo:hi] = order[lo:hi][by_m]
                ms[lo:hi] = ms[lo:hi][by_m]
                break
        for t in range(lo, hi):
            i = order[t]
            if t == lo or ms[t] != ms[t - 1]:
                first[g] = i
                sums[g] = n[i]
                g += 1
            else:
                sums[g - 1] += n[i]
    return first[:g], sums[:g]
