"""Official status pages served by real loopback servers: Statuspage v2 JSON, RSS, Atom."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from loopback import LoopbackServer, Reply, Request
from outagewatch.catalog import Catalog, StatusPage
from outagewatch.events import EventDecoder
from outagewatch.probes.statuspage import (
    StatusPageError,
    StatusPoller,
    parse_feed,
    parse_statuspage,
)

NOW = 1_741_600_000.0  # 2025-03-10T09:46:40Z


def summary(indicator: str, description: str, incidents: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "page": {"id": "abc", "name": "X", "url": "https://status.x.example"},
        "status": {"indicator": indicator, "description": description},
        "components": [{"name": "API", "status": "major_outage"}],
        "incidents": incidents,
        "scheduled_maintenances": [],
    }


OUTAGE = summary(
    "major",
    "Partial System Outage",
    [
        {
            "name": "Timeline not loading",
            "status": "investigating",
            "impact": "major",
            "created_at": "2025-03-10T14:02:00.000Z",
        }
    ],
)
CALM = summary("none", "All Systems Operational", [])


class Page:
    """A mutable Statuspage server: set `.doc` (dict or raw bytes) to change what it says."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.server = LoopbackServer(self.handle)

    def handle(self, req: Request) -> Reply:
        body = self.doc if isinstance(self.doc, bytes) else json.dumps(self.doc).encode()
        return Reply(200, body, {"Content-Type": "application/json"})


async def poll_all(poller: StatusPoller) -> list[dict[str, Any] | None]:
    return [await poller.poll(sid, page) for sid, page in poller.pages]


def test_statuspage_changes_become_status_events() -> None:
    page = Page(CALM)
    submitted: list[dict[str, Any]] = []
    clock = [NOW]

    async def submit(events: list[dict[str, Any]]) -> None:
        submitted.extend(events)

    with page.server:
        catalog = Catalog.from_toml(
            "[services.x]\n[services.x.status_page]\n"
            f'url = "{page.server.url}/api/v2/summary.json"\n'
        )
        poller = StatusPoller(
            catalog, submit, allow_private=True, refresh_s=600, clock=lambda: clock[0]
        )

        async def go() -> None:
            assert (await poll_all(poller))[0] is not None  # the first poll tells the state
            clock[0] += 60
            assert await poll_all(poller) == [None]  # unchanged, not yet due again
            page.doc = OUTAGE
            clock[0] += 60
            [ev] = await poll_all(poller)
            assert ev == {
                "type": "status",
                "service": "x",
                "ts": NOW + 120,
                "indicator": "major",
                "description": "Partial System Outage",
                "incident": "Timeline not loading",
            }
            clock[0] += 700  # unchanged but due again: repeated periodically
            assert (await poll_all(poller))[0] is not None
            page.doc = b"<html>gateway error</html>"
            clock[0] += 60
            assert await poll_all(poller) == [None]
            assert "not JSON" in poller.errors["x"]
            page.doc = CALM
            clock[0] += 60
            assert (await poll_all(poller))[0] is not None and "x" not in poller.errors
            await poller.stop()

        asyncio.run(go())
    assert [e["indicator"] for e in submitted] == ["none", "major", "major", "none"]
    lines = [json.dumps(e).encode() for e in submitted]
    out = EventDecoder(catalog).decode(lines)
    assert out.rejected == [] and len(out.others) == 4  # valid §2 status events


@pytest.mark.slow
def test_poller_runs_on_its_interval_and_refuses_private_pages() -> None:
    page = Page(OUTAGE)
    got: list[dict[str, Any]] = []

    async def submit(events: list[dict[str, Any]]) -> None:
        got.extend(events)

    with page.server:
        pages = [("x", StatusPage(page.server.url + "/summary.json", interval_s=5))]

        async def go(allow: bool) -> StatusPoller:
            poller = StatusPoller(pages, submit, allow_private=allow)
            await poller.start()
            await asyncio.sleep(0.8)  # the first poll comes within 10% of the interval
            await poller.stop()
            return poller

        asyncio.run(go(True))
        assert [e["indicator"] for e in got] == ["major"]
        refused = asyncio.run(go(False))
        assert len(got) == 1 and "loopback" in refused.errors["x"]


def test_incidents_json_and_maintenance() -> None:
    doc = {
        "page": {"id": "abc"},
        "incidents": [
            {"name": "Old", "status": "resolved", "impact": "critical"},
            {"name": "Slow logins", "status": "identified", "impact": "minor"},
            {"name": "API errors", "status": "monitoring", "impact": "major"},
        ],
    }
    assert parse_statuspage(doc) == ("major", "identified", "Slow logins")
    calm = {"incidents": [{"name": "Old", "status": "postmortem", "impact": "major"}]}
    assert parse_statuspage(calm) == ("none", None, None)
    maint = {
        **CALM,
        "status": {"indicator": "none", "description": "All Systems Operational"},
        "scheduled_maintenances": [{"name": "DB upgrade", "status": "in_progress"}],
    }
    assert parse_statuspage(maint) == ("maintenance", "All Systems Operational", "DB upgrade")
    with pytest.raises(StatusPageError, match="unknown status indicator 'purple'"):
        parse_statuspage({"status": {"indicator": "purple"}})
    with pytest.raises(StatusPageError, match="not a Statuspage"):
        parse_statuspage({"hello": 1})


RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>X Status - Incident History</title>
<item><title>Timeline not loading</title>
<description>&lt;p&gt;&lt;small&gt;Mar 10, 14:20 UTC&lt;/small&gt;&lt;br&gt;
&lt;strong&gt;Identified&lt;/strong&gt; - The timeline is down for most users.&lt;/p&gt;
&lt;p&gt;&lt;small&gt;Mar 10, 14:02 UTC&lt;/small&gt;&lt;br&gt;
&lt;strong&gt;Investigating&lt;/strong&gt; - We are looking into it.&lt;/p&gt;</description>
<pubDate>Mon, 10 Mar 2025 09:20:00 +0000</pubDate></item>
<item><title>Older trouble</title><description>Resolved - fine.</description>
<pubDate>Sun, 09 Mar 2025 10:00:00 +0000</pubDate></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>X status</title>
<entry><title>Slow uploads</title><updated>2025-03-10T09:00:00Z</updated>
<content type="html">
&lt;p&gt;&lt;strong&gt;Resolved&lt;/strong&gt; - Uploads are fast again.&lt;/p&gt;
&lt;p&gt;&lt;strong&gt;Investigating&lt;/strong&gt; - Uploads are slow.&lt;/p&gt;</content></entry>
<entry><title>Scheduled maintenance</title><updated>2025-03-01T09:00:00Z</updated>
<summary>In progress - database maintenance</summary></entry>
</feed>"""


def test_rss_and_atom_feeds() -> None:
    assert parse_feed(RSS, NOW, 86_400) == (
        "major",
        "Identified - The timeline is down for most users.",
        "Timeline not loading",
    )
    assert parse_feed(ATOM, NOW, 86_400)[0] == "none"  # the newest entry is resolved
    assert parse_feed(RSS, NOW + 5 * 86_400, 86_400) == ("none", "no recent incidents", None)
    maint = ATOM.replace(b"2025-03-10T09:00:00Z", b"2025-02-10T09:00:00Z").replace(
        b"2025-03-01T09:00:00Z", b"2025-03-10T09:30:00Z"
    )
    assert parse_feed(maint, NOW, 86_400)[:1] == ("maintenance",)
    minor = RSS.replace(b"The timeline is down for most users", b"Some users see errors")
    assert parse_feed(minor, NOW, 86_400)[0] == "minor"


def test_hostile_or_broken_feeds_are_errors() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><rss><channel><title>&lol2;</title>'
        b"</channel></rss>"
    )
    with pytest.raises(StatusPageError, match="feed refused"):
        parse_feed(bomb, NOW, 86_400)
    with pytest.raises(StatusPageError, match="not XML"):
        parse_feed(b"<rss><channel>", NOW, 86_400)
    with pytest.raises(StatusPageError, match="not an RSS or Atom feed"):
        parse_feed(b"<html><body>hi</body></html>", NOW, 86_400)


def test_feed_served_over_http() -> None:
    served = {"/feed.rss": RSS}
    server = LoopbackServer(lambda req: Reply(200, served.get(req.path, b""), {}))
    got: list[dict[str, Any]] = []

    async def submit(events: list[dict[str, Any]]) -> None:
        got.extend(events)

    with server:
        pages = [("x", StatusPage(server.url + "/feed.rss", kind="feed"))]
        poller = StatusPoller(
            pages, submit, allow_private=True, clock=lambda: NOW, feed_max_age_s=86_400
        )

        async def go() -> None:
            await poll_all(poller)
            await poller.stop()

        asyncio.run(go())
    assert [(e["indicator"], e["incident"]) for e in got] == [("major", "Timeline not loading")]
