"""GET /metrics: Prometheus text from prometheus-client, one registry per server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outagewatch.incidents.severity import public

if TYPE_CHECKING:
    from outagewatch.runtime.engine import Engine
    from outagewatch.runtime.writer import LocalBus
    from outagewatch.web.ingest import Ingest
    from outagewatch.web.live import Live

# What the metrics read at scrape time: the live view, and in a single process the engine
# and the writer (None before start and after stop, and the latter two on an API node).
Sources = Callable[[], "tuple[Live | None, Engine | None, LocalBus | None]"]


class _Collector(Collector):
    """Reads the live counters at scrape time (no double bookkeeping)."""

    def __init__(self, sources: Sources, ingest: Ingest | None = None) -> None:
        self.sources = sources
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        live, engine, bus = self.sources()
        if live is None:
            return
        c = live.counters
        accepted = CounterMetricFamily(
            "outagewatch_events_accepted", "Events accepted over HTTP, by type", labels=["type"]
        )
        for kind, n in sorted(c.accepted.items()):
            accepted.add_metric([kind], n)
        yield accepted
        rejected = CounterMetricFamily(
            "outagewatch_events_rejected", "Events rejected over HTTP, by reason", labels=["reason"]
        )
        for reason, n in sorted(c.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        if self.ingest is not None:
            shed = CounterMetricFamily(
                "outagewatch_requests_shed",
                "Requests refused with 503 as over capacity (load shedding), by reason",
                labels=["reason"],
            )
            for reason, n in sorted(self.ingest.shed.items()):
                shed.add_metric([reason], n)
            yield shed
        yield CounterMetricFamily("outagewatch_commits", "Pipeline commits to the store", c.commits)
        yield CounterMetricFamily(
            "outagewatch_commit_seconds", "Time spent committing", c.commit_seconds
        )
        if engine is not None:
            yield CounterMetricFamily(
                "outagewatch_ticks", "Minutes closed (pipeline ticks)", engine.ticks
            )
            yield CounterMetricFamily(
                "outagewatch_tick_seconds", "Time spent in pipeline ticks", engine.tick_seconds
            )
            ongoing = engine.ongoing().values()
            yield GaugeMetricFamily("outagewatch_open_incidents", "Ongoing incidents", len(ongoing))
            yield GaugeMetricFamily(
                "outagewatch_open_incidents_hidden",
                "Ongoing incidents kept off the public status as suspected fake-report floods",
                sum(not public(d) for d in ongoing),
            )
        if bus is not None:
            yield GaugeMetricFamily(
                "outagewatch_bus_queue", "Jobs waiting for the writer", bus.depth
            )
            yield CounterMetricFamily(
                "outagewatch_journal_groups", "Journal transactions (group commits)", bus.groups
            )


class Metrics:
    def __init__(self, sources: Sources, ingest: Ingest | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(sources, ingest))

    async def endpoint(self) -> Response:
        return Response(
            generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )
