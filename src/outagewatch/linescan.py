"""A compiled reader of report lines of the plain shape, for bulk decoding (events.py).

Most report lines are flat JSON objects whose values are plain strings or whole numbers:

    {"type":"report","ts":"2025-03-03T00:00:08Z","service":"x","country":"FR","reporter":"p0"}

`scan` reads such lines in one compiled pass over the bytes of a whole batch: per line,
whether it is of that shape, its time and count, where its fields' values are, and which
earlier line had the same (service, country, problem), so that the caller resolves each
distinct one once per batch. A line it does not take (any other type, a value with an
escape or a byte that is not valid UTF-8, `null`, a fraction, an unknown or repeated field, a time
neither "YYYY-MM-DDTHH:MM:SSZ" nor whole epoch seconds, a time out of range, ...) is left
to the exact decoder (msgspec), which gives it the result or the rejection it always did:
this path only takes what that one accepts, with the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from outagewatch.jit import njit

# Fields of a report, by position in `spans` (start and end offsets of the value's text).
SERVICE, COUNTRY, PROBLEM, REPORTER, IP, REGION, CITY = range(7)
FIELDS = 7
MAX_PROBES = 32  # slots a look-up of `_intern` may try (the table is at most half full)

_TYPE, _TS, _COUNT = 100, 101, 102  # the fields that are not kept as spans
_NAMES = (
    (b"service", SERVICE),
    (b"country", COUNTRY),
    (b"problem", PROBLEM),
    (b"reporter", REPORTER),
    (b"ip", IP),
    (b"region", REGION),
    (b"city", CITY),
    (b"type", _TYPE),
    (b"ts", _TS),
    (b"count", _COUNT),
)
# Each name as a little-endian word of its bytes (none is longer than 8), for `_field`.
_NAME_WORDS = np.array([int.from_bytes(n, "little") for n, _ in _NAMES], np.uint64)
_NAME_FIELDS = np.array([f for _, f in _NAMES], np.int64)
_REPORT = np.frombuffer(b"report", np.uint8)
# What each byte is inside a plain string (`_string_end`): 0 printable ASCII, 1 the closing
# quote, 2 an escape or a control character (no plain string), 3 DEL or beyond ASCII.
_STRING_BYTES = np.zeros(256, np.uint8)
_STRING_BYTES[:32] = 2
_STRING_BYTES[34] = 1
_STRING_BYTES[92] = 2
_STRING_BYTES[127:] = 3
_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], np.int64)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


@njit(cache=True, nogil=True, inline="always")
def _at(buf: NDArray[np.uint8], i: int) -> int:
    """buf[i] by an unsigned index: numba then leaves out the wrap-around of a negative one
    (a shift and an add on every byte read: ~8% of a scan)."""
    return buf[np.uint64(i)]  # type: ignore[no-any-return]


@njit(cache=True, nogil=True, inline="always")
def _word(buf: NDArray[np.uint8], a: int, n: int) -> np.uint64:
    """The `n` (at most 8) bytes at buf[a] as one little-endian word."""
    w = np.uint64(0)
    for j in range(n):
        w |= np.uint64(_at(buf, a + j)) << np.uint64(8 * j)
    return w


@njit(cache=True, nogil=True, inline="always")
def _ws(buf: NDArray[np.uint8], i: int, end: int) -> int:
    """The first position at or after `i` that is not JSON whitespace within a line (a
    space, tab or carriage return: a newline ends the line)."""
    while i < end:
        c = _at(buf, i)
        if c != 32 and c != 9 and c != 13:  # noqa: PLR1714 (numba: plain comparisons)
            break
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _string_end(buf: NDArray[np.uint8], i: int, end: int) -> int:
    """Position of the closing quote of a plain string of printable ASCII (no escape) whose
    text starts at `i`; -1 when it is no such string; -2 - j when a byte beyond printable
    ASCII is at j (DEL, or UTF-8 beyond ASCII: `_string_end_utf8` goes on from there, kept
    out of this loop, which every value of every line runs through, so that it stays a
    tight one: even `c > 127` here costs ~4% of the scan)."""
    while i < end:
        k = _STRING_BYTES[_at(buf, i)]  # one look-up, not four comparisons, a byte
        if k:
            if k == 1:  # "
                return i
            return -1 if k == 2 else -2 - i
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _string_end_utf8(buf: NDArray[np.uint8], j: int, end: int) -> int:
    """`_string_end` of a string with a byte beyond printable ASCII at `j`: the position of
    its closing quote when all of it is valid UTF-8 as Python's strict decoder takes it
    (DEL is, as JSON allows; no escape, no other control character), or -1. Runs of
    printable ASCII are `_string_end`'s."""
    while True:
        i = j + 1 if _at(buf, j) == 127 else _utf8_next(buf, j, end)
        if i < 0:
            return -1
        e = _string_end(buf, i, end)
        if e >= -1:
            return e
        j = -2 - e


@njit(cache=True, nogil=True)
def _utf8_next(buf: NDArray[np.uint8], i: int, end: int) -> int:
    """The position after the UTF-8 sequence at buf[i] (a byte >= 0x80), or -1 when it is
    not one Python's strict decoder takes (RFC 3629: no overlong form, no surrogate, nothing
    past U+10FFFF)."""
    c = _at(buf, i)
    n, lo, hi = _utf8_lead(c)
    if n == 0 or i + n >= end or _at(buf, i + 1) < lo or _at(buf, i + 1) > hi:
        return -1
    for k in range(2, n + 1):
        if _at(buf, i + k) < 0x80 or _at(buf, i + k) > 0xBF:
            return -1
    return i + n + 1


@njit(cache=True, nogil=True, inline="always")
def _utf8_lead(c: int) -> tuple[int, int, int]:
    """(continuation bytes, range of the first of them) of a UTF-8 lead byte; (0, 0, 0)
    for a byte no valid sequence starts with."""
    if 0xC2 <= c <= 0xDF:
        return 1, 0x80, 0xBF
    if c == 0xE0:
        return 2, 0xA0, 0xBF
    if c == 0xED:
        return 2, 0x80, 0x9F
    if 0xE1 <= c <= 0xEF:
        return 2, 0x80, 0xBF
    if c == 0xF0:
        return 3, 0x90, 0xBF
    if 0xF1 <= c <= 0xF3:
        return 3, 0x80, 0xBF
    if c == 0xF4:
        return 3, 0x80, 0x8F
    return 0, 0, 0


@njit(cache=True, nogil=True, inline="always")
def _field(buf: NDArray[np.uint8], a: int, b: int) -> int:
    """Which field the name buf[a:b] is (see _NAMES), or -1: its bytes (at most 8) as one
    little-endian word, compared with each name's."""
    n = b - a
    if n < 2 or n > 8:
        return -1
    w = _word(buf, a, n)
    for k in range(len(_NAME_WORDS)):
        if w == _NAME_WORDS[k]:
            return int(_NAME_FIELDS[k])
    return -1


@njit(cache=True, nogil=True, inline="always")
def _two(buf: NDArray[np.uint8], a: int) -> int:
    """The number written by the two ASCII digits at buf[a]."""
    return int(_at(buf, a)) * 10 + int(_at(buf, a + 1)) - 528  # two ASCII digits: 48 * 11


@njit(cache=True, nogil=True, inline="always")
def _zulu(buf: NDArray[np.uint8], a: int, last: NDArray[np.int64]) -> float:
    """Epoch seconds of "YYYY-MM-DDTHH:MM:SSZ" at buf[a:a+20] (a proleptic Gregorian UTC
    date, as events.parse_ts reads it), or -1.0 when it is not a valid such time.

    `last` keeps the last valid date's ten bytes (two words) and its day number: the lines
    of a batch mostly share their date, whose checks and calendar arithmetic (integer
    divisions) are then skipped."""
    head = np.int64(_word(buf, a, 8))  # (ASCII: the top bit is 0)
    tail = np.int64(_word(buf, a + 8, 2))
    if (
        _at(buf, a + 10) != 84
        or _at(buf, a + 13) != 58
        or _at(buf, a + 16) != 58
        or _at(buf, a + 19) != 90
    ):
        return -1.0  # T : : Z
    for j in (11, 12, 14, 15, 17, 18):
        if _at(buf, a + j) < 48 or _at(buf, a + j) > 57:
            return -1.0
    hour = _two(buf, a + 11)
    minute = _two(buf, a + 14)
    sec = _two(buf, a + 17)
    if hour > 23 or minute > 59 or sec > 59:
        return -1.0
    if head == last[0] and tail == last[1] and last[2] >= 0:
        days = last[2]  # the date of the line before: valid, its day number known
    else:
        days = _days(buf, a)
        if days < 0:
            return -1.0
        last[0], last[1], last[2] = head, tail, days
    return float(days * 86_400 + hour * 3600 + minute * 60 + sec)


@njit(cache=True, nogil=True, inline="always")
def _days(buf: NDArray[np.uint8], a: int) -> int:
    """Days from 1970-01-01 to the date "YYYY-MM-DD" at buf[a:a+10], or -1 when it is no
    valid date (a proleptic Gregorian one of years 1-9999; the caller keeps dates before
    the epoch out by its minimum time)."""
    for j in (4, 7):
        if _at(buf, a + j) != 45:  # -
            return -1
    for j in (0, 1, 2, 3, 5, 6, 8, 9):
        if _at(buf, a + j) < 48 or _at(buf, a + j) > 57:
            return -1
    year = _two(buf, a) * 100 + _two(buf, a + 2)
    month = _two(buf, a + 5)
    day = _two(buf, a + 8)
    if month < 1 or month > 12:
        return -1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if day < 1 or day > _DAYS_IN_MONTH[month] + (1 if leap and month == 2 else 0):
        return -1
    y = year - 1
    return (
        365 * y + y // 4 - y // 100 + y // 400
        + int(_DAYS_BEFORE_MONTH[month]) + (1 if leap and month > 2 else 0) + day - 1
        - 719_162
    )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _line(
    buf: NDArray[np.uint8],
    a: int,
    spans: NDArray[np.int64],
    row: int,
    max_count: int,
    last: NDArray[np.int64],
) -> tuple[float, int, int]:
    """Read the line that starts at buf[a] (and ends at a newline or the end of `buf`) into
    spans[row]: (ts, count, where the line ends), ts -1.0 (and no end) when the line is not
    of the plain shape (or its time not valid, or its count past `max_count`). `last`: the
    last date read (`_zulu`)."""
    end = len(buf)
    for f in range(FIELDS):
        spans[row, 2 * f] = -1
        spans[row, 2 * f + 1] = -1
    ts = -1.0
    count = 1
    seen = 0
    i = a
    if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
        i = _ws(buf, i, end)
    if i >= end or _at(buf, i) != 123:  # {
        return -1.0, 0, -1
    i = i + 1
    if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
        i = _ws(buf, i, end)
    while True:
        if i >= end or _at(buf, i) != 34:
            return -1.0, 0, -1
        name_end = _string_end(buf, i + 1, end)
        if name_end < 0:
            return -1.0, 0, -1
        f = _field(buf, i + 1, name_end)
        if f < 0:
            return -1.0, 0, -1  # a field reports do not have: msgspec's verdict
        bit = 1 << (f if f < FIELDS else f - _TYPE + FIELDS)
        if seen & bit:
            return -1.0, 0, -1  # repeated
        seen |= bit
        i = name_end + 1
        if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
            i = _ws(buf, i, end)
        if i >= end or _at(buf, i) != 58:  # :
            return -1.0, 0, -1
        i = i + 1
        if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
            i = _ws(buf, i, end)
        if i >= end:
            return -1.0, 0, -1
        if f == _COUNT or (f == _TS and _at(buf, i) != 34):  # a whole number
            c = _at(buf, i)
            if c < 49 or c > 57:  # 1-9: no sign, no leading zero
                return -1.0, 0, -1
            v = 0
            while i < end and 48 <= _at(buf, i) <= 57:
                v = v * 10 + int(_at(buf, i)) - 48
                if v > max_count:  # no count; as a time, far out of range
                    return -1.0, 0, -1
                i += 1
            if f == _COUNT:
                count = v
            else:
                ts = float(v)  # exact: v < 2**53 (a fraction or exponent is no plain line)
        else:
            if _at(buf, i) != 34:
                return -1.0, 0, -1
            s = i + 1
            e = _string_end(buf, s, end)
            if e < -1:
                e = _string_end_utf8(buf, -2 - e, end)
            if e < 0:
                return -1.0, 0, -1
            if f == _TYPE:
                if e - s != 6:
                    return -1.0, 0, -1
                for j in range(6):
                    if _at(buf, s + j) != _REPORT[j]:
                        return -1.0, 0, -1
            elif f == _TS:
                if e - s != 20:
                    return -1.0, 0, -1
                ts = _zulu(buf, s, last)
                if ts < 0.0:
                    return -1.0, 0, -1
            else:
                spans[row, 2 * f] = s
                spans[row, 2 * f + 1] = e
            i = e + 1
        if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
            i = _ws(buf, i, end)
        if i >= end:
            return -1.0, 0, -1
        if _at(buf, i) == 44:  # ,
            i = i + 1
            if i < end and _at(buf, i) <= 32:  # whitespace (rare): skip it
                i = _ws(buf, i, end)
            continue
        if _at(buf, i) == 125:  # }
            break
        return -1.0, 0, -1
    i = _ws(buf, i + 1, end)
    if i < end and _at(buf, i) != 10:
        return -1.0, 0, -1
    need = (1 << (_TYPE - _TYPE + FIELDS)) | (1 << (_TS - _TYPE + FIELDS)) | 1 | 2
    if seen & need != need:  # type, ts, service and country are required
        return -1.0, 0, -1
    return ts, count, i


@njit(cache=True, nogil=True, inline="always")
def _same(buf: NDArray[np.uint8], a0: int, a1: int, b0: int, b1: int) -> bool:
    """Whether two values are the same text (a missing one is only the same as another)."""
    if (a0 < 0) != (b0 < 0) or a1 - a0 != b1 - b0:
        return False
    for j in range(a1 - a0):  # noqa: SIM110 (numba: no generators)
        if _at(buf, a0 + j) != _at(buf, b0 + j):
            return False
    return True


_PRIME = 0x100000001B3  # FNV's 64-bit prime


@njit(cache=True, nogil=True, inline="always")
def _hash(buf: NDArray[np.uint8], a: int, b: int, h: np.uint64) -> np.uint64:
    """A hash of buf[a:b], continuing from `h` (a missing value hashes as one byte 0xFF):
    FNV-1a's step over 8 bytes at a time (a byte at a time is a chain of dependent
    multiplies, ~20% of a scan), the last bytes packed into one word with the end mark
    0xFE. Its low bits are not mixed: `_mixed` before a table slot is taken from it."""
    prime = np.uint64(_PRIME)
    if a < 0:
        return (h ^ np.uint64(0xFF)) * prime
    j = a
    while j + 8 <= b:
        h = (h ^ _word(buf, j, 8)) * prime
        j += 8
    w = np.uint64(0xFE)  # ends a value
    for t in range(b - j):
        w = (w << np.uint64(8)) | np.uint64(_at(buf, j + t))
    return (h ^ w) * prime


@njit(cache=True, nogil=True, inline="always")
def _mixed(h: np.uint64) -> np.uint64:
    """`h` with every bit mixed into the low ones (MurmurHash3's 64-bit finaliser)."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, nogil=True)
def _intern(
    buf: NDArray[np.uint8],
    spans: NDArray[np.int64],
    ok: NDArray[np.bool_],
    fields: tuple[int, ...],
    max_probes: int = MAX_PROBES,
) -> NDArray[np.int64]:
    """For every taken line, the first taken line with the same values of `fields` (itself
    when none before it): an exact comparison of the bytes, a hash only to find them.

    A line whose look-up takes more than `max_probes` slots (values made to collide: the
    hash is no secret) is its own first, and not remembered: the caller then resolves it
    on its own, as lines of the exact path are, and the work stays linear."""
    n = len(ok)
    size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, np.int64)
    first = np.full(n, -1, np.int64)
    for r in range(n):
        if not ok[r]:
            continue
        h = np.uint64(0xCBF29CE484222325)
        for f in fields:
            h = _hash(buf, spans[r, 2 * f], spans[r, 2 * f + 1], h)
        slot = np.int64(_mixed(h) & np.uint64(size - 1))
        first[r] = r
        for _ in range(max_probes):
            other = table[slot]
            if other < 0:
                table[slot] = r
                break
            same = True
            for f in fields:
                if not _same(
                    buf, spans[r, 2 * f], spans[r, 2 * f + 1],
                    spans[other, 2 * f], spans[other, 2 * f + 1],
                ):  # fmt: skip
                    same = False
                    break
            if same:
                first[r] = other
                break
            slot = (slot + 1) & (size - 1)
    return first


@njit(cache=True, nogil=True)
def scan(
    buf: NDArray[np.uint8], n: int, min_ts: float, max_ts: float, max_count: int
) -> tuple[
    NDArray[np.int64], NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64],
    NDArray[np.int64], NDArray[np.int64],
]:  # fmt: skip
    """Read the `n` lines of `buf` (lines joined by newlines): (where each starts, taken,
    ts, count, spans, first line of the same (service, country, problem)). A line is taken
    when it is a report of the plain shape with a valid time in [min_ts, max_ts] and a count
    of at most `max_count` (events.MIN_TS, the decoder's max_ts, events.MAX_COUNT)."""
    starts = np.empty(n + 1, np.int64)
    ok = np.zeros(n, np.bool_)
    ts = np.zeros(n, np.float64)
    count = np.ones(n, np.int64)
    spans = np.empty((n, 2 * FIELDS), np.int64)
    last = np.full(3, -1, np.int64)  # the last date read: its bytes and day (`_zulu`)
    a = 0
    for r in range(n):
        starts[r] = a
        t, c, e = _line(buf, a, spans, r, max_count, last)
        if min_ts <= t <= max_ts:
            ok[r] = True
            ts[r] = t
            count[r] = c
        if e < 0:  # not read to its end: find it
            e = a
            while e < len(buf) and _at(buf, e) != 10:
                e += 1
        a = e + 1
    starts[n] = a
    return starts, ok, ts, count, spans, _intern(buf, spans, ok, (SERVICE, COUNTRY, PROBLEM))


@njit(cache=True, nogil=True)
def joined_values(
    buf: NDArray[np.uint8], spans: NDArray[np.int64], rows: NDArray[np.int64], f: int
) -> NDArray[np.uint8]:
    """The values of field `f` of the lines `rows` (taken lines: valid UTF-8, no newline),
    joined by newlines, an absent one empty: one `split` makes them strings."""
    size = max(len(rows) - 1, 0)
    for r in rows:
        if spans[r, 2 * f] >= 0:
            size += spans[r, 2 * f + 1] - spans[r, 2 * f]
    out = np.empty(size, np.uint8)
    o = 0
    for k in range(len(rows)):
        r = rows[k]
        if k:
            out[o] = 10
            o += 1
        a = spans[r, 2 * f]
        if a >= 0:
            for j in range(a, spans[r, 2 * f + 1]):
                out[o] = _at(buf, j)
                o += 1
    return out


def _crc_table() -> NDArray[np.int64]:
    """zlib's CRC-32 (reflected polynomial 0xEDB88320) table, one entry per byte value."""
    table = np.empty(256, np.int64)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[b] = c
    return table


_CRC = _crc_table()


def joined(texts: Sequence[str]) -> NDArray[np.uint8] | None:
    """The texts joined by newlines, as UTF-8 bytes (lone surrogates kept), for the compiled
    passes over newline-separated parts; None when some text holds a newline (its parts
    would not be the texts: the caller takes them one by one)."""
    text = "\n".join(texts)
    if not texts or text.count("\n") != len(texts) - 1:
        return None
    return np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _rotl(x: np.uint64, b: int) -> np.uint64:
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


@njit(cache=True, nogil=True, inline="always")
def _sipround(
    v0: np.uint64, v1: np.uint64, v2: np.uint64, v3: np.uint64
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    v0 += v1
    v1 = _rotl(v1, 13)
    v1 ^= v0
    v0 = _rotl(v0, 32)
    v2 += v3
    v3 = _rotl(v3, 16)
    v3 ^= v2
    v0 += v3
    v3 = _rotl(v3, 21)
    v3 ^= v0
    v2 += v1
    v1 = _rotl(v1, 17)
    v1 ^= v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


@njit(cache=True, nogil=True, inline="always")
def _siphash(buf: NDArray[np.uint8], a: int, e: int, k0: np.uint64, k1: np.uint64) -> np.uint64:
    """SipHash-1-3 of buf[a:e] under the key (k0, k1)."""
    v0 = k0 ^ np.uint64(0x736F6D6570736575)
    v1 = k1 ^ np.uint64(0x646F72616E646F6D)
    v2 = k0 ^ np.uint64(0x6C7967656E657261)
    v3 = k1 ^ np.uint64(0x7465646279746573)
    length = e - a
    full = a + (length // 8) * 8
    i = a
    while i < full:
        m = _word(buf, i, 8)
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
        i += 8
    last = (np.uint64(length & 0xFF) << np.uint64(56)) | _word(buf, full, e - full)
    v3 ^= last
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= np.uint64(0xFF)
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


@njit(cache=True, nogil=True)
def siphash(buf: NDArray[np.uint8], k0: np.uint64, k1: np.uint64) -> np.uint64:
    """SipHash-1-3 (the keyed hash CPython gives strings) of all of `buf` under the key
    (k0, k1), newlines included; 0 for no bytes, and never 0 for some (0 becomes 1), as
    `person_keys` gives each part."""
    if len(buf) == 0:
        return np.uint64(0)
    h = _siphash(buf, 0, len(buf), k0, k1)
    return h if h != np.uint64(0) else np.uint64(1)


@njit(cache=True, nogil=True)
def person_keys(
    buf: NDArray[np.uint8], n: int, k0: np.uint64, k1: np.uint64, buckets: int
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """SipHash-1-3 under the key (k0, k1) (0 for an empty part, never 0 for another: see
    `siphash`) and zlib.crc32 mod `buckets` (-1 for an empty part) of each of the `n`
    newline-separated parts of `buf`, in one pass (the pipeline: every reporter's deduplication key
    and flood-sketch bucket, `pipeline.dedup.Dedup.person_hashes`)."""
    keys = np.empty(n, np.uint64)
    out = np.empty(n, np.int64)
    a = 0
    size = len(buf)
    for r in range(n):
        c = 0xFFFFFFFF
        e = a
        while e < size and _at(buf, e) != 10:
            c = _CRC[(c ^ _at(buf, e)) & 0xFF] ^ (c >> 8)
            e += 1
        if e == a:
            keys[r] = np.uint64(0)
            out[r] = -1
        else:
            h = _siphash(buf, a, e, k0, k1)
            keys[r] = h if h != np.uint64(0) else np.uint64(1)
            out[r] = (c ^ 0xFFFFFFFF) % buckets
        a = e + 1
    return keys, out
