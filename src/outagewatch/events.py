"""Events (contract §2): typed NDJSON decoding with msgspec, validation against the catalog.

The decoder turns lines into column batches (`ReportColumns`) for the pipeline's vectorised
core, plus a list of the other event types, plus one `Rejection` per bad line (line number
and reason). A bad line never stops the lines around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

from outagewatch.catalog import OTHER_PROBLEM, Catalog
from outagewatch.geo import normalise_country

# ---------------------------------------------------------------------------- wire types

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)] | float
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]
Indicator = Literal["none", "minor", "major", "critical", "maintenance"]

MIN_TS = 946_684_800.0  # 2000-01-01: earlier is surely a mistake (e.g. milliseconds/1000 twice)
MAX_TS = 7_258_118_400.0  # 2200-01-01


class ReportIn(msgspec.Struct, tag_field="type", tag="report", gc=False, omit_defaults=True):
    service: str
    ts: Timestamp
    country: str
    problem: str | None = None
    region: str | None = None
    city: str | None = None
    reporter: str | None = None
    ip: str | None = None
    count: PositiveCount = 1


class ProbeIn(msgspec.Struct, tag_field="type", tag="probe", gc=False, omit_defaults=True):
    service: str
    ts: Timestamp
    target: str
    ok: bool
    site: str | None = None
    vantage: str | None = None
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class StatusIn(msgspec.Struct, tag_field="type", tag="status", gc=False, omit_defaults=True):
    service: str
    ts: Timestamp
    indicator: Indicator
    description: str | None = None
    incident: str | None = None


class MetricIn(msgspec.Struct, tag_field="type", tag="metric", gc=False, omit_defaults=True):
    service: str
    ts: Timestamp
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


@dataclass(slots=True)
class ReportColumns:
    """Accepted reports as columns, in arrival order."""

    service: list[str] = field(default_factory=list)  # service id (aliases resolved)
    ts: list[float] = field(default_factory=list)  # epoch seconds
    country: list[str] = field(default_factory=list)  # ISO alpha-2, upper case
    problem: list[str] = field(default_factory=list)  # one of the service's problems or "other"
    person: list[str | None] = field(default_factory=list)  # reporter, else ip, else None
    count: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def extend(self, other: ReportColumns) -> None:
        self.service.extend(other.service)
        self.ts.extend(other.ts)
        self.country.extend(other.country)
        self.problem.extend(other.problem)
        self.person.extend(other.person)
        self.count.extend(other.count)


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


# ---------------------------------------------------------------------------- decoding


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


class EventDecoder:
    """Decodes NDJSON lines against one catalog. Keeps small caches across calls."""

    def __init__(self, catalog: Catalog, *, max_ts: float = MAX_TS) -> None:
        self.catalog = catalog
        self.max_ts = max_ts
        self._names = dict(catalog.names)
        self._countries: dict[str, str | None] = {}
        self._problems: dict[tuple[str, str | None], str] = {}

    def _service(self, name: str) -> str | None:
        sid = self._names.get(name)
        if sid is None:
            sid = self._names.get(name.lower())
            if sid is not None:
                self._names[name] = sid
        return sid

    def _country(self, raw: str) -> str | None:
        try:
            return self._countries[raw]
        except KeyError:
            code = normalise_country(raw)
            if len(self._countries) < 10_000:
                self._countries[raw] = code
            return code

    def _problem(self, sid: str, raw: str | None) -> str:
        key = (sid, raw)
        try:
            return self._problems[key]
        except KeyError:
            svc = self.catalog.services[sid]
            p = raw.lower() if raw is not None else OTHER_PROBLEM
            value = p if p in svc.problems else OTHER_PROBLEM
            if len(self._problems) < 100_000:
                self._problems[key] = value
            return value

    def _ts(self, value: datetime | float) -> float | None:
        ts = value.timestamp() if isinstance(value, datetime) else float(value)
        if not (MIN_TS <= ts <= self.max_ts) or math.isnan(ts):
            return None
        return ts

    def decode(self, lines: Iterable[bytes], first_line: int = 1) -> Decoded:
        out = Decoded()
        rep = out.reports
        rej = out.rejected
        decode = _DECODER.decode
        n = 0
        for n, line in enumerate(lines, start=first_line):
            if not line.strip():
                continue  # blank lines are not events
            try:
                ev = decode(line)
            except msgspec.ValidationError as exc:
                reason, detail = _reason_for(str(exc))
                rej.append(Rejection(n, reason, detail))
                continue
            except msgspec.DecodeError as exc:
                rej.append(Rejection(n, "not JSON", str(exc)))
                continue
            sid = self._service(ev.service)
            if sid is None:
                rej.append(Rejection(n, "unknown service", f"no service or alias {ev.service!r}"))
                continue
            ts = self._ts(ev.ts)
            if ts is None:
                rej.append(Rejection(n, "bad time", f"`ts` {ev.ts!r} is out of range"))
                continue
            if type(ev) is ReportIn:
                code = self._country(ev.country)
                if code is None:
                    rej.append(
                        Rejection(n, "bad country", f"`country` {ev.country!r} is no ISO code")
                    )
                    continue
                rep.service.append(sid)
                rep.ts.append(ts)
                rep.country.append(code)
                rep.problem.append(self._problem(sid, ev.problem))
                rep.person.append(ev.reporter if ev.reporter is not None else ev.ip)
                rep.count.append(ev.count)
            else:
                out.others.append(self._other(ev, sid, ts))
        out.lines = max(0, n - first_line + 1)
        return out

    def _other(self, ev: ProbeIn | StatusIn | MetricIn, sid: str, ts: float) -> OtherEvent:
        body = msgspec.structs.replace(ev, service=sid, ts=ts)
        kind = {ProbeIn: "probe", StatusIn: "status", MetricIn: "metric"}[type(ev)]
        return OtherEvent(kind, sid, ts, _ENCODER.encode(body))


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
        ts=datetime.fromtimestamp(ts, UTC),
        country=country,
        problem=problem,
        reporter=reporter,
        ip=ip,
        count=count,
    )
    return _ENCODER.encode(ev)
