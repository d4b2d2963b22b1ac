"""The admin page in a real browser (Playwright, Debian's Chromium) against the real
`outagewatch serve` process: log in with the admin token, post an update on a real
incident, schedule maintenance, and see both on the public pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_browser import browser, page, shot  # noqa: F401  # fixtures
from test_server_process import serve
from webutil import free_port, post_x_surge, warm_db

ADMIN = {"Authorization": "Bearer tok"}  # what test_server_process.serve sets


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A serve process with an ongoing incident of X: (base URL, incident id)."""
    db = tmp_path / "admin.db"
    warm_db(db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve(db, port), httpx.Client(base_url=base, timeout=10) as c:
        post_x_surge(c, ADMIN)
        deadline = time.monotonic() + 90
        docs: list[dict[str, Any]] = []
        while not docs and time.monotonic() < deadline:
            docs = c.get("/api/v1/incidents?status=ongoing").json()
            time.sleep(0.3)
        assert len(docs) == 1, docs
        yield base, str(docs[0]["id"])


def test_admin_posts_an_update_and_schedules_maintenance_seen_on_public_pages(
    site: tuple[str, str],
    page: Any,  # noqa: F811
) -> None:
    base, incident = site
    page.goto(base + "/admin")
    page.fill("#token", "wrong")
    page.click("#login button[type=submit]")
    assert "not an admin token" in page.locator("#error").inner_text()
    page.fill("#token", "tok")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#update-form")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ow_admin"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/admin"

    # An update on the ongoing incident.
    page.select_option("#incident", incident)
    page.select_option("#status", "identified")
    text = "A bad deploy of the login service; rolling back now."
    page.fill("#text", text)
    page.click("#update-form button[type=submit]")
    page.wait_for_url("**/admin?done=update")
    assert "posted" in page.locator("#done").inner_text()

    # Maintenance of Facebook from now (the form's defaults: now to an hour from now, UTC).
    page.select_option("#mw-service", "facebook")
    page.fill("#title", "Planned database upgrade")
    page.click("#maintenance-form button[type=submit]")
    page.wait_for_url("**/admin?done=maintenance")
    shot(page, "admin.png")

    # Both on the public pages.
    page.goto(f"{base}/incidents/{incident}")
    assert text in page.locator("main").inner_text()
    shot(page, "incident-with-update.png")
    page.goto(base + "/services/facebook")
    assert "Planned database upgrade" in page.locator("main").inner_text()
    page.goto(base + "/")
    main = page.locator("main").inner_text()
    assert "Planned database upgrade" in main
    facebook = page.locator('#services .svc[data-service="facebook"]')
    assert "maintenance" in (facebook.get_attribute("class") or "") + facebook.inner_text().lower()

    # Logging out ends the session.
    page.goto(base + "/admin")
    page.click("#logout button[type=submit]")
    page.wait_for_selector("#login")
    assert "ow_admin" not in {c["name"] for c in page.context.cookies()}
