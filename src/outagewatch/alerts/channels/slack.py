"""Slack (and Mattermost, Rocket.Chat) incoming webhooks: `text` in mrkdwn."""

from __future__ import annotations

from typing import Any

from outagewatch.alerts.base import Message
from outagewatch.alerts.channels.chat import ChatChannel

EMOJI = {
    "opened": ":rotating_light:",
    "cause": ":mag:",
    "resolved": ":white_check_mark:",
    "update": ":speech_balloon:",
}


def slack_body(message: Message) -> dict[str, Any]:
    return {"text": f"{EMOJI[message.kind]} *{message.subject}*\n{message.text}"}


CHANNEL = ChatChannel("slack", slack_body)
