"""Fake-report floods: the source sketches, the verdicts, and what the public sees.

A flood must not become a public outage (status, feed, alerts), a genuine outage of another
service at the same time must be found as usual, and probes or the service's own status
page confirm an incident whatever the suspicion.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outagewatch.events import EventDecoder, parse_ts
from outagewatch.incidents.severity import public
from outagewatch.pipeline import sources as src
from outagewatch.pipeline.dedup import Dedup
from outagewatch.pipeline.pipeline import dump_state, load_state
from outagewatch.pipeline.sources import Sources, block_of
from outagewatch.sim.scenarios import (
    SCENARIOS,
    flood_events,
    run,
    scenario,
    scenario_catalog,
    to_lines,
)
from test_serve_watch import PRIVATE, Hooks, until
from webutil import CLIENT, TOKEN, Clock, outage_lines, publish, running

START = 1_741_600_800.0 + 3 * 3600  # 2025-03-10T13:00:00Z
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ==================================================================== address blocks
@pytest.mark.parametrize(
    ("ip", "block"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("81.2.69.160", "81.2.69.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("::ffff:81.2.69.160", "81.2.69.0/24"),
        ("127.0.0.1", None),
        ("10.1.2.3", None),
        ("172.20.0.9", None),
        ("192.168.1.20", None),
        ("100.64.3.4", None),
        ("fd00::1", None),
        ("fe80::1", None),
        ("::1", None),
        ("0.0.0.0", None),
        ("0.1.2.3", None),
        ("100.1.2.3", "100.1.2.0/24"),
        ("testclient", None),
        ("", None),
    ],
)
def test_block_of_public_addresses_only(ip: str, block: str | None) -> None:
    assert block_of(ip) == block
    # The one-pass bucketing used per report agrees with it.
    (got,) = src.block_buckets([ip], np.ones(1, np.bool_)).tolist()
    assert got == (-1 if block is None else src._bucket(block))
    assert src.block_buckets([ip], np.zeros(1, np.bool_)).tolist() == [-1]  # not counted


# ==================================================================== the sketches
def feed(
    s: Sources,
    minute: int,
    n: int,
    *,
    persons: list[str | None],
    ips: list[str | None],
    kept: list[bool] | None = None,
    regular: bool = False,
    svc: int = 0,
    seed: int = 0,
) -> None:
    rng = np.random.default_rng(seed)
    secs = np.arange(n, dtype=np.float64) * (60.0 / n) if regular else np.sort(rng.random(n) * 60)
    s.add(
        np.full(n, svc, np.int64),
        minute * 60.0 + secs,
        src.person_buckets(persons),
        ips,
        np.ones(n, np.int64),
        np.asarray(kept if kept is not None else [True] * n),
    )


def people(n: int, tag: str = "p") -> tuple[list[str | None], list[str | None]]:
    return [f"{tag}{i}" for i in range(n)], [
        f"{11 + i % 200}.{(i * 7) % 250}.{(i * 13) % 250}.{1 + i % 250}" for i in range(n)
    ]


def crowd(n: int, *, regular: bool = False) -> Sources:
    """Minutes 100-104 of `n` new people a minute from as many addresses."""
    s = Sources()
    for m in range(100, 105):
        p, ip = people(n, f"m{m}-")
        feed(s, m, n, persons=p, ips=ip, regular=regular, seed=m)
    return s


def test_many_people_from_many_blocks_are_not_suspected() -> None:
    v = crowd(300).assess(0, 100, 104)
    assert not v.suspected and v.evidence == []


def test_reports_from_a_few_address_blocks_are_suspected() -> None:
    s = Sources()
    for m in range(100, 105):
        persons: list[str | None] = [f"fresh-{m}-{i}" for i in range(300)]
        ips: list[str | None] = [f"198.51.{100 + i % 4}.9" for i in range(300)]
        feed(s, m, 300, persons=persons, ips=ips, seed=m)
    v = s.assess(0, 100, 104)
    assert v.suspected
    assert "1,500 counted reports came from about 4 address blocks" in v.evidence


def test_heavy_repeaters_are_suspected_even_from_many_addresses() -> None:
    s = Sources()
    for m in range(100, 105):
        persons: list[str | None] = [f"bot-{i % 25}" for i in range(1000)]
        _, ips = people(1000)
        kept = [m == 100 and i < 25 for i in range(1000)]  # each id counted once
        feed(s, m, 1000, persons=persons, ips=ips, kept=kept, seed=m)
    v = s.assess(0, 100, 104)
    assert v.suspected
    assert any("100% of the counted reports came from reporters" in e for e in v.evidence)


def test_timer_like_arrivals_are_suspected() -> None:
    v = crowd(600, regular=True).assess(0, 100, 104)
    assert v.suspected
    assert any("machine-like regular intervals over 5 minutes" in e for e in v.evidence)
    # The same volume at random times, as people send, is not.
    assert not crowd(600).assess(0, 100, 104).suspected


def test_a_bot_inside_a_genuine_crowd_does_not_hide_the_crowd() -> None:
    """A genuine outage with a flood on top: the counted reports are mostly people."""
    s = Sources()
    for m in range(100, 105):
        p, ip = people(400, f"m{m}-")
        bots: list[str | None] = [f"bot-{i % 5}" for i in range(2000)]
        kept = [True] * 400 + [m == 100 and i < 5 for i in range(2000)]
        feed(s, m, 2400, persons=p + bots, ips=ip + ["198.51.100.7"] * 2000, kept=kept, seed=m)
    assert not s.assess(0, 100, 104).suspected


def test_too_few_reports_to_judge_and_no_addresses() -> None:
    s = Sources()
    feed(s, 100, 5, persons=["a"] * 5, ips=["198.51.100.7"] * 5)
    assert not s.assess(0, 100, 100).suspected
    # Reports without address or person (pre-aggregated or forwarded) are not judged by
    # address at all.
    s = Sources()
    feed(s, 100, 200, persons=[None] * 200, ips=[None] * 200, seed=1)
    assert not s.assess(0, 100, 100).suspected


def test_a_suspicion_clears_only_on_clear_signs_of_people() -> None:
    s = Sources()
    for m in range(100, 103):
        persons: list[str | None] = [f"fresh-{m}-{i}" for i in range(300)]
        feed(s, m, 300, persons=persons, ips=[f"198.51.100.{i % 3}" for i in range(300)])
    assert s.assess(0, 100, 102).suspected
    # Later minutes of mixed traffic (neither clearly bots nor clearly people) keep it.
    for m in range(103, 119):
        p, ip = people(40, f"m{m}-")
        feed(s, m, 40, persons=p, ips=ip[:8] * 5, seed=m)
    assert s.assess(0, 103, 118, was=True).suspected
    assert not s.assess(0, 103, 118, was=False).suspected


def test_memory_is_a_fixed_row_per_service() -> None:
    s = Sources()
    for m in range(0, 200, 7):  # minutes far apart: old slots are reused, not added
        p, ip = people(50, f"m{m}-")
        feed(s, m, 50, persons=p, ips=ip, svc=3, seed=m)
    assert s.rows.shape[1:] == (src.RING, src._WIDTH)
    assert len(s.rows) == 16  # grown once, to the smallest size, for service index 3
    assert len(s.window(3, 0, 10_000)) <= src.RING


def test_dump_and_load_keep_the_sketches() -> None:
    s = Sources()
    for m in range(100, 104):
        persons: list[str | None] = [f"fresh-{m}-{i}" for i in range(300)]
        feed(s, m, 300, persons=persons, ips=[f"198.51.100.{i % 3}" for i in range(300)], svc=2)
    t = Sources()
    t.load(s.dump())
    assert np.array_equal(t.window(2, 100, 103), s.window(2, 100, 103))
    assert t.assess(2, 100, 103) == s.assess(2, 100, 103)


# ==================================================================== scenarios
def docs_of(name: str, seed: int = 0) -> dict[str, dict[str, Any]]:
    _, docs = run(scenario(name, START, seed=seed), scenario_catalog(name))
    return docs


def by_service(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs.values():
        assert d["service"] not in out, "one incident per service in these scenarios"
        out[d["service"]] = d
    return out


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.slow
def test_bot_flood_beside_a_genuine_outage(seed: int) -> None:
    """30,000 Netflix reports in 15 minutes from 25 ids behind 4 addresses, while YouTube
    really fails for thousands of people."""
    events = scenario("bot_flood", START, seed=seed)
    bot = [e for e in events if str(e.get("reporter", "")).startswith("bot-")]
    assert len(bot) == 30_000 and len({e["ip"] for e in bot}) == 4
    assert len({e["reporter"] for e in bot}) == 25
    docs = by_service(run(events, scenario_catalog("bot_flood"))[1])
    yt = docs.pop("youtube")
    assert yt["suspected_abuse"] is False and public(yt)
    assert yt["total_reports"] > 2_000 and yt["abuse_evidence"] == []
    assert abs(_epoch(yt["started_at"]) - START) <= 180
    for d in docs.values():  # Netflix: nothing public, at most a suspected flood
        assert d["service"] == "netflix"
        assert d["suspected_abuse"] is True and not public(d)
        assert any("address block" in e for e in d["abuse_evidence"])
        assert d["cluster"] is None


@pytest.mark.parametrize(("minutes", "seed"), [(1, 0), (1, 2), (15, 2)])
@pytest.mark.slow
def test_the_bot_flood_is_suspected_whether_it_lasts_one_minute_or_fifteen(
    minutes: int, seed: int
) -> None:
    """30,000 Netflix reports from 25 ids behind 4 addresses, in 1 minute or over 15, beside
    YouTube's genuine outage: deduplication lets 25 through in the first seconds. The raw
    reports behind them must reach the source sketches whatever the batch boundaries, and
    after a one-minute flood a busy ordinary minute must not clear the suspicion (people
    clear it only when they are a surge of their own)."""
    events = scenario("bot_flood", START, seed=seed)
    events = [e for e in events if not str(e.get("reporter", "")).startswith("bot-")]
    flood = flood_events(
        "netflix", START, seed=seed, ids=25, addresses=4, minutes=minutes,
        per_minute=30_000 // minutes,
    )  # fmt: skip
    assert len(flood) == 30_000
    merged = sorted([*events, *flood], key=lambda e: _epoch(e["ts"]))
    docs = by_service(run(merged, scenario_catalog("bot_flood"))[1])
    yt = docs.pop("youtube")
    assert yt["suspected_abuse"] is False and public(yt)
    assert set(docs) == {"netflix"}, "the flood's surge opens an incident"
    assert docs["netflix"]["suspected_abuse"] is True and not public(docs["netflix"])


def test_every_single_report_reaches_the_source_sketches() -> None:
    """One batch of 3 reports a minute over 45 minutes: the sketches hold all of each of
    the last minutes they keep (a batch is counted in spans of 30 minutes; the sketches
    took theirs in chunks that once skipped the first minutes of the next span)."""
    cat = scenario_catalog("bot_flood")
    lines = [
        orjson.dumps({"type": "report", "service": "netflix", "country": "US",
                      "ts": START + 60 * m + 10 * k, "reporter": f"p{m}-{k}"})
        for m in (*range(45), 46) for k in range(3)
    ]  # fmt: skip
    # (minute 46: the stream clock holds a batch's newest reports until others reach them)
    p = run_lines(lines, cat)
    base = int(START // 60)
    rows = p.sources.window(0, base + 45 - src.WINDOW, base + 44)
    assert len(rows) == src.WINDOW and (rows[:, src._RAW] == 3).all()
    held = p.sources.window(0, base + 27, base + 33)
    assert (held[:, src._RAW] == 3).all() and len(held) == 7


def run_lines(lines: list[bytes], cat: Any) -> Any:
    from outagewatch.pipeline.pipeline import Pipeline

    p = Pipeline(catalog=cat)
    p.ingest(EventDecoder(cat).decode(lines).reports)
    return p


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("rotating_ids", "came from about 4 address blocks"),
        ("scripted_flood", "machine-like regular intervals"),
    ],
)
@pytest.mark.slow
def test_floods_that_get_past_deduplication_are_suspected(name: str, why: str) -> None:
    docs = by_service(docs_of(name))
    d = docs.pop("netflix")
    assert d["total_reports"] > 20_000  # deduplication alone let them through
    assert d["suspected_abuse"] is True and not public(d)
    assert any(why in e for e in d["abuse_evidence"]), d["abuse_evidence"]
    assert docs == {}


@pytest.mark.slow
def test_failing_probes_confirm_a_suspected_flood() -> None:
    d = by_service(docs_of("flood_confirmed"))["netflix"]
    assert d["suspected_abuse"] is True
    assert d["probe_confirmed"] is True and public(d)


@pytest.mark.slow
def test_official_status_confirms_a_suspected_flood() -> None:
    """The status page says "major" from 10 to 30 minutes into the flood: the incident opens
    hidden, then an `abuse` transition makes it public (which is what alerts act on)."""
    events = scenario("rotating_ids", START)
    events += [
        {"type": "status", "service": "netflix", "ts": START + k * 300 + 7,
         "indicator": "major" if 2 <= k < 6 else "none"}
        for k in range(-2, 12)
    ]  # fmt: skip
    events.sort(key=lambda e: _epoch(e["ts"]))
    p, docs = run(events, scenario_catalog("rotating_ids"))
    d = by_service(docs)["netflix"]
    assert d["suspected_abuse"] is True
    assert d["official_status"]["indicator"] == "major" and public(d)
    rows = [t for t in p.drain_transitions() if t.service == "netflix"]
    assert rows[0].action == "opened" and rows[0].detail["suspected_abuse"] is True
    shown = [t for t in rows if t.action == "abuse"]
    assert [t.detail["public"] for t in shown] == [True]
    assert shown[0].at >= START + 10 * 60


@pytest.mark.slow
def test_verdicts_do_not_depend_on_batching() -> None:
    """Event by event or in batches: the same docs and the same transitions (the status
    page confirms the flood halfway, as above)."""
    events = scenario("flood_confirmed", START, seed=2)
    events += [
        {"type": "status", "service": "netflix", "ts": START + k * 300 + 7,
         "indicator": "major" if 2 <= k < 6 else "none"}
        for k in range(-2, 12)
    ]  # fmt: skip
    events.sort(key=lambda e: _epoch(e["ts"]))
    cat = scenario_catalog("flood_confirmed")
    one, docs_one = run(events, cat, batch=7)
    many, docs_many = run(events, cat, batch=5_000)
    assert docs_one == docs_many
    assert one.drain_transitions() == many.drain_transitions()
    assert any(d["suspected_abuse"] for d in docs_one.values())


@pytest.mark.parametrize("name", [n for n in SCENARIOS if "flood" not in n and n != "rotating_ids"])
@pytest.mark.slow
def test_no_genuine_scenario_is_suspected(name: str) -> None:
    for d in docs_of(name).values():
        assert d["suspected_abuse"] is False, d["id"]


@pytest.mark.slow
def test_the_verdict_survives_a_restart_midway() -> None:
    events = scenario("rotating_ids", START)
    cat = scenario_catalog("rotating_ids")
    straight = run(events, cat)[1]
    cut = next(i for i, e in enumerate(events) if _epoch(e["ts"]) >= START + 5 * 60)
    p, first = run(events[:cut], cat, settle_s=0)
    resumed = load_state(dump_state(p), catalog=cat)
    _, second = run(events[cut:], cat, pipeline=resumed)
    assert {**first, **second} == straight


@pytest.mark.slow
def test_flood_events_are_valid_reports() -> None:
    lines = to_lines(flood_events("netflix", START, seed=1, ids=None, addresses=None))
    d = EventDecoder(scenario_catalog("rotating_ids")).decode(lines[:500])
    assert not d.rejected and len(d.reports) == 500
    assert all(block_of(ip or "") for ip in d.reports.ip)


def _epoch(ts: Any) -> float:
    t = parse_ts(ts) if isinstance(ts, str) else float(ts)
    assert t is not None
    return t


# ==================================================================== the server
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.slow
async def test_the_public_never_sees_the_flood_and_sees_the_outage(tmp_path: Path) -> None:
    """Through `serve`: a flood on Netflix and a genuine X outage at the same time. The
    status, the feed, the home page and alerts show X only; the flood's incident page
    says why it is kept back."""
    secret = "a-webhook-secret-of-some-length"
    hooks = Hooks(secret)
    clock = Clock()
    hist = ("x", "netflix")
    with hooks.server:
        url = f"http://127.0.0.1:{hooks.server.port}/hook"
        async with running(tmp_path, clock, history=hist, flags=PRIVATE) as (server, c):
            r = await c.post(
                "/api/v1/subscriptions",
                json={"channel": "webhook", "url": url, "secret": secret},
                headers=AUTH,
            )
            assert r.status_code == 201, r.text
            assert server.bus is not None and server.alerter is not None
            flood = [
                e
                for e in flood_events("netflix", clock.t, seed=3, ids=None, addresses=4)
                if _epoch(e["ts"]) < clock.t + 12 * 60
            ]
            genuine = outage_lines("x", clock.t, {"US": 0.7, "GB": 0.3})
            await publish(server, sorted([*to_lines(flood), *genuine], key=_line_ts))
            clock.t += 12 * 60
            await server.bus.tick(clock.t)
            await until("the opened alert", lambda: "opened" in hooks.kinds())
            await server.alerter.idle(10)

            incidents = {d["service"]: d for d in (await c.get("/api/v1/incidents")).json()}
            assert incidents["netflix"]["suspected_abuse"] is True
            assert incidents["x"]["suspected_abuse"] is False
            status = {s["id"]: s["status"] for s in (await c.get("/api/v1/services")).json()}
            assert status["netflix"] == "ok" and status["x"] != "ok"
            nf = (await c.get("/api/v1/services/netflix")).json()
            assert nf["status"] == "ok" and nf["incident"] is None
            feed_xml = (await c.get("/feeds/incidents.atom")).text
            assert incidents["x"]["id"] in feed_xml
            assert incidents["netflix"]["id"] not in feed_xml
            home = (await c.get("/")).text
            assert incidents["x"]["id"] in home and incidents["netflix"]["id"] not in home
            page = (await c.get(f"/incidents/{incidents['netflix']['id']}")).text
            assert "Suspected fake-report flood" in page and "address blocks" in page
            await asyncio.sleep(0.2)
            await server.alerter.idle(10)
        assert {g["service"] for g in hooks.got} == {"x"}
        assert hooks.bad == 0


def _line_ts(line: bytes) -> float:
    return _epoch(orjson.loads(line)["ts"])


@pytest.mark.anyio
@pytest.mark.slow
async def test_the_bot_flood_through_post_reports_opens_nothing_public(tmp_path: Path) -> None:
    """Through `POST /api/v1/reports` (behind a trusted proxy, rate limits lifted as if the
    bot had got past them): 30,000 Netflix reports from 25 ids behind 4 addresses in one
    minute, while X really fails for a crowd of people each posting from their own
    address. Netflix shows nothing public; X's outage is public."""
    flags = {
        "OUTAGEWATCH_TRUSTED_PROXIES": CLIENT[0],
        "OUTAGEWATCH_RATE_PER_IP": "0",
        "OUTAGEWATCH_RATE_PER_BLOCK": "100000000",
    }
    clock = Clock()
    t0 = clock.t
    minutes = 1
    async with running(tmp_path, clock, history=("x", "netflix"), flags=flags, fast=True) as (
        server,
        c,
    ):
        assert server.bus is not None
        bot = flood_events(
            "netflix", t0, seed=4, ids=25, addresses=4, minutes=minutes,
            per_minute=30_000 // minutes,
        )  # fmt: skip
        genuine = [orjson.loads(line) for line in outage_lines("x", t0, {"US": 0.7, "GB": 0.3})]
        genuine = [e for e in genuine if e.get("ip")][::4]  # ~75 people a minute: enough
        posts: list[tuple[float, str, list[dict[str, Any]]]] = []
        by_ip: dict[str, list[dict[str, Any]]] = {}
        for e in bot:
            by_ip.setdefault(e["ip"], []).append(e)
        for ip, items in by_ip.items():
            for k in range(0, len(items), 500):
                part = items[k : k + 500]
                posts.append((_epoch(part[0]["ts"]), ip, part))
        posts += [(_epoch(e["ts"]), e["ip"], [e]) for e in genuine]
        posts.sort(key=lambda p: p[0])
        for at, ip, items in posts:
            clock.t = max(clock.t, at + 1)
            body = [{k: v for k, v in e.items() if k not in ("type", "ip")} for e in items]
            r = await c.post("/api/v1/reports", json=body, headers={"X-Forwarded-For": ip})
            assert r.status_code == 202, r.text
        clock.t = t0 + (minutes + 20) * 60
        await server.bus.tick(clock.t, commit=True)
        incidents = {d["service"]: d for d in (await c.get("/api/v1/incidents")).json()}
        assert incidents["x"]["suspected_abuse"] is False and public(incidents["x"])
        nf = incidents.get("netflix")
        assert nf is not None, "the flood's surge opens an incident"
        assert nf["suspected_abuse"] is True and not public(nf)
        nf_now = (await c.get("/api/v1/services/netflix")).json()
        assert nf_now["status"] == "ok" and nf_now["incident"] is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.none() | st.text(max_size=12) | st.sampled_from(["", "p1", "a\nb", "\ud800", "é"]),
        max_size=40,
    )
)
def test_person_buckets_are_zlib_crc32_of_each_person(persons: list[str | None]) -> None:
    """The compiled pass over the joined persons (the pipeline's, `Dedup.person_hashes`)
    gives each report the bucket of its own crc32 (-1 for none), whatever the persons hold
    (newlines, surrogates, nothing); so does `person_buckets`, one at a time."""
    want = [
        zlib.crc32(p.encode("utf-8", "surrogatepass")) % src.BUCKETS if p else -1 for p in persons
    ]
    assert Dedup(900.0).person_hashes(persons, src.BUCKETS)[1].tolist() == want
    assert src.person_buckets(persons).tolist() == want
