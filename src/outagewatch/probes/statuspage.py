"""Official status pages: poll them and turn what they say into `status` events
(docs/contract.md §2).

Two kinds (catalog `status_page.kind`):

- `statuspage`: Atlassian Statuspage v2 JSON. `summary.json` (or `status.json`) carries
  `status.indicator` and `status.description`; the title of the first unresolved incident
  (or in-progress maintenance) becomes `incident`. `incidents.json` has no overall status: the
  worst `impact` of the unresolved incidents is the indicator.
- `feed`: an RSS 2.0 or Atom feed of incidents (parsed with defusedxml: no entity tricks).
  The newest entry is read: resolved / completed wording means `none`; maintenance wording
  means `maintenance`; outage wording (outage, down, unavailable) means `major`; any other
  recent entry `minor`. An entry older than `feed_max_age_s` means `none`.

An event is emitted when the page's state (indicator, description, incident) changes, and
again every `refresh_s` while it stays the same (so a restarted server learns the state).
A page that cannot be fetched or parsed emits nothing; its last error is kept in `errors`.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import logging
import random
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import httpx
import orjson
from defusedxml import DefusedXmlException

from outagewatch.catalog import Catalog, StatusPage
from outagewatch.events import parse_ts
from outagewatch.netguard import Resolver, TargetRefusedError, system_resolve
from outagewatch.probes.base import Submit, Watcher
from outagewatch.probes.checks import Clock

log = logging.getLogger("outagewatch.statuspage")

INDICATORS = ("none", "minor", "major", "critical", "maintenance")
_RANK = {"none": 0, "maintenance": 1, "minor": 2, "major": 3, "critical": 4}
_DONE = {"resolved", "postmortem", "completed"}
MAX_PAGE = 2 << 20  # bytes
ATOM = "{http://www.w3.org/2005/Atom}"

State = tuple[str, str | None, str | None]  # indicator, description, incident


class StatusPageError(Exception):
    """A status page could not be read or understood (the message says why)."""


# ---------------------------------------------------------------------------- parsing


def parse_statuspage(doc: Any) -> State:
    """(indicator, description, incident) of a Statuspage v2 summary/status/incidents JSON."""
    if not isinstance(doc, Mapping):
        raise StatusPageError("not a Statuspage v2 document: expected a JSON object")
    incidents = [i for i in doc.get("incidents") or [] if isinstance(i, Mapping)]
    open_incidents = [i for i in incidents if str(i.get("status", "")).lower() not in _DONE]
    maint = [
        m
        for m in doc.get("scheduled_maintenances") or []
        if isinstance(m, Mapping)
        and str(m.get("status", "")).lower() in ("in_progress", "verifying")
    ]
    status = doc.get("status")
    if isinstance(status, Mapping):
        indicator = str(status.get("indicator", "")).lower()
        if indicator not in INDICATORS:
            raise StatusPageError(f"unknown status indicator {status.get('indicator')!r}")
        description = _text(status.get("description"))
    elif "incidents" in doc:
        impacts = [str(i.get("impact", "minor")).lower() for i in open_incidents]
        impacts = [x if x in _RANK else "minor" for x in impacts]
        indicator = max(impacts, key=_RANK.__getitem__) if impacts else "none"
        if indicator == "none" and maint:
            indicator = "maintenance"
        description = None
        if open_incidents:
            description = _text(open_incidents[0].get("status"))
    else:
        raise StatusPageError("not a Statuspage v2 document: no `status` and no `incidents`")
    incident = None
    if open_incidents:
        incident = _text(open_incidents[0].get("name"))
    elif maint:
        incident = _text(maint[0].get("name"))
    if indicator == "none" and maint:
        indicator = "maintenance"
    return indicator, description, incident


def parse_feed(data: bytes, now: float, max_age_s: float) -> State:
    """(indicator, description, incident) from the newest entry of an RSS 2.0 / Atom feed."""
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise StatusPageError(f"feed refused: {type(exc).__name__}") from None
    except SafeET.ParseError as exc:
        raise StatusPageError(f"feed is not XML: {exc}") from None
    entries = _rss(root) if root.tag == "rss" or root.find("channel") is not None else _atom(root)
    if entries is None:
        raise StatusPageError(f"not an RSS or Atom feed (root element {root.tag!r})")
    if not entries:
        return "none", "no incidents in the feed", None
    entries.sort(key=lambda e: e[0] or 0.0, reverse=True)
    when, title, body = entries[0]
    if when is not None and now - when > max_age_s:
        return "none", "no recent incidents", None
    indicator = _classify(title, body)
    description = _first_line(body) or title
    return indicator, description[:300] if description else None, title[:300] or None


def _rss(root: Element) -> list[tuple[float | None, str, str]] | None:
    channel = root.find("channel")
    if channel is None:
        return None
    out = []
    for item in channel.findall("item"):
        when = _rfc822(item.findtext("pubDate"))
        out.append(
            (when, _text(item.findtext("title")) or "", _plain(item.findtext("description")))
        )
    return out


def _atom(root: Element) -> list[tuple[float | None, str, str]] | None:
    if root.tag != f"{ATOM}feed":
        return None
    out = []
    for entry in root.findall(f"{ATOM}entry"):
        stamp = entry.findtext(f"{ATOM}updated") or entry.findtext(f"{ATOM}published")
        when = parse_ts(stamp.strip()) if stamp else None
        body = entry.findtext(f"{ATOM}content") or entry.findtext(f"{ATOM}summary")
        out.append((when, _text(entry.findtext(f"{ATOM}title")) or "", _plain(body)))
    return out


_RESOLVED = re.compile(r"\b(resolved|completed|restored|operational again|fixed)\b", re.I)
_UPDATE = re.compile(
    r"\b(investigating|identified|monitoring|update|in progress|scheduled|verifying)\b", re.I
)
_MAINT = re.compile(r"\b(maintenance|scheduled|in progress)\b", re.I)
_MAJOR = re.compile(r"\b(major|outage|down|unavailable|not available|inaccessible)\b", re.I)


def _classify(title: str, body: str) -> str:
    """The state the newest entry describes. Statuspage-style feeds list updates newest
    first in the body ("Resolved - ...", "Investigating - ..."), so the first status word
    of the body is the current one."""
    first = _first_status(body) or _first_status(title)
    if first is not None and _RESOLVED.fullmatch(first):
        return "none"
    text = f"{title} {body}"
    if _MAINT.search(title) or (first is not None and _MAINT.fullmatch(first)):
        return "maintenance"
    if _MAJOR.search(text):
        return "major"
    return "minor"


def _first_status(text: str) -> str | None:
    hits = [m for m in (_RESOLVED.search(text), _UPDATE.search(text)) if m is not None]
    if not hits:
        return None
    return min(hits, key=lambda m: m.start()).group(1)


def _first_line(body: str) -> str:
    """The newest update's line (the first naming a status), else the first line."""
    lines = [ln.strip() for ln in body.strip().split("\n") if ln.strip()] if body else []
    for ln in lines:
        if _RESOLVED.search(ln) or _UPDATE.search(ln):
            return ln
    return lines[0] if lines else ""


def _plain(markup: str | None) -> str:
    """Text of an HTML fragment: tags become line breaks, entities are decoded."""
    if not markup:
        return ""
    text = re.sub(r"<\s*br\s*/?>|</p>|</div>", "\n", markup, flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    lines = (re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n"))
    return "\n".join(ln for ln in lines if ln)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = re.sub(r"\s+", " ", str(value)).strip()
    return s or None


def _rfc822(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value.strip()).timestamp()
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- polling


def status_event(service: str, ts: float, state: State) -> dict[str, Any]:
    indicator, description, incident = state
    return {
        "type": "status",
        "service": service,
        "ts": round(ts, 3),
        "indicator": indicator,
        "description": description,
        "incident": incident,
    }


class StatusPoller(Watcher):
    """Polls every catalog status page on its interval; `start()` / `stop()`."""

    def __init__(
        self,
        pages: Catalog | Sequence[tuple[str, StatusPage]],
        submit: Submit,
        *,
        allow_private: bool,
        refresh_s: float = 3600.0,
        feed_max_age_s: float = 2 * 86_400.0,
        timeout_s: float = 15.0,
        concurrency: int = 10,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolver = system_resolve,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(pages, Catalog):
            pages = [
                (sid, svc.status_page)
                for sid, svc in pages.services.items()
                if svc.status_page is not None
            ]
        guard = dict(allow_private=allow_private, timeout=timeout_s, verify=verify, resolve=resolve)
        super().__init__(submit, concurrency, client, guard, clock, rng)
        self.pages = list(pages)
        self.refresh_s = refresh_s
        self.feed_max_age_s = feed_max_age_s
        self.timeout_s = timeout_s
        self._last: dict[str, tuple[State, float]] = {}  # service -> (state, emitted at)
        self.errors: dict[str, str] = {}  # service -> last error (cleared on success)

    def state(self, service: str) -> State | None:
        """What the page said at the last successful poll."""
        last = self._last.get(service)
        return None if last is None else last[0]

    async def start(self) -> None:
        self._launch((f"status {sid}", self._loop(sid, page)) for sid, page in self.pages)

    async def poll(self, service: str, page: StatusPage) -> dict[str, Any] | None:
        """Fetch one page now; submit and return a status event when one is due."""
        now = self.clock()
        try:
            async with self._slots:
                state = await self._fetch(page, now)
        except StatusPageError as exc:
            self.errors[service] = str(exc)
            log.warning("status page of %s (%s): %s", service, _where(page.url), exc)
            return None
        self.errors.pop(service, None)
        last = self._last.get(service)
        if last is not None and last[0] == state and now - last[1] < self.refresh_s:
            return None
        event = status_event(service, now, state)
        self._last[service] = (state, now)
        try:
            await self.submit([event])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._last.pop(service, None)  # not accepted: try again next time
            log.warning("status of %s: event not accepted: %s", service, exc)
        return event

    async def _fetch(self, page: StatusPage, now: float) -> State:
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("GET", page.url) as resp:
                    if resp.status_code != 200:
                        raise StatusPageError(f"answered status {resp.status_code}")
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_PAGE:
                            raise StatusPageError(f"larger than {MAX_PAGE} bytes")
        except TimeoutError:
            raise StatusPageError(f"timed out after {self.timeout_s:g} s") from None
        except TargetRefusedError as exc:
            raise StatusPageError(f"refused: {exc}") from None
        except httpx.HTTPError as exc:
            raise StatusPageError(f"{type(exc).__name__}: {exc}") from None
        if page.kind == "feed":
            return parse_feed(bytes(data), now, self.feed_max_age_s)
        try:
            doc = orjson.loads(bytes(data))
        except orjson.JSONDecodeError as exc:
            raise StatusPageError(f"not JSON: {exc}") from None
        return parse_statuspage(doc)

    async def _loop(self, service: str, page: StatusPage) -> None:
        await asyncio.sleep(self._rng.uniform(0, page.interval_s * 0.1))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.poll(service, page)
            step = page.interval_s * self._rng.uniform(0.95, 1.05)
            await asyncio.sleep(max(0.0, started + step - loop.time()))


def _where(url: str) -> str:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}{u.path}"
