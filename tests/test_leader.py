"""Scale-out leader (runtime/leader.py): one API node at a time runs the probes, the status
polls and the alerts, under a lease in PostgreSQL; kill -9 the leader and the other takes
over within the lease TTL; no alert is sent twice.

Everything against the real PostgreSQL and NATS JetStream (tests/services.py), real `serve
--nats-url` API nodes and a real `worker`, a real target answering 503 and a real webhook
receiver counting what it gets.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.incidents.lifecycle import State, Transition
from outagewatch.runtime.leader import LEADER_LEASE, TransitionFollower
from outagewatch.store.base import DeliveryQuery, DeliveryUpdate, IncidentQuery
from outagewatch.store.postgres import Lease, PostgresStore
from services import fresh_pg_schema, nats_url, unique_name
from test_store import commit
from webutil import free_port, stop_processes, wait_until

PARTITIONS = 2
TTL_S = 3
TOKEN = "leader-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_pg_schema("leader") as url:
        yield url


def _transition(incident: str, action: str = "opened") -> Transition:
    return Transition(incident, "x", action, State.QUIET, State.ONGOING, time.time(), {})


def _delivery(store: PostgresStore, key: str) -> int:
    new = store.add_delivery(
        {"key": key, "subscription": "s", "incident": "i", "kind": "opened",
         "channel": "webhook", "payload": {"k": 1}, "created_at": time.time()}
    )  # fmt: skip
    assert new is not None
    return new


# ---------------------------------------------------------------------- the store's part
def test_a_delivery_attempt_is_claimed_once_and_only_under_the_leader_lease(pg: str) -> None:
    store = PostgresStore(pg)
    try:
        (a,) = store.acquire("api-a", [LEADER_LEASE], ttl=60, limit=1)
        did = _delivery(store, "k1")
        assert store.claim_delivery(did, 0, a)
        assert not store.claim_delivery(did, 0, a)  # attempt 1 is taken: never twice
        row = store.delivery(did)
        assert row is not None and row["attempts"] == 1
        assert row["last_error"].startswith("in flight: attempt 1 by api-a")
        # Another node takes the lease (a's expired): a, deposed, can claim nothing more;
        # the new leader claims the next attempt of the one left in flight.
        store.renew("api-a", 0.05)
        time.sleep(0.2)
        (b,) = store.acquire("api-b", [LEADER_LEASE], ttl=60, limit=1)
        assert b.epoch == a.epoch + 1
        assert not store.claim_delivery(did, 1, a)
        assert store.claim_delivery(did, 1, b)
        # A claim by a stale epoch of the same owner is refused too.
        assert not store.claim_delivery(did, 2, Lease(LEADER_LEASE, "api-b", a.epoch))
        store.update_delivery(did, DeliveryUpdate(status="sent", attempts=2, sent_at=time.time()))
        assert not store.claim_delivery(did, 2, b)  # sent: nothing more to claim
        assert not store.save_leader_cursor("transitions", 5, a)
        assert store.save_leader_cursor("transitions", 5, b)
        assert store.leader_cursor("transitions") == 5
    finally:
        store.close()


def test_the_transition_follower_waits_for_a_commit_that_took_a_lower_number(pg: str) -> None:
    """Sequence numbers are taken at insert, so a later number can commit first: the
    follower hands each transition out once, the slow one too, and the cursor waits."""
    store = PostgresStore(pg)
    try:
        (lease,) = store.acquire("api-a", [LEADER_LEASE], ttl=60, limit=1)
        store.commit(commit(transitions=[_transition("before")]))
        follower = TransitionFollower(store)
        follower.start(lease)
        start = follower.cursor
        assert start is not None and follower.read(lease) == []  # history is not alerted
        slow = psycopg.connect(pg)
        slow.execute(
            "INSERT INTO transitions(incident, service, action, from_state, to_state, at, "
            "detail) VALUES ('slow', 'x', 'opened', 'quiet', 'ongoing', 0, '{}')"
        )  # uncommitted: its number is taken
        store.commit(commit(transitions=[_transition("fast")]))
        assert [t.incident for t in follower.read(lease)] == ["fast"]
        assert follower.cursor == start  # the gap is waited for
        assert follower.read(lease) == []  # "fast" is not handed out twice
        slow.commit()
        slow.close()
        assert [t.incident for t in follower.read(lease)] == ["slow"]
        assert follower.cursor == start + 2
        assert store.leader_cursor("transitions") == start + 2
        # A number that never commits (a rolled-back commit) is skipped after GAP_WAIT_S.
        con = psycopg.connect(pg)
        con.execute(
            "INSERT INTO transitions(incident, service, action, from_state, to_state, at, "
            "detail) VALUES ('lost', 'x', 'opened', 'quiet', 'ongoing', 0, '{}')"
        )
        con.rollback()
        con.close()
        store.commit(commit(transitions=[_transition("after")]))
        t = [0.0]
        follower.clock = lambda: t[0]
        assert [x.incident for x in follower.read(lease)] == ["after"]
        assert follower.cursor == start + 2
        t[0] = 11.0
        assert follower.read(lease) == []
        assert follower.cursor == start + 4
    finally:
        store.close()


# ---------------------------------------------------------------------- the deployment
class Target:
    def __init__(self) -> None:
        self.down = False
        self.server = LoopbackServer(lambda r: Reply(503 if self.down else 200, b"x"))


class Receiver:
    """A webhook receiver: every delivery it gets, by idempotency key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[str, str]] = []  # (key, kind)
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        body = orjson.loads(req.body)
        with self.lock:
            self.got.append((req.headers.get("X-Outagewatch-Delivery", ""), body["kind"]))
        return Reply(200, b"ok")

    def kinds(self) -> list[str]:
        with self.lock:
            return [k for _, k in self.got]


def _catalog(tmp: Path, target: str) -> Path:
    path = tmp / "catalog.toml"
    path.write_text(
        f'[services.shop]\nname = "Shop"\n[[services.shop.probes]]\nurl = "{target}/health"\n'
        'interval_s = 5\ntimeout_s = 2\n[services.other]\nname = "Other"\n'
    )
    return path


def _common(pg: str, url: str, stream: str, catalog: Path) -> list[str]:
    return [sys.executable, "-m", "outagewatch.cli", "--db", pg, "--nats-url", url,
            "--stream", stream, "--partitions", str(PARTITIONS), "--catalog", str(catalog),
            "--lease-ttl-s", str(TTL_S)]  # fmt: skip


ENV = {
    **os.environ,
    "OUTAGEWATCH_TOKEN": TOKEN,
    "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS": "1",
    "OUTAGEWATCH_LATENESS_S": "0",
    "PYTHONUNBUFFERED": "1",
}


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        stop_processes(procs)


def _leader(store: PostgresStore) -> str | None:
    return next((o for n, o, _, live in store.leases() if n == LEADER_LEASE and live), None)


@dataclass
class Deployment:
    pg: str
    common: list[str]
    procs: list[subprocess.Popen[bytes]]
    bases: list[str]
    nodes: dict[str, subprocess.Popen[bytes]]  # node id in the leases -> its process
    store: PostgresStore


@contextlib.contextmanager
def _deployment(pg: str, tmp: Path, target: str) -> Iterator[Deployment]:
    """Two `serve --nats-url` API nodes and one `worker` on one PostgreSQL and NATS."""
    url = nats_url()
    stream = unique_name("owlead")
    with _processes() as procs:
        common = _common(pg, url, stream, _catalog(tmp, target))
        bases, nodes = [], {}
        for n in ("n0", "n1"):
            port = free_port()
            log = (tmp / f"{n}.log").open("wb")
            env = {**ENV, "OUTAGEWATCH_WORKER_ID": n}
            cmd = [*common, "serve", "--port", str(port)]
            nodes[f"api-{n}"] = p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                     env=env)  # fmt: skip
            procs.append(p)
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:

            def up(base: str = base) -> bool:
                assert all(p.poll() is None for p in procs), "a node exited"
                try:
                    return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until("an API node to answer", up, 60)
        log = (tmp / "worker.log").open("wb")
        procs.append(subprocess.Popen([*common, "worker", "--worker-id", "w"], stdout=log,
                                      stderr=subprocess.STDOUT, env=ENV))  # fmt: skip
        store = PostgresStore(pg)
        try:
            yield Deployment(pg, common, procs, bases, nodes, store)
        finally:
            store.close()


def test_kill_9_the_leader_and_probes_and_alerts_go_on_from_the_other_node_once(
    pg: str, tmp_path: Path
) -> None:
    target, receiver = Target(), Receiver()
    with (
        target.server,
        receiver.server,
        _deployment(pg, tmp_path, target.server.url) as d,
    ):
        store, nodes, bases = d.store, d.nodes, d.bases
        wait_until("a leader", lambda: _leader(store) is not None, 30)
        first = _leader(store)
        assert first in nodes
        sub = {"channel": "webhook", "service": "shop", "url": f"{receiver.server.url}/h"}
        r = httpx.post(f"{bases[1]}/api/v1/subscriptions", json=sub, headers=AUTH)
        assert r.status_code == 201, r.text

        def probes_since(t: float) -> int:
            return len(store.events("probe", "shop", t, time.time() + 60))

        t0 = time.time()
        wait_until("the leader's probes to be counted", lambda: probes_since(t0) >= 2, 60)
        # The target fails: a probe-only outage, alerted once.
        target.down = True
        wait_until("the opened alert", lambda: receiver.kinds() == ["opened"], 200)

        def sent() -> bool:
            rows = store.deliveries(DeliveryQuery(status="sent"))
            return [d["kind"] for d in rows] == ["opened"]

        wait_until("the alert recorded as sent", sent, 10)
        # kill -9 the leader: the other node takes over within the TTL and one round.
        victim = nodes[first]
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        took = wait_until("the other node to lead", lambda: _leader(store) not in
                          (None, first), 30)  # fmt: skip
        print(f"the other node leads {took:.1f} s after the kill (lease TTL {TTL_S} s)")
        assert took < TTL_S + TTL_S / 3 + 2, took
        second = _leader(store)
        assert second in nodes and second != first
        t1 = time.time()
        wait_until("the new leader's probes", lambda: probes_since(t1) >= 2, 30)
        # The target is back: the resolution is alerted by the new leader, once.
        target.down = False
        wait_until("the resolved alert", lambda: len(receiver.got) >= 2, 200)
        time.sleep(2 * TTL_S)  # anything sent twice would have come by now
        with receiver.lock:
            got = list(receiver.got)
        assert [k for _, k in got] == ["opened", "resolved"], got
        assert all(n == 1 for n in Counter(key for key, _ in got).values()), got
        incidents = store.incidents(IncidentQuery(service="shop"))
        assert len(incidents) == 1 and incidents[0]["detected_by"] == ["probes"]
        assert incidents[0]["status"] == "resolved"
        (n_log,) = [
            (tmp_path / f"{n}.log").read_text() for n in ("n0", "n1") if f"api-{n}" == second
        ]
        assert f"leader {second}: leading" in n_log


def test_every_api_node_shows_the_verdicts_the_workers_computed(pg: str, tmp_path: Path) -> None:
    """Probes from three vantages (the leader's and two `probe-agent`s posting to either
    node); one fails: both API nodes, leader or not, show `problems` with the sentence, and
    neither shows `unknown` for a service whose sources are alive."""
    failing: set[str] = set()

    def answer(req: Request) -> Reply:
        ua = req.headers.get("User-Agent", "")
        vantage = ua.split("(vantage ", 1)[1].rstrip(")") if "(vantage " in ua else "local"
        return Reply(503 if vantage in failing else 200, b"x")

    server = LoopbackServer(answer)
    with server, _deployment(pg, tmp_path, server.url) as d:
        for vantage, base in zip(("eu-west", "us-east"), d.bases, strict=True):
            log = (tmp_path / f"agent-{vantage}.log").open("wb")
            cmd = [*d.common, "probe-agent", "--server", base, "--vantage", vantage]
            d.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV))

        def states() -> list[tuple[str, str | None]]:
            out = []
            for base in d.bases:
                doc = httpx.get(f"{base}/api/v1/services/shop", timeout=10).json()
                out.append((doc["status"], doc["status_detail"]))
            return out

        def vantages() -> set[str]:
            doc = httpx.get(f"{d.bases[0]}/api/v1/services/shop", timeout=10).json()
            return {p["vantage"] for p in doc["probes"]}

        wait_until("results from three vantages", lambda: vantages() == {"local", "eu-west",
                   "us-east"}, 60)  # fmt: skip
        wait_until("both nodes to see the verdicts", lambda: d.store.shared("verdicts/") != {}, 30)
        assert states() == [("ok", None), ("ok", None)]
        for base in d.bases:
            summary = httpx.get(f"{base}/api/v1/services", timeout=10).json()
            assert {s["id"]: s["status"] for s in summary} == {"shop": "ok", "other": "ok"}
        failing.add("eu-west")
        want = ("problems", "failing from eu-west only; fine from local, us-east")
        wait_until("both nodes to show the partial failure", lambda: states() == [want, want],
                   180)  # fmt: skip
        html = httpx.get(f"{d.bases[1]}/services/shop", timeout=10).text
        assert "failing from eu-west only" in html
        # one vantage of three: no outage
        assert d.store.incidents(IncidentQuery(service="shop")) == []
        # A subscription made on one node is listed by the other within a lease round.
        sub = {"channel": "webhook", "service": "shop", "url": "http://127.0.0.1:9/h"}
        made = httpx.post(f"{d.bases[0]}/api/v1/subscriptions", json=sub, headers=AUTH).json()

        def listed() -> bool:
            got = httpx.get(f"{d.bases[1]}/api/v1/subscriptions", headers=AUTH).json()
            return made["id"] in {s["id"] for s in got}

        wait_until("the other node to list the subscription", listed, 10)
