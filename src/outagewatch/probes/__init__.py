"""Active checks: HTTP probes (`checks`), their scheduler, the remote probe agent, and the
poller of official status pages."""
