"""Every setting of outagewatch, in one place.

`PipelineSettings` tunes the pure pipeline core (it is handed in; the core reads nothing).
`Settings` is what the edges read from flags and the environment (flags win), parsed
strictly: a bad value is a `UsageError` that names the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Setting:
    env: str
    flag: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("OUTAGEWATCH_DB", "--db", "./outagewatch.db", "SQLite path or postgresql:// URL"),
    Setting(
        "OUTAGEWATCH_CATALOG",
        "--catalog",
        "",
        "catalog TOML file; default: the catalog stored in the database, else the demo catalog",
    ),
    Setting(
        "OUTAGEWATCH_DEDUP_WINDOW_S",
        "--dedup-window-s",
        "900",
        "seconds within which one person's reports for a service count once",
    ),
    Setting(
        "OUTAGEWATCH_LATENESS_S",
        "--lateness-s",
        "300",
        "seconds an event may arrive late and still count as on time",
    ),
    Setting(
        "OUTAGEWATCH_FALSE_ALARM_BUDGET",
        "--false-alarm-budget",
        "1",
        "false incidents per 1,000 service-days the sequential surge test may open on ordinary "
        "traffic (sets its threshold; 0 turns it off, leaving the window test)",
    ),
    Setting(
        "OUTAGEWATCH_MAX_AHEAD_S",
        "--max-ahead-s",
        "900",
        "seconds a report may be ahead of the stream's time (what the other reports say); "
        "further ahead it is rejected, and nearer it waits for the stream to get there",
    ),
    Setting(
        "OUTAGEWATCH_CLOCK_SKEW_S",
        "--clock-skew-s",
        "3600",
        "seconds an event's time may be ahead of the server's clock (serve, worker); the "
        "server's time never runs further ahead of its clock than this either",
    ),
    Setting(
        "OUTAGEWATCH_TOKEN",
        "--token",
        "",
        "the bootstrap admin bearer token (scope admin: everything, including making scoped "
        "tokens with POST /api/v1/tokens; empty: only tokens made before work)",
    ),
    Setting(
        "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS",
        "--allow-private-targets",
        "0",
        "1 lets probes, status pages and webhooks reach loopback and private addresses",
    ),
    Setting(
        "OUTAGEWATCH_TRUSTED_PROXIES",
        "--trusted-proxies",
        "",
        "comma-separated addresses or CIDR blocks of reverse proxies whose X-Forwarded-For "
        "names the client of POST /reports (empty: the peer address is the client)",
    ),
    Setting(
        "OUTAGEWATCH_RATE_PER_IP",
        "--rate-per-ip",
        "60",
        "public reports per minute one address may post (a token bucket; 0: no limit)",
    ),
    Setting(
        "OUTAGEWATCH_RATE_PER_BLOCK",
        "--rate-per-block",
        "600",
        "public reports per minute one /24 (IPv4) or /48 (IPv6) block may post",
    ),
    Setting(
        "OUTAGEWATCH_NATS_URL",
        "--nats-url",
        "",
        "nats:// URL of a NATS JetStream server: selects the NATS bus (empty: in-process bus)",
    ),
    Setting(
        "OUTAGEWATCH_STREAM",
        "--stream",
        "outagewatch",
        "name of the JetStream stream of accepted events (its subjects are STREAM.PARTITION)",
    ),
    Setting(
        "OUTAGEWATCH_PARTITIONS",
        "--partitions",
        "8",
        "number of partitions of the stream (services are spread over them by a stable hash); "
        "the same on every API node and worker",
    ),
    Setting(
        "OUTAGEWATCH_WORKER_ID",
        "--worker-id",
        "",
        "name of this worker in partition leases (empty: host name, process id and a random "
        "suffix)",
    ),
    Setting(
        "OUTAGEWATCH_LEASE_TTL_S",
        "--lease-ttl-s",
        "10",
        "seconds a worker's partition lease (and the API nodes' leader lease) lasts without "
        "renewal: a dead worker's partitions (a dead leader's probes and alerts) are taken "
        "over after at most this long",
    ),
    # Probes and alerts (issue 6).
    Setting(
        "OUTAGEWATCH_PROBE_CONCURRENCY",
        "--probe-concurrency",
        "20",
        "probes (and status page polls) that may run at the same time",
    ),
    Setting(
        "OUTAGEWATCH_PROBE_QUORUM",
        "--probe-quorum",
        "2",
        "vantages whose public probes must fail for an incident without reports (a lone "
        "vantage suffices only when it is the only one reporting)",
    ),
    Setting(
        "OUTAGEWATCH_PROBE_QUORUM_PERCENT",
        "--probe-quorum-percent",
        "50",
        "...and at least this percentage of the vantages that reported in the last 3 intervals",
    ),
    Setting(
        "OUTAGEWATCH_PROBE_FAIL_CHECKS",
        "--probe-fail-checks",
        "2",
        "consecutive failed checks from each of those vantages that open the incident (as many "
        "good ones resolve it)",
    ),
    Setting(
        "OUTAGEWATCH_SMTP_HOST",
        "--smtp-host",
        "",
        "SMTP server for email alerts (empty: email alerts are off)",
    ),
    Setting("OUTAGEWATCH_SMTP_PORT", "--smtp-port", "587", "SMTP server port"),
    Setting("OUTAGEWATCH_SMTP_USER", "--smtp-user", "", "SMTP user name (empty: no login)"),
    Setting(
        "OUTAGEWATCH_SMTP_PASSWORD",
        "--smtp-password",
        "",
        "SMTP password (prefer the environment variable: flags show in process lists)",
    ),
    Setting(
        "OUTAGEWATCH_SMTP_FROM",
        "--smtp-from",
        "outagewatch@localhost",
        "sender address of email alerts",
    ),
    Setting(
        "OUTAGEWATCH_SMTP_STARTTLS",
        "--smtp-starttls",
        "1",
        "1 requires STARTTLS (with a verified certificate) before login and sending; 0 sends in "
        "clear text",
    ),
    Setting(
        "OUTAGEWATCH_ALERT_MAX_ATTEMPTS",
        "--alert-max-attempts",
        "8",
        "attempts to deliver one alert before it is logged as failed",
    ),
    Setting(
        "OUTAGEWATCH_ALERT_BACKOFF_S",
        "--alert-backoff-s",
        "10",
        "seconds before the first retry of an alert; each further retry waits twice as long "
        "(at most an hour)",
    ),
    # Visitors' email subscriptions and the admin page (issue 19).
    Setting(
        "OUTAGEWATCH_PUBLIC_URL",
        "--public-url",
        "",
        "the server's public address (https://status.example.org), for the links in emails; "
        "visitors' email subscriptions need it and the SMTP settings (empty: they are off); "
        "https:// also marks the admin session cookie Secure",
    ),
    # History retention (issue 20).
    Setting(
        "OUTAGEWATCH_MINUTE_DAYS",
        "--minute-days",
        "30",
        "days of report counts kept at minute detail; older days are kept in 15-minute buckets",
    ),
    Setting(
        "OUTAGEWATCH_ROLLUP_DAYS",
        "--rollup-days",
        "395",
        "days of report counts kept in 15-minute buckets (at least --minute-days); older "
        "days are kept in hourly buckets, forever",
    ),
)


@dataclass(frozen=True)
class Settings:
    db: str
    catalog: str | None
    pipeline: PipelineSettings
    token: str = ""
    allow_private_targets: bool = False
    nats_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    rate_per_ip: int = 60
    rate_per_block: int = 600
    stream: str = "outagewatch"
    partitions: int = 8
    worker_id: str = ""
    lease_ttl_s: int = 10
    probe_concurrency: int = 20
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)  # never in logs
    smtp_from: str = "outagewatch@localhost"
    smtp_starttls: bool = True
    alert_max_attempts: int = 8
    alert_backoff_s: int = 10
    minute_days: int = 30
    rollup_days: int = 395
    public_url: str = ""

    @classmethod
    def resolve(
        cls, flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Flags (keyed by env name) win over the environment, which wins over defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for s in SETTINGS:
            flag = flags.get(s.env)
            values[s.env] = flag if flag is not None else env.get(s.env, s.default)
        pipeline = PipelineSettings(
            dedup_window_s=_int(values, "OUTAGEWATCH_DEDUP_WINDOW_S", 0, 86_400),
            lateness_s=_int(values, "OUTAGEWATCH_LATENESS_S", 0, 3_600),
            false_alarm_budget=_budget(values, "OUTAGEWATCH_FALSE_ALARM_BUDGET"),
            max_ahead_s=_int(values, "OUTAGEWATCH_MAX_AHEAD_S", 60, 7 * 86_400),
            clock_skew_s=_int(values, "OUTAGEWATCH_CLOCK_SKEW_S", 0, 86_400),
            probe_quorum=_int(values, "OUTAGEWATCH_PROBE_QUORUM", 1, 100),
            probe_quorum_fraction=_int(values, "OUTAGEWATCH_PROBE_QUORUM_PERCENT", 1, 100) / 100,
            probe_fail_checks=_int(values, "OUTAGEWATCH_PROBE_FAIL_CHECKS", 1, 100),
        )
        minute_days = _int(values, "OUTAGEWATCH_MINUTE_DAYS", 1, 36_500)
        rollup_days = _int(values, "OUTAGEWATCH_ROLLUP_DAYS", 1, 36_500)
        if rollup_days < minute_days:
            raise UsageError(
                f"--rollup-days / OUTAGEWATCH_ROLLUP_DAYS {rollup_days}: expected at least "
                f"--minute-days ({minute_days})"
            )
        return cls(
            db=values["OUTAGEWATCH_DB"] or "./outagewatch.db",
            catalog=values["OUTAGEWATCH_CATALOG"] or None,
            pipeline=pipeline,
            token=values["OUTAGEWATCH_TOKEN"],
            allow_private_targets=_bool(values, "OUTAGEWATCH_ALLOW_PRIVATE_TARGETS"),
            nats_url=values["OUTAGEWATCH_NATS_URL"] or None,
            trusted_proxies=_networks(values, "OUTAGEWATCH_TRUSTED_PROXIES"),
            rate_per_ip=_int(values, "OUTAGEWATCH_RATE_PER_IP", 0, 1_000_000),
            rate_per_block=_int(values, "OUTAGEWATCH_RATE_PER_BLOCK", 1, 100_000_000),
            stream=_name(values, "OUTAGEWATCH_STREAM"),
            partitions=_int(values, "OUTAGEWATCH_PARTITIONS", 1, 1024),
            worker_id=values["OUTAGEWATCH_WORKER_ID"].strip(),
            lease_ttl_s=_int(values, "OUTAGEWATCH_LEASE_TTL_S", 2, 25),
            probe_concurrency=_int(values, "OUTAGEWATCH_PROBE_CONCURRENCY", 1, 1000),
            smtp_host=values["OUTAGEWATCH_SMTP_HOST"].strip(),
            smtp_port=_int(values, "OUTAGEWATCH_SMTP_PORT", 1, 65_535),
            smtp_user=values["OUTAGEWATCH_SMTP_USER"],
            smtp_password=values["OUTAGEWATCH_SMTP_PASSWORD"],
            smtp_from=values["OUTAGEWATCH_SMTP_FROM"].strip() or "outagewatch@localhost",
            smtp_starttls=_bool(values, "OUTAGEWATCH_SMTP_STARTTLS"),
            alert_max_attempts=_int(values, "OUTAGEWATCH_ALERT_MAX_ATTEMPTS", 1, 100),
            alert_backoff_s=_int(values, "OUTAGEWATCH_ALERT_BACKOFF_S", 1, 3_600),
            minute_days=minute_days,
            rollup_days=rollup_days,
            public_url=_public_url(values, "OUTAGEWATCH_PUBLIC_URL"),
        )


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


def _budget(values: Mapping[str, str], name: str) -> float:
    raw = values[name]
    flag = next(s.flag for s in SETTINGS if s.env == name)
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not 0 <= v <= 1_000:
        raise UsageError(f"{flag} / {name} {raw!r}: expected a number from 0 to 1000")
    return v


def _int(values: Mapping[str, str], name: str, lo: int, hi: int) -> int:
    raw = values[name]
    flag = next(s.flag for s in SETTINGS if s.env == name)
    try:
        v = int(raw)
    except ValueError:
        raise UsageError(f"{flag} / {name} {raw!r}: expected an integer") from None
    if not lo <= v <= hi:
        raise UsageError(f"{flag} / {name} {raw!r}: expected an integer from {lo} to {hi}")
    return v


def _bool(values: Mapping[str, str], name: str) -> bool:
    raw = values[name].strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    flag = next(s.flag for s in SETTINGS if s.env == name)
    raise UsageError(f"{flag} / {name} {values[name]!r}: expected 1 or 0")


def _networks(values: Mapping[str, str], name: str) -> tuple[str, ...]:
    flag = next(s.flag for s in SETTINGS if s.env == name)
    out = []
    for raw in values[name].split(","):
        part = raw.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise UsageError(f"{flag} / {name}: {part!r} is no IP address or CIDR block") from None
    return tuple(out)


def _public_url(values: Mapping[str, str], name: str) -> str:
    """An http(s) URL without query or fragment, kept without its trailing slash."""
    raw = values[name].strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        flag = next(s.flag for s in SETTINGS if s.env == name)
        raise UsageError(f"{flag} / {name} {raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def _name(values: Mapping[str, str], name: str) -> str:
    """A NATS stream name: letters, digits, `-` and `_` (it is also the subject prefix)."""
    raw = values[name]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", raw):
        flag = next(s.flag for s in SETTINGS if s.env == name)
        raise UsageError(f"{flag} / {name} {raw!r}: expected 1 to 64 letters, digits, '-' or '_'")
    return raw
