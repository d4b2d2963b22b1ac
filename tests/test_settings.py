"""Settings: flags win over the environment, which wins over defaults; bad values are loud."""

from __future__ import annotations

import dataclasses

import pytest

from outagewatch.errors import UsageError
from outagewatch.settings import SETTINGS, PipelineSettings, Settings, shown_db


def test_precedence_flag_environment_default() -> None:
    env = {"OUTAGEWATCH_DB": "/env.db", "OUTAGEWATCH_LATENESS_S": "120"}
    s = Settings.resolve({"OUTAGEWATCH_DB": "/flag.db"}, env)
    assert s.db == "/flag.db"
    assert s.pipeline.lateness_s == 120
    assert s.pipeline.dedup_window_s == 900
    assert s.catalog is None
    d = Settings.resolve({}, {})
    assert d.db == "./outagewatch.db" and d.pipeline == PipelineSettings()


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("OUTAGEWATCH_LATENESS_S", "soon", "expected an integer"),
        ("OUTAGEWATCH_LATENESS_S", "-1", "from 0 to 3600"),
        ("OUTAGEWATCH_DEDUP_WINDOW_S", "100000", "from 0 to 86400"),
        ("OUTAGEWATCH_PROBE_QUORUM_PERCENT", "0", "expected an integer from 1 to 100"),
        ("OUTAGEWATCH_FALSE_ALARM_BUDGET", "nan", "expected a number from 0 to 1000"),
        ("OUTAGEWATCH_SMTP_STARTTLS", "maybe", "expected 1 or 0"),
        ("OUTAGEWATCH_TRUSTED_PROXIES", "10.0.0.1,proxy", "'proxy' is no IP address"),
        ("OUTAGEWATCH_PUBLIC_URL", "ftp://example.org", "expected an http:// or https:// URL"),
        ("OUTAGEWATCH_STREAM", "a.b", "expected 1 to 64 letters, digits, '-' or '_'"),
    ],
)
def test_bad_values_name_flag_and_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.resolve({}, {name: value})
    flag = next(s.flag for s in SETTINGS if s.env == name)
    assert flag in str(info.value) and name in str(info.value) and words in str(info.value)


def test_values_are_parsed_into_their_fields() -> None:
    s = Settings.resolve(
        {"OUTAGEWATCH_PROBE_QUORUM_PERCENT": "75", "OUTAGEWATCH_SMTP_FROM": "  "},
        {"OUTAGEWATCH_TRUSTED_PROXIES": "10.0.0.1, ::1", "OUTAGEWATCH_SMTP_STARTTLS": "off"},
    )
    assert s.pipeline.probe_quorum_fraction == 0.75
    assert s.smtp_from == "outagewatch@localhost" and s.smtp_starttls is False
    assert s.trusted_proxies == ("10.0.0.1/32", "::1/128")


def test_rollup_days_cover_minute_days() -> None:
    with pytest.raises(UsageError) as info:
        Settings.resolve({"OUTAGEWATCH_ROLLUP_DAYS": "10"}, {"OUTAGEWATCH_MINUTE_DAYS": "20"})
    assert str(info.value) == (
        "--rollup-days / OUTAGEWATCH_ROLLUP_DAYS 10: expected at least --minute-days (20)"
    )


def test_each_setting_fills_one_field_of_its_own() -> None:
    """Declared once: every field of Settings (but `pipeline`) is filled by exactly one
    setting, and a `pipeline.x` one names a field of PipelineSettings."""
    fills = [s.fills for s in SETTINGS]
    assert len(fills) == len(set(fills))
    edges = {f.name for f in dataclasses.fields(Settings)} - {"pipeline"}
    assert {f for f in fills if not f.startswith("pipeline.")} == edges
    core = {f.name for f in dataclasses.fields(PipelineSettings)}
    assert {f.removeprefix("pipeline.") for f in fills if f.startswith("pipeline.")} <= core


def test_pipeline_settings_are_checked() -> None:
    with pytest.raises(UsageError):
        PipelineSettings(ring_minutes=10)
    with pytest.raises(UsageError):
        PipelineSettings(alpha=0.9)


@pytest.mark.parametrize(
    ("db", "shown"),
    [
        ("outagewatch.db", "outagewatch.db"),
        ("postgresql://ow:s3cret@db.example:5432/ow", "postgresql://ow:***@db.example:5432/ow"),
        ("postgresql://ow@127.0.0.1/test", "postgresql://ow@127.0.0.1/test"),
        ("postgres://:pw@[::1]/x?sslmode=require", "postgres://:***@[::1]/x?sslmode=require"),
    ],
)
def test_a_database_password_is_never_shown(db: str, shown: str) -> None:
    assert shown_db(db) == shown
