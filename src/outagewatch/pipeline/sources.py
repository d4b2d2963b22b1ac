"""Where each service's recent reports came from: the evidence for fake-report floods.

Deduplication already counts a person once per service per window, so a bot that repeats
one id gains little. A flood gets through by rotating ids, by using a few dozen ids, or by
scripting many clients: its counted reports then come from few addresses, from reporters
who each sent far more than people do, or at machine-like regular intervals. A genuine
outage looks the other way round: thousands of people, from as many address blocks,
arriving irregularly.

Per (service, minute), for the last `RING` minutes (`WINDOW` are judged; the pipeline adds
in-order reports up to `SOURCES_CHUNK` minutes ahead of its ticks), three small hashed
sketches and a histogram of arrivals are kept (bounded memory: a fixed-size row per
service):

- raw and counted reports per *reporter bucket* (crc32 of the person, mod `BUCKETS`);
- counted reports per *address-block bucket* (IPv4 /24, IPv6 /48) of public addresses only:
  a loopback or private address is a proxy's or a test's, not a person's, and reports
  forwarded with the operator token carry no address at all;
- raw reports per 5 seconds of the minute.

`assess` reads them over an incident's recent minutes and returns a `Verdict`. Hash
buckets merge distinct sources, so "effective number of blocks" saturates near `BUCKETS`:
the rules only ask whether it is *small*, which collisions can only make look smaller for
a diverse crowd by a little, and never larger for a concentrated one. Buckets come from
crc32, not Python's per-process `hash`, so every process gives the same verdicts.

Pure state: no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outagewatch.jit import njit

BUCKETS = 32
WINDOW = 16  # minutes judged at most (the dedup window and one more)
# The pipeline adds in-order reports at most this many minutes ahead of its ticks:
SOURCES_CHUNK = 8
RING = WINDOW + SOURCES_CHUNK + 2  # minutes kept per service
BIN_S = 5  # arrivals are counted per 5 seconds of the minute
BINS = 60 // BIN_S
_PR = 0  # raw reports per reporter bucket
_PC = _PR + BUCKETS  # counted reports per reporter bucket
_BC = _PC + BUCKETS  # counted reports per address-block bucket
_SEC = _BC + BUCKETS  # raw reports per 5 seconds of the minute
_RAW = _SEC + BINS  # raw reports
_CNT = _RAW + 1  # counted reports
_WIDTH = _CNT + 1

# What a flood looks like (each rule needs enough reports to judge by):
MIN_REPORTS = 10  # counted reports in the window before any rule applies
MAX_EFFECTIVE_BLOCKS = 6.0  # counted reports from at most about this many address blocks
HEAVY_RATIO = 10.0  # a reporter bucket is "heavy" when it sent this many reports per counted
HEAVY_SHARE = 0.6  # ...and at least this share of counted reports came from heavy buckets
REGULAR_MIN_PER_MINUTE = 120  # minutes with at least this many raw reports are timed...
REGULAR_MIN_MINUTES = 3  # ...and at least this many of them are needed
MAX_DISPERSION = 0.25  # variance/mean of 5-second counts: ~1 for people, ~0 for a timer
# A suspected flood is cleared only when the window looks clearly like people (hysteresis):
CLEAR_EFFECTIVE_BLOCKS = 12.0
CLEAR_HEAVY_SHARE = 0.3
CLEAR_DISPERSION = 0.5
CLEAR_RATIO = 2.0  # ...and the people's counted reports are a surge of their own


@dataclass
class Verdict:
    suspected: bool
    evidence: list[str] = field(default_factory=list)


def block_of(ip: str) -> str | None:
    """The address block a public address belongs to (/24 or /48), else None."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        if any(addr in n for n in _PRIVATE_V4):
            return None
        return str(ipaddress.ip_network(f"{addr}/24", strict=False))
    if addr.ipv4_mapped is not None:
        return block_of(str(addr.ipv4_mapped))
    if addr in _PRIVATE_V6:
        return None
    return str(ipaddress.ip_network(f"{addr}/48", strict=False))


# Where a proxy or a NAT in front of the server sits: such an address says nothing of who
# reported (documentation ranges are kept: they are what examples and the demo use).
_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
_PRIVATE_V6 = ipaddress.IPv6Network("fc00::/7")


def _bucket(value: str) -> int:
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % BUCKETS


def person_buckets(persons: Sequence[str | None], buckets: int = BUCKETS) -> NDArray[np.int64]:
    """The reporter bucket of each report, -1 for none, one person at a time (the pipeline
    has them from its one compiled pass over a batch's reporters, `Dedup.person_hashes`,
    which comes here only when some reporter holds a newline)."""
    crc = zlib.crc32
    return np.asarray(
        [crc(p.encode("utf-8", "surrogatepass")) % buckets if p else -1 for p in persons],
        np.int64,
    )


# Addresses that need the careful path (`block_of`): IPv6, and IPv4 whose first octet may
# make them loopback, private, link-local or CGNAT.
_CAREFUL = ("0.", "10.", "127.", "100.", "169.", "172.", "192.")


def block_buckets(ips: Sequence[str | None], kept: NDArray[np.bool_]) -> NDArray[np.int64]:
    """The address-block bucket of each counted report, -1 for none or not counted: the
    common dotted public IPv4 in one pass (the block's text is what is hashed), the rest
    (marked -2 on the way) through `_block_bucket`."""
    if ips.count(None) == len(ips):  # no addresses (most imports): nothing to hash
        return np.full(len(ips), -1, np.int64)
    crc = zlib.crc32
    out = [
        (
            -2
            if ip.startswith(_CAREFUL) or ":" in ip or "." not in ip
            else crc((ip[: ip.rfind(".")] + ".0/24").encode()) % BUCKETS
        )
        if ip and k
        else -1
        for ip, k in zip(ips, kept.tolist(), strict=True)
    ]
    if -2 in out:
        for i in [i for i, b in enumerate(out) if b == -2]:
            out[i] = _block_bucket(ips[i])  # type: ignore[arg-type]
    return np.asarray(out, np.int64)


@njit(cache=True, nogil=True)
def _taken(
    svc: NDArray[np.int64], ts: NDArray[np.float64], counts: NDArray[np.int64], newest: int
) -> tuple[int, int]:
    """(the newest minute of the single reports, at least `newest`; the highest service of
    those the ring still holds, -1 for none): what `_accumulate` will take."""
    for j in range(svc.shape[0]):
        if counts[j] == 1:
            newest = max(newest, math.floor(ts[j] / 60.0))
    top = -1
    for j in range(svc.shape[0]):
        if counts[j] == 1 and math.floor(ts[j] / 60.0) > newest - RING:
            top = max(top, svc[j])
    return newest, top


Columns = tuple[
    NDArray[np.int64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64],
    NDArray[np.int64], NDArray[np.bool_],
]  # fmt: skip
"""A batch's (service, ts, count, reporter bucket, address-block bucket, kept) columns."""


@njit(cache=True, nogil=True)
def _accumulate(
    rows: NDArray[np.int32], held: NDArray[np.int64], cols: Columns, newest: int
) -> None:
    """Add the single reports of the last RING minutes (before `newest`) to the sketches:
    a slot that holds an older minute is cleared first (minutes within RING of each other
    have distinct slots, so no two minutes of a batch share one)."""
    svc, ts, counts, pb, bb, kept = cols
    for j in range(svc.shape[0]):
        if counts[j] != 1:
            continue
        minute = math.floor(ts[j] / 60.0)
        if minute <= newest - RING:
            continue
        s = svc[j]
        slot = minute % RING
        if held[s, slot] != minute:
            rows[s, slot, :] = 0
            held[s, slot] = minute
        row = rows[s, slot]
        row[_RAW] += 1
        row[_SEC + (math.floor(ts[j]) % 60) // BIN_S] += 1
        if kept[j]:
            row[_CNT] += 1
        if pb[j] >= 0:
            row[_PR + pb[j]] += 1
            if kept[j]:
                row[_PC + pb[j]] += 1
        if bb[j] >= 0 and kept[j]:
            row[_BC + bb[j]] += 1


class Sources:
    """Per-service sketches of the last `WINDOW` minutes of reports (see the module doc)."""

    def __init__(self) -> None:
        self.rows = np.zeros((0, RING, _WIDTH), np.int32)
        self.minute = np.full((0, RING), -1, np.int64)  # which minute each slot holds
        self.newest = -1  # newest minute seen

    def _grow(self, n: int) -> None:
        have = len(self.rows)
        if n <= have:
            return
        size = max(n, 2 * have, 16)
        rows = np.zeros((size, RING, _WIDTH), np.int32)
        rows[:have] = self.rows
        minute = np.full((size, RING), -1, np.int64)
        minute[:have] = self.minute
        self.rows, self.minute = rows, minute

    def add(
        self,
        svc: NDArray[np.int64],
        ts: NDArray[np.float64],
        pb: NDArray[np.int64],
        ips: Sequence[str | None],
        counts: NDArray[np.int64],
        kept: NDArray[np.bool_],
    ) -> None:
        """Record a batch of accepted reports (`pb`: their reporters' buckets, -1 for none,
        `person_buckets`; `kept`: counted after deduplication). Pre-aggregated reports
        (`count` > 1) are not people and are left out."""
        if len(svc) == 0:
            return
        # The compiled passes take one layout and dtype of each column (`outagewatch.jit`).
        svc = np.ascontiguousarray(svc, np.int64)
        ts = np.ascontiguousarray(ts, np.float64)
        counts = np.ascontiguousarray(counts, np.int64)
        self.newest, top = _taken(svc, ts, counts, self.newest)
        if top < 0:  # none taken: all pre-aggregated, or older than the ring
            return
        self._grow(top + 1)
        bb = block_buckets(ips, kept)
        pb = np.ascontiguousarray(pb, np.int64)
        kept = np.ascontiguousarray(kept, np.bool_)
        _accumulate(self.rows, self.minute, (svc, ts, counts, pb, bb, kept), self.newest)

    def window(self, svc: int, lo: int, hi: int) -> NDArray[np.int64]:
        """Rows of the minutes lo..hi (inclusive) this service has, as int64."""
        if svc >= len(self.rows):
            return np.zeros((0, _WIDTH), np.int64)
        held = self.minute[svc]
        sel = (held >= lo) & (held <= hi)
        rows: NDArray[np.int64] = self.rows[svc][sel].astype(np.int64)
        return rows

    def assess(
        self, svc: int, lo: int, hi: int, *, was: bool = False, expected: float = 0.0
    ) -> Verdict:
        """Does the service's traffic of minutes lo..hi look like a flood? `was`: it was
        suspected before (a suspicion clears only on clear signs of people, and only when
        those people are a surge of their own: at least `CLEAR_RATIO` times and
        `MIN_REPORTS` more than the `expected` counted reports of the judged minutes; an
        ordinary busy minute after a short flood says nothing about who sent the flood)."""
        rows = self.window(svc, max(lo, hi - WINDOW + 1), hi)
        if len(rows) == 0:
            return Verdict(was)
        counted = int(rows[:, _CNT].sum())
        raw = int(rows[:, _RAW].sum())
        if counted < MIN_REPORTS:
            return Verdict(was)
        evidence: list[str] = []
        clear = 0  # rules that say "people", out of those that could be judged
        judged = 0
        # 1. Few addresses.
        blocks = rows[:, _BC : _BC + BUCKETS].sum(axis=0)
        with_ip = int(blocks.sum())
        if with_ip >= MIN_REPORTS and with_ip * 2 >= counted:
            judged += 1
            eff = with_ip**2 / float((blocks**2).sum())
            if eff <= MAX_EFFECTIVE_BLOCKS:
                evidence.append(
                    f"{with_ip:,} counted reports came from about {eff:.0f} address "
                    + ("block" if round(eff) == 1 else "blocks")
                )
            elif eff >= CLEAR_EFFECTIVE_BLOCKS:
                clear += 1
        # 2. Reporters who each sent far more than people do.
        p_raw = rows[:, _PR : _PR + BUCKETS].sum(axis=0)
        p_cnt = rows[:, _PC : _PC + BUCKETS].sum(axis=0)
        with_person = int(p_cnt.sum())
        if with_person >= MIN_REPORTS:
            judged += 1
            heavy = (p_cnt > 0) & (p_raw >= HEAVY_RATIO * p_cnt)
            share = float(p_cnt[heavy].sum()) / with_person
            if share >= HEAVY_SHARE:
                sent = int(p_raw[heavy].sum())
                evidence.append(
                    f"{share:.0%} of the counted reports came from reporters who sent "
                    f"{sent:,} reports for {int(p_cnt[heavy].sum()):,} counted "
                    f"(≥ {HEAVY_RATIO:.0f} each)"
                )
            elif share <= CLEAR_HEAVY_SHARE:
                clear += 1
        # 3. Machine-like regularity.
        busy = rows[rows[:, _RAW] >= REGULAR_MIN_PER_MINUTE]
        if len(busy) >= REGULAR_MIN_MINUTES:
            judged += 1
            secs = busy[:, _SEC : _SEC + BINS].astype(np.float64)
            disp = float((secs.var(axis=1) / secs.mean(axis=1)).mean())
            if disp <= MAX_DISPERSION:
                evidence.append(
                    f"reports arrived at machine-like regular intervals over {len(busy)} "
                    f"minutes (variance/mean of 5-second counts {disp:.2f}; people give "
                    "about 1)"
                )
            elif disp >= CLEAR_DISPERSION:
                clear += 1
        if evidence:
            evidence.append(f"{raw:,} reports, {counted:,} counted after deduplication")
            return Verdict(True, evidence)
        if was and clear < judged:
            return Verdict(True)  # not yet clearly people: the earlier evidence stands
        if was and (counted < CLEAR_RATIO * expected or counted - expected < MIN_REPORTS):
            return Verdict(True)  # people, but no surge of theirs: the evidence stands
        return Verdict(False)

    # ---------------------------------------------------------------- persistence
    def dump(self) -> dict[str, Any]:
        """The sketches' minutes of the ring (older slots are never read, and are left out:
        adding reports chunk by chunk or only the ring's last minutes at once dumps the same
        state)."""
        held = self.minute > self.newest - RING
        live = np.flatnonzero(held.any(axis=1))
        minute = np.where(held[live], self.minute[live], -1)
        rows = np.where(held[live][:, :, None], self.rows[live], 0).astype(np.int32)
        return {
            "newest": self.newest,
            "svc": live.tolist(),
            "minute": minute.tolist(),
            "rows": rows.tobytes(),
        }

    def load(self, d: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.newest = int(d["newest"])
        svc = np.asarray(d["svc"], np.int64)
        if len(svc):
            self._grow(int(svc.max()) + 1)
            self.minute[svc] = np.asarray(d["minute"], np.int64)
            rows = np.frombuffer(d["rows"], np.int32).reshape(len(svc), RING, _WIDTH)
            self.rows[svc] = rows


def _block_bucket(ip: str) -> int:
    """The bucket of the address's block, -1 for none (`block_of`)."""
    block = block_of(ip)
    return -1 if block is None else _bucket(block)
