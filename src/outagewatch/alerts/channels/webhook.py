"""Signed webhook: the alert as JSON, signed with HMAC-SHA256 over the timestamp and body.

Headers:
    X-Outagewatch-Timestamp: <unix seconds>
    X-Outagewatch-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    X-Outagewatch-Delivery:  <idempotency key: the same for every retry of one alert>

A receiver recomputes the signature with the subscription's secret (`verify_signature`),
and refuses a timestamp more than a few minutes away from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson

from outagewatch.alerts.base import Message, Notifier, post
from outagewatch.alerts.channels.base import ChannelContext, SubscriptionError, valid_url

SIGNATURE_HEADER = "X-Outagewatch-Signature"
TIMESTAMP_HEADER = "X-Outagewatch-Timestamp"
DELIVERY_HEADER = "X-Outagewatch-Delivery"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """True when `signature` is ours for this body and the timestamp is recent."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_body(message: Message, key: str, sent_at: float) -> dict[str, Any]:
    return {
        "kind": message.kind,
        "delivery": key,
        "sent_at": round(sent_at, 3),
        "service": message.service,
        "subject": message.subject,
        "text": message.text,
        "incident": dict(message.doc),
    }


class WebhookNotifier:
    def __init__(self, client: httpx.AsyncClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        now = self.clock()
        body = orjson.dumps(webhook_body(message, key, now))
        ts = str(int(now))
        headers = {
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(str(config["secret"]), ts, body),
            DELIVERY_HEADER: key,
        }
        await post(self.client, str(config["url"]), body, headers)


class WebhookChannel:
    """`url` and `secret` (made when not given: the answer to the POST shows it once)."""

    name = "webhook"
    fields: tuple[str, ...] = ("url", "secret")
    help = (
        "`url`, and `secret` (at least 16 characters; generated when left out and shown once): "
        "a signed JSON POST per alert."
    )

    def validate(self, body: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
        url = valid_url(body, self.name, ctx)
        secret = body.get("secret")
        if secret is None:
            secret = secrets.token_urlsafe(32)
        if not isinstance(secret, str) or len(secret) < 16:
            raise SubscriptionError("`secret` must be a string of at least 16 characters")
        return {"url": url, "secret": secret}

    def notifier(self, ctx: ChannelContext) -> Notifier:
        return WebhookNotifier(ctx.http(), ctx.clock)


CHANNEL = WebhookChannel()
