"""What a notification channel is: its subscription fields, their validation, its transport.

Each channel is one module in this package with a `CHANNEL` object; `REGISTRY` in
`__init__.py` lists them. The Alerter knows channels only through this interface, so a new
channel is one new module and one registry line (healthchecks' one transport per
integration is the shape).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from outagewatch.alerts.base import Notifier
from outagewatch.errors import InputError
from outagewatch.netguard import check_literal
from outagewatch.settings import Settings


class SubscriptionError(InputError):
    """A subscription that cannot be created: the message names the field."""

    code = "bad_subscription"


@dataclass(frozen=True)
class ChannelContext:
    """What channels may use to validate a subscription and to build their transport."""

    settings: Settings
    clock: Callable[[], float]
    http: Callable[[], httpx.AsyncClient]  # the alerter's guarded client, made on first use
    attempt_timeout_s: float
    smtp_ssl_context: ssl.SSLContext | None = None
    injected: frozenset[str] = frozenset()  # channels whose notifier was handed in (tests)
    unsubscribe: Callable[[str], str] | None = None  # a visitor id's unsubscribe URL


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str:
        """Its fields, in a sentence, for the API's documentation."""
        ...

    @property
    def fields(self) -> tuple[str, ...]:
        """The body fields it takes besides service, group, min_severity and channel."""
        ...

    def validate(self, body: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
        """The subscription's config from the body, or SubscriptionError naming the field."""
        ...

    def notifier(self, ctx: ChannelContext) -> Notifier:
        """The transport that sends this channel's alerts."""
        ...


def valid_url(body: Mapping[str, Any], channel: str, ctx: ChannelContext) -> str:
    """`url`: required, and a literal address the network guard lets through."""
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise SubscriptionError(f"`url` is required for the {channel} channel")
    try:
        check_literal(url, ctx.settings.allow_private_targets)
    except InputError as exc:
        raise SubscriptionError(f"`url`: {exc}") from None
    return url
