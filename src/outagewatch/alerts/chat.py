"""Slack-, Discord- and Teams-compatible incoming webhooks: the alert as a chat message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from outagewatch.alerts.base import Message, post

DISCORD_LIMIT = 2000  # characters of `content`
EMOJI = {"opened": ":rotating_light:", "cause": ":mag:", "resolved": ":white_check_mark:"}


def slack_body(message: Message) -> dict[str, Any]:
    """Slack (and Mattermost, Rocket.Chat): `text` in mrkdwn."""
    return {"text": f"{EMOJI[message.kind]} *{message.subject}*\n{message.text}"}


def discord_body(message: Message) -> dict[str, Any]:
    content = f"**{message.subject}**\n{message.text}"
    if len(content) > DISCORD_LIMIT:
        content = content[: DISCORD_LIMIT - 1] + "…"
    return {"content": content, "allowed_mentions": {"parse": []}}


def teams_body(message: Message) -> dict[str, Any]:
    """Microsoft Teams (Workflows / Power Automate incoming webhook): an Adaptive Card."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": message.subject,
                            "weight": "Bolder",
                            "size": "Medium",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": message.text, "wrap": True},
                    ],
                },
            }
        ],
    }


BODIES = {"slack": slack_body, "discord": discord_body, "teams": teams_body}


class ChatNotifier:
    def __init__(self, client: httpx.AsyncClient, flavour: str) -> None:
        if flavour not in BODIES:
            raise ValueError(f"unknown chat flavour {flavour!r}")
        self.client = client
        self.body = BODIES[flavour]

    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None:
        await post(self.client, str(config["url"]), orjson.dumps(self.body(message)), {})
