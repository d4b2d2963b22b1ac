"""Countries: ISO 3166-1 alpha-2 codes, normalisation, a typical UTC offset and public holidays.

The offsets are the standard-time offset of where most of a country's people live; they
only decide which local calendar day (weekday, weekend, holiday) a minute belongs to.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# Officially assigned ISO 3166-1 alpha-2 codes (249), plus XK (Kosovo, user-assigned, in wide use).
_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
    "VN VU WF WS YE YT ZA ZM ZW XK"
)
COUNTRIES: frozenset[str] = frozenset(_CODES.split())
_EPOCH = dt.date(1970, 1, 1)
ALIASES = {"UK": "GB"}

# Standard-time offset in hours of the most populous part; unlisted countries use 0.
UTC_OFFSET_H: dict[str, float] = {
    "US": -6, "CA": -5, "MX": -6, "BR": -3, "AR": -3, "CL": -4, "CO": -5, "PE": -5, "VE": -4,
    "GB": 0, "IE": 0, "PT": 0, "IS": 0, "MA": 1, "NG": 1, "DZ": 1,
    "FR": 1, "DE": 1, "NL": 1, "BE": 1, "ES": 1, "IT": 1, "CH": 1, "AT": 1, "SE": 1, "NO": 1,
    "DK": 1, "PL": 1, "CZ": 1, "HU": 1, "SK": 1, "HR": 1, "RS": 1, "SI": 1, "LU": 1,
    "FI": 2, "GR": 2, "RO": 2, "BG": 2, "UA": 2, "EG": 2, "ZA": 2, "IL": 2, "LT": 2, "LV": 2,
    "EE": 2, "TR": 3, "RU": 3, "SA": 3, "KE": 3, "IQ": 3, "AE": 4, "IR": 3.5, "PK": 5,
    "IN": 5.5, "BD": 6, "TH": 7, "VN": 7, "ID": 7, "CN": 8, "HK": 8, "TW": 8, "SG": 8, "MY": 8,
    "PH": 8, "JP": 9, "KR": 9, "AU": 10, "NZ": 12,
}  # fmt: skip


def normalise_country(value: str) -> str | None:
    """The ISO code for `value` (case-insensitive; UK is GB), or None if it is no country."""
    if not value.isascii():
        return None
    code = value.upper()
    code = ALIASES.get(code, code)
    return code if code in COUNTRIES else None


def utc_offset_s(country: str) -> int:
    return int(UTC_OFFSET_H.get(country, 0) * 3600)


# Every country's public holidays of these years are kept in one small file beside the
# package's bytecode (`write_holiday_table`, run by `make install` through runtime.warm): a
# process then reads its calendars from it instead of importing the `holidays` package and
# one module per country (about 0.1 s of a replay's start-up).
TABLE_YEARS = (2000, 2060)


def holiday_table_path() -> Path:
    return Path(__file__).parent / "__pycache__" / "holiday-table.npz"


def _holidays_stamp() -> str:
    """What the table was computed from: the installed `holidays` package, by its file's
    path, size and time (a new release is new files). Cheap: no import of it."""
    spec = importlib.util.find_spec("holidays")
    if spec is None or spec.origin is None:
        return ""
    st = os.stat(spec.origin)
    return f"{spec.origin}:{st.st_size}:{st.st_mtime_ns}"


def _computed(country: str, years: range) -> list[dt.date]:
    """`country`'s national public holidays in `years` from the `holidays` package."""
    import holidays  # imported only when the table cannot say

    try:
        cal = holidays.country_holidays(country, years=years)
    except NotImplementedError:
        return []
    return [d for d in cal if d.year in years]


def write_holiday_table(path: Path | None = None) -> int:
    """Compute the holidays of every country and every year of TABLE_YEARS and write them
    to the table (atomically); returns the number of dates."""
    path = path or holiday_table_path()
    years = range(TABLE_YEARS[0], TABLE_YEARS[1] + 1)
    codes = sorted(COUNTRIES)
    days: list[int] = []
    start = [0]
    with warnings.catch_warnings():  # some calendars cover fewer years: they say so, once each
        warnings.simplefilter("ignore")
        for code in codes:
            days += sorted({(d - _EPOCH).days for d in _computed(code, years)})
            start.append(len(days))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        np.savez(
            f,
            codes=np.array(codes),
            start=np.array(start, np.int64),
            days=np.array(days, np.int32),
            years=np.array(TABLE_YEARS, np.int64),
            stamp=np.array(_holidays_stamp()),
        )
    os.replace(tmp, path)
    return len(days)


@lru_cache(maxsize=1)
def holiday_table() -> dict[str, NDArray[np.int32]] | None:
    """Each country's holidays (days since the epoch) from the table, or None when there
    is no table or it was computed from another `holidays` release."""
    try:
        with np.load(holiday_table_path()) as z:
            if str(z["stamp"]) != _holidays_stamp() or tuple(z["years"]) != TABLE_YEARS:
                return None
            start, days = z["start"], z["days"]
            return {str(c): days[start[i] : start[i + 1]] for i, c in enumerate(z["codes"])}
    except (OSError, KeyError, ValueError):
        return None


@lru_cache(maxsize=4096)
def _holiday_table(country: str, year: int) -> frozenset[dt.date]:
    table = holiday_table() if TABLE_YEARS[0] <= year <= TABLE_YEARS[1] else None
    if table is None or country not in table:
        return frozenset(_computed(country, range(year, year + 1)))
    days = table[country]
    lo, hi = (dt.date(year, 1, 1) - _EPOCH).days, (dt.date(year + 1, 1, 1) - _EPOCH).days
    return frozenset(_EPOCH + dt.timedelta(days=int(d)) for d in days[(days >= lo) & (days < hi)])


def is_holiday(country: str, day: dt.date) -> bool:
    """Whether `day` is a public holiday in `country` (national holidays only)."""
    return day in _holiday_table(country, day.year)
