"""End to end: event streams built from the seed articles, through decoding and the pipeline.

Each test asserts on numbers (onset, detection delay, totals, countries), not only on the
existence of an incident.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from outagewatch.catalog import Catalog
from outagewatch.detect.series import Series
from outagewatch.events import EventDecoder
from outagewatch.pipeline.dedup import Dedup
from outagewatch.pipeline.pipeline import Pipeline
from outagewatch.sim.simulate import Bump, ServiceTraffic, Surge, simulate

CATALOG = Catalog.demo()
DAY = 86_400


def utc(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp()


def epoch(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


def run(lines: Sequence[bytes], pipeline: Pipeline | None = None) -> tuple[Pipeline, list[Any]]:
    """Feed lines in batches like `replay` does; return the pipeline and all incident docs."""
    p = pipeline or Pipeline()
    dec = EventDecoder(CATALOG)
    docs: dict[str, Any] = {}
    step = 20_000
    for i in range(0, len(lines), step):
        d = dec.decode(lines[i : i + step], i + 1)
        assert not d.rejected
        p.ingest(d.reports)
        for doc in p.drain_incidents():
            docs[doc["id"]] = doc
    for doc in p.ongoing():
        docs[doc["id"]] = doc
    return p, sorted(docs.values(), key=lambda d: d["started_at"])


def counted_in(lines: Sequence[bytes], service: str, start: float, end: float) -> int:
    """Reports of `service` in [start, end) after a 15-minute dedup: what total_reports means."""
    d = EventDecoder(CATALOG).decode(lines)
    r = d.reports
    keep = Dedup(900).filter(r.service, r.person, r.ts, r.count)
    return sum(
        c
        for s, t, c, k in zip(r.service, r.ts, r.count, keep, strict=True)
        if k and s == service and start <= t < end
    )


def x_traffic(rate: float = 6.0) -> ServiceTraffic:
    return ServiceTraffic(
        "x",
        rate,
        {"US": 0.55, "GB": 0.15, "IN": 0.1, "JP": 0.1, "BR": 0.1},
        {"app": 0.5, "website": 0.25, "login": 0.2, "spaces": 0.05},
    )


def ramped(total: float, minutes: int, ramp: int = 3) -> list[float]:
    shape = np.ones(minutes)
    shape[:ramp] = np.linspace(0.3, 1.0, ramp)
    shape[-ramp:] = np.linspace(1.0, 0.3, ramp)
    return list(shape / shape.sum() * total)


def test_x_night_outage_us_uk() -> None:
    """X down for US and UK users 1:30-2:30 a.m. PT with over 16,000 reports."""
    start = utc("2025-03-04T00:00:00")
    onset = utc("2025-03-11T08:30:00")  # 1:30 a.m. PDT
    surge = Surge("x", onset, ramped(16_000, 60), {"US": 0.72, "GB": 0.28}, name="night")
    sim = simulate([x_traffic()], start, 8 * 1440, [surge], seed=1)
    _, docs = run(sim.lines)
    assert len(docs) == 1, docs
    inc = docs[0]
    started, detected = epoch(inc["started_at"]), epoch(inc["detected_at"])
    assert abs(started - onset) <= 120
    assert detected - started <= 120
    assert abs(epoch(inc["ended_at"]) - (onset + 3600)) <= 300
    truth = sim.truth["night"].reports
    assert truth == pytest.approx(16_000, rel=0.05)
    assert inc["total_reports"] == pytest.approx(truth, rel=0.25)
    span = (epoch(inc["started_at"]), epoch(inc["ended_at"]))
    assert inc["total_reports"] == counted_in(sim.lines, "x", *span)
    assert [c["country"] for c in inc["countries"][:2]] == ["US", "GB"]
    us = inc["countries"][0]["reports"] / inc["total_reports"]
    assert 0.6 < us < 0.8
    assert inc["baseline_reports_per_minute"] < 15
    assert inc["peak_reports_per_minute"] > 200
    assert inc["status"] == "resolved"
    # Reports alone, no catalog given to the pipeline: nothing to explain it with.
    assert [c["kind"] for c in inc["causes"]] == ["unknown"] and inc["cluster"] is None


def test_saturday_failover_outage_with_long_tail_is_one_incident() -> None:
    """A sharp 8:30 a.m. ET peak (~25,800 reports), then trouble at 6-15x until noon."""
    start = utc("2025-03-07T00:00:00")
    onset = utc("2025-03-15T12:20:00")  # 8:20 a.m. EDT, peak at 8:30
    rng = np.random.default_rng(7)
    sharp = [200, 600, 1200, 1800, 2100, 2300, 2400, 2300, 2000, 1600, 1300, 1000, 800, 600, 400]
    rate = 6.0
    # Wavering tail until noon EDT (16:00 UTC): 6-15x the normal rate, changing every 10 min.
    tail_minutes = int((utc("2025-03-15T16:00:00") - onset) / 60) - len(sharp)
    levels = np.repeat(rng.uniform(6, 15, tail_minutes // 10 + 1), 10)[:tail_minutes]
    per_minute = [float(v) for v in sharp] + list(levels * rate)
    surge = Surge("x", onset, per_minute, name="saturday")
    sim = simulate([x_traffic(rate)], start, 9 * 1440, [surge], seed=2)
    _, docs = run(sim.lines)
    assert len(docs) == 1, [(d["started_at"], d["ended_at"]) for d in docs]
    inc = docs[0]
    assert abs(epoch(inc["started_at"]) - onset) <= 120
    assert abs(epoch(inc["peak_at"]) - (onset + 6 * 60)) <= 180
    assert abs(epoch(inc["ended_at"]) - utc("2025-03-15T16:00:00")) <= 900
    truth = sim.truth["saturday"].reports
    assert inc["total_reports"] == pytest.approx(truth, rel=0.25)
    assert inc["peak_reports_per_minute"] == pytest.approx(2400, rel=0.2)


def test_meta_apps_down_together_whatsapp_and_x_fine() -> None:
    """Facebook, Instagram, Messenger, Threads down; WhatsApp up; X gets 25% more traffic."""
    start = utc("2025-02-26T00:00:00")
    onset = utc("2025-03-05T15:00:00")
    apps = {"app": 0.4, "login": 0.4, "website": 0.2}
    traffic = [
        ServiceTraffic("facebook", 8, {"US": 0.4, "IN": 0.2, "BR": 0.2, "GB": 0.2}, apps),
        ServiceTraffic("instagram", 6, {"US": 0.45, "BR": 0.25, "GB": 0.3}, apps),
        ServiceTraffic("messenger", 1.5, {"US": 0.5, "PH": 0.25, "GB": 0.25}, {"app": 1.0}),
        ServiceTraffic("threads", 1.0, {"US": 0.6, "GB": 0.4}, {"app": 0.5, "login": 0.5}),
        ServiceTraffic("whatsapp", 5, {"IN": 0.4, "BR": 0.3, "GB": 0.3}, {"messages": 1.0}),
        x_traffic(6.0),
    ]
    sizes = {"facebook": 60_000, "instagram": 40_000, "messenger": 12_000, "threads": 6_000}
    surges = [Surge(s, onset, ramped(n, 120, 5), name=s) for s, n in sizes.items()]
    bumps = [Bump("x", onset, 150, 1.25)]
    sim = simulate(traffic, start, 8 * 1440, surges, bumps, seed=3)
    _, docs = run(sim.lines)
    by_service = {d["service"]: d for d in docs}
    assert sorted(by_service) == sorted(sizes), [(d["service"], d["started_at"]) for d in docs]
    for sid, inc in by_service.items():
        assert abs(epoch(inc["started_at"]) - onset) <= 180, sid
        assert epoch(inc["detected_at"]) - epoch(inc["started_at"]) <= 180, sid
        assert inc["total_reports"] == pytest.approx(sim.truth[sid].reports, rel=0.25), sid
        assert abs(epoch(inc["ended_at"]) - (onset + 7200)) <= 600, sid


def test_month_with_growth_holiday_and_bumps_no_false_incident_small_outages_found() -> None:
    """30 days: one service triples, a holiday, organic 1.4-1.6x bumps; 4 small outages."""
    start = utc("2025-06-16T00:00:00")  # includes 4 July (US holiday)
    traffic = [
        ServiceTraffic(
            "netflix",
            3.0,
            {"US": 0.7, "CA": 0.1, "GB": 0.2},
            {"streaming": 0.6, "app": 0.3, "login": 0.1},
            growth_per_day=3 ** (1 / 30) - 1,  # triples over the month
            weekend_factor=1.3,
        ),
        ServiceTraffic(
            "discord",
            2.0,
            {"US": 0.5, "DE": 0.2, "GB": 0.2, "FR": 0.1},
            {"app": 0.5, "voice": 0.3, "messages": 0.2},
            weekend_factor=1.2,
        ),
        ServiceTraffic("shopify", 0.3, {"US": 0.7, "CA": 0.3}, {"checkout": 0.5, "website": 0.5}),
        ServiceTraffic("gmail", 0.15, {"US": 0.6, "IN": 0.4}, {"email": 0.7, "login": 0.3}),
    ]
    rng = np.random.default_rng(11)
    bumps = []
    for day in range(3, 29, 2):  # an organic bump every other day, at a random hour
        for sid in ("netflix", "discord"):
            t = start + day * DAY + int(rng.integers(0, 24)) * 3600
            bumps.append(Bump(sid, t, 60, float(rng.uniform(1.4, 1.6))))
    outages = {
        "shopify": start + 9 * DAY + 14 * 3600 + 7 * 60,
        "gmail": start + 14 * DAY + 3 * 3600 + 41 * 60,
        "discord": start + 20 * DAY + 19 * 3600 + 13 * 60,
        "netflix": start + 26 * DAY + 21 * 3600 + 52 * 60,
    }
    surges = [
        Surge(sid, t, [12.0] * 15 if sid in ("shopify", "gmail") else [25.0] * 20, name=sid)
        for sid, t in outages.items()
    ]
    sim = simulate(traffic, start, 30 * 1440, surges, bumps, seed=4)
    _, docs = run(sim.lines)
    found = {d["service"]: d for d in docs}
    assert len(docs) == len(outages), [(d["service"], d["started_at"]) for d in docs]
    delays = []
    for sid, onset in outages.items():
        inc = found[sid]
        assert abs(epoch(inc["started_at"]) - onset) <= 120, sid
        delays.append((epoch(inc["detected_at"]) - onset) / 60)
        # The incident counts every report in its span: the surge plus the normal traffic.
        span = (epoch(inc["started_at"]), epoch(inc["ended_at"]))
        assert inc["total_reports"] == counted_in(sim.lines, sid, *span), inc
        assert inc["total_reports"] >= sim.truth[sid].reports * 0.9, inc
        assert abs(epoch(inc["ended_at"]) - sim.truth[sid].last_minute - 60) <= 300, inc
    assert statistics.median(delays) <= 2


def test_new_region_doubling_in_three_days_is_no_incident() -> None:
    start = utc("2025-04-01T00:00:00")
    traffic = [
        ServiceTraffic(
            "youtube",
            4.0,
            {"US": 0.6, "GB": 0.3, "BR": 0.1},
            {"video": 0.7, "app": 0.3},
            country_growth_per_day={"BR": 2 ** (1 / 3) - 1},  # BR doubles every three days
        )
    ]
    sim = simulate(traffic, start, 12 * 1440, seed=5)
    _, docs = run(sim.lines)
    assert docs == []


def test_out_of_order_within_lateness_gives_the_same_incidents() -> None:
    start = utc("2025-03-04T00:00:00")
    onset = utc("2025-03-10T10:00:00")
    surge = Surge("x", onset, ramped(3000, 30), name="s")
    ordered = simulate([x_traffic()], start, 7 * 1440, [surge], seed=6)
    shuffled = simulate([x_traffic()], start, 7 * 1440, [surge], seed=6, jitter_s=90)
    assert ordered.lines != shuffled.lines
    _, a = run(ordered.lines)
    p2, b = run(shuffled.lines)
    assert len(a) == len(b) == 1
    assert p2.stats.late == 0
    for key in ("started_at", "ended_at", "total_reports", "countries"):
        assert a[0][key] == b[0][key], key


def test_history_import_with_counts_warms_the_baseline() -> None:
    """A week of per-minute counts (`count` > 1), then live single reports with an outage."""
    start = utc("2025-03-03T00:00:00")
    history = simulate([x_traffic()], start, 7 * 1440, seed=12, aggregate=True)
    assert any(b'"count":' in ln for ln in history.lines[:100])
    live_start = start + 7 * 86400
    onset = live_start + 6 * 3600
    surge = Surge("x", onset, ramped(2000, 20), name="live")
    live = simulate([x_traffic()], live_start, 720, [surge], seed=13)
    p, docs = run(history.lines + live.lines)
    assert p.stats.duplicates > 0  # live repeats are deduplicated; history counts never are
    assert len(docs) == 1
    assert abs(epoch(docs[0]["started_at"]) - onset) <= 120
    assert epoch(docs[0]["detected_at"]) - onset <= 180


def test_one_by_one_equals_batches_with_long_silences() -> None:
    """The batch path (spans, pre-added reports) must equal feeding reports one at a time,
    also across silences of hours (a near-silent service) and out-of-order arrivals."""
    start = utc("2025-03-03T00:00:00")
    traffic = [
        ServiceTraffic("gmail", 0.01, {"US": 1.0}, {"email": 1.0}),  # hours without a report
        ServiceTraffic("shopify", 0.2, {"US": 0.7, "CA": 0.3}, {"checkout": 1.0}),
    ]
    surges = [Surge("gmail", start + 2 * 86400 + 3600 * 5, [12.0] * 15, name="g")]
    sim = simulate(traffic, start, 3 * 1440, surges, seed=21, jitter_s=200)
    batch, _ = run(sim.lines)
    one = Pipeline()
    dec = EventDecoder(CATALOG)
    for line in sim.lines:
        one.ingest(dec.decode([line]).reports)
    assert one.stats == batch.stats
    n = len(batch.series)
    assert len(one.series) == n
    for name in Series.ARRAYS:
        assert (one.series.view(name) == batch.series.view(name)).all(), name
    assert sorted(one.incidents) == sorted(batch.incidents)
    assert one.closed_until == batch.closed_until and one.learn_until == batch.learn_until
    transitions = batch.drain_transitions()
    assert one.drain_transitions() == transitions
    assert [(t.incident, t.action) for t in transitions if t.action not in ("peak", "cause")] == [
        ("gmail-20250305T0500Z", "opened"),
        ("gmail-20250305T0500Z", "resolved"),
    ]


def test_the_clock_alone_resolves_an_incident() -> None:
    """No report after an outage: `advance_to` (the server's wall clock) closes the minutes."""
    start = utc("2025-03-03T00:00:00")
    onset = start + 7 * 86400 - 1800
    surge = Surge("x", onset, ramped(3000, 20), name="end")
    sim = simulate([x_traffic()], start, 7 * 1440 - 10, [surge], seed=31)
    p, docs = run(sim.lines)
    assert [d["status"] for d in docs] == ["ongoing"]
    p.advance_to(start + 7 * 86400 + 3600)
    done = p.drain_incidents()
    assert [d["status"] for d in done] == ["resolved"]
    assert abs(epoch(done[0]["ended_at"]) - (onset + 20 * 60)) <= 180
    assert p.open_by_service == {}
