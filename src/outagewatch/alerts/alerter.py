"""The Alerter: turns incident transitions into alerts for the matching subscriptions.

    server commit ──> handle(transitions, docs) ──> deliveries table (unique key) ──> tasks
                                                                                      │
                           webhook / email / Slack / Discord / Teams  <── one task each

- A subscription watches one service, one group, or everything, from a minimum severity on.
- Alerts: `opened` (once the incident reaches the subscription's severity), `cause` (once a
  cause other than `unknown` is identified), `resolved`. `cause` and `resolved` are sent only
  to subscriptions that were told about the opening.
- Each alert is queued once per (subscription, incident, kind): the key is unique in the
  store, so handing the same transitions in again, even after a restart, sends nothing new.
- Each delivery runs in its own task, with a per-attempt timeout and retries with
  exponential backoff, so a failing or hanging channel never holds up the others. A pending
  delivery survives a restart (`start()` resumes it). The log is `deliveries()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from outagewatch.alerts.base import KINDS, Kind, Message, Notifier, NotifierError
from outagewatch.alerts.channels import REGISTRY, ChannelContext, SubscriptionError
from outagewatch.alerts.channels.email import EmailNotifier
from outagewatch.alerts.messages import render, render_update, top_cause
from outagewatch.catalog import Catalog
from outagewatch.incidents.lifecycle import Transition
from outagewatch.incidents.severity import SEVERITIES, Severity, at_least, public, severity
from outagewatch.netguard import guarded_client
from outagewatch.settings import Settings
from outagewatch.store.base import LATEST_DELIVERIES, DeliveryQuery, DeliveryUpdate, Store

log = logging.getLogger("outagewatch.alerts")

_COMMON = ("service", "group", "min_severity", "channel")


@dataclass(frozen=True)
class Subscription:
    id: str
    service: str | None
    group: str | None
    min_severity: Severity
    channel: str
    config: Mapping[str, Any]
    created_at: float

    def matches(self, service: str, group: str | None) -> bool:
        if self.service is not None:
            return self.service == service
        if self.group is not None:
            return self.group == group
        return True

    def public(self) -> dict[str, Any]:
        """What the API shows: secrets and webhook paths (which often hold tokens) hidden."""
        out: dict[str, Any] = {
            "id": self.id,
            "service": self.service,
            "group": self.group,
            "min_severity": self.min_severity,
            "channel": self.channel,
            "created_at": self.created_at,
        }
        if "url" in self.config:
            u = httpx.URL(str(self.config["url"]))
            port = f":{u.port}" if u.port else ""
            out["url"] = f"{u.scheme}://{u.host}{port}/…"
        if "to" in self.config:
            out["to"] = list(self.config["to"])
        if "secret" in self.config:
            out["secret_set"] = True
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscription:
        return cls(
            row["id"],
            row["service"],
            row["group"],
            row["min_severity"],
            row["channel"],
            row["config"],
            row["created_at"],
        )


def delivery_key(sub_id: str, incident: str, kind: str) -> str:
    return f"{sub_id}:{incident}:{kind}"


class Alerter:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        catalog: Catalog,
        *,
        notifiers: Mapping[str, Notifier] | None = None,
        smtp_ssl_context: ssl.SSLContext | None = None,
        max_attempts: int | None = None,
        backoff_s: float | None = None,
        backoff_max_s: float = 3600.0,
        attempt_timeout_s: float = 30.0,
        concurrency: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.catalog = catalog
        self.max_attempts = max_attempts or settings.alert_max_attempts
        self.backoff_s = float(backoff_s if backoff_s is not None else settings.alert_backoff_s)
        self.backoff_max_s = backoff_max_s
        self.attempt_timeout_s = attempt_timeout_s
        self.clock = clock
        self._notifiers: dict[str, Notifier] = dict(notifiers or {})
        self._smtp_ssl_context = smtp_ssl_context
        self._injected = frozenset(self._notifiers)
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._subs: dict[str, Subscription] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._chains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._started = False
        # Scale-out (runtime/leader.py): claims each attempt in the shared store before it is
        # made — (delivery id, attempts so far) -> whether this process may make it.
        self.claim: Callable[[int, int], bool] | None = None
        # Visitors' email subscriptions (web/visitors.py): a visitor id's unsubscribe URL.
        self.unsubscribe: Callable[[str], str] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load subscriptions and resume the deliveries a previous run left pending."""
        if self._started:
            return
        self._started = True
        rows = await asyncio.to_thread(self.store.subscriptions)
        self._subs = {r["id"]: Subscription.from_row(r) for r in rows}
        for d in await asyncio.to_thread(self.store.pending_deliveries):
            self._spawn(d)
        log.info(
            "alerts: %d subscriptions, %d deliveries resumed", len(self._subs), len(self._tasks)
        )

    async def refresh(self) -> None:
        """Take the subscriptions as stored now, and start the pending deliveries not yet
        running (scale-out: other API nodes add subscriptions and queue update alerts)."""
        rows = await asyncio.to_thread(self.store.subscriptions)
        self._subs = {r["id"]: Subscription.from_row(r) for r in rows}
        if self._started:
            for d in await asyncio.to_thread(self.store.pending_deliveries):
                self._spawn(d)

    async def stop(self) -> None:
        """Cancel running deliveries (they stay pending in the store for the next start)."""
        self._started = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._chains.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._notifiers = {k: v for k, v in self._notifiers.items() if k not in REGISTRY}

    async def idle(self, timeout: float | None = None) -> None:
        """Wait until no delivery is in flight (for tests and clean shutdowns)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # ------------------------------------------------------------------ subscriptions
    async def add_subscription(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a subscription. The answer shows the webhook secret once."""
        sub = self._validate(body)
        await self._add(sub)
        out = sub.public()
        if "secret" in sub.config:
            out["secret"] = sub.config["secret"]
        return out

    async def _add(self, sub: Subscription) -> None:
        """Store a new subscription, then alert it."""
        row = {
            "id": sub.id,
            "service": sub.service,
            "group": sub.group,
            "min_severity": sub.min_severity,
            "channel": sub.channel,
            "config": dict(sub.config),
            "created_at": sub.created_at,
        }
        await asyncio.to_thread(self.store.add_subscription, row)
        self._subs[sub.id] = sub

    def subscriptions(self) -> list[dict[str, Any]]:
        return [s.public() for s in self._subs.values()]

    def subscription(self, sub_id: str) -> dict[str, Any] | None:
        sub = self._subs.get(sub_id)
        return None if sub is None else sub.public()

    async def delete_subscription(self, sub_id: str) -> bool:
        found = await asyncio.to_thread(self.store.delete_subscription, sub_id)
        self._subs.pop(sub_id, None)
        return found

    async def follow(self, visitor: str, email: str, services: Sequence[str]) -> None:
        """A visitor's confirmed email subscription (web/visitors.py): one email
        subscription per service, marked with the visitor's id (whose mails carry its
        unsubscribe link). Services the visitor already follows are skipped."""
        have = {s.service for s in self._subs.values() if s.config.get("visitor") == visitor}
        for service in services:
            if service in have or service not in self.catalog.services:
                continue
            sub = Subscription(
                uuid.uuid4().hex[:16],
                service,
                None,
                "problems",
                "email",
                {"to": [email], "visitor": visitor},
                self.clock(),
            )
            await self._add(sub)

    async def unfollow(self, visitor: str) -> int:
        """Remove every subscription of a visitor; how many there were."""
        mine = [s.id for s in self._subs.values() if s.config.get("visitor") == visitor]
        for sub_id in mine:
            await self.delete_subscription(sub_id)
        return len(mine)

    async def deliveries(self, query: DeliveryQuery = LATEST_DELIVERIES) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self.store.deliveries, query)
        for r in rows:
            r.pop("key", None)
        return rows

    def _validate(self, body: Mapping[str, Any]) -> Subscription:
        if not isinstance(body, Mapping):
            raise SubscriptionError("the body must be a JSON object")
        fields = set(_COMMON).union(*(c.fields for c in REGISTRY.values()))
        unknown = sorted(set(body) - fields)
        if unknown:
            raise SubscriptionError(
                f"unknown field {unknown[0]!r}; expected some of {', '.join(sorted(fields))}"
            )
        service = group = None
        if body.get("service") is not None and body.get("group") is not None:
            raise SubscriptionError("give `service` or `group` (or neither for everything)")
        if body.get("service") is not None:
            svc = self.catalog.resolve(str(body["service"]))
            if svc is None:
                raise SubscriptionError(f"`service` {body['service']!r}: no such service")
            service = svc.id
        if body.get("group") is not None:
            groups = {s.group for s in self.catalog.services.values() if s.group}
            if body["group"] not in groups:
                raise SubscriptionError(f"`group` {body['group']!r}: no service has this group")
            group = str(body["group"])
        min_sev = body.get("min_severity", "problems")
        if min_sev not in SEVERITIES:
            raise SubscriptionError(
                f"`min_severity` {min_sev!r}: expected one of {', '.join(SEVERITIES)}"
            )
        channel = body.get("channel")
        kind = REGISTRY.get(channel) if isinstance(channel, str) else None
        if kind is None:
            raise SubscriptionError(f"`channel` {channel!r}: expected one of {', '.join(REGISTRY)}")
        for name in sorted(set(body) - set(_COMMON) - set(kind.fields)):
            if body[name] is not None:
                takers = [c.name for c in REGISTRY.values() if name in c.fields]
                raise SubscriptionError(f"`{name}` is only for {_either(takers)}")
        config = kind.validate(body, self._channels)
        channel = kind.name
        return Subscription(
            uuid.uuid4().hex[:16], service, group, min_sev, channel, config, self.clock()
        )

    # ------------------------------------------------------------------ transitions
    async def handle(
        self, transitions: Sequence[Transition], docs: Mapping[str, dict[str, Any]]
    ) -> None:
        """Queue the alerts these transitions call for (idempotent) and start sending them.

        `docs` maps incident id to its docs/contract.md §4 object after the commit.
        """
        if not self._subs or not transitions:
            return
        wanted: list[tuple[Subscription, Kind, Message]] = []
        for tr in transitions:
            doc = docs.get(tr.incident)
            if doc is None:
                continue
            if doc.get("maintenance"):
                continue  # opened inside a maintenance window: expected, no alerts
            if tr.action != "resolved" and not public(doc):
                # A suspected fake flood alerts no one until probes or the official status
                # confirm it; "resolved" follows only an "opened" that was sent.
                continue
            svc = self.catalog.services.get(doc["service"])
            group = svc.group if svc is not None else None
            name = svc.name if svc is not None else doc["service"]
            subs = [s for s in self._subs.values() if s.matches(doc["service"], group)]
            for kind in self._kinds(tr, doc):
                for sub in subs:
                    if kind == "opened" and not at_least(severity(doc), sub.min_severity):
                        continue
                    wanted.append((sub, kind, render(kind, doc, name)))
        if not wanted:
            return
        for row in await asyncio.to_thread(self._queue, wanted):
            self._spawn(row)

    async def update(self, doc: Mapping[str, Any], update: Mapping[str, Any], number: int) -> None:
        """Queue an operator's update (the incident's `number`th) for the subscriptions that
        were told about the incident's opening, and start sending it."""
        if not self._subs or not public(doc) or doc.get("maintenance"):
            return
        svc = self.catalog.services.get(doc["service"])
        group = svc.group if svc is not None else None
        name = svc.name if svc is not None else doc["service"]
        msg = render_update(doc, update, name)
        subs = [s for s in self._subs.values() if s.matches(doc["service"], group)]
        wanted = [(s, msg, f"update-{number}") for s in subs]
        if wanted:
            for row in await asyncio.to_thread(self._queue_updates, wanted):
                self._spawn(row)

    def _queue_updates(
        self, wanted: list[tuple[Subscription, Message, str]]
    ) -> list[dict[str, Any]]:
        """(worker thread) Insert the update deliveries of subscriptions told of the opening."""
        opened = {delivery_key(s.id, m.incident, "opened") for s, m, _ in wanted}
        known = self.store.delivery_keys(sorted(opened))
        rows: list[dict[str, Any]] = []
        for sub, msg, tag in wanted:
            if delivery_key(sub.id, msg.incident, "opened") not in known:
                continue
            new_id = self.store.add_delivery(
                {
                    "key": delivery_key(sub.id, msg.incident, tag),
                    "subscription": sub.id,
                    "incident": msg.incident,
                    "kind": "update",
                    "channel": sub.channel,
                    "payload": msg.to_json(),
                    "created_at": self.clock(),
                }
            )
            row = None if new_id is None else self.store.delivery(new_id)
            if row is not None:
                rows.append(row)
        return rows

    @staticmethod
    def _kinds(tr: Transition, doc: Mapping[str, Any]) -> list[Kind]:
        if tr.action == "resolved":
            return ["resolved"]
        kinds: list[Kind] = ["opened"]  # opened, peak (severity may have grown), cause, ...
        if top_cause(doc) is not None:
            kinds.append("cause")
        return kinds

    def _queue(self, wanted: list[tuple[Subscription, Kind, Message]]) -> list[dict[str, Any]]:
        """(worker thread) Insert new deliveries; `cause`/`resolved` need `opened` first.

        Returns the deliveries that are new (the others were queued before)."""
        rows: list[dict[str, Any]] = []
        opened = {delivery_key(s.id, m.incident, "opened") for s, _, m in wanted}
        known = self.store.delivery_keys(sorted(opened))
        now = self.clock()
        for sub, kind, msg in wanted:
            key = delivery_key(sub.id, msg.incident, kind)
            if kind != "opened" and delivery_key(sub.id, msg.incident, "opened") not in known:
                continue
            new_id = self.store.add_delivery(
                {
                    "key": key,
                    "subscription": sub.id,
                    "incident": msg.incident,
                    "kind": kind,
                    "channel": sub.channel,
                    "payload": msg.to_json(),
                    "created_at": now,
                }
            )
            if kind == "opened":
                known.add(key)
            if new_id is not None:
                row = self.store.delivery(new_id)
                if row is not None:
                    rows.append(row)
        return rows

    # ------------------------------------------------------------------ delivery
    def _spawn(self, row: dict[str, Any]) -> None:
        if not self._started or row["id"] in self._tasks:
            return
        # One subscriber hears about one incident in order (opened, cause, resolved): each
        # delivery waits for the one queued before it for the same subscription and incident.
        chain = (str(row["subscription"]), str(row["incident"]))
        before = self._chains.get(chain)
        task = asyncio.create_task(self._deliver(row, before), name=f"alert {row['id']}")
        self._tasks[row["id"]] = task
        self._chains[chain] = task
        did = int(row["id"])

        def forget(_: asyncio.Task[None]) -> None:
            if self._tasks.get(did) is task:
                del self._tasks[did]
            if self._chains.get(chain) is task:
                del self._chains[chain]

        task.add_done_callback(forget)

    async def send_mail(
        self, to: str, subject: str, text: str, key: str, *, unsubscribe: str | None = None
    ) -> None:
        """One mail that is no alert (a visitor's confirmation request), through the email
        channel's transport and settings. Raises NotifierError."""
        notifier = self._notifier("email")
        if not isinstance(notifier, EmailNotifier):
            raise NotifierError("the email channel sends alerts only", permanent=True)
        async with self._slots, asyncio.timeout(self.attempt_timeout_s):
            await notifier.send_text(to, subject, text, key, unsubscribe=unsubscribe)

    def _notifier(self, channel: str) -> Notifier:
        found = self._notifiers.get(channel)
        if found is None:
            found = self._notifiers[channel] = REGISTRY[channel].notifier(self._channels)
        return found

    @property
    def _channels(self) -> ChannelContext:
        """What the channels see of the alerter (its settings as they are now)."""
        return ChannelContext(
            settings=self.settings,
            clock=self.clock,
            http=self._http,
            attempt_timeout_s=self.attempt_timeout_s,
            smtp_ssl_context=self._smtp_ssl_context,
            injected=self._injected,
            unsubscribe=self.unsubscribe,
        )

    def _http(self) -> httpx.AsyncClient:
        """The client of every HTTP channel: guarded against private targets, no redirects."""
        if self._client is None:
            self._client = guarded_client(
                allow_private=self.settings.allow_private_targets,
                timeout=self.attempt_timeout_s,
                follow_redirects=False,
            )
        return self._client

    async def _deliver(self, row: dict[str, Any], after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.wait({after})  # its outcome does not matter, only that it is over
        did, key = int(row["id"]), str(row["key"])
        attempts = int(row["attempts"])
        next_at = float(row["next_at"] or 0.0)
        message = Message.from_json(row["payload"])
        while True:
            delay = next_at - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            sub = self._subs.get(row["subscription"])
            if sub is None:
                gone = DeliveryUpdate("failed", attempts, last_error="subscription deleted")
                await self._update(did, gone)
                return
            if self.claim is not None:
                if str(row.get("last_error") or "").startswith("in flight"):
                    log.warning("alert %s: %s; retrying it (same key)", key, row["last_error"])
                    row["last_error"] = None
                if not await asyncio.to_thread(self.claim, did, attempts):
                    log.info("alert %s: attempt %d is not ours to make", key, attempts + 1)
                    return
            attempts += 1
            error: str | None = None
            permanent = False
            try:
                notifier = self._notifier(sub.channel)
                async with self._slots, asyncio.timeout(self.attempt_timeout_s):
                    await notifier.send(sub.config, message, key)
            except NotifierError as exc:
                error, permanent = exc.message, exc.permanent
            except TimeoutError:
                error = f"timed out after {self.attempt_timeout_s:g} s"
            except Exception as exc:  # a broken channel must not take the others down
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                await self._update(did, DeliveryUpdate("sent", attempts, sent_at=self.clock()))
                log.info("alert %s %s sent via %s", message.kind, message.incident, sub.channel)
                return
            if permanent or attempts >= self.max_attempts:
                await self._update(did, DeliveryUpdate("failed", attempts, last_error=error))
                log.warning(
                    "alert %s %s via %s failed after %d attempts: %s",
                    message.kind,
                    message.incident,
                    sub.channel,
                    attempts,
                    error,
                )
                return
            wait = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempts - 1))
            next_at = self.clock() + wait
            await self._update(did, DeliveryUpdate("pending", attempts, next_at, error))

    async def _update(self, did: int, change: DeliveryUpdate) -> None:
        await asyncio.to_thread(self.store.update_delivery, did, change)


def _either(names: list[str]) -> str:
    """'the webhook channel', 'webhook, slack and teams': the channels named."""
    if len(names) == 1:
        return f"the {names[0]} channel"
    return f"{', '.join(names[:-1])} and {names[-1]}"


__all__ = ["KINDS", "Alerter", "Subscription", "SubscriptionError", "delivery_key"]
