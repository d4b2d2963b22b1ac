"""The service page's probe panel in a real browser (Debian's Chromium via Playwright):
per vantage up or down, the last check, the 24 h latency chart, the sentence saying where
it fails, and the official status page's indicator next to them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from outagewatch.bus.base import services_of
from outagewatch.catalog import Catalog
from outagewatch.server import Server
from outagewatch.settings import Settings
from outagewatch.web.app import create_app
from test_browser import browser, page, shot  # noqa: F401  (fixtures)
from webutil import Clock, free_port, uvicorn_in_thread

URL = "https://shop.example/health"
CATALOG = f"""
[services.shop]
name = "Shop"
[[services.shop.probes]]
url = "{URL}"
interval_s = 60
[services.shop.status_page]
url = "https://status.shop.example/api/v2/summary.json"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn whose server got 30 minutes of checks from three vantages, eu-west
    failing for the last 10 (and the status page saying minor)."""
    tmp = tmp_path_factory.mktemp("browser-probes")
    clock = Clock()
    flags = {"OUTAGEWATCH_DB": str(tmp / "p.db"), "OUTAGEWATCH_LATENESS_S": "0"}
    settings = Settings.resolve(flags, {})
    t0 = clock.t - 30 * 60

    async def warm(server: Server) -> None:
        assert server.bus is not None
        lines = []
        for k in range(30):
            for i, vantage in enumerate(("eu-west", "us-east", "ap-south")):
                ok = not (vantage == "eu-west" and k >= 20)
                ev: dict[str, Any] = {
                    "type": "probe",
                    "service": "shop",
                    "target": URL,
                    "site": "public",
                    "vantage": vantage,
                    "ok": ok,
                    "ts": t0 + k * 60 + 5 + i,
                    "status": 200 if ok else 503,
                    "latency_ms": 40.0 + 10 * i + k % 7,
                }
                lines.append(msgspec.json.encode(ev))
        status = {
            "type": "status",
            "service": "shop",
            "ts": t0 + 60,
            "indicator": "minor",
            "description": "Slow checkouts in Europe",
        }
        lines.append(msgspec.json.encode(status))
        await server.bus.publish(lines, services_of(lines))

    catalog = Catalog.from_toml(CATALOG)
    server = Server(settings, catalog, clock=clock, tick_interval_s=0.5, warmup=[warm], watch=False)
    port = free_port()
    userver, thread = uvicorn_in_thread(create_app(server), port, timeout_graceful_shutdown=1)
    try:
        # The next minute closes (the server ticks every 0.5 s): the checks are final.
        clock.t += 60
        assert server.bus is not None
        server.bus.tick_future(clock.t).result(timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        userver.should_exit = True
        thread.join(timeout=15)


def test_the_service_page_shows_each_vantage(site: str, page: Any) -> None:  # noqa: F811
    page.goto(site + "/services/shop")
    assert page.locator("h1 .pill").get_attribute("data-status") == "problems"
    detail = page.locator("#status-detail").inner_text()
    assert "failing from eu-west only; fine from ap-south, us-east" in detail
    rows = page.locator("#probes tr.vantage")
    assert rows.count() == 3
    state = {r.get_attribute("data-vantage"): r.get_attribute("data-state") for r in rows.all()}
    assert state == {"eu-west": "down", "us-east": "up", "ap-south": "up"}
    eu = page.locator("#probes tr[data-vantage='eu-west']")
    assert "down" in eu.inner_text() and "HTTP 503" in eu.inner_text()
    us = page.locator("#probes tr[data-vantage='us-east']")
    assert us.locator("svg.latency polyline").count() == 1  # the 24 h latency line
    assert eu.locator("svg.latency line.latency-fail").count() == 10  # its failed checks
    official = page.locator("#official-status")
    assert official.get_attribute("data-indicator") == "minor"
    assert "Slow checkouts in Europe" in official.inner_text()
    assert page.locator("#probes").is_visible()
    shot(page, "service-probes.png")


def test_the_probe_panel_fits_a_phone_screen(site: str, browser: Any) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    p = ctx.new_page()
    try:
        p.goto(site + "/services/shop")
        assert p.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        ctx.close()
