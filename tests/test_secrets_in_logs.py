"""No secret reaches the logs: the real process's stdout and stderr are read whole.

The running server (`outagewatch demo`: `serve` with a simulated crowd, so incidents open
and alerts go out within seconds) has an operator token, an SMTP login and webhook
subscriptions with a signing secret and a secret-bearing URL (as Slack's are). Requests
come with wrong tokens and the right one; alerts are delivered by webhook and email, and
one channel fails (its failure is logged). None of the secrets may appear in the output;
nor may the password of a PostgreSQL URL given to `serve`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from outagewatch.alerts.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from services import fresh_pg_schema
from webutil import free_port, wait_ready

TOKEN = "tok-9f2c1e7a44-operator"
SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-pw-5b8d3a61"
HOOK_SECRET = "whsec-4e1f0c9b2a7d6e35"
SLACK_PATH = "/services/T0000/B0000/slacksecret8c2e51"
DB_PASSWORD = "db-pw-73c1a0f9"


# ---------------------------------------------------------------------------- receivers
@dataclass
class Received:
    hooks: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    mails: list[bytes] = field(default_factory=list)


@contextmanager
def webhook_receiver(got: Received) -> Iterator[int]:
    """Answers 204 on /hook and 500 elsewhere (the failing channel)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.hooks.append((self.path, dict(self.headers.items()), body))
            self.send_response(204 if self.path == "/hook" else 500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


class Inbox:
    def __init__(self, got: Received) -> None:
        self.got = got

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.got.mails.append(bytes(envelope.content))
        return "250 OK"

    def auth(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            self.got.logins.append(data.login.decode())
        return AuthResult(success=ok)


@contextmanager
def smtp_server(got: Received) -> Iterator[int]:
    inbox = Inbox(got)
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.auth,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


# ---------------------------------------------------------------------------- the process
@contextmanager
def process(tmp: Path, cmd: list[str], env: dict[str, str]) -> Iterator[tuple[str, Path, Path]]:
    """A started `outagewatch` command; yields its base URL and its stdout/stderr files."""
    port = free_port()
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    full = [sys.executable, "-m", "outagewatch.cli", *cmd, "--port", str(port)]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(full, env={**os.environ, **env}, stdout=o, stderr=e)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc, err.read_text, timeout=90)
            yield base, out, err
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_no_secret(out: Path, err: Path, secrets: tuple[str, ...]) -> str:
    text = out.read_text("utf-8", "replace") + err.read_text("utf-8", "replace")
    for secret in secrets:
        at = text.find(secret)
        assert at < 0, f"a secret is in the output: ...{text[max(at - 200, 0) : at + 50]}"
    return text


def wait_for(what: str, ok: Any, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.2)


# ---------------------------------------------------------------------------- tests
def test_tokens_smtp_password_and_webhook_secrets_stay_out_of_the_logs(tmp_path: Path) -> None:
    got = Received()
    with webhook_receiver(got) as hook_port, smtp_server(got) as smtp_port:
        env = {
            "OUTAGEWATCH_DB": str(tmp_path / "s.db"),
            "OUTAGEWATCH_TOKEN": TOKEN,
            "OUTAGEWATCH_SMTP_HOST": "127.0.0.1",
            "OUTAGEWATCH_SMTP_PORT": str(smtp_port),
            "OUTAGEWATCH_SMTP_USER": SMTP_USER,
            "OUTAGEWATCH_SMTP_PASSWORD": SMTP_PASSWORD,
            "OUTAGEWATCH_SMTP_STARTTLS": "0",
            "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS": "1",  # the receivers are on loopback
            "OUTAGEWATCH_ALERT_MAX_ATTEMPTS": "1",
            "PYTHONFAULTHANDLER": "1",  # a crash shows where
        }
        with process(tmp_path, ["demo", "--speed", "100"], env) as (base, out, err):
            probe = {"service": "x", "target": "https://x.com/", "ok": True}
            wrong = (None, "Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN)
            for auth in wrong:
                headers = {"Authorization": auth} if auth else {}
                r = httpx.post(f"{base}/api/v1/probes", json=probe, headers=headers)
                assert r.status_code in (401, 403), r.text
                assert TOKEN not in r.text
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.post(f"{base}/api/v1/probes", json=probe, headers=right).status_code == 202
            subs = [
                {"channel": "webhook", "url": f"http://127.0.0.1:{hook_port}/hook"},
                {"channel": "slack", "url": f"http://127.0.0.1:{hook_port}{SLACK_PATH}"},
                {"channel": "email", "to": "ops@example.com"},
            ]
            subs[0]["secret"] = HOOK_SECRET
            for sub in subs:
                r = httpx.post(f"{base}/api/v1/subscriptions", json=sub, headers=right)
                assert r.status_code == 201, r.text
            listed = httpx.get(f"{base}/api/v1/subscriptions", headers=right).text
            assert HOOK_SECRET not in listed and SLACK_PATH not in listed
            # Alerts of the demo's outages: signed webhooks, mail after an SMTP login, and
            # the failing channel's failure (logged).
            wait_for("a webhook", lambda: any(p == "/hook" for p, _, _ in got.hooks))
            wait_for("a mail", lambda: bool(got.mails))
            wait_for(
                "a failed slack delivery", lambda: "failed after 1 attempts" in err.read_text()
            )
            # No alert work in flight at the stop (see the report: the store is closed under it).
            for sub in httpx.get(f"{base}/api/v1/subscriptions", headers=right).json():
                url = f"{base}/api/v1/subscriptions/{sub['id']}"
                assert httpx.delete(url, headers=right).status_code == 204

            def drained() -> bool:
                rows = httpx.get(f"{base}/api/v1/deliveries", headers=right).json()
                return all(d["status"] != "pending" for d in rows)

            wait_for("the end of deliveries", drained)
        _, headers, body = next(h for h in got.hooks if h[0] == "/hook")
        ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
        assert verify_signature(HOOK_SECRET, ts, body, sig, now=float(ts))  # signed with it
        assert got.logins and got.logins[0] == SMTP_USER
    text = assert_no_secret(out, err, (TOKEN, SMTP_PASSWORD, HOOK_SECRET, SLACK_PATH[10:]))
    assert "via slack failed after 1 attempts" in text  # the failure was logged, without the URL


def test_the_database_password_stays_out_of_the_logs(tmp_path: Path) -> None:
    with fresh_pg_schema("secrets") as url:
        assert url.startswith("postgresql://postgres@")
        db = url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)  # trust auth ignores it
        env = {"OUTAGEWATCH_DB": db, "OUTAGEWATCH_TOKEN": TOKEN}
        with process(tmp_path, ["serve"], env) as (base, out, err):
            assert httpx.get(f"{base}/api/v1/services").status_code == 200
    assert_no_secret(out, err, (DB_PASSWORD, TOKEN))
