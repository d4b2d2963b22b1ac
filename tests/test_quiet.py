"""Quiet runs (`Pipeline._quiet_run`, detect.quiet) equal minute-by-minute ticks exactly."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pytest

from outagewatch.catalog import Catalog
from outagewatch.detect.series import Series
from outagewatch.events import EventDecoder, parse_ts
from outagewatch.incidents.lifecycle import Incident, State
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.settings import PipelineSettings
from outagewatch.sim.scenarios import SCENARIOS, run, scenario, scenario_catalog
from outagewatch.sim.simulate import ServiceTraffic, Surge, outage_profile, simulate

CATALOG = Catalog.demo()
START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp()


def month(jitter_s: float) -> list[bytes]:
    """A month of a few quiet services (one silent for hours at a time) with small outages."""
    traffic = [
        ServiceTraffic("gmail", 0.02, {"US": 1.0}, {"email": 1.0}),
        ServiceTraffic("shopify", 0.3, {"US": 0.7, "CA": 0.3}, {"checkout": 0.6, "admin": 0.4}),
        ServiceTraffic("discord", 1.5, {"US": 0.6, "GB": 0.2, "DE": 0.2}, {"app": 1.0}),
    ]
    surges = [
        Surge("gmail", START + 9 * 86400 + 3 * 3600, [12.0] * 15, name="g"),
        Surge("shopify", START + 16 * 86400 + 14 * 3600 + 600, outage_profile(20.0, 3, 15, 10)),
        Surge("discord", START + 23 * 86400 + 20 * 3600, outage_profile(30.0, 3, 20, 10)),
        Surge("discord", START + 27 * 86400 + 5 * 3600 + 1200, outage_profile(25.0, 3, 12, 10)),
    ]
    return simulate(traffic, START, 30 * 1440, surges, seed=15, jitter_s=jitter_s).lines


def replay(lines: Sequence[bytes], *, quiet: bool) -> tuple[Pipeline, list[Any], list[Any]]:
    p = Pipeline(catalog=CATALOG)
    p.quiet_runs = quiet
    dec = EventDecoder(CATALOG)
    docs: dict[str, Any] = {}
    for i in range(0, len(lines), 20_000):
        d = dec.decode(lines[i : i + 20_000], i + 1)
        assert not d.rejected
        p.ingest(d.reports)
        for doc in p.drain_incidents():
            docs[doc["id"]] = doc
    # The clock alone (a server's `advance_to`) closes the rest: quiet runs there too.
    p.advance_to(START + 30 * 86400 + 6 * 3600)
    for doc in p.drain_incidents():
        docs[doc["id"]] = doc
    return p, sorted(docs.values(), key=lambda d: d["id"]), p.drain_transitions()


def with_and_without_runs(
    lines: Sequence[bytes], windows: Sequence[tuple[str, float, float]], batch: int, until: float
) -> tuple[list[tuple[Pipeline, list[Any], list[Any]]], list[Recorder]]:
    """The lines in batches, then the clock to `until`, with quiet runs and then minute by
    minute, under the maintenance `windows`: each pipeline, its incident docs and its
    transitions, and the hooks that recorded the quiet minutes (stopping no run)."""
    out = []
    hooks: list[Recorder] = []
    for quiet in (True, False):
        p = Pipeline(catalog=CATALOG)
        p.quiet_runs = quiet
        p.set_maintenance(windows)
        hook = Recorder(every=None)
        p.quiet_hooks.append(hook)
        hooks.append(hook)
        docs: list[Any] = []
        for i in range(0, len(lines), batch):
            p.ingest(EventDecoder(CATALOG).decode(lines[i : i + batch], i + 1).reports)
            docs += p.drain_incidents()
        p.advance_to(until)
        docs += p.drain_incidents()
        out.append((p, docs, p.drain_transitions()))
    return out, hooks


def assert_same(fast: Pipeline, slow: Pipeline) -> None:
    assert fast.stats == slow.stats
    assert fast.closed_until == slow.closed_until and fast.learn_until == slow.learn_until
    assert fast.final_until == slow.final_until
    for name in Series.ARRAYS:
        a, b = fast.series.view(name), slow.series.view(name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    # The flood sketches: the same after chunks joined late and several at once (the
    # minutes of their ring: slots older than it are never read, and quiet runs leave out
    # reports only such slots would hold).
    assert fast.sources.dump() == slow.sources.dump()
    assert fast.sources.newest == slow.sources.newest


@pytest.mark.slow
def test_quiet_runs_equal_minute_by_minute_ticks_over_a_month() -> None:
    lines = month(0.0)
    fast, fast_docs, fast_tr = replay(lines, quiet=True)
    slow, slow_docs, slow_tr = replay(lines, quiet=False)
    assert fast_docs == slow_docs
    assert fast_tr == slow_tr
    opened = sorted(t.incident for t in fast_tr if t.action == "opened")
    assert opened == [
        "discord-20250326T2000Z",
        "discord-20250330T0521Z",
        "gmail-20250312T0300Z",
        "shopify-20250319T1410Z",
    ]
    assert_same(fast, slow)


def test_quiet_runs_stop_at_every_window_candidate_near_the_guards() -> None:
    """The window test alone (sequential test off): bursts whose windows pass the guards
    by little (a few reports more than `min_excess` over the forecast) open the same
    incidents, at the same minutes, with quiet runs as minute by minute. The quiet scan
    tests a series' windows exactly only when its running sums say they may pass the
    guards (`detect.quiet._may_pass`); this is where a prefilter too strict would show."""
    traffic = [
        ServiceTraffic("gmail", 0.05, {"US": 1.0}, {"email": 1.0}),
        ServiceTraffic("shopify", 0.2, {"US": 0.7, "CA": 0.3}, {"checkout": 1.0}),
    ]
    day = 86400
    surges = [
        Surge(svc, START + d * day + 3600 * (4 + d % 7), rates, name=f"{svc}{d}")
        for d, (svc, rates) in enumerate(
            [("gmail", [7.0]), ("shopify", [4.0, 4.0]), ("gmail", [3.0, 3.0, 3.0]),
             ("shopify", [8.0]), ("gmail", [2.0] * 5), ("shopify", [3.0] * 4)] * 2,
            start=3,
        )
    ]  # fmt: skip
    lines = simulate(traffic, START, 16 * 1440, surges, seed=5, jitter_s=0.0).lines
    settings = PipelineSettings(false_alarm_budget=0.0)
    got = []
    for quiet in (True, False):
        p = Pipeline(settings, catalog=CATALOG)
        p.quiet_runs = quiet
        docs: list[Any] = []
        for i in range(0, len(lines), 5_000):
            p.ingest(EventDecoder(CATALOG).decode(lines[i : i + 5_000], i + 1).reports)
            docs += p.drain_incidents()
        got.append((p, docs, p.drain_transitions()))
    (fast, fast_docs, fast_tr), (slow, slow_docs, slow_tr) = got
    assert fast_tr == slow_tr and fast_docs == slow_docs
    assert len({t.incident for t in fast_tr if t.action == "opened"}) >= 4
    assert_same(fast, slow)


@pytest.mark.slow
def test_quiet_runs_equal_ticks_with_out_of_order_reports() -> None:
    lines = month(200.0)[:30_000]  # the first ~10 days: the gmail outage
    fast, fast_docs, fast_tr = replay(lines, quiet=True)
    slow, slow_docs, slow_tr = replay(lines, quiet=False)
    assert fast_docs == slow_docs
    assert fast_tr == slow_tr
    assert [t.incident for t in fast_tr if t.action == "opened"] == ["gmail-20250312T0300Z"]
    assert_same(fast, slow)


class Recorder:
    """A quiet-run hook that records the quiet minutes and wants an ordinary tick at every
    minute divisible by `every` (None: never)."""

    def __init__(self, every: int | None = 7) -> None:
        self.skipped: list[tuple[int, int]] = []
        self.every = every

    def quiet_until(self, m0: int, m1: int) -> int:
        if self.every is None:
            return m1
        return next((m for m in range(m0, m1) if m % self.every == 0), m1)

    def skip(self, m0: int, m1: int) -> None:
        if m1 > m0:
            self.skipped.append((m0, m1))


@pytest.mark.slow
def test_quiet_run_hooks_cover_every_quiet_minute_once_and_can_stop_a_run() -> None:
    lines = month(0.0)[:8_000]  # three days
    slow, _, _ = replay(lines, quiet=False)
    p = Pipeline(catalog=CATALOG)
    hook = Recorder()
    p.quiet_hooks.append(hook)
    p.ingest(EventDecoder(CATALOG).decode(lines).reports)
    p.advance_to(START + 30 * 86400 + 6 * 3600)
    covered = [m for a, b in hook.skipped for m in range(a, b)]
    assert covered == sorted(set(covered))
    assert not any(m % 7 == 0 for m in covered)
    assert len(covered) > 0.5 * p.stats.ticks
    assert_same(p, slow)


def test_learning_factors_gathered_per_half_hour_equal_the_per_minute_ones() -> None:
    from outagewatch.detect.baseline import Baseline
    from outagewatch.detect.series import SeriesKey
    from outagewatch.settings import PipelineSettings

    b = Baseline(PipelineSettings())
    s = Series(128)
    rng = np.random.default_rng(1)
    for c in ("US", "IN", "GB", "AU", "NP", "DE", "BR"):  # whole, half and 3/4-hour offsets
        s.get(SeriesKey("x", "country", c))
    n = len(s)
    s.season[:n] = rng.uniform(0.02, 2.0, (n, 48))
    s.dow[:n] = rng.uniform(0.5, 1.5, (n, 7))
    for start in range(29_000_000, 29_000_000 + 1_500, 7):
        minutes = list(range(start, start + 15))
        got = b._block_factors(s, minutes)
        want = np.stack([b.season_factor(s, m) for m in minutes], axis=1)
        assert np.array_equal(got, want), start


@pytest.mark.slow
def test_quiet_runs_equal_ticks_with_half_hour_offsets_and_maintenance() -> None:
    """Runs cross half hours, days and learning blocks: a country on a half-hour offset
    (IN, +5:30: its profile slots change at :00 UTC), a weekend and a maintenance window
    (its minutes do not teach the baseline) give the same state as minute-by-minute ticks."""
    traffic = [
        ServiceTraffic("gmail", 0.4, {"IN": 0.7, "US": 0.3}, {"email": 1.0}),
        ServiceTraffic("discord", 1.2, {"IN": 0.5, "GB": 0.5}, {"app": 1.0}),
    ]
    surges = [Surge("discord", START + 4 * 86400 + 7 * 3600, outage_profile(30.0, 3, 20, 10))]
    lines = simulate(traffic, START, 8 * 1440, surges, seed=3).lines
    windows = [("gmail", START + 2 * 86400 + 1800, START + 2 * 86400 + 9 * 3600)]
    out, hooks = with_and_without_runs(lines, windows, 5_000, START + 8 * 86400 + 3 * 3600)
    (fast, fast_docs, fast_tr), (slow, slow_docs, slow_tr) = out
    assert fast_docs == slow_docs and fast_tr == slow_tr
    assert [t.incident for t in fast_tr if t.action == "opened"] == ["discord-20250307T0700Z"]
    assert_same(fast, slow)
    # The quiet runs did the work (none in the minute-by-minute replay).
    covered = [sum(b - a for a, b in h.skipped) for h in hooks]
    assert covered[0] > 0.9 * fast.stats.ticks and covered[1] == 0


@pytest.mark.slow
def test_the_read_api_answers_from_the_ring_and_the_baseline() -> None:
    """`Pipeline.recent_counts`, `breakdown`, `typical`, `live_doc`, `open_count`: what
    engine, replay and web read, without reaching into the pipeline's arrays."""
    lines = month(0.0)[:30_000]  # ~10 days: the gmail outage and after
    p = Pipeline(catalog=CATALOG)
    dec = EventDecoder(CATALOG)
    times = [parse_ts(msgspec.json.decode(line)["ts"]) or 0.0 for line in lines]
    stop = START + 9 * 86400 + 3 * 3600 + 5 * 60  # five minutes into the gmail outage
    head = [ln for ln, t in zip(lines, times, strict=True) if t < stop]
    p.ingest(dec.decode(head).reports)
    assert p.open_count == 1
    (doc,) = p.ongoing()
    assert p.live_doc(doc["id"]) == doc and p.live_doc("nope") is None
    now = p.closed_until
    # Counts: the ring's minutes (the current one included), 0 for minutes not reached.
    first, counts = p.recent_counts("gmail", now - 30, now + 3)
    assert first == now - 30 and len(counts) == 33
    # ...as counted (after deduplication) for the store:
    rows = p.drain_counts()
    gmail = np.asarray(rows.service) == rows.services.index("gmail")
    by_minute: Counter[int] = Counter()
    countries_10: Counter[str] = Counter()
    problems_10: Counter[str] = Counter()
    for mi, c, pr, n in zip(
        rows.minute[gmail], rows.country[gmail], rows.problem[gmail], rows.count[gmail],
        strict=True,
    ):  # fmt: skip
        by_minute[int(mi)] += int(n)
        if mi > now - 10:
            countries_10[rows.countries[c]] += int(n)
            problems_10[rows.problems[pr]] += int(n)
    assert by_minute[now] > 0
    assert counts.tolist()[:31] == [float(by_minute[m]) for m in range(now - 30, now + 1)]
    assert counts.tolist()[31:] == [0.0, 0.0]
    first, _ = p.recent_counts("gmail", now - 1000, now)
    assert first == now - p.series.ring + 1  # older minutes are no longer held
    # Breakdowns over the last 10 minutes.
    assert p.breakdown("gmail", 10) == (dict(countries_10), dict(problems_10))
    assert p.breakdown("unknown", 10) == ({}, {}) and p.recent_counts("unknown", 0, 3)[1].sum() == 0
    # The typical band: the baseline's curve of the service's total series.
    band = p.typical("gmail", now - 60, now)
    assert band.shape == (60,) and np.all(band > 0) and np.all(np.isfinite(band))
    assert np.isnan(p.typical("unknown", 0, 5)).all()


def test_the_calendar_of_a_span_is_the_per_half_hour_one() -> None:
    """`Baseline.calendar_span` (whole days at once, for quiet runs) equals the slots and
    weekdays ticks compute half hour by half hour, across days, weekends and holidays in
    countries on whole and half-hour offsets."""
    from outagewatch.detect.baseline import Baseline
    from outagewatch.detect.series import SeriesKey
    from outagewatch.settings import PipelineSettings

    s = Series(128)
    for c in ("US", "IN", "GB", "AU", "DE", "BR", "JP"):
        s.get(SeriesKey("x", "country", c))
    s.get(SeriesKey("x", "total"))
    s.get(SeriesKey("x", "problem", "login"))
    b = Baseline(PipelineSettings())
    ref = Baseline(PipelineSettings())
    # Late December to early January: Christmas, New Year and weekends.
    h_start = int(dt.datetime(2025, 12, 20, tzinfo=dt.UTC).timestamp()) // 1800
    for h0 in range(h_start, h_start + 20 * 48, 37):
        h1 = h0 + 1 + h0 % 60
        s0, s1, wd = b.calendar_span(s, h0, h1)
        for k, h in enumerate(range(h0, h1)):
            r0, r1, _ = ref._slots(s, h * 30 + h % 30)
            assert np.array_equal(s0[k], r0) and np.array_equal(s1[k], r1), h
            assert np.array_equal(wd[k], ref.weekday(s, h * 30 + h % 30)), h
    # Holidays do show (Christmas in the US is a Sunday-like day).
    h_xmas = int(dt.datetime(2025, 12, 25, 18, tzinfo=dt.UTC).timestamp()) // 1800
    _, _, wd = b.calendar_span(s, h_xmas, h_xmas + 1)
    us = s.get(SeriesKey("x", "country", "US"))
    assert wd[0, us] == 6 and dt.date(2025, 12, 25).weekday() == 3


DAY = 86400


def busy_weeks() -> tuple[list[bytes], list[tuple[str, float, float]]]:
    """16 days of three services with long incidents (see the test below), and a
    maintenance window of gmail during the longest."""
    traffic = [
        ServiceTraffic("gmail", 0.3, {"US": 0.6, "IN": 0.4}, {"email": 1.0}),
        ServiceTraffic("shopify", 0.5, {"US": 0.7, "CA": 0.3}, {"checkout": 0.6, "admin": 0.4}),
        ServiceTraffic("discord", 1.2, {"US": 0.5, "GB": 0.5}, {"app": 1.0}),
    ]
    surges = [
        Surge("discord", START + 6 * DAY + 9 * 3600, outage_profile(20.0, 5, 6 * 60, 30)),
        Surge("shopify", START + 6 * DAY + 11 * 3600, outage_profile(25.0, 3, 20, 10)),
        Surge("discord", START + 6 * DAY + 15 * 3600 + 55 * 60, outage_profile(30.0, 2, 10, 5)),
        Surge("gmail", START + 12 * DAY + 2 * 3600, outage_profile(15.0, 3, 8 * 60, 20)),
    ]
    lines = simulate(traffic, START, 16 * 1440, surges, seed=21).lines
    windows = [("gmail", START + 6 * DAY + 10 * 3600, START + 6 * DAY + 13 * 3600)]
    return lines, windows


@pytest.mark.slow
def test_quiet_runs_go_on_beside_open_incidents() -> None:
    """Incidents open for hours while other services stay quiet: the services with an
    incident are ticked minute by minute beside a run of the others (`Pipeline._quiet_run`),
    and every result equals minute-by-minute ticks. In the month: a six-hour discord
    outage during which shopify has its own (a candidate of a service outside the incident
    ends a run) and gmail is in maintenance (it does not learn, the incident's service
    learns nothing either); a second discord surge while the first incident is resolved
    but not yet final (still in `incidents`); and a long gmail outage on a weekend."""
    lines, windows = busy_weeks()
    day = 86400
    out, hooks = with_and_without_runs(lines, windows, 7_000, START + 16 * day + 3 * 3600)
    (fast, fast_docs, fast_tr), (slow, slow_docs, slow_tr) = out
    assert fast_docs == slow_docs and fast_tr == slow_tr
    assert_same(fast, slow)
    opened = [t for t in fast_tr if t.action == "opened"]
    assert {t.service for t in opened} == {"discord", "shopify", "gmail"}
    # Minutes with an incident in `incidents` (open, or ended and not yet final).
    last = {doc["id"]: doc for doc in fast_docs}  # the latest version of each
    spans = {
        iid: (int(parse_ts(d["started_at"]) or 0) // 60, int(parse_ts(d["ended_at"]) or 0) // 60)
        for iid, d in last.items()
    }
    busy = {m for a, b in spans.values() for m in range(a, b)}
    long = [b - a for a, b in spans.values()]
    assert max(long) >= 6 * 60, spans
    covered = {m for a, b in hooks[0].skipped for m in range(a, b)}
    # The runs went on while incidents were open (before this change they stopped).
    assert len(busy & covered) > 0.9 * len(busy), (len(busy & covered), len(busy))
    assert len(covered) > 0.95 * fast.stats.ticks and not hooks[1].skipped


@pytest.mark.slow
def test_a_run_carries_the_sequential_test_of_a_service_whose_incident_has_ended() -> None:
    """A service whose incident has ended but is not yet final is ticked beside the run
    (its minutes may still be folded in and must not be learned), and its sequential test,
    no longer held at 0, steps in its ticks: the same state as minute-by-minute ticks.
    The state is taken at such a moment and the CUSUMs of that service set running."""
    from outagewatch.settings import PipelineSettings

    lines, windows = busy_weeks()
    settings = PipelineSettings(quiet_minutes=3)  # ends soon after the surge: not yet final
    p = Pipeline(settings, catalog=CATALOG)
    p.quiet_runs = False
    p.set_maintenance(windows)
    dec = EventDecoder(CATALOG)
    head = 15_000  # before the first incident
    p.ingest(dec.decode(lines[:head]).reports)
    i = head

    def ended() -> list[Incident]:
        return [
            inc
            for inc in p.incidents.values()
            if inc.state is State.RESOLVED and inc.service not in p.open_by_service
        ]

    while not ended():
        assert i < len(lines)
        p.ingest(dec.decode(lines[i : i + 3], i + 1).reports)
        i += 3
    state = dump_state(p)
    both = []
    for quiet in (True, False):
        q = load_state(state, settings, catalog=CATALOG)
        q.quiet_runs = quiet
        q.set_maintenance(windows)
        (inc,) = [i for i in q.incidents.values() if i.service not in q.open_by_service]
        members = q.series.service_series[q.series.service_index[inc.service]]
        q.series.cusum[members] = 6.0  # running, below the threshold
        q.series.cusum_x[members] = 9.0
        q.series.cusum_mu[members] = 5.0
        both.append(q)
    fast, slow = both
    # Minute by minute while the statistics still run (minutes without reports bring
    # them back to 0), then hours.
    t0 = fast.closed_until * 60.0
    running = []
    for t in [t0 + 60 * k for k in range(1, 6)] + [t0 + 3 * 3600]:
        for q in both:
            q.advance_to(t)
        assert fast.drain_incidents() == slow.drain_incidents()
        assert fast.drain_transitions() == slow.drain_transitions()
        assert_same(fast, slow)
        running.append(bool(fast.series.cusum[members].any()))
    assert running[0] and not running[-1], running


def test_a_run_that_reaches_a_sequential_alarm_leaves_the_minute_before_it() -> None:
    """A quiet run that reaches a minute where the sequential test fires (and no window is
    a candidate) stops there with every state as it was before that minute (detect.quiet
    scans again from its start), and the tick fires it: the same state, incident and
    transitions as minute-by-minute ticks. Set up on a warm month: gmail's total CUSUM
    (2x) just under h with a run well past its guards, then one report 20 minutes on."""
    lines = month(0.0)
    head = [
        ln for ln in lines if (parse_ts(msgspec.json.decode(ln)["ts"]) or 0) < START + 5 * 86400
    ]
    p = Pipeline(catalog=CATALOG)
    dec = EventDecoder(CATALOG)
    p.ingest(dec.decode(head).reports)
    assert not p.incidents
    state = dump_state(p)
    t0 = p.closed_until * 60.0 + 20 * 60.0 + 5.0
    report = msgspec.json.encode(
        {"type": "report", "ts": t0, "service": "gmail", "country": "US", "reporter": "z"}
    )
    both = []
    for quiet in (True, False):
        q = load_state(state, catalog=CATALOG)
        q.quiet_runs = quiet
        total = q.series.total_of[q.series.service_index["gmail"]]
        h = q._sequential_test()[6]
        assert h > 0
        q.series.cusum[total, 0] = h - 0.2  # 20 quiet minutes of ~0.02 take ~0.4 off
        q.series.cusum_x[total, 0] = 20.0
        q.series.cusum_mu[total, 0] = 2.0
        q.ingest(dec.decode([report]).reports)
        q.advance_to(t0 + 300.0)
        both.append(q)
    fast, slow = both
    tr = fast.drain_transitions()
    assert tr == slow.drain_transitions()
    assert [(t.action, t.incident) for t in tr][:1] == [("opened", tr[0].incident)]
    assert tr[0].incident.startswith("gmail-")
    assert fast.drain_incidents() == slow.drain_incidents()
    assert_same(fast, slow)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.slow
def test_quiet_runs_equal_ticks_in_every_scenario(name: str) -> None:
    """The simulator's scenarios (floods judged by the source sketches while other
    incidents are open, probes, status pages, clusters...), fed in batches as `replay`
    does: quiet runs beside the incidents give what minute-by-minute ticks give."""
    start = dt.datetime(2025, 3, 10, 16, tzinfo=dt.UTC).timestamp()
    events = scenario(name, start, seed=1)
    cat = scenario_catalog(name)
    out = []
    for quiet in (True, False):
        p = Pipeline(catalog=cat)
        p.quiet_runs = quiet
        _, docs = run(events, cat, batch=1_500, pipeline=p)
        out.append((p, docs, p.drain_transitions()))
    (fast, fast_docs, fast_tr), (slow, slow_docs, slow_tr) = out
    assert fast_docs == slow_docs and fast_tr == slow_tr
    assert_same(fast, slow)


@pytest.mark.parametrize(("saved", "loaded"), [(512, 128), (128, 512)])
def test_a_state_saved_with_another_ring_carries_on_as_one_made_with_this_one(
    saved: int, loaded: int
) -> None:
    """A replay holds 512 minutes (`runtime.replay.REPLAY_RING_MINUTES`), the server 128: a
    state saved with one ring loads into the other (`Series.set_ring`) holding what a
    pipeline with that ring holds, and goes on to the same incidents, ticks and state. Cut
    in the middle of an outage, so that an open incident's backdating and windows read the
    rings it carried over."""
    lines = month(jitter_s=30.0)
    cut = START + 16 * 86400 + 14 * 3600 + 600 + 12 * 60  # 12 minutes into shopify's outage
    k = next(
        i for i, ln in enumerate(lines) if (parse_ts(msgspec.json.decode(ln)["ts"]) or 0) >= cut
    )
    head, tail = lines[:k], lines[k:]
    decode = EventDecoder(CATALOG).decode
    ring = {r: PipelineSettings(ring_minutes=r) for r in (saved, loaded)}
    made = Pipeline(ring[saved], catalog=CATALOG)
    made.ingest(decode(head).reports)
    moved = load_state(dump_state(made), ring[loaded], catalog=CATALOG)
    native = Pipeline(ring[loaded], catalog=CATALOG)
    native.ingest(decode(head).reports)
    assert moved.series.ring == loaded and native.open_by_service and moved.open_by_service
    # The rings hold the same minutes: the newest `min(saved, loaded)` (when the state's
    # ring is the shorter, the loaded one's older minutes are not there to be moved); the
    # expectation of those ticked (that of the open minute is written by its tick).
    held = min(saved, loaded)
    newest = int((native.watermark or 0.0) // 60)
    counted = np.arange(newest - held + 1, newest + 1) % loaded
    ticked = np.arange(newest - held + 1, native.closed_until) % loaded
    for name, rows in (("ring_count", counted), ("ring_expected", ticked)):
        np.testing.assert_array_equal(moved.series.view(name)[rows], native.series.view(name)[rows])
    native.drain_transitions()  # those before the cut: a loaded state has none to drain
    for p in (moved, native):
        p.ingest(decode(tail).reports)
        p.advance_to(START + 30 * 86400)
    after = native.drain_transitions()
    assert {t.action for t in after} >= {"opened", "resolved"}
    assert moved.drain_transitions() == after
    assert moved.stats == native.stats
    a, _ = moved.series.dump()
    b, _ = native.series.dump()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
