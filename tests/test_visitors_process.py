"""Visitors' email subscriptions against the real `outagewatch serve` process and a real
SMTP server (aiosmtpd on loopback): subscribe, the confirmation mail, confirm, an incident
whose alert reaches the visitor, the one-click unsubscribe link, and the rate limits."""

from __future__ import annotations

import email
import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from test_server_process import serve
from webutil import free_port, post_x_surge, warm_db

ADMIN = {"Authorization": "Bearer tok"}  # what test_server_process.serve sets


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for rcpts, m in self.mails if address in rcpts]

    def wait(self, address: str, n: int, timeout: float = 60) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < n:
            assert time.monotonic() < deadline, f"{address}: {len(self.to(address))} of {n} mails"
            time.sleep(0.1)
        return self.to(address)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def body(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def link(text: str, path: str) -> str:
    found = re.search(rf"(http://\S+{re.escape(path)}\?\S+)", text)
    assert found, text
    return found.group(1)


def subscribe(c: httpx.Client, address: str, *services: str) -> httpx.Response:
    return c.post("/api/v1/email-subscriptions", json={"email": address, "services": services})


def test_subscribe_confirm_alert_unsubscribe_on_the_server_process(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, smtp_port = smtp
    db = tmp_path / "visitors.db"
    warm_db(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flags = ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port), "--smtp-starttls", "0",
             "--smtp-from", "alerts@status.example", "--public-url", base,
             "--alert-backoff-s", "1"]  # fmt: skip
    with serve(db, port, *flags), httpx.Client(base_url=base, timeout=10) as c:
        # The service page offers the form.
        html = c.get("/services/x").text
        assert 'action="/subscribe"' in html and 'name="email"' in html
        r = subscribe(c, "ann@example.com", "x")
        assert r.status_code == 202, r.text
        assert r.json() == {
            "email": "ann@example.com",
            "services": ["x"],
            "status": "confirmation_sent",
        }
        # Bob subscribes through the HTML form and never confirms.
        r = c.post("/subscribe", data={"email": "bob@example.com", "service": "x"})
        assert r.status_code == 200 and "Check your mail" in r.text
        (confirm_mail,) = inbox.wait("ann@example.com", 1)
        assert confirm_mail["From"] == "alerts@status.example"
        assert "Confirm" in confirm_mail["Subject"] and "X" in confirm_mail["Subject"]
        confirm_url = link(body(confirm_mail), "/subscribe/confirm")
        token = re.search(r"token=([^&\s]+)", confirm_url)
        assert token is not None
        # The store keeps the token's hash, never the token.
        rows = sqlite3.connect(db).execute("SELECT * FROM visitor_subscribers").fetchall()
        assert len(rows) == 2
        flat = " ".join(str(v) for row in rows for v in row)
        assert token.group(1) not in flat
        assert hashlib.sha256(token.group(1).encode()).hexdigest() in flat
        # A wrong token confirms nothing; the link opens a page whose button confirms.
        real = token.group(1)
        bad = confirm_url.replace(real, ("y" if real[0] == "x" else "x") + real[1:])
        assert c.post(bad.removeprefix(base)).status_code == 404
        page = c.get(confirm_url.removeprefix(base))
        assert page.status_code == 200 and 'method="post"' in page.text
        assert c.get("/api/v1/subscriptions", headers=ADMIN).json() == []  # not yet
        r = c.post(confirm_url.removeprefix(base))
        assert r.status_code == 200 and "Subscribed" in r.text, r.text
        subs = c.get("/api/v1/subscriptions", headers=ADMIN).json()
        assert [(s["service"], s["channel"], s["to"]) for s in subs] == [
            ("x", "email", ["ann@example.com"])
        ]
        # An outage of X: the alert reaches Ann (and not Bob, who did not confirm).
        post_x_surge(c, ADMIN)
        mails = inbox.wait("ann@example.com", 2, timeout=90)
        alert = mails[1]
        assert alert["Subject"].startswith("X:"), alert["Subject"]
        unsubscribe_url = alert["List-Unsubscribe"].strip("<>")
        assert unsubscribe_url.startswith(f"{base}/unsubscribe?")
        assert alert["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert unsubscribe_url in body(alert)
        assert len(inbox.to("bob@example.com")) == 1  # the confirmation request only
        # One click: GET shows a page, POST (as RFC 8058 mail clients do) unsubscribes.
        path = unsubscribe_url.removeprefix(base)
        page = c.get(path)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert c.get("/api/v1/subscriptions", headers=ADMIN).json() != []  # GET changes nothing
        forged = re.sub(r"token=[^&]+", "token=AAAA", path)
        assert c.post(forged, content=b"List-Unsubscribe=One-Click").status_code == 403
        r = c.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and "Unsubscribed" in r.text
        assert c.get("/api/v1/subscriptions", headers=ADMIN).json() == []
        assert sqlite3.connect(db).execute(
            "SELECT count(*) FROM visitor_subscribers WHERE email = 'ann@example.com'"
        ).fetchone() == (0,)
        # Rate limits: 3 requests an hour per address, then 10 per client address.
        for _ in range(3):
            assert subscribe(c, "carol@example.com", "x").status_code == 202
        r = subscribe(c, "carol@example.com", "x")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert "email address" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) > 0
        codes = [subscribe(c, f"d{i}@example.com", "x").status_code for i in range(5)]
        assert codes == [202] * 4 + [429], codes  # 11 requests from this client
        r = subscribe(c, "e@example.com", "x")
        assert r.status_code == 429 and "your address" in r.json()["error"]["message"]
        # Bad input is a 422 naming the field.
        assert c.post("/api/v1/email-subscriptions", json={"email": "nope", "services": ["x"]}
                      ).json()["error"]["message"].startswith("email:")  # fmt: skip
