"""Clusters as a pure function of concurrent incidents and the catalog."""

from __future__ import annotations

from typing import Any

from outagewatch.catalog import Catalog
from outagewatch.incidents.causes import IncidentView
from outagewatch.incidents.clusters import assign_clusters

T0 = 1_741_600_800.0  # 2025-03-10T10:00:00Z

CATALOG = Catalog.from_toml(
    """
[services.cdn]
[services.fb]
group = "meta"
[services.ig]
group = "meta"
[services.wa]
group = "meta"
[services.shop]
depends_on = ["cdn"]
[services.chat]
depends_on = ["cdn"]
group = "chatco"
[services.news]
[services.bank]
[services.x]
""",
    "<test catalog>",
)


def inc(
    service: str,
    minute: int = 0,
    *,
    end: int | None = None,
    country: str = "US",
    share: float = 0.5,
) -> IncidentView:
    main = round(1000 * share)
    countries = ((country, main), ("ZZ" if country != "ZZ" else "YY", 1000 - main))
    return IncidentView(
        id=f"{service}-{minute}", service=service, start=T0 + 60 * minute,
        end=None if end is None else T0 + 60 * end, total=1000, countries=countries,
    )  # fmt: skip


def kinds(out: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {i: (c["kind"], c["key"]) for i, c in out.items()}


def test_a_lone_incident_or_unrelated_pair_has_no_cluster() -> None:
    assert assign_clusters([inc("news")], CATALOG) == {}
    assert assign_clusters([inc("news"), inc("bank", 12)], CATALOG) == {}
    assert assign_clusters([inc("fb"), inc("ig")], None) == {}  # no catalog, no relations


def test_group_cluster_names_the_services_and_id_is_stable() -> None:
    out = assign_clusters([inc("fb"), inc("ig", 2), inc("news", 1)], CATALOG)
    assert kinds(out) == {"fb-0": ("group", "meta"), "ig-2": ("group", "meta")}
    assert out["fb-0"] is out["ig-2"]
    assert out["fb-0"] == {
        "id": "group-meta-20250310T1000Z", "kind": "group", "key": "meta",
        "services": ["fb", "ig"],
    }  # fmt: skip


def test_concurrency_needs_close_starts_and_overlap() -> None:
    assert assign_clusters([inc("fb"), inc("ig", 25)], CATALOG) == {}  # 25 minutes apart
    assert assign_clusters([inc("fb", end=5), inc("ig", 10)], CATALOG) == {}  # no overlap
    # Chained: each within 20 minutes of the next, all overlapping.
    out = assign_clusters([inc("fb"), inc("ig", 15), inc("wa", 30)], CATALOG)
    assert set(out) == {"fb-0", "ig-15", "wa-30"}


def test_upstream_needs_the_provider_failing() -> None:
    pair = [inc("shop"), inc("chat", 1)]
    assert "shop-0" not in assign_clusters(pair, CATALOG)
    out = assign_clusters(pair, CATALOG, failing_providers=["cdn"])  # e.g. its status page
    assert kinds(out) == {"shop-0": ("upstream", "cdn"), "chat-1": ("upstream", "cdn")}
    out = assign_clusters([inc("cdn"), inc("shop", 1)], CATALOG)
    assert out["cdn-0"]["services"] == ["cdn", "shop"]


def test_the_cluster_explaining_most_incidents_wins() -> None:
    # Four services in DE: chat is also in group chatco and depends on cdn, but the
    # regional explanation covers all four.
    de = [inc(s, i, country="DE", share=0.95) for i, s in enumerate(["news", "bank", "x", "chat"])]
    out = assign_clusters([*de, inc("cdn", 1)], CATALOG)
    assert {i: c["key"] for i, c in out.items() if c["kind"] == "regional"} == {
        "news-0": "DE", "bank-1": "DE", "x-2": "DE", "chat-3": "DE",
    }  # fmt: skip
    assert "cdn-1" not in out  # left alone: the only other candidate lost its dependent


def test_ties_go_to_upstream_then_regional_then_group() -> None:
    # fb, ig (meta) and cdn + shop + chat (upstream) in one country: regional has 5,
    # needs unrelated families: meta, cdn (itself), providers:cdn, chatco -> 4 families.
    many = [
        inc("fb", 0, country="FR", share=0.9), inc("ig", 0, country="FR", share=0.9),
        inc("cdn", 0, country="FR", share=0.9), inc("shop", 0, country="FR", share=0.9),
        inc("chat", 0, country="FR", share=0.9),
    ]  # fmt: skip
    assert {c["kind"] for c in assign_clusters(many, CATALOG).values()} == {"regional"}
    # Equal sizes: upstream {cdn, shop} vs group {fb, ig} are disjoint: both form.
    out = assign_clusters([inc("cdn"), inc("shop"), inc("fb"), inc("ig")], CATALOG)
    assert kinds(out)["shop-0"] == ("upstream", "cdn") and kinds(out)["fb-0"] == ("group", "meta")
    # chat is in both group chatco (with nobody) and upstream cdn; a true tie between an
    # upstream and a regional candidate of the same incidents goes to upstream.
    tie = [
        inc("cdn", 0, country="DE", share=0.9), inc("shop", 0, country="DE", share=0.9),
        inc("chat", 0, country="DE", share=0.9),
    ]  # fmt: skip
    assert {c["kind"] for c in assign_clusters(tie, CATALOG).values()} == {"upstream"}


def test_a_rival_without_an_incident_is_never_in_a_cluster() -> None:
    out = assign_clusters([inc("fb"), inc("ig")], CATALOG)
    assert all("x" not in c["services"] and "wa" not in c["services"] for c in out.values())


def test_clusters_work_over_stored_docs() -> None:
    docs: list[dict[str, Any]] = [
        {"id": "fb-1", "service": "fb", "started_at": "2025-03-10T10:00:00Z",
         "ended_at": None, "total_reports": 10, "countries": [{"country": "US", "reports": 10}]},
        {"id": "ig-1", "service": "ig", "started_at": "2025-03-10T10:03:00Z",
         "ended_at": "2025-03-10T11:00:00Z", "total_reports": 10, "countries": []},
    ]  # fmt: skip
    out = assign_clusters([IncidentView.from_doc(d) for d in docs], CATALOG)
    assert out["fb-1"]["services"] == ["fb", "ig"]


def _doc(service: str, minute: int, **extra: Any) -> dict[str, Any]:
    from outagewatch.events import iso

    return {
        "id": f"{service}-{minute}", "service": service, "started_at": iso(T0 + 60 * minute),
        "ended_at": None, "total_reports": 100, "countries": [{"country": "US", "reports": 100}],
        "cluster": None, **extra,
    }  # fmt: skip


def test_stored_clusters_join_what_separate_pipelines_stored() -> None:
    """Scale-out: docs written by pipelines that each saw one service get the clusters one
    pipeline gives; a suspected flood stays out; a provider another partition found failing
    from its probes (its upstream cluster) still makes an upstream cluster."""
    from outagewatch.incidents.clusters import stored_clusters

    flood = _doc("wa", 2, suspected_abuse=True, detected_by=["reports"])
    got = stored_clusters([_doc("fb", 0), _doc("ig", 3), flood, _doc("news", 1)], CATALOG)
    assert got["fb-0"] == got["ig-3"] == {
        "id": "group-meta-20250310T1000Z", "kind": "group", "key": "meta",
        "services": ["fb", "ig"],
    }  # fmt: skip
    assert got["wa-2"] is None and got["news-1"] is None
    seen = {"id": "upstream-cdn-x", "kind": "upstream", "key": "cdn", "services": ["shop"]}
    got = stored_clusters([_doc("shop", 0, cluster=seen), _doc("chat", 2)], CATALOG)
    assert got["shop-0"] is not None and got["shop-0"]["kind"] == "upstream"
    assert got["shop-0"]["services"] == ["chat", "shop"] and got["chat-2"] == got["shop-0"]
    assert stored_clusters([_doc("shop", 0), _doc("chat", 2)], CATALOG)["shop-0"] is None
