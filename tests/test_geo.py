"""Countries' public holidays: the table written at install (geo.write_holiday_table) says
exactly what the `holidays` package says, and is not used when it could be wrong."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from outagewatch import geo


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A table of three years, written to a temporary file and read from it."""
    path = tmp_path / "holiday-table.npz"
    monkeypatch.setattr(geo, "TABLE_YEARS", (2024, 2026))
    monkeypatch.setattr(geo, "holiday_table_path", lambda: path)
    geo.holiday_table.cache_clear()
    geo._holiday_table.cache_clear()
    yield path
    geo.holiday_table.cache_clear()
    geo._holiday_table.cache_clear()


def from_package(country: str, year: int) -> frozenset[dt.date]:
    return frozenset(geo._computed(country, range(year, year + 1)))


def test_the_table_says_what_the_holidays_package_says(table: Path) -> None:
    assert geo.holiday_table() is None  # none written yet: the package answers
    assert geo.write_holiday_table() > 1000
    geo.holiday_table.cache_clear()
    got = geo.holiday_table()
    assert got is not None and set(got) == geo.COUNTRIES
    assert len(got["US"]) >= 3 * 10 and len(got["BV"]) == 0  # no calendar: none
    for country in sorted(geo.COUNTRIES):
        for year in (2024, 2025, 2026):
            assert geo._holiday_table(country, year) == from_package(country, year), (country, year)
    assert geo.is_holiday("US", dt.date(2025, 7, 4))
    assert not geo.is_holiday("US", dt.date(2025, 7, 5))
    # A year the table does not hold is asked of the package.
    assert geo._holiday_table("FR", 2031) == from_package("FR", 2031)
    assert dt.date(2031, 7, 14) in geo._holiday_table("FR", 2031)


def test_a_table_from_another_holidays_release_is_not_used(
    table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    geo.write_holiday_table()
    with np.load(table) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["days"][:] = 0  # what an older release might have said, under its own stamp
    arrays["stamp"] = np.array("another release")
    with open(table, "wb") as f:
        np.savez(f, **arrays)
    geo.holiday_table.cache_clear()
    assert geo.holiday_table() is None
    assert geo.is_holiday("FR", dt.date(2025, 7, 14))


def test_a_damaged_table_is_not_used(table: Path) -> None:
    table.write_bytes(b"not a table")
    assert geo.holiday_table() is None
    assert geo.is_holiday("GB", dt.date(2025, 12, 25))
