"""Causes and their evidence: the evidence state, the rules, and the pipeline around them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from outagewatch.catalog import Catalog
from outagewatch.errors import OutagewatchError
from outagewatch.events import EventDecoder, OtherEvent, iso
from outagewatch.incidents.causes import IncidentView, explain
from outagewatch.incidents.evidence import Evidence
from outagewatch.incidents.lifecycle import TABLE, Incident, State
from outagewatch.pipeline.pipeline import dump_state, load_state
from outagewatch.sim.scenarios import run, scenario, scenario_catalog, to_lines

START = 1_741_600_800.0  # 2025-03-10T10:00:00Z
M0 = int(START // 60)

CATALOG = Catalog.from_toml(
    """
[services.api]
name = "API"
[services.api.metrics]
users = "load"
rps = "traffic"
errors = "errors"

[services.bare]
name = "Bare"
[services.bare.metrics]
rps = "traffic"
errors = "errors"

[services.site]
name = "Site"
[[services.site.probes]]
url = "https://site.example/"
""",
    "<test catalog>",
)


def others(events: list[dict[str, Any]], catalog: Catalog = CATALOG) -> list[OtherEvent]:
    d = EventDecoder(catalog).decode([orjson.dumps(e) for e in events])
    assert not d.rejected, d.rejected
    return d.others


def metric(service: str, minute: int, name: str, value: float) -> dict[str, Any]:
    return {"type": "metric", "service": service, "ts": minute * 60 + 20, "name": name,
            "value": value}  # fmt: skip


def probe(minute: int, ok: bool, site: str = "public", vantage: str = "a") -> dict[str, Any]:
    return {"type": "probe", "service": "site", "ts": minute * 60 + 5, "ok": ok, "site": site,
            "target": f"https://{site}.site.example/", "vantage": vantage}  # fmt: skip


def status(service: str, ts: float, indicator: str, incident: str = "") -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "status", "service": service, "ts": ts, "indicator": indicator}
    if incident:
        ev["incident"] = incident
    return ev


def view(service: str, start_min: int = M0, end_min: int | None = None) -> IncidentView:
    return IncidentView(
        id=f"{service}-x", service=service, start=start_min * 60.0,
        end=None if end_min is None else end_min * 60.0, total=500, countries=(("US", 500),),
    )  # fmt: skip


def flood(service: str, with_load: bool) -> Evidence:
    """Six hours of normal telemetry, then requests x20 (load flat) and errors rising."""
    ev = Evidence(CATALOG)
    evs = []
    for k in range(-400, 30):
        m = M0 + k
        attack = k >= 0
        wobble = 1 + 0.01 * ((k * 7) % 5 - 2)
        evs.append(metric(service, m, "rps", 1000 * wobble * (20 if attack else 1)))
        evs.append(metric(service, m, "errors", 0.002 * wobble + (0.1 if attack else 0)))
        if with_load:
            evs.append(metric(service, m, "users", 50_000 * wobble))
    ev.ingest(others(evs))
    ev.finalise(M0 + 29)
    return ev


# ---------------------------------------------------------------- evidence state
def test_evidence_is_the_same_in_any_order_within_lateness_and_late_is_not_used() -> None:
    evs = [metric("api", M0 + k // 3, "rps", 100.0 + k) for k in range(60)]
    evs += [probe(M0 + k // 2, k % 5 != 0) for k in range(40)]
    evs += [status("api", START + 60 * k, "major" if k > 3 else "none") for k in range(10)]
    a, b = Evidence(CATALOG), Evidence(CATALOG)
    a.ingest(others(evs))
    for e in reversed(evs):  # another order, one by one
        b.ingest(others([e]))
    a.finalise(M0 + 30)
    b.finalise(M0 + 30)
    assert a.dump() == b.dump()
    series = a.metric("api", "rps")
    assert series is not None
    assert list(series.values)[:2] == [101.0, 104.0]  # the mean of each minute's values
    b.ingest(others([metric("api", M0 + 3, "rps", 5.0)]))  # its minute is final: late
    assert b.stats.late == 1 and a.dump()["metrics"] == b.dump()["metrics"]
    b.ingest(others([metric("api", M0 + 40, "nope", 1.0)]))  # no role in the catalog
    assert b.stats.unused == 1 and b.metric("api", "nope") is None


def test_official_status_runs_since_the_first_event_of_the_indicator() -> None:
    ev = Evidence(CATALOG)
    ev.ingest(others([status("api", START, "none"), status("api", START + 120, "major", "Down")]))
    # Pending (not yet final) events already show: what a status page says now.
    now = ev.official_status("api")
    assert now is not None and now["indicator"] == "major" and now["incident"] == "Down"
    ev.finalise(M0 + 10)
    ev.ingest(others([status("api", START + 900, "major"), status("api", START + 1500, "none")]))
    ev.finalise(M0 + 30)
    runs = ev.status_runs("api", START, START + 3600)
    assert [(r.indicator, r.start) for r in runs] == [
        ("none", START), ("major", START + 120), ("none", START + 1500),
    ]  # fmt: skip
    assert runs[1].last == START + 900 and runs[1].incident == "Down"
    assert ev.official_status("api") == {
        "indicator": "none", "since": iso(START + 1500), "updated_at": iso(START + 1500),
        "description": None, "incident": None,
    }  # fmt: skip
    assert ev.official_status("bare") is None


@pytest.mark.slow
def test_evidence_state_round_trips() -> None:
    ev = flood("api", with_load=True)
    ev.ingest(others([probe(M0 + 40, False), status("site", START + 2400, "minor")]))
    again = Evidence(CATALOG)
    again.load(orjson.loads(orjson.dumps(ev.dump())))
    assert again.dump() == ev.dump()
    for e in (ev, again):  # and both carry on alike
        e.ingest(others([metric("api", M0 + 41, "rps", 10.0)]))
        e.finalise(M0 + 45)
    assert again.dump() == ev.dump()


# ---------------------------------------------------------------- the rules
@pytest.mark.slow
def test_a_flood_without_a_load_metric_is_no_confident_ddos() -> None:
    ev = flood("bare", with_load=False)
    ex = explain(view("bare"), [], catalog=CATALOG, evidence=ev, final_minute=M0 + 29)
    assert ex.causes[0]["kind"] == "unknown"
    ddos = next(c for c in ex.causes if c["kind"] == "ddos")
    assert ddos["confidence"] < 0.5
    assert any("no load metric" in s for s in ddos["evidence"])
    ev = flood("api", with_load=True)
    ex = explain(view("api"), [], catalog=CATALOG, evidence=ev, final_minute=M0 + 29)
    assert ex.causes[0]["kind"] == "ddos" and ex.causes[0]["confidence"] >= 0.8
    assert "rps rose x20" in ex.causes[0]["evidence"][0]


def test_without_evidence_or_catalog_the_answer_is_unknown() -> None:
    ex = explain(view("api"), [], catalog=None, evidence=None, final_minute=M0 + 10)
    assert [c["kind"] for c in ex.causes] == ["unknown"]
    assert 0.5 <= ex.causes[0]["confidence"] <= 0.8  # never certain
    assert ex.probe_confirmed is None
    ex = explain(view("api"), [], catalog=CATALOG, evidence=Evidence(CATALOG), final_minute=M0)
    assert any("no recent telemetry" in s for s in ex.causes[0]["evidence"])


def test_probe_confirmed_true_false_or_null() -> None:
    def confirmed(fail_from: int | None) -> bool | None:
        ev = Evidence(CATALOG)
        evs = [probe(M0 + k, fail_from is None or k < fail_from) for k in range(-30, 20)]
        ev.ingest(others(evs))
        ev.finalise(M0 + 19)
        return explain(
            view("site"), [], catalog=CATALOG, evidence=ev, final_minute=M0 + 19
        ).probe_confirmed

    assert confirmed(0) is True
    assert confirmed(None) is False  # probed and fine all along
    assert confirmed(19) is False  # one bad minute is no confirmation
    assert explain(view("api"), [], catalog=CATALOG, evidence=Evidence(CATALOG),
                   final_minute=M0 + 19).probe_confirmed is None  # fmt: skip


def test_failover_needs_a_healthy_site_for_high_confidence() -> None:
    ev = Evidence(CATALOG)
    evs = []
    for k in range(-30, 20):
        down = k >= 0
        evs += [probe(M0 + k, not down), probe(M0 + k, not down, site="primary")]
        evs.append(probe(M0 + k, not down, site="secondary"))  # the standby is down too
    ev.ingest(others(evs))
    ev.finalise(M0 + 19)
    ex = explain(view("site"), [], catalog=CATALOG, evidence=ev, final_minute=M0 + 19)
    failover = next(c for c in ex.causes if c["kind"] == "failover")
    assert failover["confidence"] < 0.5
    assert "no healthy site to fail over to was probed" in failover["evidence"]
    assert ex.causes[0]["kind"] == "unknown" and ex.probe_confirmed is True


def test_down_from_one_vantage_only_is_said() -> None:
    """Public probes failing from eu-west while us-east sees the site fine: the evidence
    says where it is down from."""
    ev = Evidence(CATALOG)
    evs = []
    for k in range(-30, 20):
        evs.append(probe(M0 + k, k < 0, vantage="eu-west"))
        evs.append(probe(M0 + k, True, vantage="us-east"))
    ev.ingest(others(evs))
    ev.finalise(M0 + 19)
    ex = explain(view("site"), [], catalog=CATALOG, evidence=ev, final_minute=M0 + 19)
    said = " ".join(e for c in ex.causes for e in c["evidence"])
    assert "failing from eu-west only; fine from us-east" in said, said


# ---------------------------------------------------------------- lifecycle rows
def test_cause_and_cluster_changes_are_transitions_of_the_table() -> None:
    assert TABLE[(State.ONGOING, State.ONGOING)] == (
        "peak",
        "cause",
        "cluster",
        "abuse",
        "detected",
    )
    inc = Incident("a-1", "a", M0, START, 1.0, state=State.ONGOING)
    tr = inc.move(State.ONGOING, START + 60, action="cause", causes=[["ddos", 0.9]])
    assert (tr.action, tr.from_state, tr.to_state) == ("cause", State.ONGOING, State.ONGOING)
    assert inc.move(State.ONGOING, START + 60).action == "peak"  # the default
    with pytest.raises(OutagewatchError, match="no transition ongoing -> ongoing \\(opened\\)"):
        inc.move(State.ONGOING, START, action="opened")
    inc.causes = [{"kind": "ddos", "confidence": 0.9, "evidence": ["rps x20"]}]
    inc.cluster = {"id": "c", "kind": "group", "key": "g", "services": ["a", "b"]}
    inc.probe_confirmed = True
    back = Incident.from_state(orjson.loads(orjson.dumps(inc.state_dict())))
    assert back.doc() == inc.doc()
    assert inc.doc()["causes"][0]["kind"] == "ddos" and inc.doc()["probe_confirmed"] is True


@pytest.mark.slow
def test_pipeline_records_cause_and_cluster_transitions() -> None:
    p, docs = run(scenario("shared_platform", START), scenario_catalog("shared_platform"))
    assert len(docs) == 4
    rows = p.drain_transitions()
    fb = [t for t in rows if t.service == "facebook"]
    acts = [t.action for t in fb]
    assert acts[0] == "opened" and "resolved" in acts
    assert "cause" in acts and "cluster" in acts
    clus = [t for t in fb if t.action == "cluster"]
    assert clus[-1].detail["cluster"]["key"] == "meta"
    causes = [t for t in fb if t.action == "cause"]
    assert causes[-1].detail["causes"][0][0] == "shared_platform"


# ---------------------------------------------------------------- determinism and restarts
@pytest.mark.slow
def test_one_by_one_equals_batches_with_probes_and_status() -> None:
    events = scenario("failover_failed", START, seed=4)
    catalog = scenario_catalog("failover_failed")
    batch, docs_b = run(events, catalog, batch=4_000)
    one, docs_o = run(events, catalog, batch=1)
    assert docs_o == docs_b
    assert one.drain_transitions() == batch.drain_transitions()
    assert one.evidence.dump() == batch.evidence.dump()
    assert [d["causes"][0]["kind"] for d in docs_b.values()] == ["failover"]


@pytest.mark.slow
def test_state_survives_a_restart_in_the_middle_of_an_incident() -> None:
    events = scenario("capacity", START, seed=5)
    catalog = scenario_catalog("capacity")
    cut = next(i for i, e in enumerate(events) if str(e["ts"]) >= "2025-03-10T10:20:00Z")
    whole, docs_w = run(events, catalog)
    first, docs_1 = run(events[:cut], catalog, settle_s=0)
    assert first.ongoing() and first.ongoing()[0]["causes"][0]["kind"] == "capacity"
    restored = load_state(dump_state(first), catalog=catalog)
    second, docs_2 = run(events[cut:], catalog, pipeline=restored)
    assert {**docs_1, **docs_2} == docs_w
    assert first.drain_transitions() + second.drain_transitions() == whole.drain_transitions()


def test_replay_cli_shows_causes_in_json_and_table(tmp_path: Path) -> None:
    src = tmp_path / "ddos.ndjson"
    src.write_bytes(b"\n".join(to_lines(scenario("ddos", START))) + b"\n")
    db = str(tmp_path / "o.db")
    cli = [sys.executable, "-m", "outagewatch.cli", "--db", db]
    subprocess.run([*cli, "replay", "--no-progress", str(src)], check=True, capture_output=True)
    out = subprocess.run([*cli, "incidents", "--format", "json"], check=True,
                         capture_output=True).stdout  # fmt: skip
    docs = orjson.loads(out)
    assert [d["service"] for d in docs] == ["x"]
    assert docs[0]["causes"][0]["kind"] == "ddos"
    table = subprocess.run([*cli, "incidents"], check=True, capture_output=True, text=True).stdout
    head, row = table.splitlines()[:2]
    assert head.split()[-1] == "CAUSE"
    assert row.split()[-2:] == ["ddos", f"{docs[0]['causes'][0]['confidence']:.2f}"]


def test_a_new_kind_of_cause_is_one_rule_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """`explain` asks every rule in RULES, so a new rule's causes come out ranked with the
    others; the API schema's kinds are the registry's."""
    from outagewatch.incidents import causes
    from outagewatch.incidents.causes.base import Cause, Context, FunctionRule
    from outagewatch.web.schemas import Cause as CauseSchema

    def solar_flare(ctx: Context) -> list[Cause]:
        return [Cause("solar_flare", 0.7, (f"{ctx.inc.service}: the sun was busy",))]

    inc = IncidentView("i", "x", 1_741_595_460.0, None, 100, (("US", 100),))
    before = explain(inc, [], catalog=None, evidence=None, final_minute=29_026_600)
    assert [c["kind"] for c in before.causes] == ["unknown"]
    monkeypatch.setattr(
        causes, "RULES", (*causes.RULES, FunctionRule(("solar_flare",), solar_flare))
    )
    after = explain(inc, [], catalog=None, evidence=None, final_minute=29_026_600)
    assert after.causes[0] == {
        "kind": "solar_flare",
        "confidence": 0.7,
        "evidence": ["x: the sun was busy"],
    }
    enum = CauseSchema.model_json_schema()["properties"]["kind"]["enum"]
    assert enum == list(causes.KINDS)
    assert set(causes.CLUSTER_CAUSE.values()) <= set(causes.KINDS)
