"""The notification channels, one module each (see `base.Channel`).

A new channel: a module here with a `CHANNEL`, and its line in `REGISTRY`.
"""

from __future__ import annotations

from outagewatch.alerts.channels import discord, email, slack, teams, webhook
from outagewatch.alerts.channels.base import Channel, ChannelContext, SubscriptionError

REGISTRY: dict[str, Channel] = {
    c.name: c
    for c in (
        webhook.CHANNEL,
        email.CHANNEL,
        slack.CHANNEL,
        discord.CHANNEL,
        teams.CHANNEL,
    )
}

__all__ = ["REGISTRY", "Channel", "ChannelContext", "SubscriptionError"]
