"""Alerts: subscriptions, notification channels, and the delivery log."""
