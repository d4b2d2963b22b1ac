"""Each cause and its look-alike, end to end: scenario events -> decoder -> pipeline -> docs.

Every test asserts the top cause, its confidence and the words of its evidence, and that
the look-alike is not called that.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from outagewatch.sim.scenarios import (
    DEMO_SCENARIOS,
    SCENARIOS,
    run,
    scenario,
    scenario_catalog,
)

START = 1_741_600_800.0  # 2025-03-10T10:00:00Z, a Monday


@functools.cache
def incidents(name: str) -> dict[str, dict[str, Any]]:
    """service -> its incident doc (each scenario gives at most one per service)."""
    _, docs = run(scenario(name, START), scenario_catalog(name))
    by_service: dict[str, dict[str, Any]] = {}
    for doc in docs.values():
        assert doc["service"] not in by_service, f"{name}: two incidents of {doc['service']}"
        by_service[doc["service"]] = doc
    return by_service


def top(doc: dict[str, Any]) -> dict[str, Any]:
    causes = doc["causes"]
    assert causes, doc
    confidences = [c["confidence"] for c in causes]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    return dict(causes[0])


def text(cause: dict[str, Any]) -> str:
    return " | ".join(cause["evidence"])


def kinds(doc: dict[str, Any]) -> list[str]:
    return [c["kind"] for c in doc["causes"]]


# ---------------------------------------------------------------- capacity vs DDoS
@pytest.mark.slow
def test_capacity_errors_grow_with_listeners_and_fall_when_capped() -> None:
    docs = incidents("capacity")
    assert sorted(docs) == ["x"]
    cause = top(docs["x"])
    assert cause["kind"] == "capacity"
    assert cause["confidence"] >= 0.5
    ev = text(cause)
    assert "error_rate rose when spaces_listeners passed" in ev
    assert "fell back" in ev and "held at" in ev  # fixed by capping the listeners
    assert "traffic per unit of load stayed normal" in ev
    assert "ddos" not in kinds(docs["x"])  # claimed to be a DDoS, it was not one


@pytest.mark.slow
def test_ddos_traffic_far_beyond_flat_load_is_not_capacity() -> None:
    docs = incidents("ddos")
    assert sorted(docs) == ["x"]
    cause = top(docs["x"])
    assert cause["kind"] == "ddos"
    assert cause["confidence"] >= 0.5
    ev = text(cause)
    assert "requests_per_second rose x" in ev and "unique_client_ips rose x" in ev
    assert "spaces_listeners" in ev and "stayed flat" in ev
    assert "error_rate rose with it" in ev  # errors rise in both: that alone tells nothing
    assert "capacity" not in kinds(docs["x"])


# ---------------------------------------------------------------- failover
@pytest.mark.slow
def test_failed_failover_names_the_sites_and_is_probe_confirmed() -> None:
    docs = incidents("failover_failed")
    assert sorted(docs) == ["netflix"]
    doc = docs["netflix"]
    cause = top(doc)
    assert cause["kind"] == "failover"
    assert cause["confidence"] >= 0.5
    ev = text(cause)
    assert "primary site (https://primary.netflix.example/health)" in ev
    assert "public endpoint (https://www.netflix.com/) failed with it" in ev
    assert "secondary site" in ev and "stayed healthy" in ev
    assert "HTTP 503" in ev
    assert "status page of netflix said a major outage" in ev  # the official status, too
    assert doc["probe_confirmed"] is True


@pytest.mark.slow
def test_working_failover_is_no_incident() -> None:
    """The primary failed, the public endpoint survived: users never noticed."""
    p, docs = run(scenario("failover_worked", START), scenario_catalog("failover_worked"))
    assert docs == {}
    primary = [k for k in p.evidence.probe_keys("netflix") if k[2] == "primary"]
    assert len(primary) == 3  # the evidence was there: three vantages saw the primary fail
    assert all(sum(p.evidence.probes[k].failed) >= 50 for k in primary)


# ---------------------------------------------------------------- upstream
@pytest.mark.slow
def test_cdn_failure_takes_three_customers_down_with_it() -> None:
    docs = incidents("upstream")
    customers = ("discord", "shopify", "canva")
    for sid in customers:
        cause = top(docs[sid])
        assert cause["kind"] == "upstream", (sid, docs[sid]["causes"])
        assert cause["confidence"] >= 0.5
        ev = text(cause)
        assert "cloudflare (listed in depends_on) has its own incident" in ev
        assert "status page of cloudflare said a major outage" in ev
        others = [c for c in customers if c != sid]
        assert all(c in ev for c in others)
        cluster = docs[sid]["cluster"]
        assert cluster["kind"] == "upstream" and cluster["key"] == "cloudflare"
        assert cluster["services"] == ["canva", "cloudflare", "discord", "shopify"]
    assert docs["cloudflare"]["cluster"] == docs["discord"]["cluster"]
    assert docs["cloudflare"]["probe_confirmed"] is True
    # Netflix fails at the same time on its own: not upstream, not in the cluster.
    assert docs["netflix"]["cluster"] is None
    assert "upstream" not in kinds(docs["netflix"])
    assert top(docs["netflix"])["kind"] == "unknown"


@pytest.mark.slow
def test_one_customers_own_outage_is_not_blamed_on_the_cdn() -> None:
    docs = incidents("own_outage")
    assert sorted(docs) == ["shopify"]
    cause = top(docs["shopify"])
    assert cause["kind"] == "unknown"
    assert cause["confidence"] >= 0.5
    assert "its provider cloudflare is not failing" in text(cause)
    assert "upstream" not in kinds(docs["shopify"])
    assert docs["shopify"]["cluster"] is None


# ---------------------------------------------------------------- regional
@pytest.mark.slow
def test_one_countrys_network_down_seven_of_nine_services() -> None:
    docs = incidents("regional")
    down = ["ebay", "paypal", "reddit", "slack", "spotify", "twitch", "zoom"]
    assert sorted(docs) == down  # dropbox and wikipedia stayed fine
    for sid in down:
        cause = top(docs[sid])
        assert cause["kind"] == "regional_network"
        assert cause["confidence"] >= 0.5
        ev = text(cause)
        assert "7 unrelated services fail in DE at once" in ev
        assert "the rest of the world is fine" in ev
        cluster = docs[sid]["cluster"]
        assert (cluster["kind"], cluster["key"], cluster["services"]) == ("regional", "DE", down)


@pytest.mark.slow
def test_global_outage_of_one_service_is_not_regional() -> None:
    docs = incidents("global_outage")
    assert sorted(docs) == ["spotify"]
    cause = top(docs["spotify"])
    assert cause["kind"] == "unknown"
    assert cause["confidence"] >= 0.5
    assert "not concentrated in one country" in text(cause)
    assert "regional_network" not in kinds(docs["spotify"])
    assert docs["spotify"]["cluster"] is None


# ---------------------------------------------------------------- shared platform
@pytest.mark.slow
def test_a_companys_apps_down_together_whatsapp_spared_rival_untouched() -> None:
    docs = incidents("shared_platform")
    down = ["facebook", "instagram", "messenger", "threads"]
    assert sorted(docs) == down  # no incident for WhatsApp, nor for X (+25% visitors)
    for sid in down:
        cause = top(docs[sid])
        assert cause["kind"] == "shared_platform"
        assert cause["confidence"] >= 0.5
        ev = text(cause)
        assert "4 of 5 services of group meta are down at once" in ev
        assert "spared: whatsapp" in ev
        cluster = docs[sid]["cluster"]
        assert (cluster["kind"], cluster["key"], cluster["services"]) == ("group", "meta", down)
        assert "x" not in cluster["services"]


def test_two_unrelated_services_in_the_same_hour_share_nothing() -> None:
    docs = incidents("unrelated_pair")
    assert sorted(docs) == ["netflix", "youtube"]
    for sid in ("netflix", "youtube"):
        cause = top(docs[sid])
        assert cause["kind"] == "unknown"
        assert cause["confidence"] >= 0.5
        assert docs[sid]["cluster"] is None
        assert not {"shared_platform", "regional_network", "upstream"} & set(kinds(docs[sid]))
    assert "no other service of group google is down" in text(top(docs["youtube"]))


# ---------------------------------------------------------------- the scenarios themselves
@pytest.mark.slow
def test_every_scenario_is_sorted_valid_and_deterministic() -> None:
    for name in SCENARIOS:
        events = scenario(name, START + 17, seed=3, history=False)
        assert events == scenario(name, START + 17, seed=3, history=False), name
        assert all(e["type"] in ("report", "probe", "status", "metric") for e in events)
    demo = set(DEMO_SCENARIOS)
    assert {"capacity", "ddos", "failover_failed", "shared_platform"} <= demo
    assert "regional" not in demo  # needs its own 9-service catalog


def test_history_makes_the_baselines_warm_and_seed_changes_the_draws() -> None:
    a = scenario("own_outage", START, seed=1)
    b = scenario("own_outage", START, seed=2)
    assert a != b
    reports = [e for e in a if e["type"] == "report"]
    first = min(reports, key=lambda e: e["ts"])["ts"]
    assert first < "2025-03-09T08:00:00Z"  # more than a day before the outage
    assert any(e.get("count", 1) > 1 for e in reports)  # imported cheaply as counts


def test_unknown_scenario_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'; known: bot_flood, capacity"):
        scenario("nope", START)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_catalog("nope")
