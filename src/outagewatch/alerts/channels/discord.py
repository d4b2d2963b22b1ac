"""Discord webhooks: `content` in Markdown, cut to Discord's limit, mentioning no one."""

from __future__ import annotations

from typing import Any

from outagewatch.alerts.base import Message
from outagewatch.alerts.channels.chat import ChatChannel

DISCORD_LIMIT = 2000  # characters of `content`


def discord_body(message: Message) -> dict[str, Any]:
    content = f"**{message.subject}**\n{message.text}"
    if len(content) > DISCORD_LIMIT:
        content = content[: DISCORD_LIMIT - 1] + "…"
    return {"content": content, "allowed_mentions": {"parse": []}}


CHANNEL = ChatChannel("discord", discord_body)
