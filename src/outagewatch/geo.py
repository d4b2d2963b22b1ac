"""Countries: ISO 3166-1 alpha-2 codes, normalisation, a typical UTC offset and public holidays.

The offsets are the standard-time offset of where most of a country's people live; they
only decide which local calendar day (weekday, weekend, holiday) a minute belongs to.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

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


@lru_cache(maxsize=4096)
def _holiday_table(country: str, year: int) -> frozenset[dt.date]:
    import holidays  # imported lazily: building a country's calendar is not free

    try:
        cal = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        return frozenset()
    return frozenset(cal.keys())


def is_holiday(country: str, day: dt.date) -> bool:
    """Whether `day` is a public holiday in `country` (national holidays only)."""
    return day in _holiday_table(country, day.year)
