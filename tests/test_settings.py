"""Settings: flags win over the environment, which wins over defaults; bad values are loud."""

from __future__ import annotations

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
    ],
)
def test_bad_values_name_flag_and_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.resolve({}, {name: value})
    flag = next(s.flag for s in SETTINGS if s.env == name)
    assert flag in str(info.value) and name in str(info.value) and words in str(info.value)


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
