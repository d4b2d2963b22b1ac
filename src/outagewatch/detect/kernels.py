"""Compiled inner loops of the tick (numba), for what numpy would do in a dozen passes.

Each kernel is a plain loop over the series; numba compiles it once per machine and caches
the machine code next to this file.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True, nogil=True)
def window_scan(
    ring_count: NDArray[np.float32],
    ring_expected: NDArray[np.float32],
    rows: NDArray[np.int64],
    n: int,
    windows: NDArray[np.int64],
    mu: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    min_ratio: float,
    min_excess: float,
    sums: NDArray[np.float64],
    expected: NDArray[np.float64],
    candidate: NDArray[np.bool_],
) -> bool:
    """One pass over the newest minutes of every series.

    Writes this minute's expectation `mu` into the ring (row `rows[0]`), the sums of counts
    and of expectations over each window (`sums`, `expected`: (n, len(windows))), and which
    windows pass the cheap guards of a surge (`candidate`). Returns whether any did.
    """
    newest = rows[0]
    for i in range(n):
        ring_expected[newest, i] = mu[i]
    sums[:n] = 0.0
    expected[:n] = 0.0
    k = 0
    acc_c = np.zeros(n)
    acc_e = np.zeros(n)
    for j in range(rows.shape[0]):
        r = rows[j]
        for i in range(n):
            acc_c[i] += ring_count[r, i]
            acc_e[i] += ring_expected[r, i]
        if j + 1 == windows[k]:
            for i in range(n):
                sums[i, k] = acc_c[i]
                expected[i, k] = acc_e[i]
            k += 1
            if k == windows.shape[0]:
                break
    found = False
    for i in range(n):
        ok = eligible[i]
        for w in range(windows.shape[0]):
            c = ok and sums[i, w] >= min_ratio * expected[i, w]
            c = c and sums[i, w] - expected[i, w] >= min_excess
            candidate[i, w] = c
            found = found or c
    return found
