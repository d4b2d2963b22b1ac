"""Which event times are accepted (contract §2: RFC 3339 with `Z` or an offset, or epoch
seconds), and why a refused one was refused."""

from __future__ import annotations

import pytest

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder, epoch_of, parse_time, parse_ts

CATALOG = Catalog.demo()


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-10T08:45:00Z",
        "2025-03-10T08:45:00.250Z",
        "2025-03-10T09:45:00+01:00",
        "2025-03-10t08:45:00z",
        "2025-03-10 08:45:00Z",
    ],
)
def test_rfc3339_forms_are_accepted(text: str) -> None:
    assert parse_ts(text) == pytest.approx(1741596300.0, abs=1)


@pytest.mark.parametrize(
    "text",
    [
        "20250310T084500Z",  # ISO 8601 basic format
        "2025-W11-1T08:45:00Z",  # week date
        "2025-03-10T08:45Z",  # no seconds
        "2025-03-10T08:45:00",  # no offset
        "2025-03-10T08:45:00+0100",  # offset without a colon
        "2025-03-10",
        "1741596300",  # epoch seconds must be a number, not text
    ],
)
def test_other_iso_forms_are_refused(text: str) -> None:
    assert parse_ts(text) is None


def test_parse_time_names_the_text_and_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"^'2025-03-10T08:45Z' is not a time: expected RFC 3339"):
        parse_time("2025-03-10T08:45Z")
    with pytest.raises(ValueError, match=r"month must be in 1\.\.12"):
        parse_time("2025-13-10T08:45:00Z")
    with pytest.raises(ValueError, match="is not a time: expected RFC 3339"):
        epoch_of("2025-03-10")  # incident documents: RFC 3339 only, as the decoder
    assert parse_time("2025-03-10t09:45:00+01:00") == 1741596300.0


def test_typed_times_take_other_iso_forms_and_naive_ones_as_utc_on_request() -> None:
    """The command line's --since/--until and the simulator's --start."""
    assert parse_time("2025-03-10", forms="iso8601", naive_utc=True) == 1741564800.0
    assert parse_time("20250310T084500", forms="iso8601", naive_utc=True) == 1741596300.0
    assert parse_time("2025-03-10T09:45+01:00", forms="iso8601") == 1741596300.0
    with pytest.raises(ValueError, match="has no `Z` or offset"):
        parse_time("2025-03-10T08:45", forms="iso8601")
    with pytest.raises(ValueError, match="expected an ISO 8601 time"):
        parse_time("yesterday", forms="iso8601", naive_utc=True)


def _reason(ts: str, max_ts: float = 2e9, means: str = "") -> str:
    line = f'{{"type":"report","service":"x","ts":{ts},"country":"US"}}'.encode()
    d = EventDecoder(CATALOG, max_ts=max_ts, max_ts_means=means).decode([line])
    assert len(d.reports) == 0
    [r] = d.rejected
    assert r.reason == "bad time"
    return r.detail


def test_rejections_say_why() -> None:
    assert "is not a time: expected RFC 3339" in _reason('"20250310T084500Z"')
    assert "is not a time" in _reason('"2025-W11-1T08:45:00Z"')
    assert "is too old: times before 2000-01-01T00:00:00Z" in _reason("946684000")
    far = _reason('"2025-03-12T08:45:00Z"', max_ts=1741596300.0, means="a day ahead of this clock")
    assert "is too far ahead: after 2025-03-10T08:45:00Z, the latest time accepted" in far
    assert "(a day ahead of this clock)" in far
    assert "no valid time" not in far
