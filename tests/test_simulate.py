"""Tests for the synthetic traffic generator (outagewatch.sim.simulate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from outagewatch import geo
from outagewatch.catalog import Catalog
from outagewatch.sim.simulate import (
    Bump,
    ServiceTraffic,
    Simulation,
    Surge,
    benchmark_traffic,
    demo_scenario,
    demo_traffic,
    expected_reports,
    main,
    outage_profile,
    simulate,
)

Event = dict[str, Any]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DAY = 1440


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@cache
def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def parse(lines: Sequence[bytes]) -> list[Event]:
    return [orjson.loads(line) for line in lines]


def dedup(events: Sequence[Event], window_s: float = 900.0) -> list[Event]:
    """The reports that count: per (service, reporter), the first report per 15 minutes."""
    last: dict[tuple[str, str], float] = {}
    out: list[Event] = []
    for e in sorted(events, key=lambda e: ts(e["ts"])):
        key = (e["service"], e["reporter"])
        t = ts(e["ts"])
        prev = last.get(key)
        if prev is None or t - prev >= window_s:
            last[key] = t
            out.append(e)
    return out


def per_local_day(events: Sequence[Event], start: float, country: str) -> Counter[int]:
    """Counts by local day index since `start` (start is a local midnight of `country`)."""
    return Counter(int((ts(e["ts"]) - start) // 86400) for e in events if e["country"] == country)


def svc(name: str, rate: float, countries: dict[str, float], **kw: Any) -> ServiceTraffic:
    return ServiceTraffic(name, rate, countries, {"app": 0.6, "website": 0.3, "login": 0.1}, **kw)


# ---------------------------------------------------------------------------------------


def test_outage_profile_shape() -> None:
    p = outage_profile(100.0, ramp_min=2, plateau_min=10, decay_min=10, tail=[(5, 20.0)])
    assert len(p) == 2 + 10 + 10 + 5
    assert max(p) == 100.0
    assert p[0] < p[1] < 100.0
    assert p[2:12] == [100.0] * 10
    decay = p[12:22]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert 0 < decay[-1] < 100.0 / 5
    assert p[22:] == [20.0] * 5
    with pytest.raises(ValueError):
        outage_profile(-1.0)


def test_deterministic_per_seed() -> None:
    traffic = [svc("a", 4.0, {"US": 0.7, "GB": 0.3}), svc("b", 1.0, {"DE": 1.0})]
    surges = [Surge("a", epoch("2025-03-11T12:30:00"), outage_profile(30.0), name="s")]
    start = epoch("2025-03-11T12:00:00")
    one = simulate(traffic, start, 180, surges, seed=7)
    two = simulate(traffic, start, 180, surges, seed=7)
    other = simulate(traffic, start, 180, surges, seed=8)
    assert one.lines == two.lines
    assert one.truth == two.truth
    assert one.lines != other.lines
    assert len(one.lines) > 500


def test_streams_are_independent() -> None:
    """Adding a surge or another service leaves a service's normal traffic unchanged."""
    start = epoch("2025-03-11T00:00:00")
    a = svc("a", 3.0, {"US": 1.0})
    alone = simulate([a], start, 120, seed=3, repeat_share=0.0)
    more = simulate(
        [a, svc("b", 5.0, {"FR": 1.0})],
        start,
        120,
        [Surge("b", start + 600, [50.0] * 10)],
        seed=3,
        repeat_share=0.0,
    )

    def key(lines: Sequence[bytes]) -> list[tuple[str, str, str]]:
        return [(e["ts"], e["country"], e["problem"]) for e in parse(lines) if e["service"] == "a"]

    assert key(alone.lines) == key(more.lines)


@pytest.mark.slow
def test_daily_count_matches_rate() -> None:
    # US local midnight (UTC-6) on a Tuesday: one full local weekday for US and JP alike
    start = epoch("2025-03-11T06:00:00")
    rate = 30.0
    sim = simulate([svc("big", rate, {"US": 0.75, "JP": 0.25}, diurnal=0.6)], start, DAY, seed=1)
    counted = dedup(parse(sim.lines))
    assert len(counted) == sim.counted
    assert abs(sim.counted - rate * DAY) < 0.05 * rate * DAY
    by_country = Counter(e["country"] for e in counted)
    assert by_country["US"] / sim.counted == pytest.approx(0.75, abs=0.02)
    normal, extra = expected_reports([svc("big", rate, {"US": 1.0})], start, DAY)
    assert normal == pytest.approx(rate * DAY, rel=1e-9)
    assert extra == 0.0


@pytest.mark.slow
def test_diurnal_cycle_follows_local_time() -> None:
    start = epoch("2025-03-11T00:00:00")  # a Tuesday
    traffic = [
        svc("jp", 20.0, {"JP": 1.0}, diurnal=1.0),
        svc("us", 20.0, {"US": 1.0}, diurnal=1.0),
    ]
    sim = simulate(traffic, start, DAY, seed=2, repeat_share=0.0)
    for name, country in (("jp", "JP"), ("us", "US")):
        off = geo.utc_offset_s(country)
        by_hour = Counter(
            int((ts(e["ts"]) + off) % 86400 // 3600)
            for e in parse(sim.lines)
            if e["service"] == name
        )
        night = sum(by_hour[h] for h in (2, 3, 4, 5))
        evening = sum(by_hour[h] for h in (18, 19, 20, 21))
        assert night < 0.35 * evening, (name, night, evening)
        quietest = min(range(24), key=lambda h: by_hour[h])
        assert quietest in (2, 3, 4, 5)


@pytest.mark.slow
def test_flat_diurnal_is_flat() -> None:
    start = epoch("2025-03-11T00:00:00")
    sim = simulate([svc("f", 60.0, {"GB": 1.0}, diurnal=0.0)], start, DAY, seed=4)
    by_hour = Counter(int(ts(e["ts"]) % 86400 // 3600) for e in dedup(parse(sim.lines)))
    assert min(by_hour.values()) > 0.85 * max(by_hour.values())


@pytest.mark.slow
def test_weekend_factor_and_shift() -> None:
    start = epoch("2025-03-14T00:00:00")  # Friday, GB is UTC+0
    flat = simulate(
        [svc("w", 20.0, {"GB": 1.0}, diurnal=0.0, weekend_factor=0.5)], start, 2 * DAY, seed=5
    )
    days = per_local_day(dedup(parse(flat.lines)), start, "GB")
    assert days[1] / days[0] == pytest.approx(0.5, abs=0.04)

    shifted = simulate(
        [svc("s", 30.0, {"GB": 1.0}, diurnal=1.0, weekend_shift_h=3.0)], start, 2 * DAY, seed=6
    )
    morning = Counter(
        int((ts(e["ts"]) - start) // 86400)
        for e in parse(shifted.lines)
        if 6 <= (ts(e["ts"]) - start) % 86400 / 3600 < 9
    )
    assert morning[1] < 0.7 * morning[0]  # Saturday mornings start later


@pytest.mark.slow
def test_growth_per_day_and_per_country() -> None:
    start = epoch("2025-03-11T00:00:00")  # Tuesday..Thursday, weekdays in GB and DE
    traffic = [
        svc(
            "g",
            40.0,
            {"GB": 0.5, "DE": 0.5},
            diurnal=0.0,
            growth_per_day=0.1,
            country_growth_per_day={"DE": 0.1},
        )
    ]
    events = dedup(parse(simulate(traffic, start, 3 * DAY, seed=9).lines))
    gb = per_local_day(events, start, "GB")
    de = per_local_day(events, start, "DE")
    assert gb[2] / gb[0] == pytest.approx(1.1**2, abs=0.05)
    assert de[2] / de[0] == pytest.approx(1.21**2, abs=0.07)
    assert gb[0] == pytest.approx(20.0 * DAY * 0.1 / math.log(1.1), rel=0.04)


@pytest.mark.slow
def test_holiday_looks_like_sunday() -> None:
    # US local days (UTC-6): Thu 2025-07-03, Fri 07-04 (Independence Day), Sat, Sun
    start = epoch("2025-07-03T06:00:00")
    assert geo.is_holiday("US", dt.date(2025, 7, 4))
    kw: dict[str, Any] = {"diurnal": 0.6, "weekend_factor": 0.4}
    traffic = [svc("h", 20.0, {"US": 1.0}, **kw), svc("n", 20.0, {"US": 1.0}, holidays=False, **kw)]
    events = dedup(parse(simulate(traffic, start, 4 * DAY, seed=11).lines))
    h = per_local_day([e for e in events if e["service"] == "h"], start, "US")
    n = per_local_day([e for e in events if e["service"] == "n"], start, "US")
    assert h[1] / h[0] == pytest.approx(0.4, abs=0.04)  # the holiday
    assert h[1] / h[3] == pytest.approx(1.0, abs=0.07)  # ... is like the Sunday
    assert n[1] / n[0] == pytest.approx(1.0, abs=0.06)  # unless holidays are off
    assert n[3] / n[0] == pytest.approx(0.4, abs=0.04)


def test_bump_multiplies_normal_traffic() -> None:
    start = epoch("2025-03-11T12:00:00")
    traffic = [svc("b", 60.0, {"GB": 1.0}, diurnal=0.0)]
    sim = simulate(traffic, start, 240, bumps=[Bump("b", start + 3600, 120, 1.5)], seed=12)
    minute = Counter(int((ts(e["ts"]) - start) // 3600) for e in dedup(parse(sim.lines)))
    assert (minute[1] + minute[2]) / (minute[0] + minute[3]) == pytest.approx(1.5, abs=0.08)


def surge_setup() -> tuple[list[ServiceTraffic], list[Surge], float]:
    start = epoch("2025-03-12T14:00:00")
    traffic = [svc("svc-a", 5.0, {"US": 0.6, "GB": 0.4})]
    surges = [
        Surge(
            "svc-b",
            start + 1800,
            outage_profile(40.0, ramp_min=2, plateau_min=10, decay_min=10),
            countries={"US": 0.6, "DE": 0.4},
            problems={"login": 0.7, "app": 0.3},
            name="b-outage",
        ),
        Surge("svc-a", start + 3600, outage_profile(100.0, tail=[(20, 10.0)]), name="a-outage"),
    ]
    return traffic, surges, start


def test_surge_truth_matches_lines_after_dedup() -> None:
    traffic, surges, start = surge_setup()
    sim = simulate(traffic, start, 180, surges, seed=13, repeat_share=0.2)
    counted = dedup(parse(sim.lines))
    b = [e for e in counted if e["service"] == "svc-b"]  # svc-b has only surge reports
    truth = sim.truth["b-outage"]
    assert truth.reports == len(b)
    assert truth.countries == dict(Counter(e["country"] for e in b))
    assert truth.problems == dict(Counter(e["problem"] for e in b))
    minutes = [ts(e["ts"]) // 60 * 60 for e in b]
    assert (truth.first_minute, truth.last_minute) == (min(minutes), max(minutes))
    assert truth.first_minute >= start + 1800
    planned = sum(surges[0].per_minute)
    assert abs(truth.reports - planned) < 4 * math.sqrt(planned)

    a = sim.truth["a-outage"]
    planned_a = sum(surges[1].per_minute)
    assert abs(a.reports - planned_a) < 4 * math.sqrt(planned_a)
    assert set(a.countries) <= {"US", "GB"}  # default: the normal mix
    assert set(a.problems) <= {"app", "website", "login"}
    assert sum(a.countries.values()) == sum(a.problems.values()) == a.reports
    in_window = [
        e
        for e in counted
        if e["service"] == "svc-a" and a.first_minute <= ts(e["ts"]) < a.last_minute + 60
    ]
    normal = 5.0 * (a.last_minute + 60 - a.first_minute) / 60  # roughly, diurnal aside
    assert a.reports < len(in_window) < a.reports + 3 * normal
    assert sim.counted == len(counted)


def test_surge_clipped_to_window_and_validation() -> None:
    start = epoch("2025-03-12T00:00:00")
    sim = simulate(
        [svc("a", 1.0, {"US": 1.0})],
        start,
        60,
        [Surge("a", start - 600, [20.0] * 20, name="early"), Surge("a", start + 7200, [5.0])],
    )
    early = sim.truth["early"]
    assert early.first_minute == start
    assert early.last_minute < start + 600
    assert sim.truth["a#1"].reports == 0
    assert math.isnan(sim.truth["a#1"].first_minute)

    with pytest.raises(ValueError, match="ISO 3166"):
        simulate([svc("a", 1.0, {"XX": 1.0})], start, 10)
    with pytest.raises(ValueError, match="no normal traffic"):
        simulate([], start, 10, [Surge("zzz", start, [1.0])])
    with pytest.raises(ValueError, match="unique"):
        simulate([svc("a", 1.0, {"US": 1.0})], start, 10, [Surge("a", start, [1.0], name="x")] * 2)
    with pytest.raises(ValueError, match="repeat_share"):
        simulate([], start, 10, repeat_share=1.0)


@pytest.mark.slow
def test_repeat_share_and_repeats_are_recent() -> None:
    start = epoch("2025-03-12T12:00:00")
    sim = simulate([svc("r", 50.0, {"US": 1.0})], start, 600, seed=14, repeat_share=0.25)
    events = parse(sim.lines)
    counted = dedup(events)
    assert len(counted) == sim.counted
    assert len(events) == sim.counted + sim.repeats
    assert sim.repeats / len(events) == pytest.approx(0.25, abs=0.01)
    first: dict[str, float] = {}
    for e in sorted(events, key=lambda e: ts(e["ts"])):
        t = ts(e["ts"])
        if e["reporter"] in first:
            assert 0 < t - first[e["reporter"]] <= 600  # a repeat within ~10 minutes
        else:
            first[e["reporter"]] = t
    assert len(first) == sim.counted

    none = simulate([svc("r", 50.0, {"US": 1.0})], start, 60, seed=14, repeat_share=0.0)
    assert none.repeats == 0
    assert len({e["reporter"] for e in parse(none.lines)}) == len(none.lines)


def test_with_ip_is_per_person() -> None:
    start = epoch("2025-03-12T12:00:00")
    plain = simulate([svc("i", 20.0, {"FR": 1.0})], start, 120, seed=15, repeat_share=0.3)
    sim = simulate(
        [svc("i", 20.0, {"FR": 1.0})], start, 120, seed=15, repeat_share=0.3, with_ip=True
    )
    events = parse(sim.lines)
    ip_of: dict[str, str] = {}
    for e in events:
        assert ip_of.setdefault(e["reporter"], e["ip"]) == e["ip"]
        assert ipaddress.IPv4Address(e["ip"]).is_global
    assert len(set(ip_of.values())) > 0.99 * len(ip_of)
    assert [{k: v for k, v in e.items() if k != "ip"} for e in events] == parse(plain.lines)


def test_jitter_reorders_but_keeps_the_set() -> None:
    traffic, surges, start = surge_setup()
    plain = simulate(traffic, start, 120, surges, seed=16)
    jittered = simulate(traffic, start, 120, surges, seed=16, jitter_s=30.0)
    times = [ts(e["ts"]) for e in parse(jittered.lines)]
    plain_times = [ts(e["ts"]) for e in parse(plain.lines)]
    assert plain_times == sorted(plain_times)
    assert times != sorted(times)
    assert sorted(jittered.lines) == sorted(plain.lines)
    assert jittered.truth == plain.truth
    newest = -math.inf
    late = 0
    for t in times:
        assert t > newest - 30.0
        late += t < newest
        newest = max(newest, t)
    assert late > 0.1 * len(times)


def test_aggregate_sums_equal_counted_reports() -> None:
    traffic, surges, start = surge_setup()
    reports = simulate(traffic, start, 180, surges, seed=17, repeat_share=0.2)
    agg = simulate(traffic, start, 180, surges, seed=17, aggregate=True)
    rows = parse(agg.lines)
    assert len(rows) < len(reports.lines) / 2
    assert agg.truth == reports.truth
    assert agg.counted == reports.counted and agg.repeats == 0
    got: Counter[tuple[str, str, str, str]] = Counter()
    for r in rows:
        assert "reporter" not in r
        assert isinstance(r["count"], int) and r["count"] >= 1
        assert r["ts"].endswith(":00Z")
        key = (r["service"], r["country"], r["problem"], r["ts"][:16])
        assert key not in got  # one line per (service, country, problem, minute)
        got[key] = r["count"]
    want = Counter(
        (e["service"], e["country"], e["problem"], e["ts"][:16])
        for e in dedup(parse(reports.lines))
    )
    assert got == want
    assert sum(got.values()) == agg.counted
    b = sum(n for (s, *_), n in got.items() if s == "svc-b")
    assert b == agg.truth["b-outage"].reports
    times = [r["ts"] for r in rows]
    assert times == sorted(times)


def check_lines(sim: Simulation, catalog: Catalog) -> None:
    required = {"type", "ts", "service", "country", "problem", "reporter", "ip"}
    for line in sim.lines:
        assert not line.endswith(b"\n")
        e = json.loads(line)
        assert set(e) == required
        assert e["type"] == "report"
        assert TS_RE.match(e["ts"])
        assert e["country"] in geo.COUNTRIES
        svc = catalog.services[e["service"]]
        assert e["problem"] in svc.all_problems
        assert re.fullmatch(r"p[0-9a-z]+", e["reporter"])
        ipaddress.IPv4Address(e["ip"])


@pytest.mark.slow
def test_every_line_is_valid_json_with_required_fields() -> None:
    catalog = Catalog.demo()
    start = epoch("2025-03-11T06:00:00")
    surges, bumps = demo_scenario(epoch("2025-03-10T00:00:00"))
    sim = simulate(demo_traffic(), start, 300, surges, bumps, seed=18, with_ip=True, jitter_s=5)
    assert len(sim.lines) > 10_000
    check_lines(sim, catalog)


@pytest.mark.slow
def test_demo_traffic_and_scenario() -> None:
    catalog = Catalog.demo()
    traffic = {t.service: t for t in demo_traffic()}
    assert set(traffic) == set(catalog.services)
    assert traffic["x"].rate_per_min == pytest.approx(6.0)
    assert traffic["facebook"].rate_per_min == pytest.approx(8.0)
    assert traffic["x"].countries["US"] == pytest.approx(0.55)
    for sid, service in traffic.items():
        assert set(service.problems) == set(catalog.services[sid].all_problems)
        assert 0.2 <= service.rate_per_min <= 10.0

    start = epoch("2025-03-10T00:00:00")  # a Monday
    surges, bumps = demo_scenario(start)
    sim = simulate(list(traffic.values()), start, 7 * DAY, surges, bumps, aggregate=True)
    night = sim.truth["x-night-outage"]
    assert night.reports == pytest.approx(16_000, rel=0.03)
    assert set(night.countries) == {"US", "GB"}
    pacific = dt.datetime.fromtimestamp(night.first_minute, dt.UTC) - dt.timedelta(hours=7)
    assert (pacific.hour, pacific.minute) >= (1, 20) and pacific.hour < 2
    saturday = sim.truth["x-saturday-outage"]
    assert dt.datetime.fromtimestamp(saturday.first_minute, dt.UTC).weekday() == 5
    assert saturday.last_minute - saturday.first_minute > 3 * 3600  # the long tail
    meta = [sim.truth[f"meta-{s}"] for s in ("facebook", "instagram", "messenger", "threads")]
    for t in meta:
        assert 100 <= (t.last_minute - t.first_minute) / 60 <= 140
        assert abs(t.first_minute - meta[0].first_minute) <= 300
    assert not any(t.service == "whatsapp" for t in sim.truth.values())
    small = sim.truth["shopify-checkout"]
    assert small.reports == pytest.approx(180, abs=50)
    assert bumps == [Bump("x", meta[0].first_minute, bumps[0].minutes, 1.25)]

    # X gets 25% more ordinary traffic during the Meta outage than the day before
    def x_in(lo: float, minutes: int) -> int:
        return sum(
            r["count"]
            for r in parse(sim.lines)
            if r["service"] == "x" and lo <= ts(r["ts"]) < lo + minutes * 60
        )

    during = x_in(meta[0].first_minute, bumps[0].minutes)
    before = x_in(meta[0].first_minute - 86400, bumps[0].minutes)
    assert 1.1 < during / before < 1.45


def test_benchmark_traffic() -> None:
    traffic = benchmark_traffic(120, seed=0)
    assert [t.service for t in traffic] == [f"svc-{i:03d}" for i in range(120)]
    rates = sorted(t.rate_per_min for t in traffic)
    assert 0.05 <= rates[0] < 0.2 and 15 < rates[-1] <= 40.0
    assert 0.6 < rates[60] < 3.5  # log-uniform: median near sqrt(0.05 * 40) = 1.4
    assert {len(t.countries) for t in traffic} <= set(range(1, 9))
    assert max(len(t.countries) for t in traffic) >= 6
    assert all(set(t.problems) == {"app", "website", "login", "other"} for t in traffic)
    assert all(c in geo.COUNTRIES for t in traffic for c in t.countries)
    assert benchmark_traffic(120, seed=0) == traffic
    assert benchmark_traffic(120, seed=1) != traffic


@pytest.mark.slow
def test_benchmark_cli_200k_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.ndjson"
    began = time.perf_counter()
    argv = ["benchmark", "--lines", "200000", "--days", "8", "--services", "120"]
    assert main([*argv, "--out", str(out)]) == 0
    assert time.perf_counter() - began < 10.0
    data = out.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 200_000
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first["ts"].startswith("2025-03-03T00:0")
    assert last["ts"].startswith("2025-03-10T23:5")  # the full 8 days, no cut-off tail
    assert "200000 lines" in capsys.readouterr().err


def test_demo_cli_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["demo", "--days", "0.1", "--out", "-", "--seed", "3"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.endswith(b"\n")
    lines = captured.out.split(b"\n")[:-1]
    assert len(lines) > 1000
    assert all(json.loads(line)["type"] == "report" for line in lines)
    assert captured.err.count(b"\n") == 1 and b"simulate demo" in captured.err
