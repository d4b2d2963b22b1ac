"""What the API and the pages read and write: one façade over engine, bus and store.

Every HTTP handler goes through `Live`, so the JSON API and the HTML pages show the same
numbers. Reads combine the store (history) with the engine (the minutes and incidents
not yet committed), so a report shows on its service's chart as soon as it was accepted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from outagewatch.bus.base import Bus
from outagewatch.catalog import Catalog, Service
from outagewatch.events import EventDecoder, iso, time_of
from outagewatch.incidents.severity import public
from outagewatch.incidents.verdicts import ServiceVerdict
from outagewatch.pipeline.pipeline import Pipeline, load_state
from outagewatch.runtime.engine import FUTURE_SKEW_S, Committed, Engine, skew_means
from outagewatch.settings import PipelineSettings
from outagewatch.store.base import (
    EVERY_INCIDENT,
    IncidentQuery,
    Store,
    incident_matches,
    with_updates,
)
from outagewatch.web.posted import Prepared, prepare
from outagewatch.web.public import restrict_public

DAY_MIN = 1440
TRACKER_STALE_S = 180.0  # the pipeline's clock this far behind: the tracker has no fresh data
LOCAL_VANTAGE = "local"  # probes the server runs itself carry no vantage
log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Numbers /metrics exports (kept here so tests can read them without a scrape)."""

    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    commit_seconds: float = 0.0


class Changes:
    """A version number that moves on every commit; the live pages wait on it (SSE)."""

    def __init__(self) -> None:
        self.version = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cond = asyncio.Condition()

    def bump_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.bump()))

    async def bump(self) -> None:
        self.version += 1
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

    async def wait(self, seen: int, timeout: float) -> int:
        if self._cond is None or self.version != seen:
            return self.version
        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.version != seen), timeout)
        except TimeoutError:
            pass
        return self.version


class StoredBaselines:
    """API nodes run no pipeline: their typical band comes from the partition states the
    workers commit to the shared store, each re-read at most once a minute."""

    def __init__(self, reader: Store, partitions: int, settings: PipelineSettings) -> None:
        self.reader = reader
        self.partitions = partitions
        self.settings = settings
        self._cache: dict[int, tuple[float, Pipeline | None]] = {}

    def __call__(self, service: str, m0: int, m1: int) -> NDArray[np.float64]:
        from outagewatch.bus.nats import partition_of
        from outagewatch.runtime.worker import partition_key

        part = partition_of(service, self.partitions)
        now = time.monotonic()
        at, pipeline = self._cache.get(part, (-math.inf, None))
        if now - at > 60:
            data = self.reader.load_state(partition_key(part))
            pipeline = None if data is None else load_state(data, self.settings)
            self._cache[part] = (now, pipeline)
        if pipeline is None:
            return np.full(max(m1 - m0, 0), np.nan)
        return pipeline.typical(service, m0, m1)


class StoredVerdicts:
    """API nodes run no pipeline: the verdicts of services with probes or a status page
    (partial failures, silence, the official status) are those the workers' pipelines
    publish to the shared store (runtime/worker.py), re-read at most every `ttl_s`."""

    def __init__(self, reader: Store, ttl_s: float = 2.0) -> None:
        self.reader = reader
        self.ttl_s = ttl_s
        self._read_at = -math.inf
        self.verdicts: dict[str, ServiceVerdict] = {}
        self.official: dict[str, dict[str, Any] | None] = {}
        self.newest: float | None = None  # when the latest publication was made (epoch s)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < self.ttl_s:
            return
        self._read_at = now
        shared = getattr(self.reader, "shared", None)
        if shared is None:
            return
        verdicts: dict[str, ServiceVerdict] = {}
        official: dict[str, dict[str, Any] | None] = {}
        newest: float | None = None
        for text in shared("verdicts/").values():
            doc = orjson.loads(text)
            newest = max(newest or doc["at"], doc["at"])
            for sid, v in doc["services"].items():
                verdicts[sid] = ServiceVerdict(v["partial"], v["silent"], v["detail"])
                official[sid] = v["official"]
        self.verdicts, self.official, self.newest = verdicts, official, newest


class Live:
    def __init__(
        self,
        catalog: Catalog,
        reader: Store,
        bus: Bus,
        engine: Engine | None,
        *,
        clock: Callable[[], float] = time.time,
        baselines: StoredBaselines | None = None,
        verdicts: StoredVerdicts | None = None,
    ) -> None:
        self.catalog = catalog
        self.reader = reader
        self.bus = bus
        self.engine = engine
        self.clock = clock
        self.baselines = baselines
        self.stored_verdicts = verdicts
        self.counters = Counters()
        self.changes = Changes()
        self._read_lock = threading.Lock()
        self._skew = FUTURE_SKEW_S if engine is None else engine.skew_s
        self._checker = EventDecoder(
            catalog, max_ts=clock() + self._skew, max_ts_means=skew_means(self._skew)
        )
        # Maintenance windows (store rows, epoch seconds), set by the server on each change.
        self.windows: list[dict[str, Any]] = []
        # API node: re-read the stored catalog when a post names an unknown service (True
        # when it changed), so a service added through another node is taken at once.
        self.refresh_catalog: Callable[[], Awaitable[bool]] | None = None

    # ---------------------------------------------------------------- writes
    def set_catalog(self, catalog: Catalog, *, save: bool = True) -> None:
        """Store a changed catalog (unless `save` is false: read from the store) and check
        and show with it from now on."""
        with self._read_lock:
            if save:
                self.reader.save_catalog(catalog.source)
            self.catalog = catalog
            self._checker = EventDecoder(
                catalog, max_ts=self._checker.max_ts, max_ts_means=skew_means(self._skew)
            )

    async def submit(
        self, kind: str, items: list[Any], ip: str | None, *, public: bool = False
    ) -> Prepared:
        """Check and publish posted items. `public`: reports from anyone (no operator
        token), held to one person, now (web/public.py)."""
        now = self.clock()
        self._checker.max_ts = max(self._checker.max_ts, now + self._skew)
        prep = self._prepare(kind, items, now, ip, public)
        unknown = any(str(r["reason"]).startswith("unknown service") for r in prep.rejected)
        # Perhaps added through another API node: take the stored catalog, check again.
        if unknown and self.refresh_catalog is not None and await self.refresh_catalog():
            prep = self._prepare(kind, items, now, ip, public)
        for r in prep.rejected:
            reason = str(r["reason"]).split(":", 1)[0]
            self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + 1
        if prep.lines:
            await self.bus.publish(prep.lines, prep.services)
            self.counters.accepted[kind] = self.counters.accepted.get(kind, 0) + len(prep.lines)
        return prep

    def _prepare(
        self, kind: str, items: list[Any], now: float, ip: str | None, public: bool
    ) -> Prepared:
        if not (public and kind == "report"):
            return prepare(self._checker, kind, items, now, ip)
        kept, refused = restrict_public(items, now)
        prep = prepare(self._checker, kind, [items[i] for i in kept], now, ip)
        for r in prep.rejected:
            r["index"] = kept[r["index"]]
        prep.rejected = sorted(prep.rejected + refused, key=lambda r: int(r["index"]))
        return prep

    async def submit_events(self, events: list[dict[str, Any]]) -> None:
        """Events the server makes itself (probe results, official status), checked and
        published like posted ones, one kind at a time."""
        kinds: dict[str, list[Any]] = {}
        for ev in events:
            kinds.setdefault(str(ev.get("type")), []).append(ev)
        for kind, items in kinds.items():
            prep = await self.submit(kind, items, None)
            for r in prep.rejected:
                log.warning("dropped a %s event the server made: %s", kind, r["reason"])

    def committed(self, done: Committed) -> None:
        """Called by the bus's writer thread after each commit."""
        self.counters.commits += 1
        self.counters.commit_seconds += done.seconds
        self.changes.bump_threadsafe()

    # ---------------------------------------------------------------- reads
    def ongoing(self) -> dict[str, dict[str, Any]]:
        if self.engine is not None:
            return self.engine.ongoing()
        with self._read_lock:
            docs = self.reader.incidents(IncidentQuery(status="ongoing"))
        return {d["service"]: d for d in docs}

    def public_ongoing(self) -> dict[str, dict[str, Any]]:
        """Ongoing incidents the public sees: not a suspected fake-report flood, unless
        probes or the official status confirm it (incidents.severity.public)."""
        return {sid: d for sid, d in self.ongoing().items() if public(d)}

    def service_or_none(self, name: str) -> Service | None:
        return self.catalog.resolve(name)

    def services(self) -> list[dict[str, Any]]:
        ongoing = self.public_ongoing()
        states = self.states(list(self.catalog.services.values()), ongoing)
        return [
            {
                "id": sid,
                "name": svc.name,
                "aliases": list(svc.aliases),
                "group": svc.group,
                "status": states[sid][0],
            }
            for sid, svc in self.catalog.services.items()
        ]

    def window(self, svc: Service, now: float | None = None) -> dict[str, Any] | None:
        """The maintenance window `svc` (or its group) is in at `now`, if any."""
        now = self.clock() if now is None else now
        for w in self.windows:
            if w["service"] in (svc.id, svc.group) and w["starts_at"] <= now < w["ends_at"]:
                return w
        return None

    def upcoming(self, svc: Service | None = None) -> list[dict[str, Any]]:
        """Windows going on or to come (of `svc` and its group, or all), soonest first."""
        now = self.clock()
        return [
            w
            for w in self.windows
            if w["ends_at"] > now and (svc is None or w["service"] in (svc.id, svc.group))
        ]

    def status(self, svc: Service, doc: dict[str, Any] | None) -> str:
        """The service's status with `doc` its ongoing public incident (see `states`)."""
        return self.states([svc], {} if doc is None else {svc.id: doc})[svc.id][0]

    def service(self, svc: Service) -> dict[str, Any]:
        ongoing = self.public_ongoing()
        doc = ongoing.get(svc.id)
        status, detail = self.states([svc], ongoing)[svc.id]
        return {
            "id": svc.id,
            "name": svc.name,
            "status": status,
            "incident": None if doc is None else doc["id"],
            "minutes": self.minutes(svc.id),
            "probes": self.probe_results(svc.id)[0],
            "status_detail": detail,
        }

    def stale_since(self) -> float | None:
        """When the tracker last had fresh data, if that is over TRACKER_STALE_S ago (its
        pipeline stopped moving: the monitor's own outage is not "all green"); else None."""
        if self.engine is None:
            return self._stored_stale_since()
        wm = self.engine.pipeline.watermark  # one attribute read: no lock needed
        if wm is not None and self.clock() - wm > TRACKER_STALE_S:
            return wm
        return None

    def states(
        self, services: list[Service], ongoing: dict[str, dict[str, Any]]
    ) -> dict[str, tuple[str, str | None]]:
        """(status, status_detail) of each service: `maintenance` inside a window of its;
        else its public incident's severity; else
        `problems` when public probes fail from fewer vantages than the quorum; `unknown`
        when every source of it is silent, or the tracker itself has no fresh data."""
        stale = self.stale_since()
        now = self.clock()
        if self.engine is not None:
            verdicts = self.engine.verdicts(services, now)
        elif self.stored_verdicts is not None:
            verdicts = self.stored_verdicts.verdicts
        else:
            verdicts = {}
        out: dict[str, tuple[str, str | None]] = {}
        for svc in services:
            v = verdicts.get(svc.id)
            detail = v.detail if v is not None else None
            doc = ongoing.get(svc.id)
            window = self.window(svc)
            if stale is not None:
                out[svc.id] = ("unknown", f"no fresh data since {_hm(stale)} UTC")
            elif window is not None:
                out[svc.id] = ("maintenance", f"maintenance: {window['title']}")
            elif doc is not None:
                official = doc.get("official_status") or {}
                if detail is None and "status_page" in (doc.get("detected_by") or ()):
                    detail = f"its own status page says {official.get('indicator', 'major')}"
                out[svc.id] = (_status(doc), detail)
            elif v is not None and v.partial:
                out[svc.id] = ("problems", detail)
            elif v is not None and v.silent:
                out[svc.id] = ("unknown", "no fresh data from its probes or status page")
            else:
                out[svc.id] = ("ok", None)
        return out

    def official_status(self, service: str) -> dict[str, Any] | None:
        """What the service's own status page says now (None: nothing yet)."""
        if self.engine is None:
            if self.stored_verdicts is None:
                return None
            with self._read_lock:
                self.stored_verdicts.refresh()
            return self.stored_verdicts.official.get(service)
        return self.engine.official_status(service)

    def _stored_stale_since(self) -> float | None:
        """API node: the workers publish their verdicts at least every 30 s; none for over
        TRACKER_STALE_S (the workers are down) is a tracker without fresh data."""
        stored = self.stored_verdicts
        if stored is None:
            return None
        with self._read_lock:
            stored.refresh()
        if stored.newest is not None and self.clock() - stored.newest > TRACKER_STALE_S:
            return stored.newest
        return None

    def probe_results(
        self, service: str, span_s: float = DAY_MIN * 60.0
    ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[tuple[float, float | None]]]]:
        """The latest stored probe result per (target, vantage) of the last `span_s`, and per
        (target, vantage) the (time, latency in ms or None when failed) of every check."""
        now = self.clock()
        with self._read_lock:
            events = self.reader.events("probe", service, now - span_s, now + 300)
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        history: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
        for ev in events:
            key = (str(ev.get("target", "")), str(ev.get("vantage") or LOCAL_VANTAGE))
            ts = time_of(ev.get("ts"))
            if ts is None:
                continue
            ok = bool(ev.get("ok"))
            latency = ev.get("latency_ms")
            lat = float(latency) if isinstance(latency, int | float) else None
            history.setdefault(key, []).append((ts, lat if ok else None))
            latest[key] = {
                "target": key[0],
                "site": str(ev.get("site") or "public"),
                "vantage": key[1],
                "ok": ok,
                "status": ev.get("status"),
                "latency_ms": lat,
                "at": iso(ts),
            }
        return [latest[k] for k in sorted(latest)], history

    def minutes(self, service: str, span: int = DAY_MIN) -> list[dict[str, Any]]:
        """The last `span` minutes up to the current one: reports and the typical level."""
        m1 = int(self.clock() // 60) + 1
        m0 = m1 - span
        counts, baseline = self.series(service, m0, m1)
        base = np.round(baseline, 2).tolist()
        return [
            {"t": t, "reports": n, "baseline": None if math.isnan(b) else b}
            for t, n, b in zip(
                _minute_labels(m0, span), counts.astype(np.int64).tolist(), base, strict=True
            )
        ]

    def series(self, service: str, m0: int, m1: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, baseline) per minute of [m0, m1): the stored counts, and for the minutes
        the engine still holds, the larger of the two — the engine has what is not committed
        yet, the store also has reports that came too late for the engine's minutes."""
        with self._read_lock:
            counts = self.reader.minute_counts(service, m0 * 60, m1 * 60).astype(np.float64)
        baseline = np.full(m1 - m0, np.nan)
        if self.engine is not None:
            first, recent, baseline = self.engine.recent(service, m0, m1)
            held = counts[first - m0 :]
            np.maximum(held, recent[: m1 - first], out=held)
        elif self.baselines is not None:
            with self._read_lock:
                baseline = self.baselines(service, m0, m1)
        return counts, baseline

    def incidents(self, query: IncidentQuery = EVERY_INCIDENT) -> list[dict[str, Any]]:
        with self._read_lock:
            # The newest `limit` stored, plus what the engine holds, hold the newest overall.
            docs = self.reader.incidents(query)
        for d in docs:  # stored before incidents said what detected them: the crowd
            d.setdefault("detected_by", ["reports"])
        limit = query.limit
        if self.engine is None:
            return self.with_updates(docs[:limit] if limit else docs)
        # The engine's view of an incident is newer than the last commit's.
        live = {d["id"]: d for d in self.engine.ongoing().values()}
        out = [live.pop(d["id"], d) for d in docs]
        for d in live.values():  # opened since the last commit
            if incident_matches(d, query):
                out.append(d)
        out.sort(key=lambda d: (d["started_at"], d["id"]), reverse=True)
        out = [d for d in out if incident_matches(d, query)]
        return self.with_updates(out[:limit] if limit else out)

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        doc = self.engine.live_doc(incident_id) if self.engine is not None else None
        if doc is None:
            with self._read_lock:
                doc = self.reader.incident(incident_id)
        return None if doc is None else self.with_updates([doc])[0]

    def with_updates(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The docs with the operator's `updates` (docs/contract.md §4), oldest first."""
        with self._read_lock:
            return with_updates(self.reader, docs)

    def transitions(self, incident_id: str) -> list[dict[str, Any]]:
        with self._read_lock:
            return self.reader.transitions(incident_id)

    def history(self, service: str, days: int) -> list[dict[str, Any]]:
        """The last `days` UTC days up to today, oldest first (history.view.days_view)."""
        from outagewatch.history.view import days_view
        from outagewatch.store.counts import daily_reports

        now = self.clock()
        day1 = int(now // 86_400) + 1
        day0 = day1 - days
        with self._read_lock:
            reports = daily_reports(self.reader, service, day0, day1)
        docs = self.incidents(IncidentQuery(service=service, since=day0 * 86_400.0))
        return days_view(docs, reports, day0, now)

    def breakdown(self, service: str, span: int = 120) -> tuple[dict[str, int], dict[str, int]]:
        """Reports by country and by problem over the last `span` minutes the engine still
        holds in memory (at most its ring): the outage map when no incident is ongoing.
        Never waits for the writer longer than any other read (Engine.breakdown)."""
        if self.engine is None:
            return {}, {}
        return self.engine.breakdown(service, span)


@functools.lru_cache(maxsize=8)
def _minute_labels(m0: int, span: int) -> tuple[str, ...]:
    """RFC 3339 labels of `span` minutes from minute `m0` (cached: every request of a minute
    asks for the same ones)."""
    t = np.arange(m0, m0 + span, dtype=np.int64).astype("datetime64[m]")
    return tuple(f"{s}:00Z" for s in np.datetime_as_string(t, unit="m"))


def _hm(ts: float) -> str:
    return iso(ts)[11:16]


def _status(doc: dict[str, Any] | None) -> str:
    from outagewatch.incidents.severity import severity

    return "ok" if doc is None else severity(doc)
