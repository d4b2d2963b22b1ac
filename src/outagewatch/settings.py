"""Every setting of outagewatch, in one place.

`PipelineSettings` tunes the pure pipeline core (it is handed in; the core reads nothing).
`Settings` is what the edges read from flags and the environment (flags win), parsed
strictly: a bad value is a `UsageError` that names the variable.

Each setting is declared once, in `SETTINGS`: its flag and environment variable, its default
and help text (shown by `--help` and the README's table), how its text is parsed (with its
bounds), and the field it fills (`pipeline.x`: a field of `PipelineSettings`). The command
line's flags and `Settings.resolve` are made from that table.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from outagewatch.errors import UsageError


@dataclass(frozen=True)
class PipelineSettings:
    """Tunables of the detection pipeline. Defaults are what the contract and tests assume."""

    dedup_window_s: int = 900
    """A person's reports for one service count once per this many seconds."""
    lateness_s: int = 300
    """Events up to this late count as on time; later ones are stored but flagged late."""
    ring_minutes: int = 128
    """Minutes of per-series counts kept in memory for windows, backdating and late events."""
    windows: tuple[int, ...] = (1, 3, 5, 10, 15)
    """Surge test windows in minutes (the counts of the last w minutes are tested)."""
    alpha: float = 1e-9
    """Upper-tail probability under the baseline below which a window is a surge."""
    min_ratio: float = 2.0
    """A surge needs at least this many times the expected reports (ignores organic bumps)."""
    min_excess: float = 6.0
    """...and at least this many reports above expectation."""
    organic_ratio: float = 1.6
    """The largest organic bump (of the forecast) the guards must ignore; with min_ratio it
    sets the sequential test's ratio guard (detect.cusum.guard_ratio)."""
    warmup_minutes: int = 1440
    """Minutes a series must have been learned before it may open an incident."""
    level_half_life_min: float = 720.0
    """Half-life of the deseasonalised level; follows growth over hours to days."""
    season_memory_days: float = 4.0
    """Memory of the day-type x hour-of-day profile, in days of that day type."""
    quiet_minutes: int = 15
    """An incident resolves after this many minutes back near baseline."""
    backdate_max_minutes: int = 60
    """How far back the start of a surge is searched for when an incident opens."""
    false_alarm_budget: float = 1.0
    """False incidents per 1,000 service-days the sequential surge test (detect.cusum) may
    open on ordinary traffic: sets its threshold. 0 turns the sequential test off (the
    window test alone)."""
    max_catchup_minutes: int = 10_080
    """A clock jump larger than this (a gap in the data) skips ticks instead of running them."""
    max_ahead_s: int = 900
    """A report more than this far ahead of the stream's time is rejected (pipeline.clock)."""
    clock_agree: int = 3
    """The stream's time reaches t once this many consecutive reports have reached it."""
    clock_skew_s: int = 3600
    """Live (serve): events may be this far ahead of the server's clock, and the pipeline's
    time never runs further ahead of it (read by the engine, not the core)."""
    probe_quorum: int = 2
    """Vantages whose public probes must fail for a probe-only incident (one suffices only
    when it is the only one reporting)."""
    probe_quorum_fraction: float = 0.5
    """...and at least this fraction of the vantages that reported in the last 3 intervals."""
    probe_fail_checks: int = 2
    """Consecutive failed (then good) checks each of those vantages must see."""

    def __post_init__(self) -> None:
        if self.ring_minutes < max(self.windows) + self.lateness_s // 60 + 2:
            raise UsageError("ring_minutes must cover the longest window plus the lateness")
        if self.ring_minutes < self.backdate_max_minutes + 2:
            raise UsageError("ring_minutes must cover backdate_max_minutes")
        if not 0 < self.alpha < 0.5:
            raise UsageError("alpha must be in (0, 0.5)")
        if not 1.0 <= self.organic_ratio < self.min_ratio:
            raise UsageError("organic_ratio must be in [1, min_ratio)")
        if not 0 <= self.false_alarm_budget < 1e6:
            raise UsageError("false_alarm_budget must be >= 0 (0: no sequential test)")

    @property
    def lateness_min(self) -> int:
        return self.lateness_s // 60


Parse = Callable[[str, "Setting"], Any]
"""Parses a setting's text (from its flag, its variable or its default), raising a
`UsageError` that names the setting (`Setting.label`) on a bad value."""


PIPELINE = "pipeline."


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: the field it fills, the flag and variable that set it
    (flags win), its default text, how that text is parsed, and its help."""

    fills: str
    """The field of `Settings` it fills; `pipeline.x`: the field x of `PipelineSettings`."""
    env: str
    flag: str
    default: str
    parse: Parse
    help: str

    @property
    def label(self) -> str:
        """How errors name it: `--flag / OUTAGEWATCH_VARIABLE`."""
        return f"{self.flag} / {self.env}"


def text(raw: str, s: Setting) -> str:
    return raw


def stripped(raw: str, s: Setting) -> str:
    return raw.strip()


def or_none(raw: str, s: Setting) -> str | None:
    """The text; empty is None (not set)."""
    return raw or None


def or_default(raw: str, s: Setting) -> str:
    """The text; empty is the default."""
    return raw or s.default


def stripped_or_default(raw: str, s: Setting) -> str:
    return raw.strip() or s.default


def integer(lo: int, hi: int) -> Parse:
    """An integer from lo to hi."""

    def parse(raw: str, s: Setting) -> int:
        try:
            v = int(raw)
        except ValueError:
            raise UsageError(f"{s.label} {raw!r}: expected an integer") from None
        if not lo <= v <= hi:
            raise UsageError(f"{s.label} {raw!r}: expected an integer from {lo} to {hi}")
        return v

    return parse


def percent(lo: int, hi: int) -> Parse:
    """An integer percentage from lo to hi, as a fraction (50: 0.5)."""
    whole = integer(lo, hi)

    def parse(raw: str, s: Setting) -> float:
        return float(whole(raw, s)) / 100

    return parse


def number(lo: float, hi: float) -> Parse:
    """A number from lo to hi."""

    def parse(raw: str, s: Setting) -> float:
        try:
            v = float(raw)
        except ValueError:
            v = math.nan
        if not lo <= v <= hi:
            raise UsageError(f"{s.label} {raw!r}: expected a number from {lo} to {hi}")
        return v

    return parse


def boolean(raw: str, s: Setting) -> bool:
    """1 or 0 (also true/false, yes/no, on/off; empty is 0)."""
    word = raw.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off", ""}:
        return False
    raise UsageError(f"{s.label} {raw!r}: expected 1 or 0")


def networks(raw: str, s: Setting) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR blocks, as networks (`10.0.0.1/32`)."""
    out = []
    for item in raw.split(","):
        part = item.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise UsageError(f"{s.label}: {part!r} is no IP address or CIDR block") from None
    return tuple(out)


def http_url(raw: str, s: Setting) -> str:
    """An http(s) URL without query or fragment, kept without its trailing slash."""
    url = raw.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"{s.label} {url!r}: expected an http:// or https:// URL")
    return url.rstrip("/")


def stream_name(raw: str, s: Setting) -> str:
    """A NATS stream name: letters, digits, `-` and `_` (it is also the subject prefix)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", raw):
        raise UsageError(f"{s.label} {raw!r}: expected 1 to 64 letters, digits, '-' or '_'")
    return raw


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "db",
        "OUTAGEWATCH_DB",
        "--db",
        "./outagewatch.db",
        or_default,
        "SQLite path or postgresql:// URL",
    ),
    Setting(
        "catalog",
        "OUTAGEWATCH_CATALOG",
        "--catalog",
        "",
        or_none,
        "catalog TOML file; default: the catalog stored in the database, else the demo catalog",
    ),
    Setting(
        "pipeline.dedup_window_s",
        "OUTAGEWATCH_DEDUP_WINDOW_S",
        "--dedup-window-s",
        "900",
        integer(0, 86_400),
        "seconds within which one person's reports for a service count once",
    ),
    Setting(
        "pipeline.lateness_s",
        "OUTAGEWATCH_LATENESS_S",
        "--lateness-s",
        "300",
        integer(0, 3_600),
        "seconds an event may arrive late and still count as on time",
    ),
    Setting(
        "pipeline.false_alarm_budget",
        "OUTAGEWATCH_FALSE_ALARM_BUDGET",
        "--false-alarm-budget",
        "1",
        number(0, 1_000),
        "false incidents per 1,000 service-days the sequential surge test may open on ordinary "
        "traffic (sets its threshold; 0 turns it off, leaving the window test)",
    ),
    Setting(
        "pipeline.max_ahead_s",
        "OUTAGEWATCH_MAX_AHEAD_S",
        "--max-ahead-s",
        "900",
        integer(60, 7 * 86_400),
        "seconds a report may be ahead of the stream's time (what the other reports say); "
        "further ahead it is rejected, and nearer it waits for the stream to get there",
    ),
    Setting(
        "pipeline.clock_skew_s",
        "OUTAGEWATCH_CLOCK_SKEW_S",
        "--clock-skew-s",
        "3600",
        integer(0, 86_400),
        "seconds an event's time may be ahead of the server's clock (serve, worker); the "
        "server's time never runs further ahead of its clock than this either",
    ),
    Setting(
        "token",
        "OUTAGEWATCH_TOKEN",
        "--token",
        "",
        text,
        "the bootstrap admin bearer token (scope admin: everything, including making scoped "
        "tokens with POST /api/v1/tokens; empty: only tokens made before work)",
    ),
    Setting(
        "allow_private_targets",
        "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS",
        "--allow-private-targets",
        "0",
        boolean,
        "1 lets probes, status pages and webhooks reach loopback and private addresses",
    ),
    Setting(
        "trusted_proxies",
        "OUTAGEWATCH_TRUSTED_PROXIES",
        "--trusted-proxies",
        "",
        networks,
        "comma-separated addresses or CIDR blocks of reverse proxies whose X-Forwarded-For "
        "names the client of POST /reports (empty: the peer address is the client)",
    ),
    Setting(
        "rate_per_ip",
        "OUTAGEWATCH_RATE_PER_IP",
        "--rate-per-ip",
        "60",
        integer(0, 1_000_000),
        "public reports per minute one address may post (a token bucket; 0: no limit)",
    ),
    Setting(
        "rate_per_block",
        "OUTAGEWATCH_RATE_PER_BLOCK",
        "--rate-per-block",
        "600",
        integer(1, 100_000_000),
        "public reports per minute one /24 (IPv4) or /48 (IPv6) block may post",
    ),
    Setting(
        "nats_url",
        "OUTAGEWATCH_NATS_URL",
        "--nats-url",
        "",
        or_none,
        "nats:// URL of a NATS JetStream server: selects the NATS bus (empty: in-process bus)",
    ),
    Setting(
        "stream",
        "OUTAGEWATCH_STREAM",
        "--stream",
        "outagewatch",
        stream_name,
        "name of the JetStream stream of accepted events (its subjects are STREAM.PARTITION)",
    ),
    Setting(
        "partitions",
        "OUTAGEWATCH_PARTITIONS",
        "--partitions",
        "8",
        integer(1, 1024),
        "number of partitions of the stream (services are spread over them by a stable hash); "
        "the same on every API node and worker",
    ),
    Setting(
        "worker_id",
        "OUTAGEWATCH_WORKER_ID",
        "--worker-id",
        "",
        stripped,
        "name of this worker in partition leases (empty: host name, process id and a random "
        "suffix)",
    ),
    Setting(
        "lease_ttl_s",
        "OUTAGEWATCH_LEASE_TTL_S",
        "--lease-ttl-s",
        "10",
        integer(2, 25),
        "seconds a worker's partition lease (and the API nodes' leader lease) lasts without "
        "renewal: a dead worker's partitions (a dead leader's probes and alerts) are taken "
        "over after at most this long",
    ),
    # Probes and alerts (issue 6).
    Setting(
        "probe_concurrency",
        "OUTAGEWATCH_PROBE_CONCURRENCY",
        "--probe-concurrency",
        "20",
        integer(1, 1000),
        "probes (and status page polls) that may run at the same time",
    ),
    Setting(
        "pipeline.probe_quorum",
        "OUTAGEWATCH_PROBE_QUORUM",
        "--probe-quorum",
        "2",
        integer(1, 100),
        "vantages whose public probes must fail for an incident without reports (a lone "
        "vantage suffices only when it is the only one reporting)",
    ),
    Setting(
        "pipeline.probe_quorum_fraction",
        "OUTAGEWATCH_PROBE_QUORUM_PERCENT",
        "--probe-quorum-percent",
        "50",
        percent(1, 100),
        "...and at least this percentage of the vantages that reported in the last 3 intervals",
    ),
    Setting(
        "pipeline.probe_fail_checks",
        "OUTAGEWATCH_PROBE_FAIL_CHECKS",
        "--probe-fail-checks",
        "2",
        integer(1, 100),
        "consecutive failed checks from each of those vantages that open the incident (as many "
        "good ones resolve it)",
    ),
    Setting(
        "smtp_host",
        "OUTAGEWATCH_SMTP_HOST",
        "--smtp-host",
        "",
        stripped,
        "SMTP server for email alerts (empty: email alerts are off)",
    ),
    Setting(
        "smtp_port",
        "OUTAGEWATCH_SMTP_PORT",
        "--smtp-port",
        "587",
        integer(1, 65_535),
        "SMTP server port",
    ),
    Setting(
        "smtp_user",
        "OUTAGEWATCH_SMTP_USER",
        "--smtp-user",
        "",
        text,
        "SMTP user name (empty: no login)",
    ),
    Setting(
        "smtp_password",
        "OUTAGEWATCH_SMTP_PASSWORD",
        "--smtp-password",
        "",
        text,
        "SMTP password (prefer the environment variable: flags show in process lists)",
    ),
    Setting(
        "smtp_from",
        "OUTAGEWATCH_SMTP_FROM",
        "--smtp-from",
        "outagewatch@localhost",
        stripped_or_default,
        "sender address of email alerts",
    ),
    Setting(
        "smtp_starttls",
        "OUTAGEWATCH_SMTP_STARTTLS",
        "--smtp-starttls",
        "1",
        boolean,
        "1 requires STARTTLS (with a verified certificate) before login and sending; 0 sends in "
        "clear text",
    ),
    Setting(
        "alert_max_attempts",
        "OUTAGEWATCH_ALERT_MAX_ATTEMPTS",
        "--alert-max-attempts",
        "8",
        integer(1, 100),
        "attempts to deliver one alert before it is logged as failed",
    ),
    Setting(
        "alert_backoff_s",
        "OUTAGEWATCH_ALERT_BACKOFF_S",
        "--alert-backoff-s",
        "10",
        integer(1, 3_600),
        "seconds before the first retry of an alert; each further retry waits twice as long "
        "(at most an hour)",
    ),
    # Visitors' email subscriptions and the admin page (issue 19).
    Setting(
        "public_url",
        "OUTAGEWATCH_PUBLIC_URL",
        "--public-url",
        "",
        http_url,
        "the server's public address (https://status.example.org), for the links in emails; "
        "visitors' email subscriptions need it and the SMTP settings (empty: they are off); "
        "https:// also marks the admin session cookie Secure",
    ),
    # History retention (issue 20).
    Setting(
        "minute_days",
        "OUTAGEWATCH_MINUTE_DAYS",
        "--minute-days",
        "30",
        integer(1, 36_500),
        "days of report counts kept at minute detail; older days are kept in 15-minute buckets",
    ),
    Setting(
        "rollup_days",
        "OUTAGEWATCH_ROLLUP_DAYS",
        "--rollup-days",
        "395",
        integer(1, 36_500),
        "days of report counts kept in 15-minute buckets (at least --minute-days); older "
        "days are kept in hourly buckets, forever",
    ),
)


@dataclass(frozen=True)
class Settings:
    """What the edges read. `resolve` fills each field from the setting of `SETTINGS` that
    names it (its flag, variable, default and meaning are there)."""

    db: str
    catalog: str | None
    pipeline: PipelineSettings
    token: str
    allow_private_targets: bool
    trusted_proxies: tuple[str, ...]
    rate_per_ip: int
    rate_per_block: int
    nats_url: str | None
    stream: str
    partitions: int
    worker_id: str
    lease_ttl_s: int
    probe_concurrency: int
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str = field(repr=False)  # never in logs
    smtp_from: str
    smtp_starttls: bool
    alert_max_attempts: int
    alert_backoff_s: int
    public_url: str
    minute_days: int
    rollup_days: int

    @classmethod
    def resolve(
        cls, flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Flags (keyed by env name) win over the environment, which wins over defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}  # by the field filled
        for s in SETTINGS:
            flag = flags.get(s.env)
            values[s.fills] = s.parse(flag if flag is not None else env.get(s.env, s.default), s)
        if values["rollup_days"] < values["minute_days"]:
            raise UsageError(
                f"--rollup-days / OUTAGEWATCH_ROLLUP_DAYS {values['rollup_days']}: expected at "
                f"least --minute-days ({values['minute_days']})"
            )
        core = {k.removeprefix(PIPELINE): v for k, v in values.items() if k.startswith(PIPELINE)}
        edges = {k: v for k, v in values.items() if not k.startswith(PIPELINE)}
        return cls(pipeline=PipelineSettings(**core), **edges)


def shown_db(db: str) -> str:
    """The database setting as it may be shown in logs and messages: a URL's password is
    replaced by `***` (`postgresql://ow:***@db/ow`)."""
    parts = urlsplit(db)
    if not parts.scheme or parts.password is None:
        return db
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}:***@" if parts.username is not None else ":***@"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))
