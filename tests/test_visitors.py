"""Visitors' email subscriptions in process, with a real SMTP server (aiosmtpd): off without
the settings, a link that expired, a second request of one address joining the first, the
HTML form's answers. (tests/test_visitors_process.py runs the whole story on `serve`.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from outagewatch.store.sqlite import SQLiteStore
from outagewatch.web.visitors import ADDRESS_PER_HOUR, CONFIRM_TTL_S, Visitors
from test_visitors_process import Inbox, body
from webutil import TOKEN, Clock, free_port, running

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, dict[str, str]]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    flags = {
        "OUTAGEWATCH_SMTP_HOST": "127.0.0.1",
        "OUTAGEWATCH_SMTP_PORT": str(port),
        "OUTAGEWATCH_SMTP_STARTTLS": "0",
        "OUTAGEWATCH_PUBLIC_URL": "https://status.example.org/",
    }
    try:
        yield inbox, flags
    finally:
        controller.stop()


async def subscribe(c: httpx.AsyncClient, address: str, *services: str) -> httpx.Response:
    return await c.post(
        "/api/v1/email-subscriptions", json={"email": address, "services": list(services)}
    )


async def confirm_link(c: httpx.AsyncClient, inbox: Inbox, address: str, n: int) -> str:
    visitors: Visitors = c._transport.app.state.visitors  # type: ignore[attr-defined]
    await visitors.sent()
    mails = inbox.to(address)
    assert len(mails) == n
    found = re.search(r"https://status\.example\.org(/subscribe/confirm\?\S+)", body(mails[-1]))
    assert found, body(mails[-1])
    return found.group(1)


@pytest.mark.slow
async def test_off_without_smtp_and_public_url(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        r = await subscribe(c, "ann@example.com", "x")
        assert r.status_code == 404 and "OUTAGEWATCH_PUBLIC_URL" in r.json()["error"]["message"]
        assert 'action="/subscribe"' not in (await c.get("/services/x")).text


@pytest.mark.slow
async def test_a_confirmation_link_expires(
    tmp_path: Path, smtp: tuple[Inbox, dict[str, str]]
) -> None:
    inbox, flags = smtp
    clock = Clock()
    async with running(tmp_path, clock, flags=flags) as (_, c):
        assert (await subscribe(c, "ann@example.com", "x")).status_code == 202
        path = await confirm_link(c, inbox, "ann@example.com", 1)
        clock.t += CONFIRM_TTL_S + 1
        r = await c.post(path)
        assert r.status_code == 404 and "expired" in r.text
        assert (await c.get("/api/v1/subscriptions", headers=ADMIN)).json() == []


@pytest.mark.slow
async def test_an_address_gets_one_mail_per_alert_and_any_link_unsubscribes_it(
    tmp_path: Path, smtp: tuple[Inbox, dict[str, str]]
) -> None:
    inbox, flags = smtp
    async with running(tmp_path, Clock(), flags=flags) as (server, c):
        assert (await subscribe(c, "ann@example.com", "x")).status_code == 202
        assert (await c.post(await confirm_link(c, inbox, "ann@example.com", 1))).status_code == 200
        r = await subscribe(c, "ann@Example.COM", "twitter", "facebook")  # X by its alias
        assert r.json()["email"] == "ann@example.com"
        assert r.json()["services"] == ["x", "facebook"]
        second = await confirm_link(c, inbox, "ann@example.com", 2)
        assert (await c.post(second)).status_code == 200
        subs = (await c.get("/api/v1/subscriptions", headers=ADMIN)).json()
        assert sorted(s["service"] for s in subs) == ["facebook", "x"]  # X once
        assert isinstance(server.reader, SQLiteStore)
        first, later = server.reader.visitors_of("ann@example.com")
        # A third request, not confirmed; then the first request's link (as in its alert
        # mails) stops everything for the address, the pending request too.
        assert (await subscribe(c, "ann@example.com", "instagram")).status_code == 202
        visitors: Visitors = c._transport.app.state.visitors  # type: ignore[attr-defined]
        url = visitors.unsubscribe_url(first["id"])
        assert url.startswith("https://status.example.org/unsubscribe?id=")
        r = await c.post(url.removeprefix("https://status.example.org"))
        assert r.status_code == 200
        assert (await c.get("/api/v1/subscriptions", headers=ADMIN)).json() == []
        assert server.reader.visitors_of("ann@example.com", confirmed=False) == []
        # The later request's own link still answers (there is nothing left to stop).
        url = visitors.unsubscribe_url(later["id"])
        assert (await c.post(url.removeprefix("https://status.example.org"))).status_code == 200


@pytest.mark.slow
async def test_the_html_form_answers_in_html(
    tmp_path: Path, smtp: tuple[Inbox, dict[str, str]]
) -> None:
    _, flags = smtp
    async with running(tmp_path, Clock(), flags=flags) as (_, c):
        page = (await c.get("/services/x")).text
        assert 'action="/subscribe"' in page
        r = await c.post("/subscribe", data={"email": "not an address", "service": "x"})
        assert r.status_code == 422 and "text/html" in r.headers["content-type"]
        assert "is not an email address" in r.text
        r = await c.post("/subscribe", data={"email": "ann@example.com", "service": "nope"})
        assert r.status_code == 422 and "no service" in r.text
        for _ in range(ADDRESS_PER_HOUR):
            r = await c.post("/subscribe", data={"email": "bob@example.com", "service": "x"})
            assert r.status_code == 200 and "Check your mail" in r.text
        r = await c.post("/subscribe", data={"email": "bob@example.com", "service": "x"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


@pytest.mark.slow
async def test_bad_bodies_are_clear_4xx(tmp_path: Path, smtp: tuple[Inbox, dict[str, str]]) -> None:
    _, flags = smtp
    async with running(tmp_path, Clock(), flags=flags) as (_, c):
        path = "/api/v1/email-subscriptions"
        big = {"email": "ann@example.com", "services": ["x"] * 3000}
        r = await c.post(path, json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = await c.post(path, content=b"[" * 5000, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body"
        r = await c.post(path, json={"email": "ann@example.com", "services": ["x"], "ip": "1"})
        assert r.status_code == 422 and r.json()["error"]["message"] == "ip: unknown field"
        r = await c.post(path, json={"email": "ann@example.com", "services": []})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("services:")
