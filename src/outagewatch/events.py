"""Events (docs/contract.md §2): typed NDJSON decoding with msgspec, validation against the
catalog.

The decoder turns lines into column batches (`ReportColumns`) for the pipeline's vectorised
core, plus a list of the other event types, plus one `Rejection` per bad line (line number
and reason). A bad line never stops the lines around it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, overload

import msgspec
import numpy as np
from numpy.typing import NDArray

from outagewatch.catalog import OTHER_PROBLEM, Catalog
from outagewatch.geo import normalise_country

# ---------------------------------------------------------------------------- wire types

Timestamp = str | float  # RFC 3339 text (parsed by `parse_ts`) or epoch seconds
MAX_COUNT = 10**12  # no overflow in int64 sums; far beyond any real count
PositiveCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
Indicator = Literal["none", "minor", "major", "critical", "maintenance"]

_SECONDS_Z = {f"{i:02d}Z": float(i) for i in range(60)}  # the "SSZ" end of a time
# Client strings kept in caches and state are bounded: a raw value longer than this is
# resolved without being cached, and a longer person id is kept as its digest.
MAX_CACHED_CHARS = 64
MAX_PERSON_CHARS = 64
DECODE_CHUNK = 2048  # lines decoded and turned into columns at a time (`EventDecoder.decode`)
# From this many lines, `decode` reads the plain report lines with the compiled scanner.
SCAN_MIN_LINES = 64
SCAN_BACKOFF = 16  # batches decoded without it after one where it took under half the lines
MIN_TS = 946_684_800.0  # 2000-01-01: earlier is surely a mistake (e.g. milliseconds/1000 twice)
MAX_TS = 7_258_118_400.0  # 2200-01-01


class _EventIn(msgspec.Struct, tag_field="type", gc=False, omit_defaults=True):
    """What every event type has (docs/contract.md §2): the service and the time, first."""

    service: str
    ts: Timestamp


class ReportIn(_EventIn, tag="report"):
    country: str
    problem: str | None = None
    region: str | None = None
    city: str | None = None
    reporter: str | None = None
    ip: str | None = None
    count: PositiveCount = 1


class ProbeIn(_EventIn, tag="probe"):
    target: str
    ok: bool
    site: str | None = None
    vantage: str | None = None
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class StatusIn(_EventIn, tag="status"):
    indicator: Indicator
    description: str | None = None
    incident: str | None = None


class MetricIn(_EventIn, tag="metric"):
    name: str
    value: float


EventIn = ReportIn | ProbeIn | StatusIn | MetricIn
_DECODER = msgspec.json.Decoder(EventIn)
_ENCODER = msgspec.json.Encoder()

# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int  # 1-based line number in its file (or index in a posted list)
    reason: str  # short, groupable: "not JSON", "unknown type", "unknown service", ...
    detail: str  # the human explanation, naming the field

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.detail}"


def _floats() -> NDArray[np.float64]:
    return np.zeros(0, np.float64)


def _ints() -> NDArray[np.int64]:
    return np.zeros(0, np.int64)


class Texts(Sequence[str]):
    """Texts joined by newlines (valid UTF-8, none holding a newline), split into strings
    only when one is asked for: the reporters of a scanned batch. Their hashes are taken
    from these bytes in one compiled pass (`Dedup.person_hashes`), so most batches never
    make a string of them (splitting 600,000 reporters costs ~35 ms, joining them again for
    the hash ~12). Slices and sums of such texts stay joined."""

    __slots__ = ("_list", "_starts", "data", "n")

    def __init__(self, data: bytes, n: int) -> None:
        self.data = data  # the texts joined by newlines (b"" for none, or one empty text)
        self.n = n
        self._list: list[str] | None = None
        self._starts: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return self.n

    def strings(self) -> list[str]:
        """The texts as strings (split once, then kept)."""
        if self._list is None:
            self._list = self.data.decode("utf-8", "surrogatepass").split("\n") if self.n else []
        return self._list

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Texts: ...
    def __getitem__(self, i: int | slice) -> str | Texts:
        if not isinstance(i, slice):
            return self.strings()[i]
        a, b, step = i.indices(self.n)
        if step != 1:
            some = self.strings()[i]
            return Texts("\n".join(some).encode("utf-8", "surrogatepass"), len(some))
        if b <= a:
            return Texts(b"", 0)
        if self._starts is None:  # where each text starts (and one past the end)
            nl = np.flatnonzero(np.frombuffer(self.data, np.uint8) == 10)
            self._starts = np.concatenate(([0], nl + 1, [len(self.data) + 1]))
        return Texts(self.data[int(self._starts[a]) : int(self._starts[b]) - 1], b - a)

    def __iter__(self) -> Iterator[str]:
        return iter(self.strings())

    @classmethod
    def chain(cls, parts: Sequence[Texts]) -> Texts:
        """The texts of `parts`, one after the other, joined in one copy."""
        some = [p for p in parts if p.n]
        if len(some) == 1:
            return some[0]
        return cls(b"\n".join(p.data for p in some), sum(p.n for p in some))

    def __add__(self, other: Sequence[str | None]) -> Sequence[str | None]:
        if isinstance(other, Texts):
            return Texts.chain((self, other))
        return [*self.strings(), *other]

    def __radd__(self, other: Sequence[str | None]) -> list[str | None]:
        return [*other, *self.strings()]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Texts):
            return self.n == other.n and self.data == other.data
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self.strings() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, as mutable as a list

    def __repr__(self) -> str:
        return f"Texts({self.n} texts, {len(self.data):,} bytes)"


@dataclass(slots=True)
class ReportColumns:
    """Accepted reports as columns, in arrival order. Times, counts and line numbers are
    arrays (lists given are made arrays), the rest lists of Python objects."""

    # (service id, ISO country, problem): aliases resolved, country upper case, problem one
    # of the service's problems or "other". Equal keys are the same tuple object.
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    ts: NDArray[np.float64] = field(default_factory=_floats)  # epoch seconds
    # reporter, else ip (non-empty); `Texts` where a scanned batch's reporters are all there
    person: Sequence[str | None] = field(default_factory=list)
    ip: list[str | None] = field(default_factory=list)  # the client's address, if known
    count: NDArray[np.int64] = field(default_factory=_ints)
    line: NDArray[np.int64] = field(default_factory=_ints)  # line numbers, when from lines
    # Where the decoder's compiled path gave them: each key's index in `table` (its list of
    # keys, which only grows), so that the pipeline finds a report's series by an array
    # look-up, not by hashing its key (`Pipeline._combo_rows`). Empty when not known.
    kid: NDArray[np.int64] = field(default_factory=_ints)
    table: list[tuple[str, str, str]] | None = None

    def __post_init__(self) -> None:
        self.ts = np.asarray(self.ts, np.float64)
        self.count = np.asarray(self.count, np.int64)
        self.line = np.asarray(self.line, np.int64)
        self.kid = np.asarray(self.kid, np.int64)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def service(self) -> list[str]:
        return [k[0] for k in self.keys]

    @property
    def country(self) -> list[str]:
        return [k[1] for k in self.keys]

    @property
    def problem(self) -> list[str]:
        return [k[2] for k in self.keys]


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An accepted probe, status or metric event, normalised (service id resolved, ts in s)."""

    type: str
    service: str
    ts: float
    body: bytes  # the event re-encoded as JSON with resolved service and numeric ts


@dataclass(slots=True)
class Decoded:
    reports: ReportColumns = field(default_factory=ReportColumns)
    others: list[OtherEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    lines: int = 0
    # While decoding: runs of accepted reports, (keys, ts, person, ip, count, line) each,
    # joined into `reports` at the end (`_join`).
    _runs: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        keys: Sequence[tuple[str, str, str]],
        ts: Sequence[float] | NDArray[np.float64],
        person: Sequence[str | None],
        ip: Sequence[str | None],
        count: Sequence[int] | NDArray[np.int64],
        line: Sequence[int] | NDArray[np.int64],
        kid: NDArray[np.int64] | None = None,
    ) -> None:
        """A run of accepted reports, after those added before (`kid`: their keys' indices
        in the decoder's table, where known)."""
        if len(keys):
            self._runs.append((keys, ts, person, ip, count, line, kid))

    def _join(self) -> None:
        runs, self._runs = self._runs, []
        if not runs:
            return

        def flat(parts: Sequence[Sequence[Any]]) -> list[Any]:
            out: list[Any] = []
            for part in parts:
                out.extend(part)  # (a list's extend by a list copies it whole)
            return out

        keys, ts, person, ip, count, line, kid = zip(*runs, strict=True)
        known = all(k is not None for k in kid)  # else no run's: the pipeline hashes keys
        texts = [p for p in person if isinstance(p, Texts)]
        # The reporters stay joined (`Texts`) where every run's are.
        persons = Texts.chain(texts) if len(texts) == len(person) else flat(person)
        self.reports = ReportColumns(
            list(flat(keys)), np.concatenate(ts), persons, list(flat(ip)),
            np.concatenate(count), np.concatenate(line),
            np.concatenate(kid) if known else _ints(),
        )  # fmt: skip


# ---------------------------------------------------------------------------- decoding


def _shown(value: object, limit: int = 80) -> str:
    """`value` for a rejection's detail: its repr, cut short (a line may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _cut(message: str, limit: int = 200) -> str:
    """A decoder's message cut short in the middle (it may quote a huge value; the field's
    path is at its end)."""
    if len(message) <= limit:
        return message
    half = (limit - 3) // 2
    return f"{message[:half]}...{message[-half:]}"


def _reason_for(message: str) -> tuple[str, str]:
    """Map a msgspec validation message to (reason, detail)."""
    if "`$.type`" in message or "missing required field `type`" in message:
        return "unknown type", message
    if "`$.ts`" in message or "missing required field `ts`" in message:
        return "bad time", message
    if "`$.country`" in message or "missing required field `country`" in message:
        return "bad country", message
    if message.startswith("Expected `object`"):
        return "not an object", message
    return "bad field", message


class _MinuteCache(dict[str, float | None]):
    """ "YYYY-MM-DDTHH:MM:" -> epoch seconds of that minute (None: not a valid minute).

    A miss parses the prefix once; hits are a plain C-level subscript.
    """

    def __init__(self, decoder: EventDecoder) -> None:
        super().__init__()
        self._decoder = decoder

    def __missing__(self, prefix: str) -> float | None:
        if len(prefix) != 17 or len(self) >= 100_000:
            return None
        if self._decoder._ts(f"{prefix}00Z") is None:  # caches the minute when all of it is valid
            self[prefix] = None  # remembered: the same bad prefix costs nothing next time
        return dict.get(self, prefix)  # None for a minute only partly in range


class EventDecoder:
    """Decodes NDJSON lines against one catalog. Keeps small caches across calls."""

    def __init__(self, catalog: Catalog, *, max_ts: float = MAX_TS, max_ts_means: str = "") -> None:
        self.catalog = catalog
        self.max_ts = max_ts
        # What `max_ts` stands for, in a rejection: e.g. "a day ahead of this machine's clock".
        self.max_ts_means = max_ts_means
        self._names = dict(catalog.names)
        self._countries: dict[str, str | None] = {}
        self._problems: dict[tuple[str, str | None], str] = {}
        self._minutes = _MinuteCache(self)
        # raw (service, country, problem) as sent -> resolved key (only valid ones)
        self._keys: dict[tuple[str, str, str | None], tuple[str, str, str]] = {}
        # Resolved keys the compiled path met, in the order met (`ReportColumns.kid`).
        self._key_table: list[tuple[str, str, str]] = []
        self._key_ids: dict[tuple[str, str, str], int] = {}
        self._scan_skips = 0  # batches left to decode without the scanner (`decode`)

    def _service(self, name: str) -> str | None:
        sid = self._names.get(name)
        if sid is None:
            sid = self._names.get(name.lower())
            if sid is not None and len(self._names) < 100_000:
                self._names[name] = sid
        return sid

    def _country(self, raw: str) -> str | None:
        try:
            return self._countries[raw]
        except KeyError:
            code = normalise_country(raw)
            if len(self._countries) < 10_000 and len(raw) <= MAX_CACHED_CHARS:
                self._countries[raw] = code
            return code

    def _problem(self, sid: str, raw: str | None) -> str:
        key = (sid, raw)
        try:
            return self._problems[key]
        except KeyError:
            svc = self.catalog.services[sid]
            known = {q.lower(): q for q in svc.problems}
            value = known.get(raw.lower(), OTHER_PROBLEM) if raw is not None else OTHER_PROBLEM
            if len(self._problems) < 100_000 and (raw is None or len(raw) <= MAX_CACHED_CHARS):
                self._problems[key] = value
            return value

    def _ts(self, value: str | float) -> float | None:
        """Epoch seconds of a `ts` value, or None when it is no valid time in range."""
        if isinstance(value, str):
            fast = len(value) == 20 and value[19] == "Z" and value[16] == ":"
            if fast:
                # The common "YYYY-MM-DDTHH:MM:SSZ": cached per minute (only in-range minutes).
                base = self._minutes.get(value[:17])  # a plain get: no parsing on a miss
                sec = _SECONDS_Z.get(value[17:])
                if base is not None and sec is not None:
                    return base + sec
            ts = parse_ts(value)
            if ts is None or not (MIN_TS <= ts <= self.max_ts):
                return None
            minute = ts - ts % 60
            if fast and minute + 59 <= self.max_ts and len(self._minutes) < 100_000:
                dict.__setitem__(self._minutes, value[:17], minute)
            return ts
        ts = float(value)
        if not (MIN_TS <= ts <= self.max_ts) or math.isnan(ts):
            return None
        return ts

    def why_not(self, value: str | float) -> str:
        """Why `_ts` refused `value`: a bad format, too old, or too far ahead (naming the limit)."""
        shown = f"`ts` {_shown(value)}"
        ts = parse_ts(value) if isinstance(value, str) else float(value)
        if ts is None or math.isnan(ts):
            return (
                f"{shown} is not a time: expected RFC 3339 with `Z` or an offset "
                "(2025-03-10T08:45:00Z) or epoch seconds as a number"
            )
        if ts < MIN_TS:
            return f"{shown} is too old: times before {iso(MIN_TS)} are taken for mistakes"
        means = f" ({self.max_ts_means})" if self.max_ts_means else ""
        limit = iso(self.max_ts) if self.max_ts < MAX_TS else iso(MAX_TS)
        return f"{shown} is too far ahead: after {limit}, the latest time accepted{means}"

    def decode(
        self, lines: Iterable[bytes], first_line: int = 1, joined: bytes | None = None
    ) -> Decoded:
        """Decode lines (numbered from `first_line`): accepted events as columns, the others
        rejected with their line numbers and reasons. `joined`, when the caller has it, is
        `b"\\n".join(lines)` (a reader's batch before it was split; `lines` may then be a
        sequence that splits it only when a line is asked for: the scanner reads `joined`).

        Lines are decoded `DECODE_CHUNK` at a time: the column passes over the decoded
        events then find them still in the CPU's cache (about a third less time per line
        than passes over a whole 4 MiB batch of them)."""
        out = Decoded()
        lines = lines if isinstance(lines, Sequence) else list(lines)
        if len(lines) >= SCAN_MIN_LINES and self._scan_skips == 0:
            taken = self._decode_scanned(lines, first_line, out, joined)
            # Most lines not of the plain shape: the scan is wasted work on such input, so
            # the next SCAN_BACKOFF batches go straight to the exact path.
            self._scan_skips = SCAN_BACKOFF if 2 * taken < len(lines) else 0
        else:
            self._scan_skips = max(self._scan_skips - 1, 0)
            self._decode_lines(lines, first_line, out)
        out.lines = len(lines)
        out._join()
        if len(out.reports.kid):
            out.reports.table = self._key_table
        if out.rejected:
            out.rejected.sort(key=lambda r: r.line)
        return out

    def _decode_lines(self, lines: Sequence[bytes], first_line: int, out: Decoded) -> None:
        for a in range(0, len(lines), DECODE_CHUNK):
            self._decode_chunk(lines[a : a + DECODE_CHUNK], first_line + a, out)

    def _decode_scanned(
        self, lines: Sequence[bytes], first_line: int, out: Decoded, joined: bytes | None
    ) -> int:
        """`decode` of many lines: those of the plain report shape read by the compiled
        scanner (linescan.py), each distinct (service, country, problem) resolved once;
        runs of the other lines through `_decode_lines`, in line order. Returns how many
        lines the scanner took."""
        from outagewatch import linescan as ls  # numba: only where many lines are decoded

        blob = b"\n".join(lines) if joined is None else joined
        buf = np.frombuffer(blob, np.uint8)
        starts, ok, ts, count, spans, same_key = ls.scan(
            buf, len(lines), MIN_TS, self.max_ts, MAX_COUNT
        )
        if starts[-1] != len(blob) + 1:  # a line holds a newline: lines are not the scan's
            self._decode_lines(lines, first_line, out)
            return 0

        def values(rows: NDArray[np.int64], f: int) -> list[str]:
            """Field `f` of the lines `rows` ("" where absent), in one split (the scanner
            took only valid UTF-8 without newlines)."""
            if len(rows) == 0:
                return []
            raw = ls.joined_values(buf, spans, rows, f).tobytes()
            try:
                return raw.decode("ascii").split("\n")  # the common case, and the fastest
            except UnicodeDecodeError:
                return raw.decode("utf-8").split("\n")

        def optional(rows: NDArray[np.int64], f: int) -> list[str | None]:
            """`values`, with None where the field is absent (not the empty string)."""
            out: list[str | None] = list(values(rows, f))
            for k in np.flatnonzero(spans[rows, 2 * f] < 0).tolist():
                out[k] = None
            return out

        # (service, country, problem) of each distinct raw triple, resolved as `_key` does;
        # lines whose triple does not resolve are left to the exact path (their rejection).
        keys = np.empty(len(ok), object)  # at each first line, its key
        unresolved = []
        firsts = np.flatnonzero(ok & (same_key == np.arange(len(ok))))
        raws = zip(
            firsts.tolist(),
            values(firsts, ls.SERVICE),
            values(firsts, ls.COUNTRY),
            optional(firsts, ls.PROBLEM),
            strict=True,
        )
        kids = np.empty(len(ok), np.int64)  # at each first line, its key's index in the table
        for r, service, country, problem in raws:
            key = self._keys.get((service, country, problem))
            if key is None:
                ev = ReportIn(service=service, ts=0.0, country=country, problem=problem)
                key = self._key(ev, 0, [])
            if key is None:
                unresolved.append(r)
            else:
                keys[r] = key
                kid = self._key_ids.get(key)
                if kid is None:
                    kid = self._key_ids[key] = len(self._key_table)
                    self._key_table.append(key)
                kids[r] = kid
        if unresolved:
            ok &= ~np.isin(same_key, unresolved)
        taken = np.flatnonzero(ok)
        any_ip = bool((spans[taken, 2 * ls.IP] >= 0).any())
        ips = optional(taken, ls.IP) if any_ip else [None] * len(taken)
        has = spans[taken, 2 * ls.REPORTER + 1] - spans[taken, 2 * ls.REPORTER]  # 0: none
        longest = has
        if any_ip:
            longest = np.maximum(longest, spans[taken, 2 * ls.IP + 1] - spans[taken, 2 * ls.IP])
        persons: Sequence[str | None]
        if len(taken) and (has > 0).all() and longest.max() <= MAX_PERSON_CHARS:
            # Every line has its reporter, none too long (the common case): they stay joined.
            raw = ls.joined_values(buf, spans, taken, ls.REPORTER).tobytes()
            persons = Texts(raw, len(taken))
        else:
            persons = list(values(taken, ls.REPORTER))  # "" where none
            if "" in persons:  # no reporter: the address, if any
                persons = [p or i or None for p, i in zip(persons, ips, strict=True)]
            if longest.max(initial=0) > MAX_PERSON_CHARS:  # bytes: at least the characters
                persons = [_person(p) for p in persons]
        cols: tuple[Any, ...] = (
            keys[same_key[taken]].tolist(),
            ts[taken],
            persons,
            ips,
            count[taken],
            taken + first_line,
            kids[same_key[taken]],
        )
        # Runs of taken lines and of the others, in order.
        edges = np.flatnonzero(np.diff(ok.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), len(ok)]
        if len(bounds) == 2 and ok[0]:  # every line taken: no run to cut
            out.add(*cols)
            return len(taken)
        done = 0  # taken lines appended so far
        for a, b in itertools.pairwise(bounds):
            if not ok[a]:
                self._decode_lines(lines[a:b], first_line + a, out)
                continue
            m = done + (b - a)
            out.add(*(vals[done:m] for vals in cols))
            done = m
        return len(taken)

    def _decode_chunk(self, lines: Sequence[bytes], first_line: int, out: Decoded) -> None:
        decode = _DECODER.decode
        try:  # the common case: every line is a well-formed event
            evs: list[EventIn] = [decode(line) for line in lines]
            nos: Sequence[int] = range(first_line, first_line + len(lines))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            evs, nos = self._decode_each(lines, first_line, out.rejected)
        if set(map(type, evs)) <= {ReportIn}:
            self._reports(evs, nos, out)  # type: ignore[arg-type]
        else:
            reps = [(e, k) for e, k in zip(evs, nos, strict=True) if type(e) is ReportIn]
            self._reports([e for e, _ in reps], [k for _, k in reps], out)
            for e, k in zip(evs, nos, strict=True):
                if type(e) is not ReportIn:
                    self._one_other(e, k, out)  # type: ignore[arg-type]

    @staticmethod
    def _decode_each(
        lines: Sequence[bytes], first_line: int, rej: list[Rejection]
    ) -> tuple[list[EventIn], list[int]]:
        """Decode line by line: a bad line is rejected, the others kept."""
        decode = _DECODER.decode
        evs: list[EventIn] = []
        nos: list[int] = []
        for n, line in enumerate(lines, start=first_line):
            try:
                evs.append(decode(line))
                nos.append(n)
            except msgspec.ValidationError as exc:
                reason, detail = _reason_for(_cut(str(exc)))
                rej.append(Rejection(n, reason, detail))
            except msgspec.DecodeError as exc:
                if line.strip():  # blank lines are not events
                    rej.append(Rejection(n, "not JSON", _cut(str(exc))))
            except UnicodeDecodeError as exc:
                rej.append(Rejection(n, "not JSON", f"invalid UTF-8: {exc.reason}"))
            except RecursionError:  # msgspec's depth limit (e.g. an unknown field of [[[...]]])
                rej.append(Rejection(n, "not JSON", "nested too deeply"))
        return evs, nos

    def _times(self, evs: list[ReportIn]) -> list[float | None]:
        """`ts` of every report as epoch seconds (None: invalid); "YYYY-MM-DDTHH:MM:SSZ" text
        is read column-wise (`_zulu_seconds`), anything else one by one (`_ts`)."""
        raw = list(map(_TS, evs))
        got = _zulu_seconds(raw, self.max_ts)
        if got is None:  # some are numbers, or not all of the common form
            return [self._ts(x) for x in raw]
        ts, ok = got
        if ok.all():
            return ts.tolist()  # type: ignore[no-any-return]
        out: list[float | None] = ts.tolist()
        for i in np.flatnonzero(~ok).tolist():
            out[i] = self._ts(raw[i])
        return out

    def _reports(self, evs: list[ReportIn], nos: Sequence[int], out: Decoded) -> None:
        """Validate reports column-wise; a bad one is rejected, the rest kept in order."""
        keys = list(map(self._keys.get, map(_RAW_KEY, evs)))
        ts = self._times(evs)
        if None in keys or None in ts:
            # Only the reports with a key not resolved yet or a bad time are looked at one
            # by one (a key resolved for one of them is cached for the next).
            drop = set()
            kget = self._keys.get
            both = enumerate(zip(keys, ts, strict=True))
            todo = [i for i, (k, t) in both if k is None or t is None]
            for i in todo:
                e = evs[i]
                key = keys[i] or kget(_RAW_KEY(e)) or self._key(e, nos[i], out.rejected)
                if key is None:
                    drop.add(i)
                    continue
                keys[i] = key
                if ts[i] is None:
                    out.rejected.append(Rejection(nos[i], "bad time", self.why_not(e.ts)))
                    drop.add(i)
            good = [i for i in range(len(evs)) if i not in drop] if drop else range(len(evs))
            evs = [evs[i] for i in good]
            keys = [keys[i] for i in good]
            ts = [ts[i] for i in good]
            nos = [nos[i] for i in good]
        ips = list(map(_IP, evs))
        persons = list(map(_REPORTER, evs))
        if None in persons or "" in persons:
            persons = [r or i or None for r, i in zip(persons, ips, strict=True)]
            longest = max(map(len, filter(None, persons)), default=0)
        else:
            longest = max(map(len, persons), default=0)
        if longest > MAX_PERSON_CHARS:
            persons = [_person(p) for p in persons]
        out.add(keys, ts, persons, ips, list(map(_COUNT, evs)), nos)  # type: ignore[arg-type]

    def _key(
        self, e: ReportIn, line: int, rejected: list[Rejection]
    ) -> tuple[str, str, str] | None:
        """Resolve (service, country, problem) of a report, or reject it (None)."""
        sid = self._service(e.service)
        if sid is None:
            rejected.append(
                Rejection(line, "unknown service", f"no service or alias {_shown(e.service)}")
            )
            return None
        code = self._country(e.country)
        if code is None:
            rejected.append(
                Rejection(line, "bad country", f"`country` {_shown(e.country)} is no ISO code")
            )
            return None
        key = (sid, code, self._problem(sid, e.problem))
        if len(self._keys) < 200_000 and _short(e.service, e.country, e.problem):
            self._keys[(e.service, e.country, e.problem)] = key
        return key

    def _one_other(self, ev: ProbeIn | StatusIn | MetricIn, n: int, out: Decoded) -> None:
        sid = self._service(ev.service)
        if sid is None:
            out.rejected.append(
                Rejection(n, "unknown service", f"no service or alias {_shown(ev.service)}")
            )
            return
        ts = self._ts(ev.ts)
        if ts is None:
            out.rejected.append(Rejection(n, "bad time", self.why_not(ev.ts)))
            return
        out.others.append(self._other(ev, sid, ts))

    def _other(self, ev: ProbeIn | StatusIn | MetricIn, sid: str, ts: float) -> OtherEvent:
        body = msgspec.structs.replace(ev, service=sid, ts=ts)
        kind = {ProbeIn: "probe", StatusIn: "status", MetricIn: "metric"}[type(ev)]
        return OtherEvent(kind, sid, ts, _ENCODER.encode(body))


# RFC 3339 date-time (section 5.6): a full date, `T` (or a space, or `t`), a full time with
# optional fraction, and `Z` or a numeric offset with a colon. Python's `fromisoformat` also
# takes other ISO 8601 forms (basic `20250310T084500Z`, week dates, minutes without seconds,
# no offset): those are refused here, so every entry point accepts the same times.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


# Column getters of decoded reports (C-level attribute access, one call per column).
_RAW_KEY = operator.attrgetter("service", "country", "problem")
_TS = operator.attrgetter("ts")
_IP = operator.attrgetter("ip")
_REPORTER = operator.attrgetter("reporter")
_COUNT = operator.attrgetter("count")
_ZULU_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_ZULU_SEP_AT = [4, 7, 10, 13, 16, 19]
_ZULU_SEPS = np.frombuffer(b"--T::Z", np.uint8)
_DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _zulu_seconds(
    raw: list[str | float], max_ts: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]] | None:
    """Epoch seconds of times in the common form "YYYY-MM-DDTHH:MM:SSZ", read as one byte
    matrix (no per-value parsing), and which of them are valid and in [MIN_TS, max_ts]
    (the others are left to `EventDecoder._ts`, which gives their exact verdict). None when
    some value is not a 20-character ASCII string (the caller then reads them one by one).
    A valid one gets exactly what `parse_ts` gives it: whole seconds of a proleptic
    Gregorian UTC date."""
    n = len(raw)
    try:
        text = "".join(raw)  # type: ignore[arg-type]
    except TypeError:  # numbers among them
        return None
    if len(text) != 20 * n or set(map(len, raw)) != {20}:  # type: ignore[arg-type]
        return None
    try:
        b = np.frombuffer(text.encode("ascii"), np.uint8).reshape(n, 20)
    except UnicodeEncodeError:
        return None
    ok = (b[:, _ZULU_SEP_AT] == _ZULU_SEPS).all(axis=1)
    d = b[:, _ZULU_DIGITS].astype(np.int64) - 48
    ok &= ((d >= 0) & (d <= 9)).all(axis=1)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 4] * 10 + d[:, 5]
    day = d[:, 6] * 10 + d[:, 7]
    hour = d[:, 8] * 10 + d[:, 9]
    minute = d[:, 10] * 10 + d[:, 11]
    sec = d[:, 12] * 10 + d[:, 13]
    ok &= (month >= 1) & (month <= 12) & (hour < 24) & (minute < 60) & (sec < 60)
    month = np.where(ok, month, 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    ok &= (day >= 1) & (day <= _DAYS_IN_MONTH[month] + (leap & (month == 2)))
    # Days since 1970-01-01 of a proleptic Gregorian date.
    y = year - 1
    days = (
        365 * y + y // 4 - y // 100 + y // 400
        + _DAYS_BEFORE_MONTH[month] + (leap & (month > 2)) + day - 1
        - 719_162
    )  # fmt: skip
    ts = (days * 86_400 + hour * 3600 + minute * 60 + sec).astype(np.float64)
    ok &= (ts >= MIN_TS) & (ts <= max_ts)
    return ts, ok


def _short(*raw: str | None) -> bool:
    return all(r is None or len(r) <= MAX_CACHED_CHARS for r in raw)


def _person(p: str | None) -> str | None:
    """A person id as kept for deduplication: a long one (a client may send megabytes) is
    its 128-bit digest, so state holds bounded values."""
    if p is None or len(p) <= MAX_PERSON_CHARS:
        return p
    digest = hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"#{digest}"


TimeForms = Literal["rfc3339", "iso8601"]
_NOT_RFC3339 = "expected RFC 3339 with `Z` or an offset (2025-03-10T08:45:00Z)"
_NOT_ISO8601 = "expected an ISO 8601 time (2025-03-10T08:45:00Z)"


def _read_time(text: str, forms: TimeForms, naive_utc: bool) -> float | str:
    """Epoch seconds of `text`, or why it is no time (see `parse_time`)."""
    if forms == "rfc3339":
        if _RFC3339.fullmatch(text) is None:
            return _NOT_RFC3339
        text = text.upper()  # `t` and `z` are RFC 3339 too; `fromisoformat` wants them upper
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:  # a form `_RFC3339` lets by, or a month 13, a day 32, ...
        why = str(exc)
        if why.startswith("Invalid isoformat"):  # the text again: say what is expected
            return _NOT_RFC3339 if forms == "rfc3339" else _NOT_ISO8601
        return why
    if t.tzinfo is None:
        if not naive_utc:
            return "it has no `Z` or offset"
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def parse_time(text: str, *, forms: TimeForms = "rfc3339", naive_utc: bool = False) -> float:
    """Epoch seconds of a time written as text: the one reading of time text in outagewatch.
    Raises ValueError naming the text and what is wrong with it.

    `forms`: "rfc3339" (docs/contract.md §2) takes `2025-03-10T08:45:00Z` and the like, with
    a fraction, a `T`, `t` or space, and `Z` or a `+01:00` offset, and refuses other ISO 8601
    forms (basic format, week or ordinal dates, no seconds, no offset); "iso8601" takes every
    form `datetime.fromisoformat` reads, for times a person types (a bare date is midnight).
    `naive_utc`: a time without an offset (only "iso8601" reads one) is UTC, not an error."""
    got = _read_time(text, forms, naive_utc)
    if isinstance(got, str):
        raise ValueError(f"{text!r} is not a time: {got}")
    return got


def parse_ts(value: str) -> float | None:
    """`parse_time` of an RFC 3339 time, None instead of an error (the decoder's hot path)."""
    got = _read_time(value, "rfc3339", False)
    return None if isinstance(got, str) else got


def time_of(value: object) -> float | None:
    """Epoch seconds of a time as JSON carries it (docs/contract.md §2: an RFC 3339 string with `Z`
    or an offset, or epoch seconds as a number); None when it is no time. The one reading
    of times that every part of outagewatch uses."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return parse_ts(value)
    return None


def epoch_of(value: object) -> float:
    """`time_of` for times outagewatch wrote itself (incident documents): not a time is a
    bug, raised as ValueError."""
    if isinstance(value, str):
        return parse_time(value)
    t = time_of(value)
    if t is None:
        raise ValueError(f"{value!r} is not a time")
    return t


def decode_lines(catalog: Catalog, lines: Sequence[bytes], first_line: int = 1) -> Decoded:
    """Decode a batch of NDJSON lines (convenience wrapper around `EventDecoder`)."""
    return EventDecoder(catalog).decode(lines, first_line)


def iso(ts: float) -> str:
    """RFC 3339 UTC with `Z`, second precision."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_report(
    service: str,
    ts: float,
    country: str,
    *,
    problem: str | None = None,
    reporter: str | None = None,
    ip: str | None = None,
    count: int = 1,
) -> bytes:
    """One report event as an NDJSON line (without newline): the inverse of decoding."""
    ev = ReportIn(
        service=service,
        ts=iso(ts) if ts == int(ts) else ts,
        country=country,
        problem=problem,
        reporter=reporter,
        ip=ip,
        count=count,
    )
    return _ENCODER.encode(ev)
