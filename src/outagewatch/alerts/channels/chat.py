"""Chat incoming webhooks (Slack, Discord, Teams and the like): the alert as a chat message.

Each chat service is a module of its own that gives the body of its message and its
`CHANNEL = ChatChannel(name, body)`; the posting and the validation (`url` only) are here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from outagewatch.alerts.base import Message, Notifier, post
from outagewatch.alerts.channels.base import ChannelContext, valid_url

Body = Callable[[Message], dict[str, Any]]


class ChatNotifier:
    def __init__(self, client: httpx.AsyncClient, body: Body) -> None:
        self.client = client
        self.body = body

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        await post(self.client, str(config["url"]), orjson.dumps(self.body(message)), {})


@dataclass(frozen=True)
class ChatChannel:
    name: str
    body: Body
    fields: tuple[str, ...] = ("url",)
    help: str = "`url`, the incoming-webhook URL the chat service gave you."

    def validate(self, body: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
        return {"url": valid_url(body, self.name, ctx)}

    def notifier(self, ctx: ChannelContext) -> Notifier:
        return ChatNotifier(ctx.http(), self.body)
