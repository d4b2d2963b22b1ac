"""Event streams for every cause and its look-alike, for tests and the live demo.

`scenario(name, start)` returns docs/contract.md §2 event dicts (with `type`), sorted by time: a
day of pre-aggregated report history (`count` lines, so the report baselines are warm),
then single reports, telemetry, probe results and status-page events around an outage
whose reports begin at `start` (rounded down to the minute). `history=False` leaves the
history out (a live demo whose pipeline is already warm). Everything is drawn from seeded
generators: the same name, start and seed give the same events.

name: what happens -> the expected top cause

- `capacity`: X's audio rooms pass 0.9M listeners and errors climb; capped at 0.8M
  listeners they fall -> `capacity`;
- `ddos`: X's requests x20 and client IPs x15 while listeners stay flat; errors climb
  -> `ddos`;
- `failover_failed`: Netflix's primary site fails, the public endpoint with it, the
  secondary healthy -> `failover` (probe-confirmed);
- `failover_worked`: the primary fails, the public endpoint stays up -> no incident;
- `upstream`: Cloudflare fails and three customers with it -> `upstream` (one cluster);
  Netflix fails on its own meanwhile -> `unknown`, no cluster;
- `own_outage`: one Cloudflare customer (Shopify) fails while Cloudflare is fine
  -> `unknown`;
- `regional`: 7 of 9 unrelated services fail in Germany only -> `regional_network`;
- `global_outage`: one of those 9 services fails everywhere -> `unknown`;
- `shared_platform`: Facebook, Instagram, Messenger, Threads fail, WhatsApp is fine, X
  gets 25% more visitors -> `shared_platform` (X has no incident);
- `unrelated_pair`: Netflix and YouTube fail 12 minutes apart -> `unknown`, no cluster.
- `bot_flood`: 30,000 Netflix reports in 15 minutes from 25 ids behind 4 addresses while
  YouTube really fails for thousands of people -> YouTube's incident as usual; Netflix
  nothing public (no incident, or one with `suspected_abuse`);
- `rotating_ids`: the same flood with a fresh id on every report -> Netflix incident with
  `suspected_abuse` (few address blocks);
- `scripted_flood`: fresh ids and fresh addresses (a botnet), sent by a timer
  -> `suspected_abuse` (machine-like regularity);
- `flood_confirmed`: the rotating-id flood while Netflix's public endpoint really fails
  -> `suspected_abuse`, yet public: probes confirm it.

`scenario_catalog(name)` is the catalog a scenario runs on: the built-in demo catalog for
`DEMO_SCENARIOS`, a small one of its own for the others. `run(events, catalog)` feeds a
stream through the pipeline the way `replay` does and returns the incidents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder, iso, parse_time
from outagewatch.pipeline.pipeline import Pipeline
from outagewatch.settings import PipelineSettings
from outagewatch.sim.simulate import (
    Bump,
    ServiceTraffic,
    Surge,
    demo_traffic,
    outage_profile,
    simulate,
)

__all__ = [
    "DEMO_SCENARIOS",
    "SCENARIOS",
    "run",
    "scenario",
    "scenario_catalog",
    "to_lines",
]

HISTORY_MINUTES = 26 * 60  # aggregated report history: > the 1,440 learned minutes needed
LIVE_BEFORE = 60  # minutes of single reports before the outage
LIVE_AFTER = 150  # ...and after its start
TELEMETRY_BEFORE = 480  # minutes of metrics and probe results before the outage

Event = dict[str, Any]

UPSTREAM_CATALOG = """
[services.cloudflare]
name = "Cloudflare"
problems = ["website", "dns", "dashboard"]

[[services.cloudflare.probes]]
url = "https://www.cloudflare.com/"

[services.discord]
name = "Discord"
depends_on = ["cloudflare"]
problems = ["app", "voice", "messages", "login"]

[services.shopify]
name = "Shopify"
depends_on = ["cloudflare"]
problems = ["website", "checkout", "admin"]

[services.canva]
name = "Canva"
depends_on = ["cloudflare"]
problems = ["website", "editor", "login"]

[services.netflix]
name = "Netflix"
problems = ["streaming", "app", "login"]
"""

REGIONAL_SERVICES = (
    "spotify", "zoom", "slack", "reddit", "twitch", "ebay", "paypal", "dropbox", "wikipedia",
)  # fmt: skip
REGIONAL_CATALOG = "".join(
    f'[services.{s}]\nname = "{s.title()}"\nproblems = ["app", "website", "login"]\n\n'
    for s in REGIONAL_SERVICES
)


# ==================================================================== public API
@dataclass(frozen=True)
class _Spec:
    description: str
    catalog: str  # "demo" or TOML text
    build: Callable[[float, int, bool], list[Event]]


def scenario(name: str, start: float, *, seed: int = 0, history: bool = True) -> list[Event]:
    """The events of scenario `name` with its outage starting at `start` (epoch seconds)."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(_SPECS))}")
    if not math.isfinite(start):
        raise ValueError(f"scenario {name!r}: start must be a finite epoch time")
    onset = math.floor(start / 60) * 60.0
    events = spec.build(onset, seed, history)
    return _sorted(events)


def scenario_catalog(name: str) -> Catalog:
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(_SPECS))}")
    if spec.catalog == "demo":
        return Catalog.demo()
    return Catalog.from_toml(spec.catalog, f"<scenario {name} catalog>")


def to_lines(events: Sequence[Event]) -> list[bytes]:
    """NDJSON lines (without newline) of the events."""
    return [orjson.dumps(e) for e in events]


def run(
    events: Sequence[Event],
    catalog: Catalog,
    *,
    settings: PipelineSettings | None = None,
    batch: int = 5_000,
    pipeline: Pipeline | None = None,
    settle_s: float = 3_600.0,
) -> tuple[Pipeline, dict[str, dict[str, Any]]]:
    """Feed the events through a pipeline in batches, as `replay` does (others first),
    then let the clock run `settle_s` past the last event. Returns the pipeline and the
    latest doc of every incident by id. A rejected line is a ValueError."""
    p = pipeline or Pipeline(settings, catalog=catalog)
    dec = EventDecoder(catalog)
    lines = to_lines(events)
    docs: dict[str, dict[str, Any]] = {}
    last = 0.0
    for i in range(0, len(lines), batch):
        d = dec.decode(lines[i : i + batch], i + 1)
        if d.rejected:
            raise ValueError(f"scenario event rejected: {d.rejected[0]}")
        p.ingest_others(d.others)
        p.ingest(d.reports)
        last = max([last, *d.reports.ts.tolist(), *(o.ts for o in d.others)])
        for doc in p.drain_incidents():
            docs[doc["id"]] = doc
    if settle_s > 0 and last:
        p.advance_to(last + settle_s)
    for doc in p.drain_incidents():
        docs[doc["id"]] = doc
    for doc in p.ongoing():
        docs[doc["id"]] = doc
    return p, docs


# ==================================================================== building blocks
def _traffic(service: str, rate: float, countries: dict[str, float]) -> ServiceTraffic:
    return ServiceTraffic(service, rate, countries, {"app": 0.5, "website": 0.3, "login": 0.2},
                          diurnal=0.2)  # fmt: skip


def _demo(*services: str) -> list[ServiceTraffic]:
    by_id = {t.service: t for t in demo_traffic()}
    return [by_id[s] for s in services]


def _reports(
    traffic: Sequence[ServiceTraffic],
    onset: float,
    surges: Sequence[Surge],
    seed: int,
    history: bool,
    bumps: Sequence[Bump] = (),
    *,
    with_ip: bool = False,
) -> list[Event]:
    out: list[Event] = []
    live_start = onset - LIVE_BEFORE * 60
    if history:
        hist = simulate(
            traffic, live_start - HISTORY_MINUTES * 60, HISTORY_MINUTES, seed=2 * seed,
            aggregate=True,
        )  # fmt: skip
        out += [orjson.loads(line) for line in hist.lines]
    live = simulate(
        traffic, live_start, LIVE_BEFORE + LIVE_AFTER, surges, bumps, seed=2 * seed + 1,
        with_ip=with_ip,
    )  # fmt: skip
    out += [orjson.loads(line) for line in live.lines]
    return out


def _minutes(onset: float, before: int, after: int = LIVE_AFTER) -> range:
    return range(-before, after)


def _metric(service: str, t: float, name: str, value: float) -> Event:
    return {"type": "metric", "ts": iso(t), "service": service, "name": name, "value": value}


def _probe(
    service: str, t: float, target: str, site: str, vantage: str, ok: bool, error: str = ""
) -> Event:
    ev: Event = {
        "type": "probe", "ts": iso(t), "service": service, "target": target, "site": site,
        "vantage": vantage, "ok": ok,
    }  # fmt: skip
    if ok:
        ev["status"] = 200
        ev["latency_ms"] = 120.0
    else:
        ev["error"] = error or "timeout"
    return ev


def _status(service: str, t: float, indicator: str, incident: str | None = None) -> Event:
    ev: Event = {"type": "status", "ts": iso(t), "service": service, "indicator": indicator}
    if incident:
        ev["incident"] = incident
    return ev


def _status_feed(
    service: str, onset: float, bad: tuple[int, int] | None, indicator: str, title: str
) -> list[Event]:
    """A status page polled every 5 minutes; `bad` = minutes (from onset) it shows trouble."""
    out = []
    for k in range(-120, LIVE_AFTER, 5):
        down = bad is not None and bad[0] <= k < bad[1]
        out.append(
            _status(service, onset + k * 60 + 7, indicator if down else "none",
                    title if down else None)
        )  # fmt: skip
    return out


VANTAGES = ("us-east", "eu-west", "ap-south")


def _probes(
    service: str,
    onset: float,
    targets: Sequence[tuple[str, str, Callable[[int, str], bool]]],
    error: str = "HTTP 503",
    before: int = 120,
) -> list[Event]:
    """Checks every minute from every vantage; `targets` = (url, site, ok(minute, vantage))."""
    out = []
    for k in _minutes(onset, before):
        for vi, vantage in enumerate(VANTAGES):
            t = onset + k * 60 + 10 + 5 * vi
            for url, site, ok in targets:
                good = ok(k, vantage)
                out.append(_probe(service, t, url, site, vantage, good, "" if good else error))
    return out


def _sorted(events: list[Event]) -> list[Event]:
    cache: dict[str, float] = {}

    def key(e: Event) -> float:
        ts = e["ts"]
        if not isinstance(ts, str):
            return float(ts)
        got = cache.get(ts)
        if got is None:
            got = cache[ts] = parse_time(ts)
        return got

    return sorted(events, key=key)


# ==================================================================== telemetry of X
X_METRICS = {
    "load": "spaces_listeners",
    "traffic": "requests_per_second",
    "sources": "unique_client_ips",
    "errors": "error_rate",
    "latency": "p99_ms",
}


def _x_telemetry(onset: float, seed: int, listeners: Callable[[int], float],
                 attack: Callable[[int], float]) -> list[Event]:  # fmt: skip
    """X's metrics each minute: `listeners(k)` is the legitimate load, `attack(k)` in [0, 1]
    how much of a flood (x20 requests, x15 client IPs) hits at minute k from onset."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(77,)))
    out = []
    for k in _minutes(onset, TELEMETRY_BEFORE):
        t = onset + k * 60 + 30
        n = rng.normal(size=5)
        load = listeners(k) * (1 + 0.01 * n[0])
        a = attack(k)
        over = max(0.0, load - 900_000) / 400_000  # past capacity
        values = {
            "spaces_listeners": load,
            "requests_per_second": load * 0.003 * (1 + 19 * a) * (1 + 0.02 * n[1]),
            "unique_client_ips": load * 0.8 * (1 + 14 * a) * (1 + 0.02 * n[2]),
            "error_rate": 0.002 * (1 + 0.1 * n[3]) + 0.25 * over + 0.12 * a,
            "p99_ms": 180 * (1 + 0.05 * n[4]) + 2000 * over + 900 * a,
        }
        out += [_metric("x", t, name, round(float(v), 6)) for name, v in values.items()]
    return out


def _x_reports(onset: float, seed: int, history: bool, surge: list[float]) -> list[Event]:
    return _reports(
        _demo("x"),
        onset,
        [Surge("x", onset, surge, problems={"spaces": 0.7, "app": 0.3}, name="x")],
        seed,
        history,
    )


def _capacity(onset: float, seed: int, history: bool) -> list[Event]:
    def listeners(k: int) -> float:
        if k < -40:
            return 400_000.0
        if k < 15:
            return 400_000 + 900_000 * (k + 40) / 55  # 0.9M at about k = -9
        if k < 36:
            return 1_300_000.0
        return 800_000.0  # capped

    return _x_telemetry(onset, seed, listeners, lambda k: 0.0) + _x_reports(
        onset, seed, history, outage_profile(250, 5, 28, 8)
    )


def _ddos(onset: float, seed: int, history: bool) -> list[Event]:
    def attack(k: int) -> float:
        return min(1.0, max(0.0, (k + 3) / 3)) if k < 40 else 0.0

    return _x_telemetry(onset, seed, lambda k: 400_000.0, attack) + _x_reports(
        onset, seed, history, outage_profile(250, 5, 30, 8)
    )


# ==================================================================== failover (Netflix)
NETFLIX_PUBLIC = "https://www.netflix.com/"
NETFLIX_PRIMARY = "https://primary.netflix.example/health"
NETFLIX_SECONDARY = "https://secondary.netflix.example/health"


def _failover(onset: float, seed: int, history: bool, *, worked: bool) -> list[Event]:
    def primary(k: int, v: str) -> bool:
        return not -2 <= k < 60

    def public(k: int, v: str) -> bool:
        if worked:
            return not (k == -1 and v == "us-east")  # one blip while traffic moves over
        return not -1 <= k < 60

    targets = [
        (NETFLIX_PUBLIC, "public", public),
        (NETFLIX_PRIMARY, "primary", primary),
        (NETFLIX_SECONDARY, "secondary", lambda k, v: True),
    ]
    events = _probes("netflix", onset, targets)
    surges = [] if worked else [Surge("netflix", onset, outage_profile(150, 3, 55, 10), name="n")]
    events += _reports(_demo("netflix"), onset, surges, seed, history)
    if not worked:
        events += _status_feed("netflix", onset, (6, 70), "major", "Streaming errors")
    return events


# ==================================================================== upstream
def _upstream_traffic() -> list[ServiceTraffic]:
    mix = {"US": 0.45, "GB": 0.2, "DE": 0.2, "FR": 0.15}
    return [
        _traffic("cloudflare", 0.8, mix),
        _traffic("discord", 2.0, mix),
        _traffic("shopify", 0.6, mix),
        _traffic("canva", 1.0, mix),
        _traffic("netflix", 2.0, {"US": 0.5, "GB": 0.2, "BR": 0.15, "MX": 0.15}),
    ]


def _cloudflare_probes(onset: float, down: tuple[int, int] | None) -> list[Event]:
    def ok(k: int, v: str) -> bool:
        return down is None or not down[0] <= k < down[1]

    return _probes("cloudflare", onset, [("https://www.cloudflare.com/", "public", ok)],
                   error="HTTP 502")  # fmt: skip


def _upstream(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [
        Surge("cloudflare", onset, outage_profile(60, 2, 35, 5), name="cloudflare"),
        Surge("discord", onset + 60, outage_profile(200, 3, 33, 5), name="discord"),
        Surge("shopify", onset + 60, outage_profile(60, 3, 33, 5), name="shopify"),
        Surge("canva", onset + 120, outage_profile(90, 3, 32, 5), name="canva"),
        Surge("netflix", onset + 240, outage_profile(150, 3, 30, 5), name="netflix"),
    ]
    events = _reports(_upstream_traffic(), onset, surges, seed, history)
    events += _cloudflare_probes(onset, (0, 42))
    events += _status_feed(
        "cloudflare", onset, (5, 45), "major", "Cloudflare global network errors"
    )
    return events


def _own_outage(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [Surge("shopify", onset, outage_profile(80, 3, 33, 5), name="shopify")]
    events = _reports(_upstream_traffic(), onset, surges, seed, history)
    events += _cloudflare_probes(onset, None)
    events += _status_feed("cloudflare", onset, None, "none", "")
    return events


# ==================================================================== regional
def _regional_traffic() -> list[ServiceTraffic]:
    mix = {"DE": 0.3, "US": 0.3, "FR": 0.2, "GB": 0.2}
    return [_traffic(s, 2.0 + (i % 3), mix) for i, s in enumerate(REGIONAL_SERVICES)]


def _regional(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [
        Surge(s, onset + 60 * (i % 3), outage_profile(60, 3, 35, 5), countries={"DE": 1.0},
              name=s)
        for i, s in enumerate(REGIONAL_SERVICES[:7])
    ]  # fmt: skip
    return _reports(_regional_traffic(), onset, surges, seed, history)


def _global(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [Surge("spotify", onset, outage_profile(150, 3, 35, 5), name="spotify")]
    return _reports(_regional_traffic(), onset, surges, seed, history)


# ==================================================================== shared platform
def _shared_platform(onset: float, seed: int, history: bool) -> list[Event]:
    problems = {"login": 0.45, "app": 0.35, "website": 0.2}
    surges = [
        Surge("facebook", onset, outage_profile(650, 5, 60, 15), problems=problems, name="fb"),
        Surge("instagram", onset + 60, outage_profile(420, 5, 60, 15), problems=problems,
              name="ig"),
        Surge("messenger", onset + 120, outage_profile(140, 5, 55, 15),
              problems={"messages": 0.5, "login": 0.3, "app": 0.2}, name="messenger"),
        Surge("threads", onset + 120, outage_profile(70, 5, 55, 15), problems=problems,
              name="threads"),
    ]  # fmt: skip
    bumps = [Bump("x", onset, 90, 1.25)]  # the rival gets more visitors: no incident
    traffic = _demo("facebook", "instagram", "messenger", "threads", "whatsapp", "x")
    return _reports(traffic, onset, surges, seed, history, bumps)


def _unrelated_pair(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [
        Surge("netflix", onset, outage_profile(120, 3, 30, 5), name="netflix"),
        Surge("youtube", onset + 12 * 60, outage_profile(150, 3, 30, 5), name="youtube"),
    ]
    return _reports(_demo("netflix", "youtube", "gmail"), onset, surges, seed, history)


# ==================================================================== fake-report floods
FLOOD_MINUTES = 15
FLOOD_PER_MINUTE = 2_000  # 30,000 in 15 minutes
_FIRST_OCTETS = (23, 31, 45, 62, 77, 81, 94, 109, 151, 185, 212)  # public unicast ranges


def flood_events(
    service: str,
    onset: float,
    *,
    seed: int,
    ids: int | None,
    addresses: int | None,
    regular: bool = False,
    country: str = "US",
    problem: str = "streaming",
    minutes: int = FLOOD_MINUTES,
    per_minute: int = FLOOD_PER_MINUTE,
) -> list[Event]:
    """A bot's reports, `per_minute` a minute for `minutes`: `ids` reporter ids (None: a
    fresh one each time) behind `addresses` addresses (None: a fresh public one each time),
    at random times or by a timer."""
    rng = np.random.default_rng([seed, 17])
    n = minutes * per_minute
    if regular:
        ts = onset + np.arange(n) * (60.0 / per_minute)
    else:
        ts = np.sort(onset + rng.random(n) * minutes * 60)
    out: list[Event] = []
    for i, t in enumerate(ts.tolist()):
        if addresses is None:
            a, b, c = (int(x) for x in rng.integers(1, 255, 3))
            ip = f"{_FIRST_OCTETS[a % len(_FIRST_OCTETS)]}.{b}.{c}.{1 + i % 250}"
        else:
            ip = f"198.51.{100 + i % addresses}.{7 + i % addresses}"
        who = f"bot-{i % ids}" if ids is not None else f"b{seed}x{i}"
        out.append({"type": "report", "ts": iso(t), "service": service, "country": country,
                    "problem": problem, "reporter": who, "ip": ip})  # fmt: skip
    return out


def _bot_flood(onset: float, seed: int, history: bool) -> list[Event]:
    surges = [Surge("youtube", onset, outage_profile(150, 3, 30, 5), name="youtube")]
    events = _reports(_demo("netflix", "youtube", "gmail"), onset, surges, seed, history,
                      with_ip=True)  # fmt: skip
    return events + flood_events("netflix", onset, seed=seed, ids=25, addresses=4)


def _rotating_ids(onset: float, seed: int, history: bool) -> list[Event]:
    events = _reports(_demo("netflix", "gmail"), onset, [], seed, history, with_ip=True)
    return events + flood_events("netflix", onset, seed=seed, ids=None, addresses=4)


def _scripted_flood(onset: float, seed: int, history: bool) -> list[Event]:
    events = _reports(_demo("netflix", "gmail"), onset, [], seed, history, with_ip=True)
    flood = flood_events("netflix", onset, seed=seed, ids=None, addresses=None, regular=True)
    return events + flood


def _flood_confirmed(onset: float, seed: int, history: bool) -> list[Event]:
    events = _rotating_ids(onset, seed, history)
    targets = [(NETFLIX_PUBLIC, "public", lambda k, v: not 0 <= k < 40)]
    return events + _probes("netflix", onset, targets)


_SPECS: dict[str, _Spec] = {
    "capacity": _Spec("X's audio rooms pass capacity; fixed by capping listeners", "demo",
                      _capacity),
    "ddos": _Spec("a flood of requests from many addresses hits X, listeners flat", "demo",
                  _ddos),
    "failover_failed": _Spec(
        "Netflix's primary site fails and the public endpoint with it; secondary healthy",
        "demo", lambda o, s, h: _failover(o, s, h, worked=False),
    ),
    "failover_worked": _Spec(
        "Netflix's primary site fails but traffic moves to the secondary: no incident",
        "demo", lambda o, s, h: _failover(o, s, h, worked=True),
    ),
    "upstream": _Spec("Cloudflare fails, three customers with it; Netflix fails on its own",
                      UPSTREAM_CATALOG, _upstream),
    "own_outage": _Spec("one Cloudflare customer fails on its own while Cloudflare is fine",
                        UPSTREAM_CATALOG, _own_outage),
    "regional": _Spec("7 of 9 unrelated services fail in Germany only", REGIONAL_CATALOG,
                      _regional),
    "global_outage": _Spec("one service fails in every country", REGIONAL_CATALOG, _global),
    "shared_platform": _Spec("Meta's apps fail together, WhatsApp fine, X +25% visitors",
                             "demo", _shared_platform),
    "unrelated_pair": _Spec("Netflix and YouTube fail 12 minutes apart, unrelated", "demo",
                            _unrelated_pair),
    "bot_flood": _Spec("a bot floods Netflix (25 ids, 4 addresses); YouTube really fails",
                       "demo", _bot_flood),
    "rotating_ids": _Spec("a bot floods Netflix with a fresh id per report from 4 addresses",
                          "demo", _rotating_ids),
    "scripted_flood": _Spec("a botnet floods Netflix by a timer, fresh ids and addresses",
                            "demo", _scripted_flood),
    "flood_confirmed": _Spec("a flood on Netflix while its public endpoint really fails",
                             "demo", _flood_confirmed),
}  # fmt: skip

SCENARIOS: dict[str, str] = {name: spec.description for name, spec in _SPECS.items()}
DEMO_SCENARIOS: tuple[str, ...] = tuple(n for n, s in _SPECS.items() if s.catalog == "demo")
