"""Microsoft Teams (Workflows / Power Automate incoming webhook): an Adaptive Card."""

from __future__ import annotations

from typing import Any

from outagewatch.alerts.base import Message
from outagewatch.alerts.channels.chat import ChatChannel


def teams_body(message: Message) -> dict[str, Any]:
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


CHANNEL = ChatChannel("teams", teams_body)
