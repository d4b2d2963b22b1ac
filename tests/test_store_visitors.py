"""Visitors' email subscribers, admin sessions and site keys (store/visitors.py), the same
assertions on every store: SQLite and PostgreSQL."""

from __future__ import annotations

from test_store import AnyStore, backend, store  # noqa: F401  # fixtures


def test_a_subscriber_is_confirmed_once_then_found_by_address(
    store: AnyStore,  # noqa: F811
) -> None:
    row = {"id": "vs_1", "email": "ann@example.com", "services": ["x", "facebook"],
           "confirm_hash": "h1", "created_at": 100.0}  # fmt: skip
    store.add_visitor(row)
    got = store.visitor("vs_1")
    assert got is not None and got["services"] == ["x", "facebook"]
    assert got["confirm_hash"] == "h1" and got["confirmed_at"] is None
    assert store.visitors_of("ann@example.com") == []  # not confirmed yet
    assert not store.confirm_visitor("vs_1", "wrong", 200.0)
    assert store.confirm_visitor("vs_1", "h1", 200.0)
    assert not store.confirm_visitor("vs_1", "h1", 201.0)  # guarded by the old state
    (found,) = store.visitors_of("ann@example.com")
    assert found["confirm_hash"] is None and found["confirmed_at"] == 200.0
    store.add_visitor({**row, "id": "vs_2", "services": ["x"], "created_at": 300.0})
    assert [v["id"] for v in store.visitors_of("ann@example.com")] == ["vs_1"]
    everything = store.visitors_of("ann@example.com", confirmed=False)
    assert [v["id"] for v in everything] == ["vs_1", "vs_2"]
    assert store.delete_visitor("vs_1") and not store.delete_visitor("vs_1")
    assert store.visitor("vs_1") is None


def test_unconfirmed_requests_are_pruned(store: AnyStore) -> None:  # noqa: F811
    for i, at in enumerate((100.0, 200.0, 300.0)):
        store.add_visitor({"id": f"vs_{i}", "email": f"{i}@example.com", "services": ["x"],
                           "confirm_hash": f"h{i}", "created_at": at})  # fmt: skip
    assert store.confirm_visitor("vs_0", "h0", 150.0)
    assert store.prune_visitors(250.0) == 1  # vs_1; vs_0 is confirmed, vs_2 is recent
    assert [store.visitor(f"vs_{i}") is not None for i in range(3)] == [True, False, True]


def test_sessions_and_site_keys(store: AnyStore) -> None:  # noqa: F811
    store.add_session("s1", 500.0, "t1")
    store.add_session("s2", 100.0, "t2")
    assert store.session("s1") == (500.0, "t1") and store.session("nope") is None
    store.prune_sessions(200.0)
    assert store.session("s2") is None and store.session("s1") == (500.0, "t1")
    store.delete_session("s1")
    assert store.session("s1") is None
    first = store.site_key("unsubscribe", "aa" * 32)
    assert first == "aa" * 32
    assert store.site_key("unsubscribe", "bb" * 32) == first  # the first one stays
