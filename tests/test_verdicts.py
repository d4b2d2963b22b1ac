"""Probe quorum and status-page verdicts in the pure pipeline (incidents.verdicts)."""

from __future__ import annotations

from typing import Any

import orjson

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder
from outagewatch.incidents.severity import severity
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.settings import PipelineSettings

START = 1_741_600_800.0  # 2025-03-10T10:00:00Z
M0 = int(START // 60)
URL = "https://site.example/"
CATALOG = Catalog.from_toml(
    f"""
[services.site]
name = "Site"
[[services.site.probes]]
url = "{URL}"
interval_s = 60

[services.paged]
name = "Paged"
[services.paged.status_page]
url = "https://status.paged.example/api/v2/summary.json"
""",
    "<test catalog>",
)


def probe(minute: int, ok: bool, vantage: str, second: int = 10) -> dict[str, Any]:
    return {"type": "probe", "service": "site", "ts": minute * 60 + second, "target": URL,
            "site": "public", "vantage": vantage, "ok": ok,
            "status": 200 if ok else 503}  # fmt: skip


def status(minute: int, indicator: str) -> dict[str, Any]:
    return {"type": "status", "service": "paged", "ts": minute * 60 + 5, "indicator": indicator}


class Run:
    """A pipeline fed events minute by minute (lateness 0: minutes are final at once)."""

    def __init__(self, lateness_s: int = 0, **settings: Any) -> None:
        cfg = PipelineSettings(lateness_s=lateness_s, **settings)
        self.p = Pipeline(cfg, catalog=CATALOG)
        self.decoder = EventDecoder(CATALOG)
        self.opened: list[dict[str, Any]] = []

    def feed(self, events: list[dict[str, Any]], until_min: int) -> None:
        d = self.decoder.decode([orjson.dumps(e) for e in events])
        assert not d.rejected, d.rejected
        self.p.ingest_others(d.others)
        if len(d.reports):
            self.p.ingest(d.reports)
        self.p.advance_to(until_min * 60.0)

    def minute(self, m: int, fails: dict[str, bool]) -> None:
        """Minute m: one check from every vantage (True: failed); then the minute closes."""
        self.feed([probe(m, not bad, v) for v, bad in fails.items()], m + 1)

    def docs(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.p.drain_incidents()}


def test_two_of_three_vantages_failing_twice_open_a_probe_only_outage_and_recover() -> None:
    r = Run()
    r.p.advance_to(START)
    seen: dict[str, dict[str, Any]] = {}
    for m in range(M0, M0 + 3):
        r.minute(m, {"eu-west": False, "us-east": False, "ap-south": False})
    r.minute(M0 + 3, {"eu-west": True, "us-east": True, "ap-south": False})
    assert not r.p.open_by_service  # one failed check each: not yet
    r.minute(M0 + 4, {"eu-west": True, "us-east": True, "ap-south": False})
    inc = r.p.open_by_service["site"]  # the second consecutive failure: the quorum holds
    assert inc.detected_by == ["probes"]
    assert inc.started_min == M0 + 3 and inc.detected_at == (M0 + 5) * 60
    seen.update(r.docs())
    doc = seen[inc.id]
    assert doc["detected_by"] == ["probes"] and doc["total_reports"] == 0
    assert severity(doc) == "outage"
    assert r.p.verdicts.detail["site"] == "failing from eu-west, us-east only; fine from ap-south"
    for m in range(M0 + 5, M0 + 30):  # it stays open while the quorum fails (no reports)
        r.minute(m, {"eu-west": True, "us-east": True, "ap-south": False})
    assert "site" in r.p.open_by_service
    r.minute(M0 + 30, {"eu-west": False, "us-east": False, "ap-south": False})
    assert "site" in r.p.open_by_service  # one good check: not yet
    r.minute(M0 + 31, {"eu-west": False, "us-east": False, "ap-south": False})
    assert "site" not in r.p.open_by_service
    trs = r.p.drain_transitions()
    assert next(t.action for t in trs if t.incident == inc.id) == "opened"
    assert trs[-1].action == "resolved" and trs[-1].detail["ended_at"] == (M0 + 30) * 60
    assert "site" not in r.p.verdicts.detail


def test_one_vantage_of_three_failing_is_partial_never_an_incident() -> None:
    r = Run()
    r.p.advance_to(START)
    for m in range(M0, M0 + 10):
        r.minute(m, {"eu-west": True, "us-east": False, "ap-south": False})
    assert not r.p.open_by_service and not r.p.drain_transitions()
    assert r.p.verdicts.partial == {"site"}
    assert r.p.verdicts.detail["site"] == "failing from eu-west only; fine from ap-south, us-east"


def test_a_lone_vantage_is_a_quorum_only_when_it_is_the_only_one() -> None:
    r = Run()
    r.p.advance_to(START)
    for m in range(M0, M0 + 3):
        r.minute(m, {"local": True})
    assert r.p.open_by_service["site"].detected_by == ["probes"]
    # Two reporting: both must fail.
    r2 = Run()
    r2.p.advance_to(START)
    for m in range(M0, M0 + 5):
        r2.minute(m, {"local": True, "eu-west": False})
    assert not r2.p.open_by_service


def test_verdicts_are_the_same_in_one_batch_and_across_a_restart() -> None:
    events = [
        probe(m, m < M0 + 3 or m > M0 + 20, v, s)
        for m in range(M0, M0 + 30)
        for v, s in (("a", 5), ("b", 40))
    ]
    one = Run(lateness_s=300)
    one.p.advance_to(START)
    one.feed(events, M0 + 40)
    by_minute = Run(lateness_s=300)
    by_minute.p.advance_to(START)
    b = []
    for m in range(M0, M0 + 30):
        by_minute.feed([e for e in events if e["ts"] // 60 == m], m + 1)
        if m == M0 + 10:  # a restart in the middle of the incident
            p = by_minute.p
            b += p.drain_transitions()
            by_minute.p = load_state(dump_state(p), p.settings, catalog=CATALOG)
    by_minute.feed([], M0 + 40)
    b += by_minute.p.drain_transitions()
    a = [(t.incident, t.action, t.at, t.detail) for t in one.p.drain_transitions()]
    assert a == [(t.incident, t.action, t.at, t.detail) for t in b]
    assert a[0][1] == "opened" and a[-1][1] == "resolved"


def test_the_status_page_saying_major_opens_and_joins() -> None:
    r = Run()
    r.p.advance_to(START)
    r.feed([status(M0, "none")], M0 + 2)
    r.feed([status(M0 + 2, "major")], M0 + 4)
    inc = r.p.open_by_service["paged"]
    assert inc.detected_by == ["status_page"] and inc.started_min == M0 + 2
    r.feed([status(M0 + 9, "none")], M0 + 11)
    assert "paged" not in r.p.open_by_service
    tr = r.p.drain_transitions()[-1]
    assert tr.action == "resolved" and tr.detail["ended_at"] == (M0 + 9) * 60


def surge(m: int, n: int = 300) -> list[dict[str, Any]]:
    return [
        {
            "type": "report",
            "service": "site",
            "ts": m * 60 + i % 60,
            "country": "US",
            "reporter": f"p{m}-{i}",
        }
        for i in range(n)
    ]


def test_a_crowd_surge_joins_a_probe_incident_as_one() -> None:
    r = Run(warmup_minutes=0)
    r.p.advance_to(START)
    for m in range(M0, M0 + 3):
        r.minute(m, {"a": True, "b": True})
    inc = r.p.open_by_service["site"]
    assert inc.detected_by == ["probes"]
    for m in range(M0 + 3, M0 + 6):
        r.feed(surge(m) + [probe(m, False, v) for v in ("a", "b")], m + 1)
    assert r.p.open_by_service["site"] is inc and len(r.p.incidents) == 1
    assert inc.detected_by == ["reports", "probes"]
    actions = [t.action for t in r.p.drain_transitions()]
    assert actions.count("opened") == 1 and "detected" in actions


def test_probes_join_a_crowd_incident_and_keep_it_open() -> None:
    r = Run(warmup_minutes=0)
    r.p.advance_to(START)
    for m in range(M0, M0 + 3):
        r.feed(surge(m) + [probe(m, True, v) for v in ("a", "b")], m + 1)
    inc = r.p.open_by_service["site"]
    assert inc.detected_by == ["reports"]
    for m in range(M0 + 3, M0 + 40):  # reports stop; the probes fail for long
        r.minute(m, {"a": True, "b": True})
    assert r.p.open_by_service["site"] is inc
    assert inc.detected_by == ["reports", "probes"]
    for m in range(M0 + 40, M0 + 42):
        r.minute(m, {"a": False, "b": False})
    assert "site" not in r.p.open_by_service and inc.ended_min == M0 + 40


def test_an_incident_probes_or_the_status_page_detected_is_public_even_if_flooded() -> None:
    from outagewatch.incidents.severity import public

    doc: dict[str, Any] = {"suspected_abuse": True, "probe_confirmed": None}
    assert not public(doc)
    assert not public({**doc, "detected_by": ["reports"]})
    assert public({**doc, "detected_by": ["reports", "probes"]})
    assert public({**doc, "detected_by": ["status_page"]})
    assert severity({"detected_by": ["reports"], "peak_reports_per_minute": 5}) == "problems"
