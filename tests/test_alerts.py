"""Alerts against real receivers on loopback: signed webhooks, chat webhooks, SMTP with
STARTTLS; retries, failing channels, idempotency across a restart, the API."""

from __future__ import annotations

import asyncio
import email
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from loopback import LoopbackServer, Reply, Request, client_tls, self_signed_cert, server_tls
from outagewatch.alerts.alerter import Alerter, SubscriptionError
from outagewatch.alerts.base import Message, Notifier
from outagewatch.alerts.channels import REGISTRY, ChannelContext
from outagewatch.alerts.channels.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from outagewatch.catalog import Catalog
from outagewatch.incidents.lifecycle import State, Transition
from outagewatch.settings import Settings
from outagewatch.store.base import DeliveryQuery
from outagewatch.store.sqlite import SQLiteStore
from outagewatch.web.subscriptions import make_router
from webutil import free_port

CATALOG = Catalog.from_toml(
    '[services.x]\nname = "X"\n'
    '[services.facebook]\nname = "Facebook"\ngroup = "meta"\n'
    '[services.instagram]\nname = "Instagram"\ngroup = "meta"\n'
)
SECRET = "a-very-long-webhook-secret"


def settings(**kw: Any) -> Settings:
    return replace(Settings.resolve({}, {}), allow_private_targets=True, **kw)


def doc(
    service: str = "x",
    *,
    status: str = "ongoing",
    peak: int = 12,
    baseline: float = 2.0,
    causes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": f"{service}-20250310T0831Z",
        "service": service,
        "status": status,
        "started_at": "2025-03-10T08:31:00Z",
        "detected_at": "2025-03-10T08:33:00Z",
        "peak_at": "2025-03-10T08:40:00Z",
        "ended_at": "2025-03-10T09:32:00Z" if status == "resolved" else None,
        "peak_reports_per_minute": peak,
        "baseline_reports_per_minute": baseline,
        "total_reports": 16240,
        "countries": [{"country": "US", "reports": 11800}, {"country": "GB", "reports": 4000}],
        "problems": [{"problem": "app", "reports": 9000}],
        "probe_confirmed": None,
        "suspected_abuse": False,
        "causes": causes or [],
        "cluster": None,
    }


def tr(d: dict[str, Any], action: str) -> Transition:
    to = State.RESOLVED if action == "resolved" else State.ONGOING
    frm = State.QUIET if action == "opened" else State.ONGOING
    return Transition(d["id"], d["service"], action, frm, to, 1741595580.0, {})


class Hooks:
    """Receivers: /hook (verifies the HMAC), /slack, /discord, /teams, /broken (500),
    /flaky (503 twice, then 200), /gone (410), /hang (answers too late)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.bad_signatures = 0
        self.flaky_left = 2
        self.lock = threading.Lock()
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        path = req.path
        if path == "/broken":
            return Reply(500, b"oops")
        if path == "/gone":
            return Reply(410, b"this webhook was deleted")
        if path == "/hang":
            return Reply(200, b"", delay_s=30)
        if path == "/flaky":
            with self.lock:
                if self.flaky_left > 0:
                    self.flaky_left -= 1
                    return Reply(503, b"busy")
        if path == "/hook":
            ok = verify_signature(
                SECRET,
                req.headers.get(TIMESTAMP_HEADER, ""),
                req.body,
                req.headers.get(SIGNATURE_HEADER, ""),
            )
            if not ok:
                self.bad_signatures += 1
                return Reply(401, b"bad signature")
        with self.lock:
            self.got.append((path, json.loads(req.body), req.headers))
        return Reply(204 if path == "/discord" else 200, b"" if path == "/discord" else b"ok")

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body, _ in self.got if p == path]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    with h.server:
        yield h


async def run(alerter: Alerter, *batches: list[Transition], docs: dict[str, Any]) -> None:
    await alerter.start()
    try:
        for batch in batches:
            await alerter.handle(batch, docs)
        await alerter.idle(timeout=10)
    finally:
        await alerter.stop()


def new_alerter(path: Path, **kw: Any) -> Alerter:
    opts: dict[str, Any] = {"backoff_s": 0.05, "attempt_timeout_s": 1.0}
    opts.update(kw)
    return Alerter(SQLiteStore(str(path)), settings(), CATALOG, **opts)


@pytest.mark.slow
def test_signed_webhook_and_chat_channels(hooks: Hooks, tmp_path: Path) -> None:
    alerter = new_alerter(tmp_path / "a.db")
    url = hooks.server.url

    async def go() -> list[dict[str, Any]]:
        made = []
        for body in (
            {"channel": "webhook", "url": url + "/hook", "secret": SECRET, "service": "x"},
            {"channel": "slack", "url": url + "/slack"},
            {"channel": "discord", "url": url + "/discord", "group": "meta"},
            {"channel": "teams", "url": url + "/teams", "min_severity": "problems"},
        ):
            made.append(await alerter.add_subscription(body))
        return made

    made = asyncio.run(go())
    assert made[0]["secret"] == SECRET and made[0]["url"].endswith("/…")
    d = doc("x", peak=812, baseline=4.1)
    fb = doc("facebook")
    asyncio.run(run(alerter, [tr(d, "opened"), tr(fb, "opened")], docs={d["id"]: d, fb["id"]: fb}))
    assert hooks.bad_signatures == 0
    [hook] = hooks.at("/hook")
    assert hook["kind"] == "opened" and hook["incident"]["id"] == d["id"]
    assert hook["subject"] == "X: outage detected"
    assert "US 74%" in hook["text"] and "812 reports/min" in hook["text"]
    headers = next(h for p, _, h in hooks.got if p == "/hook")
    assert headers[DELIVERY_HEADER] == f"{made[0]['id']}:{d['id']}:opened"
    slack = hooks.at("/slack")
    assert sorted(m["text"].split("\n")[0] for m in slack) == [
        ":rotating_light: *Facebook: problems detected*",
        ":rotating_light: *X: outage detected*",
    ]
    [discord] = hooks.at("/discord")  # the group subscription: facebook only
    assert discord["content"].startswith("**Facebook: problems detected**")
    teams = hooks.at("/teams")
    assert len(teams) == 2
    card = teams[0]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    log = SQLiteStore(str(tmp_path / "a.db")).deliveries()
    assert len(log) == 6 and {r["status"] for r in log} == {"sent"}


def test_tampered_signature_is_detected() -> None:
    body = b'{"kind": "opened"}'
    from outagewatch.alerts.channels.webhook import sign

    good = sign(SECRET, "1700000000", body)
    assert verify_signature(SECRET, "1700000000", body, good, now=1700000010)
    assert not verify_signature(SECRET, "1700000000", body + b" ", good, now=1700000010)
    assert not verify_signature("another-secret-of-length", "1700000000", body, good, now=1.7e9)
    assert not verify_signature(SECRET, "1700000000", body, good, now=1700009999)  # replay


@pytest.mark.slow
def test_failing_channels_do_not_block_the_others_and_retry(hooks: Hooks, tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    # The timeout is long enough that a busy machine (CI shares two cores) does not take
    # the healthy channel's own delivery for a hang.
    alerter = new_alerter(path, max_attempts=4, attempt_timeout_s=1.5)
    url = hooks.server.url

    async def go() -> dict[str, str]:
        ids = {}
        for name in ("broken", "gone", "hang", "flaky", "slack"):
            sub = await alerter.add_subscription({"channel": "slack", "url": f"{url}/{name}"})
            ids[sub["id"]] = name
        return ids

    ids = asyncio.run(go())
    d = doc("x")
    asyncio.run(run(alerter, [tr(d, "opened")], docs={d["id"]: d}))
    log = {ids[r["subscription"]]: r for r in SQLiteStore(str(path)).deliveries()}
    assert log["slack"]["status"] == "sent" and log["slack"]["attempts"] == 1
    assert log["slack"]["sent_at"] - log["slack"]["created_at"] < 1.4  # before `hang` timed out
    assert log["flaky"]["status"] == "sent" and log["flaky"]["attempts"] == 3
    assert log["broken"]["status"] == "failed" and log["broken"]["attempts"] == 4
    assert "answered 500" in log["broken"]["last_error"]
    assert log["gone"]["status"] == "failed" and log["gone"]["attempts"] == 1  # 4xx: permanent
    assert "410" in log["gone"]["last_error"] and "/gone" not in log["gone"]["last_error"]
    assert log["hang"]["status"] == "failed" and "timed out" in log["hang"]["last_error"]
    assert len(hooks.at("/slack")) == 1 and len(hooks.at("/flaky")) == 1


def test_open_and_resolve_sent_once_across_a_restart(hooks: Hooks, tmp_path: Path) -> None:
    path = tmp_path / "ow.db"
    first = new_alerter(path)
    sub = asyncio.run(
        first.add_subscription(
            {"channel": "webhook", "url": hooks.server.url + "/hook", "secret": SECRET}
        )
    )
    d = doc("x", peak=40, baseline=1)
    asyncio.run(run(first, [tr(d, "opened")], docs={d["id"]: d}))
    assert [m["kind"] for m in hooks.at("/hook")] == ["opened"]
    first.store.close()
    # The server restarts: a new Alerter on the same database. The pipeline hands the same
    # transitions in again (a replayed journal) before the incident resolves.
    second = new_alerter(path)
    resolved = doc("x", status="resolved", peak=40, baseline=1)
    asyncio.run(
        run(
            second,
            [tr(d, "opened"), tr(d, "peak")],
            [tr(resolved, "resolved")],
            [tr(resolved, "resolved")],
            docs={d["id"]: resolved},
        )
    )
    got = hooks.at("/hook")
    assert [m["kind"] for m in got] == ["opened", "resolved"]
    assert got[1]["subject"] == "X: resolved" and "after 1 h 1 min" in got[1]["text"]
    log = second.store.deliveries(DeliveryQuery(subscription=sub["id"]))
    assert sorted(r["kind"] for r in log) == ["opened", "resolved"]


@pytest.mark.slow
def test_pending_delivery_resumes_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ow.db"
    up = threading.Event()
    seen: list[dict[str, Any]] = []

    def handler(req: Request) -> Reply:
        if not up.is_set():
            return Reply(503, b"down")
        seen.append(json.loads(req.body))
        return Reply(200, b"ok")

    with LoopbackServer(handler) as server:
        first = new_alerter(path, backoff_s=0.3)
        asyncio.run(first.add_subscription({"channel": "slack", "url": server.url + "/s"}))
        d = doc("x")

        async def crash() -> None:  # stops after the first failed attempt
            await first.start()
            await first.handle([tr(d, "opened")], {d["id"]: d})
            for _ in range(200):
                await asyncio.sleep(0.02)
                if first.store.deliveries()[0]["attempts"] == 1:
                    break
            await first.stop()

        asyncio.run(crash())
        [row] = first.store.deliveries()
        assert row["status"] == "pending" and row["attempts"] == 1 and seen == []
        up.set()
        second = new_alerter(path, backoff_s=0.3)
        asyncio.run(run(second, docs={}))
        [row] = second.store.deliveries()
        assert row["status"] == "sent" and row["attempts"] == 2 and len(seen) == 1


def test_severity_scope_and_cause(hooks: Hooks, tmp_path: Path) -> None:
    alerter = new_alerter(tmp_path / "a.db")
    url = hooks.server.url
    names: dict[str, str] = {}

    async def subscribe() -> None:
        for name, extra in (
            ("all", {}),
            ("outage", {"min_severity": "outage"}),
            ("meta", {"group": "meta"}),
            ("insta", {"service": "instagram"}),
        ):
            sub = await alerter.add_subscription(
                {"channel": "slack", "url": f"{url}/slack", **extra}
            )
            names[sub["id"]] = name

    asyncio.run(subscribe())
    small = doc("facebook", peak=10, baseline=2)
    big = doc("facebook", peak=300, baseline=2)
    cause = [{"kind": "shared_platform", "confidence": 0.8, "evidence": ["facebook and instagram"]}]
    found = {**big, "causes": cause}
    gone = {**found, "status": "resolved", "ended_at": "2025-03-10T08:50:00Z"}
    inc = small["id"]

    async def steps() -> None:
        await alerter.start()
        for t, dd in (
            (tr(small, "opened"), small),
            (tr(big, "peak"), big),
            (tr(found, "cause"), found),
            (tr(found, "peak"), found),
            (tr(gone, "resolved"), gone),
        ):
            await alerter.handle([t], {inc: dd})
        await alerter.idle(10)
        await alerter.stop()

    asyncio.run(steps())
    log = alerter.store.deliveries()
    sent = sorted((names[r["subscription"]], r["kind"]) for r in log)
    assert sent == sorted(
        [(n, k) for n in ("all", "meta", "outage") for k in ("opened", "cause", "resolved")]
    )
    assert {r["status"] for r in log} == {"sent"}
    texts = [m["text"] for m in hooks.at("/slack")]
    assert sum("likely cause shared platform (80%)" in t for t in texts) == 3
    assert sum("Facebook: outage detected" in t for t in texts) == 1  # the outage-only one
    assert sum("Facebook: problems detected" in t for t in texts) == 2


def test_subscription_validation(tmp_path: Path) -> None:
    alerter = new_alerter(tmp_path / "a.db")
    alerter.settings = replace(alerter.settings, allow_private_targets=False)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"channel": "pager"}, "`channel` 'pager'"),
        ({"channel": "slack"}, "`url` is required"),
        ({"channel": "slack", "url": "http://127.0.0.1/x"}, "loopback"),
        ({"channel": "slack", "url": "http://169.254.169.254/"}, "link-local"),
        ({"channel": "slack", "url": "https://h.example/x", "service": "nope"}, "no such service"),
        ({"channel": "slack", "url": "https://h.example/x", "group": "nope"}, "`group` 'nope'"),
        ({"channel": "slack", "url": "https://h.example/x", "min_severity": "bad"}, "min_severity"),
        ({"channel": "slack", "url": "https://h.example/x", "colour": 1}, "unknown field 'colour'"),
        ({"channel": "webhook", "url": "https://h.example/x", "secret": "short"}, "16 characters"),
        ({"channel": "email", "to": "ops@example.com"}, "OUTAGEWATCH_SMTP_HOST"),
        (
            {"channel": "slack", "url": "https://h.example/", "service": "x", "group": "meta"},
            "`service` or `group`",
        ),
    ]
    for body, words in bad:
        with pytest.raises(SubscriptionError) as err:
            asyncio.run(alerter.add_subscription(body))
        assert words in str(err.value), (body, str(err.value))
    alerter.settings = replace(alerter.settings, smtp_host="mail.example")
    with pytest.raises(SubscriptionError, match="`to`"):
        asyncio.run(alerter.add_subscription({"channel": "email", "to": ["not an address"]}))
    made = asyncio.run(
        alerter.add_subscription({"channel": "webhook", "url": "https://h.example/"})
    )
    assert len(made["secret"]) >= 32 and made["service"] is None  # everything
    assert "secret" not in alerter.subscriptions()[0]


# ---------------------------------------------------------------------------- email


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def auth(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data == (b"alerts", b"pa55word")
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    cert, key = self_signed_cert(tmp_path)
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls(cert, key),
        require_starttls=True,
        authenticator=inbox.auth,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield inbox, port, cert
    finally:
        controller.stop()


def test_email_over_starttls(smtp: tuple[Inbox, int, Path], tmp_path: Path) -> None:
    inbox, port, cert = smtp
    s = settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_user="alerts",
        smtp_password="pa55word",
        smtp_from="outagewatch@example.org",
    )
    alerter = Alerter(
        SQLiteStore(str(tmp_path / "m.db")),
        s,
        CATALOG,
        smtp_ssl_context=client_tls(cert),
        backoff_s=0.05,
        attempt_timeout_s=5,
    )
    asyncio.run(
        alerter.add_subscription({"channel": "email", "to": ["ops@example.com", "b@example.com"]})
    )
    d = doc("x", peak=812, baseline=4.1)
    r = {**d, "status": "resolved", "ended_at": "2025-03-10T09:32:00Z"}
    asyncio.run(run(alerter, [tr(d, "opened")], [tr(r, "resolved")], docs={d["id"]: r}))
    assert inbox.logins == ["alerts", "alerts"]
    assert len(inbox.mails) == 2
    sender, rcpts, raw = inbox.mails[0]
    assert sender == "outagewatch@example.org" and rcpts == ["ops@example.com", "b@example.com"]
    mail = email.message_from_bytes(raw)
    assert mail["Subject"] == "X: outage detected"
    assert mail["Message-ID"].endswith("@outagewatch>")
    assert "Incident x-20250310T0831Z." in mail.get_payload()
    assert email.message_from_bytes(inbox.mails[1][2])["Subject"] == "X: resolved"


def test_email_refuses_clear_text_when_starttls_is_missing(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        alerter = Alerter(
            SQLiteStore(str(tmp_path / "m.db")),
            settings(smtp_host="127.0.0.1", smtp_port=port),
            CATALOG,
            backoff_s=0.05,
        )
        asyncio.run(alerter.add_subscription({"channel": "email", "to": "ops@example.com"}))
        d = doc("x")
        asyncio.run(run(alerter, [tr(d, "opened")], docs={d["id"]: d}))
    finally:
        controller.stop()
    [row] = alerter.store.deliveries()
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "does not offer STARTTLS" in row["last_error"] and inbox.mails == []


# ---------------------------------------------------------------------------- API


def test_api_router(tmp_path: Path) -> None:
    alerter = new_alerter(tmp_path / "api.db")

    def require_operator(authorization: str | None = Header(default=None)) -> None:
        if authorization != "Bearer tok":
            raise HTTPException(401, {"code": "unauthorized", "message": "operator token needed"})

    app = FastAPI()
    app.include_router(make_router(alerter, require_operator))
    auth = {"Authorization": "Bearer tok"}
    with TestClient(app) as client:
        assert client.get("/api/v1/subscriptions").status_code == 401
        r = client.post(
            "/api/v1/subscriptions",
            json={"channel": "slack", "url": "https://hooks.example/T0/B0/secret", "service": "X"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["service"] == "x" and sub["url"] == "https://hooks.example/…"
        bad = client.post("/api/v1/subscriptions", json={"channel": "fax"}, headers=auth)
        assert bad.status_code == 422 and bad.json()["detail"]["code"] == "bad_subscription"
        notjson = client.post("/api/v1/subscriptions", content=b"{", headers=auth)
        assert notjson.status_code == 400
        listed = client.get("/api/v1/subscriptions", headers=auth).json()
        assert [s["id"] for s in listed] == [sub["id"]]
        assert "secret" not in json.dumps(listed)
        assert client.get(f"/api/v1/subscriptions/{sub['id']}", headers=auth).json() == sub
        assert client.get("/api/v1/deliveries", headers=auth).json() == []
        assert client.get("/api/v1/deliveries?status=odd", headers=auth).status_code == 422
        assert client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=auth).status_code == 204
        assert client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=auth).status_code == 404
        assert client.get("/api/v1/subscriptions", headers=auth).json() == []


@pytest.mark.slow
def test_one_subscriber_hears_of_one_incident_in_order(hooks: Hooks, tmp_path: Path) -> None:
    """Opened and resolved queued at once arrive in that order, every time."""
    url = hooks.server.url
    d = doc("x", peak=900, baseline=4.0)
    r = {**d, "status": "resolved", "ended_at": "2025-03-10T09:32:00Z"}
    for n in range(5):
        alerter = new_alerter(tmp_path / f"o{n}.db")

        async def go(alerter: Alerter = alerter) -> None:
            await alerter.add_subscription({"channel": "slack", "url": url + "/slack"})
            await run(alerter, [tr(d, "opened"), tr(r, "resolved")], docs={d["id"]: r})

        asyncio.run(go())
    texts = [str(b["text"]).lower() for b in hooks.at("/slack")]
    assert len(texts) == 10
    for k in range(0, 10, 2):
        assert "resolved" not in texts[k] and "resolved" in texts[k + 1], texts[k : k + 2]


class _PagerNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        self.sent.append((str(config["number"]), message.subject))


@dataclass
class _PagerChannel:
    """A channel that exists only in this test: one module's worth, one registry line."""

    notifier_made: _PagerNotifier
    name: str = "pager"
    fields: tuple[str, ...] = ("number",)
    help: str = "`number`, digits only."

    def validate(self, body: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
        number = body.get("number")
        if not isinstance(number, str) or not number.isdigit():
            raise SubscriptionError("`number` must be digits")
        return {"number": number}

    def notifier(self, ctx: ChannelContext) -> Notifier:
        return self.notifier_made


def test_a_new_channel_is_one_registry_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alerter knows channels only through the registry: a new one validates its own
    fields, refuses the others' and receives its alerts, with nothing else changed."""
    sent = _PagerNotifier()
    monkeypatch.setitem(REGISTRY, "pager", _PagerChannel(sent))
    alerter = new_alerter(tmp_path / "a.db")
    with pytest.raises(SubscriptionError, match="`number` must be digits"):
        asyncio.run(alerter.add_subscription({"channel": "pager", "number": "x"}))
    with pytest.raises(SubscriptionError, match="`number` is only for the pager channel"):
        asyncio.run(alerter.add_subscription({"channel": "slack", "number": "1"}))
    with pytest.raises(SubscriptionError, match="`url` is only for"):
        asyncio.run(
            alerter.add_subscription({"channel": "pager", "number": "1", "url": "https://a.b/"})
        )
    made = asyncio.run(alerter.add_subscription({"channel": "pager", "number": "5550100"}))
    assert made["channel"] == "pager"
    d = doc("x", peak=812, baseline=4.1)
    asyncio.run(run(alerter, [tr(d, "opened")], docs={d["id"]: d}))
    assert [n for n, _ in sent.sent] == ["5550100"]
    assert "X" in sent.sent[0][1]
    app = FastAPI()
    app.include_router(make_router(alerter, lambda: None))
    described = app.openapi()["paths"]["/api/v1/subscriptions"]["post"]["description"]
    assert "`number`, digits only." in described
