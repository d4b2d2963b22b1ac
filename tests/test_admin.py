"""The admin page, in process: the login (right and wrong tokens), the session cookie's
flags, CSRF on every form POST, the forms going through the API's checks, logging out.
(tests/test_browser_admin.py drives it in a real browser.)"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import httpx
import pytest

from outagewatch.store.sqlite import SQLiteStore
from outagewatch.web.admin import LOGIN_COOKIE, SESSION_COOKIE, SESSION_S
from webutil import TOKEN, Clock, running

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def set_cookie(r: httpx.Response, name: str) -> str:
    (found,) = [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return found


async def login(c: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await c.get("/admin")
    assert form.status_code == 200 and 'action="/admin/login"' in form.text
    return await c.post("/admin/login", data={"token": token, "csrf": csrf(form.text)})


@pytest.mark.slow
async def test_a_wrong_token_is_refused_and_no_session_is_made(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        r = await login(c, "not-the-token")
        assert r.status_code == 403 and "not an admin token" in r.text
        assert not any(h.startswith(f"{SESSION_COOKIE}=") for h in r.headers.get_list("set-cookie"))
        # A real token without the admin scope is refused too.
        made = await c.post("/api/v1/tokens", json={"name": "p", "scopes": ["ingest"]},
                            headers=ADMIN)  # fmt: skip
        r = await login(c, made.json()["token"])
        assert r.status_code == 403
        page = await c.get("/admin")
        assert 'action="/admin/login"' in page.text and "update-form" not in page.text
        assert isinstance(server.reader, SQLiteStore)
        assert server.reader.db.execute("SELECT count(*) FROM admin_sessions").fetchone() == (0,)


@pytest.mark.slow
async def test_the_login_form_needs_its_csrf_token(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        await c.get("/admin")  # sets the login cookie
        r = await c.post("/admin/login", data={"token": TOKEN})
        assert r.status_code == 403
        r = await c.post("/admin/login", data={"token": TOKEN, "csrf": "guessed"})
        assert r.status_code == 403
        c.cookies.clear()
        r = await c.post("/admin/login", data={"token": TOKEN, "csrf": "guessed"})
        assert r.status_code == 403  # no cookie to match


@pytest.mark.slow
async def test_the_session_cookie_flags_and_its_stored_hash(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (server, c):
        form = await c.get("/admin")
        flags = set_cookie(form, LOGIN_COOKIE).lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/admin" in flags
        r = await c.post("/admin/login", data={"token": TOKEN, "csrf": csrf(form.text)})
        assert r.status_code == 303 and r.headers["location"] == "/admin"
        cookie = set_cookie(r, SESSION_COOKIE)
        parts = [p.strip().lower() for p in cookie.split(";")]
        assert "httponly" in parts and "samesite=strict" in parts and "path=/admin" in parts
        assert f"max-age={SESSION_S}" in parts
        assert "secure" not in parts  # plain http: a Secure cookie would never come back
        sid = cookie.split(";")[0].split("=", 1)[1]
        assert len(sid) >= 40
        assert isinstance(server.reader, SQLiteStore)
        rows = server.reader.db.execute(
            "SELECT hash, expires_at, token_hash FROM admin_sessions"
        ).fetchall()
        assert rows == [
            (
                hashlib.sha256(sid.encode()).hexdigest(),
                server.clock() + SESSION_S,
                hashlib.sha256(TOKEN.encode()).hexdigest(),
            )
        ]
        page = await c.get("/admin")
        assert "update-form" in page.text or "No incidents" in page.text
        assert 'id="maintenance-form"' in page.text and 'id="logout"' in page.text


@pytest.mark.slow
async def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    async with running(tmp_path, Clock()) as (_, c):
        c.base_url = httpx.URL("https://test")
        r = await login(c)
        assert r.status_code == 303
        assert "secure" in [p.strip().lower() for p in set_cookie(r, SESSION_COOKIE).split(";")]
    flags = {"OUTAGEWATCH_PUBLIC_URL": "https://status.example.org"}
    async with running(tmp_path, Clock(), flags=flags, db="b.db") as (_, c):
        # Plain http to the app, https in front of it (a proxy ending TLS).
        r = await c.get("/admin")
        assert "secure" in [p.strip().lower() for p in set_cookie(r, LOGIN_COOKIE).split(";")]


@pytest.mark.slow
async def test_every_form_post_needs_the_session_and_its_csrf_token(tmp_path: Path) -> None:
    now = Clock().t
    window = {
        "service": "x",
        "starts_at": time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now + 600)),
        "ends_at": time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now + 4200)),
        "title": "Database upgrade",
    }
    async with running(tmp_path, Clock()) as (_, c):
        # Not logged in, even with a token from a login form: 403.
        form = await c.get("/admin")
        r = await c.post("/admin/maintenance", data={**window, "csrf": csrf(form.text)})
        assert r.status_code == 403
        assert (await login(c)).status_code == 303
        token = csrf((await c.get("/admin")).text)
        for path in ("/admin/maintenance", "/admin/updates", "/admin/services", "/admin/logout"):
            assert (await c.post(path, data=window)).status_code == 403, path
            assert (await c.post(path, data={**window, "csrf": "0" * 64})).status_code == 403
        assert (await c.get("/api/v1/maintenance")).json() == []
        # With it: the window is scheduled, as through the API.
        r = await c.post("/admin/maintenance", data={**window, "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/admin?done=maintenance"
        assert "scheduled" in (await c.get("/admin?done=maintenance")).text
        (w,) = (await c.get("/api/v1/maintenance")).json()
        assert w["service"] == "x" and w["title"] == "Database upgrade"
        assert w["starts_at"] == time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(now + 600))
        # The API's checks and messages.
        bad = {**window, "ends_at": window["starts_at"], "csrf": token}
        r = await c.post("/admin/maintenance", data=bad)
        assert r.status_code == 422 and "ends_at: must be after starts_at" in r.text
        r = await c.post(
            "/admin/updates",
            data={"incident": "nope", "status": "identified", "text": "t", "csrf": token},
        )
        assert r.status_code == 404 and "no incident" in r.text
        r = await c.post(
            "/admin/updates",
            data={"incident": "nope", "status": "fixed", "text": "t", "csrf": token},
        )
        assert r.status_code == 422 and "is not one of investigating" in r.text
        # A service edited: the loader's message for a bad one, effective at once otherwise.
        r = await c.post(
            "/admin/services",
            data={"id": "x", "service": '{"name": "X", "problems": "app"}', "csrf": token},
        )
        assert r.status_code == 422 and "problems" in r.text
        assert "{&#34;name&#34;: &#34;X&#34;" in r.text  # the text is kept to fix it
        body = '{"name": "X (formerly Twitter)", "aliases": ["twitter"]}'
        r = await c.post("/admin/services", data={"id": "x", "service": body, "csrf": token})
        assert r.status_code == 303
        assert (await c.get("/api/v1/services/x")).json()["name"] == "X (formerly Twitter)"
        # Logging out ends the session: the same cookie and token no longer work.
        session = c.cookies.get(SESSION_COOKIE, path="/admin")
        r = await c.post("/admin/logout", data={"csrf": token})
        assert r.status_code == 303
        c.cookies.set(SESSION_COOKIE, session or "", path="/admin")
        r = await c.post("/admin/maintenance", data={**window, "csrf": token})
        assert r.status_code == 403
        assert 'action="/admin/login"' in (await c.get("/admin")).text


@pytest.mark.slow
async def test_revoking_the_token_ends_the_sessions_opened_with_it(tmp_path: Path) -> None:
    """A session opened with a made admin token ends when that token is revoked: the page
    asks to log in again and a form POST with the old cookie and CSRF token is refused
    (a session of the bootstrap token goes on)."""
    async with running(tmp_path, Clock()) as (_, c):
        made = await c.post("/api/v1/tokens", json={"name": "ops", "scopes": ["admin"]},
                            headers=ADMIN)  # fmt: skip
        assert made.status_code == 201, made.text
        token, token_id = made.json()["token"], made.json()["id"]
        assert (await login(c, token)).status_code == 303
        page = await c.get("/admin")
        assert 'id="logout"' in page.text
        form_token = csrf(page.text)
        async with httpx.AsyncClient(transport=c._transport, base_url=c.base_url) as boot:
            assert (await login(boot, TOKEN)).status_code == 303
            gone = await c.delete(f"/api/v1/tokens/{token_id}", headers=ADMIN)
            assert gone.status_code == 204
            assert 'action="/admin/login"' in (await c.get("/admin")).text
            r = await c.post("/admin/logout", data={"csrf": form_token})
            assert r.status_code == 403
            assert 'id="logout"' in (await boot.get("/admin")).text  # the bootstrap's goes on


@pytest.mark.slow
async def test_a_session_expires(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as (_, c):
        assert (await login(c)).status_code == 303
        assert 'id="logout"' in (await c.get("/admin")).text
        clock.t += SESSION_S + 1
        assert 'action="/admin/login"' in (await c.get("/admin")).text
