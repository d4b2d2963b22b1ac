"""Every value a user, an operator or another site controls is escaped on every page.

A real uvicorn serves the app of a catalog whose names, aliases, group, problems and metric
names are markup, with an incident fed with markup through every channel that reaches a
page: reports (problems), probe results (site, vantage, error), the service's official
status (description, incident title), operator metrics, query strings, paths and the
no-JS report form. The pages are found from the app's own routes, and the forms from the
pages, so a new page or form is checked without touching this test.

On every HTML and Atom answer the markup never appears raw, and where a value is shown its
escaped form does. (JSON answers carry the values as data: they must say they are JSON.)
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin
from xml.etree import ElementTree as ET

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from outagewatch.catalog import Catalog
from outagewatch.server import Server
from outagewatch.settings import Settings
from outagewatch.web.app import create_app
from webutil import TOKEN, Clock, history_lines, outage_lines, publish, uvicorn_in_thread

SCRIPT = "<script>alert(1)</script>"
ATTR = "\"'><img src=x onerror=alert(1)>"
MARKUP = (SCRIPT, ATTR)
RAW = ("<script>alert", "<img src=x", "\"'>")  # never on a page unescaped
ESCAPED = {
    SCRIPT: "&lt;script&gt;alert(1)&lt;/script&gt;",
    ATTR: "&#34;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;",
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = f"""
[services.x]
name = {json.dumps("X " + SCRIPT)}
aliases = ["twitter", {json.dumps(ATTR)}]
group = {json.dumps(SCRIPT)}
depends_on = ["cloudflare"]
problems = ["app", {json.dumps(SCRIPT)}, {json.dumps(ATTR)}]

[services.x.metrics]
{json.dumps(SCRIPT)} = "load"
{json.dumps(ATTR)} = "errors"

[services.cloudflare]
name = {json.dumps(ATTR)}
"""


@dataclass
class Site:
    base: str
    app: FastAPI
    incident: str
    pages: dict[str, str] = field(default_factory=dict)  # url -> HTML or Atom answered


def _serve(tmp: Path, clock: Clock) -> tuple[uvicorn.Server, Server, FastAPI, threading.Thread]:
    env = {
        "OUTAGEWATCH_DB": str(tmp / "esc.db"),
        "OUTAGEWATCH_TOKEN": TOKEN,
        "OUTAGEWATCH_RATE_PER_IP": "1000000",
        "OUTAGEWATCH_RATE_PER_BLOCK": "100000000",
    }

    async def warm(server: Server) -> None:
        await publish(server, history_lines(("x",), clock.t - 2 * 86_400, 2 * 1440))

    catalog = Catalog.from_toml(CATALOG, "evil.toml")
    server = Server(Settings.resolve(env, {}), catalog, clock=clock, tick_interval_s=3600)
    server.warmup.append(warm)
    app = create_app(server)
    # What `serve` serves (see web.app.asgi_app).
    uv, thread = uvicorn_in_thread(app.state.ingest.asgi(app))
    return uv, server, app, thread


def _feed_markup(base: str, server: Server, clock: Clock) -> str:
    """An outage of X whose reports, probes, metrics and official status carry markup."""
    loop = server._loop
    assert loop is not None and server.live is not None and server.bus is not None
    live, bus = server.live, server.bus

    def run(coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result(120)  # type: ignore[arg-type]

    t0 = clock.t
    run(publish(server, outage_lines("x", t0, {"US": 0.7, "GB": 0.3})))
    with httpx.Client(base_url=base, headers=AUTH) as c:
        for k, name in enumerate(MARKUP, start=1):
            ts = t0 + 60 * k
            reports = [
                {"service": "twitter", "country": "US", "problem": name, "count": 400, "ts": ts},
                {"service": ATTR, "country": "gb", "problem": name, "region": name, "ts": ts},
            ]
            probe = {"service": "x", "target": f"https://x.example/{name}", "ts": ts}
            probe |= {"site": name, "vantage": name, "ok": False, "error": name, "status": 503}
            metrics = [{"service": "x", "name": m, "value": 10.0**k, "ts": ts} for m in MARKUP]
            for path, body in (("reports", reports), ("probes", probe), ("metrics", metrics)):
                r = c.post(f"/api/v1/{path}", json=body)
                assert r.status_code == 202 and not r.json()["rejected"], r.text
    status = {"type": "status", "service": "x", "ts": t0 + 120, "indicator": "major"}
    run(live.submit_events([status | {"description": SCRIPT, "incident": ATTR}]))
    clock.t += 12 * 60
    run(bus.tick(clock.t))
    docs = httpx.get(f"{base}/api/v1/incidents").json()
    assert [d["service"] for d in docs] == ["x"]
    assert docs[0]["official_status"]["description"] == SCRIPT
    return str(docs[0]["id"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    clock = Clock()
    uv, server, app, thread = _serve(tmp_path_factory.mktemp("esc"), clock)
    try:
        base = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
        yield Site(base, app, _feed_markup(base, server, clock))
    finally:
        uv.should_exit = True
        thread.join(60)


# ---------------------------------------------------------------------------- checking
def check_answer(site: Site, url: str, r: httpx.Response) -> None:
    """No raw markup in a page or feed; JSON says it is JSON; nothing answers 5xx."""
    assert r.status_code < 500, (url, r.status_code, r.text[:300])
    kind = r.headers.get("content-type", "").split(";")[0].strip()
    text = r.text
    if kind in (
        "text/html",
        "application/atom+xml",
        "application/xml",
        "text/xml",
        "image/svg+xml",
    ):
        for raw in RAW:
            at = text.find(raw)
            assert at < 0, f"{url}: raw {raw!r} in {kind}: ...{text[max(at - 120, 0) : at + 60]}"
        if kind != "text/html":
            ET.fromstring(r.content)  # well-formed XML: every value escaped
        site.pages[url] = text
    elif any(m in text for m in MARKUP):
        # Data, never rendered: JSON, or the catalog's TOML marked nosniff.
        assert kind in ("application/json", "application/toml"), (url, kind)
        assert r.headers.get("x-content-type-options") == "nosniff" or kind == "application/json"


def fetch(site: Site, client: httpx.Client, url: str) -> httpx.Response:
    with client.stream("GET", url, headers=AUTH) as r:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            first = next(r.iter_bytes())  # a stream that never ends: its first event
            assert not any(m.encode() in first for m in MARKUP), (url, first)
            return r
        r.read()
    check_answer(site, url, r)
    return r


class Forms(HTMLParser):
    """The POST forms of a page: action, fixed fields, and the choices of each field."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "get").lower() == "post":
            self.forms.append({"action": a.get("action", ""), "fixed": {}, "choices": {}})
            return
        if not self.forms:
            return
        form = self.forms[-1]
        fixed, choices = form["fixed"], form["choices"]
        assert isinstance(fixed, dict) and isinstance(choices, dict)
        if tag == "input" and a.get("type") == "hidden":
            fixed[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("name"):
            choices.setdefault(a["name"], []).append(a.get("value", ""))
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select:
            choices.setdefault(self._select, []).append(a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def submit_forms(site: Site, client: httpx.Client, url: str, html: str) -> list[str]:
    """Send every POST form of a page with each field set to markup (and to each of its
    choices that is markup, as a person could pick); follow the answer. Returns the URLs
    the answers came from."""
    parser = Forms()
    parser.feed(html)
    sent = []
    for form in parser.forms:
        fixed, choices = form["fixed"], form["choices"]
        assert isinstance(fixed, dict) and isinstance(choices, dict)
        action = urljoin(url, str(form["action"]))
        first = {name: values[0] for name, values in choices.items()}
        for name, values in choices.items():
            for value in [*MARKUP, *(v for v in values if any(m in v for m in MARKUP))]:
                data = {**fixed, **first, name: value}
                r = client.post(action, data=data, follow_redirects=True)
                check_answer(site, f"POST {action} {name}={value!r}", r)
                sent.append(str(r.url))
    return sent


def routes_of(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # a router FastAPI included
        if inner is not None:
            yield from routes_of(inner.routes)
        elif isinstance(route, Route):
            yield route


def page_urls(site: Site) -> list[str]:
    """Every GET route of the app, with its path parameters set to real names and markup."""
    values = {
        "incident": [site.incident, SCRIPT, ATTR],
        "service": ["x", "twitter", ATTR, "cloudflare", SCRIPT],
        "name": ["x", "twitter", ATTR, "cloudflare", SCRIPT],
    }
    urls = []
    routes = [r for r in routes_of(site.app.routes) if "GET" in (r.methods or ())]
    documented = {p for p, ops in site.app.openapi()["paths"].items() if "get" in ops}
    assert documented <= {r.path for r in routes}, "a GET route was not found"
    for route in routes:
        paths = [route.path]
        for param in re.findall(r"{([^}:]+)(?::[^}]*)?}", route.path):
            options = next((v for k, v in values.items() if k in param), [SCRIPT, ATTR])
            paths = [
                re.sub(rf"{{{param}(:[^}}]*)?}}", httpx.URL("/" + o).raw_path.decode()[1:], p)
                for p in paths
                for o in options
            ]
        urls += paths
    return urls


# ---------------------------------------------------------------------------- the tests
def test_no_page_shows_markup_raw(site: Site) -> None:
    urls = page_urls(site)
    assert {"/", "/services/x", f"/incidents/{site.incident}", "/feeds/incidents.atom"} <= set(urls)
    query = {k: v for k in ("q", "reported", "service", "since", "status") for v in [SCRIPT]}
    with httpx.Client(base_url=site.base) as client:
        for url in urls:
            fetch(site, client, url)
            fetch(site, client, str(httpx.URL(url, params=query)))
            fetch(site, client, str(httpx.URL(url, params={"q": ATTR, "reported": ATTR})))
        # Unknown paths are answered too (404 pages echo the path).
        for url in (f"/{SCRIPT}", f"/services/{ATTR}/nope", f"/static/{SCRIPT}"):
            fetch(site, client, url)
    assert len(site.pages) >= 3 * 5


def test_the_report_form_keeps_markup_escaped(site: Site) -> None:
    with httpx.Client(base_url=site.base) as client:
        answered: list[str] = []
        for url in ("/services/x", "/services/twitter", "/services/cloudflare"):
            html = fetch(site, client, url).text
            answered += submit_forms(site, client, url, html)
        # Markup in every field of each form; the problems named by markup are X's own, so a
        # person may pick them: those reports are accepted (redirected to the thanks).
        assert len(answered) >= 3 * 2
        assert sum("reported=1" in u for u in answered) >= 2
        html = fetch(site, client, "/services/x").text
        assert f'value="{ESCAPED[SCRIPT]}"' in html and f'value="{ESCAPED[ATTR]}"' in html


def test_shown_values_appear_escaped(site: Site) -> None:
    with httpx.Client(base_url=site.base) as client:
        home = fetch(site, client, "/").text
        svc = fetch(site, client, "/services/twitter").text
        inc = fetch(site, client, f"/incidents/{site.incident}").text
        feed = fetch(site, client, "/feeds/incidents.atom").text
        searched = fetch(site, client, "/?q=" + ATTR.replace("&", "%26")).text
    name = "X " + ESCAPED[SCRIPT]
    assert name in home and ESCAPED[ATTR] in home  # X, and Cloudflare's name
    assert ESCAPED[ATTR] in searched  # the search echoed
    for page in (svc, inc):
        assert name in page
        assert ESCAPED[SCRIPT] in page.replace(name, "")  # the problem, not only the name
    assert f"Part of {ESCAPED[SCRIPT]}" in svc and ESCAPED[ATTR] in svc  # group, alias
    official = re.search(r'<p id="official">(.*?)</p>', inc, re.S)
    assert official is not None
    assert ESCAPED[SCRIPT] in official.group(1) and ESCAPED[ATTR] in official.group(1)
    # Atom: the entry's title names the service, escaped as XML.
    root = ET.fromstring(feed.encode())
    titles = [e.text or "" for e in root.iter("{http://www.w3.org/2005/Atom}title")]
    assert any(t.startswith("X " + SCRIPT) for t in titles), titles
    assert "X &lt;script&gt;alert(1)&lt;/script&gt;" in feed
