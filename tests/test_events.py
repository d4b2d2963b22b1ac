"""Event decoding (contract §2): NDJSON lines against the demo catalog."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outagewatch.catalog import Catalog
from outagewatch.events import (
    MAX_COUNT,
    MIN_TS,
    Decoded,
    EventDecoder,
    ReportColumns,
    decode_lines,
    encode_report,
)
from outagewatch.geo import COUNTRIES

CATALOG = Catalog.demo()
T0 = 1_741_595_460.0  # 2025-03-10T08:31:00Z


def decode(*lines: bytes | str, first_line: int = 1) -> Decoded:
    raw = [ln.encode() if isinstance(ln, str) else ln for ln in lines]
    return EventDecoder(CATALOG).decode(raw, first_line)


def column(reports: ReportColumns, name: str) -> list[object]:
    """A column of accepted reports as a list (times, counts and lines are arrays)."""
    col = getattr(reports, name)
    return col.tolist() if hasattr(col, "tolist") else list(col)


def report(**fields: object) -> bytes:
    body: dict[str, object] = {"type": "report", "service": "x", "ts": T0, "country": "US"}
    body.update(fields)
    for k in [k for k, v in body.items() if v is ...]:
        del body[k]  # `...` removes a field
    return msgspec.json.encode(body)


def one_report(line: bytes) -> Decoded:
    d = decode(line)
    assert d.rejected == []
    assert len(d.reports) == 1
    return d


def one_rejection(line: bytes) -> tuple[int, str]:
    d = decode(line)
    assert len(d.reports) == 0
    assert d.others == []
    assert len(d.rejected) == 1
    r = d.rejected[0]
    assert r.detail
    return r.line, r.reason


# ---------------------------------------------------------------------- time
@pytest.mark.parametrize(
    "ts",
    [
        "2025-03-10T08:31:00Z",
        "2025-03-10T10:31:00+02:00",
        "2025-03-10T03:31:00-05:00",
        "2025-03-10T08:31:00.000Z",
        T0,
        int(T0),
    ],
)
def test_time_forms_give_the_same_epoch(ts: str | float) -> None:
    d = one_report(report(ts=ts))
    assert d.reports.ts.tolist() == [T0]


def test_fractional_epoch_is_kept() -> None:
    d = one_report(report(ts=T0 + 0.25))
    assert d.reports.ts.tolist() == [T0 + 0.25]


# ---------------------------------------------------------------------- report fields
@pytest.mark.parametrize(
    ("given_country", "code"),
    [("US", "US"), ("us", "US"), ("De", "DE"), ("UK", "GB"), ("uk", "GB"), ("gb", "GB")],
)
def test_country_is_case_insensitive_and_uk_is_gb(given_country: str, code: str) -> None:
    d = one_report(report(country=given_country))
    assert d.reports.country == [code]


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("spaces", "spaces"),
        ("login", "login"),
        ("streaming", "other"),  # a problem of another service
        ("nonsense", "other"),
        (None, "other"),
        (..., "other"),
        ("other", "other"),
    ],
)
def test_problem(problem: object, expected: str) -> None:
    d = one_report(report(problem=problem))
    assert d.reports.problem == [expected]


def test_problem_with_capitals_in_catalog_matches_exactly() -> None:
    cat = Catalog.from_toml('[services.a]\nproblems = ["App", "website"]\n', "c.toml")
    d = EventDecoder(cat).decode([report(service="a", problem="App")])
    assert d.reports.problem == ["App"]


@pytest.mark.parametrize(
    ("name", "sid"), [("x", "x"), ("Twitter", "x"), ("twitter", "x"), ("IG", "instagram")]
)
def test_service_alias_resolves_to_id(name: str, sid: str) -> None:
    d = one_report(report(service=name))
    assert d.reports.service == [sid]


@pytest.mark.parametrize(
    ("reporter", "ip", "person"),
    [
        ("dev-1", "10.0.0.1", "dev-1"),
        ("dev-1", ..., "dev-1"),
        (..., "10.0.0.1", "10.0.0.1"),
        (None, "10.0.0.1", "10.0.0.1"),
        (..., ..., None),
        (None, None, None),
        ("", "10.0.0.1", "10.0.0.1"),  # an empty reporter is no reporter
        ("", "", None),
    ],
)
def test_person_is_reporter_else_ip(reporter: object, ip: object, person: str | None) -> None:
    d = one_report(report(reporter=reporter, ip=ip))
    assert d.reports.person == [person]


def test_count_defaults_to_one_and_is_kept() -> None:
    d = decode(report(), report(count=250))
    assert d.rejected == []
    assert d.reports.count.tolist() == [1, 250]


def test_optional_fields_are_accepted() -> None:
    one_report(report(region="Bavaria", city="Munich", unknown_extra="ignored"))


# ---------------------------------------------------------------------- other event types
def test_probe_status_metric_land_in_others() -> None:
    d = decode(
        '{"type":"probe","service":"fb","ts":"2025-03-10T08:31:00Z","target":"https://fb.com/",'
        '"ok":false,"status":503,"latency_ms":12.5,"site":"primary","vantage":"eu"}',
        '{"type":"status","service":"Insta","ts":1741595460,"indicator":"major",'
        '"description":"Degraded","incident":"Feed errors"}',
        '{"type":"metric","service":"twitter","ts":"2025-03-10T09:31:00+01:00",'
        '"name":"error_rate","value":0.25}',
        '{"type":"metric","service":"x","ts":1741595460,"name":"made_up","value":3}',
    )
    assert d.rejected == []
    assert len(d.reports) == 0
    assert [(o.type, o.service, o.ts) for o in d.others] == [
        ("probe", "facebook", T0),
        ("status", "instagram", T0),
        ("metric", "x", T0),
        ("metric", "x", T0),
    ]
    probe = msgspec.json.decode(d.others[0].body)
    assert probe["service"] == "facebook"
    assert probe["ts"] == T0
    assert probe["ok"] is False
    assert probe["status"] == 503
    metric = msgspec.json.decode(d.others[2].body)
    assert metric == {
        "type": "metric",
        "service": "x",
        "ts": T0,
        "name": "error_rate",
        "value": 0.25,
    }


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"status","service":"x","ts":1741595460,"indicator":"down"}',
        '{"type":"probe","service":"x","ts":1741595460,"target":"https://x.com/"}',
        '{"type":"metric","service":"x","ts":1741595460,"name":"m","value":"high"}',
    ],
)
def test_bad_other_events_are_rejected(line: str) -> None:
    assert one_rejection(line.encode()) == (1, "bad field")


# ---------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b'{"type":"report",', "not JSON"),
        (report() + b" trailing", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b'{"type":"outage","service":"x","ts":1741595460}', "unknown type"),
        (b'{"service":"x","ts":1741595460,"country":"US"}', "unknown type"),
        (report(service="myspace"), "unknown service"),
        (report(service=""), "unknown service"),
        (report(country="ZZ"), "bad country"),
        (report(country="USA"), "bad country"),
        (report(country="United Kingdom"), "bad country"),
        (report(country=...), "bad country"),
        (report(ts="2025-03-10T08:31:00"), "bad time"),  # naive: no zone
        (report(ts="yesterday"), "bad time"),
        (report(ts=True), "bad time"),
        (report(ts=99.0), "bad time"),  # before 2000
        (report(ts=-1), "bad time"),
        (report(ts=1e15), "bad time"),  # milliseconds times 1000
        (report(ts=10**40), "bad time"),
        (report(ts="9999-12-31T23:59:59Z"), "bad time"),
        (report(ts=...), "bad time"),
        (report(count=0), "bad field"),
        (report(count=-3), "bad field"),
        (report(count=1.5), "bad field"),
        (report(service=...), "bad field"),
        (report(service=7), "bad field"),
    ],
)
def test_bad_line_reason(line: bytes, reason: str) -> None:
    assert one_rejection(line) == (1, reason)


def test_out_of_range_epoch_against_max_ts() -> None:
    dec = EventDecoder(CATALOG, max_ts=T0 + 60)
    d = dec.decode([report(ts=T0 + 60), report(ts=T0 + 61)])
    assert d.reports.ts.tolist() == [T0 + 60]
    assert [(r.line, r.reason) for r in d.rejected] == [(2, "bad time")]


@pytest.mark.parametrize("minute", ["1990-01-01T00:00", "2150-06-01T12:00"])
def test_every_line_of_an_out_of_range_minute_is_rejected(minute: str) -> None:
    dec = EventDecoder(CATALOG, max_ts=T0 + 86_400)
    d = dec.decode([report(ts=f"{minute}:{s:02d}Z") for s in (0, 1, 59)])
    assert len(d.reports) == 0, f"accepted {d.reports.ts}"
    assert sorted((r.line, r.reason) for r in d.rejected) == [
        (1, "bad time"),
        (2, "bad time"),
        (3, "bad time"),
    ]


def test_same_minute_in_range_is_accepted_every_time() -> None:
    dec = EventDecoder(CATALOG)
    d = dec.decode([report(ts=f"2025-03-10T08:31:{s:02d}Z") for s in (0, 1, 59, 7)])
    assert d.reports.ts.tolist() == [T0, T0 + 1, T0 + 59, T0 + 7]
    d2 = dec.decode([report(ts="2025-03-10T08:31:60Z"), report(ts="2025-03-10T08:31:0xZ")])
    assert len(d2.reports) == 0
    assert {r.reason for r in d2.rejected} == {"bad time"}


def test_time_validity_does_not_depend_on_earlier_lines() -> None:
    odd = report(ts="2025-03-10T08:31:\u0660\u0665Z")  # seconds in Arabic-Indic digits
    fresh = EventDecoder(CATALOG).decode([odd])
    assert [r.reason for r in fresh.rejected] == ["bad time"]
    warm = EventDecoder(CATALOG).decode([report(ts="2025-03-10T08:31:00Z"), odd])
    assert [(r.line, r.reason) for r in warm.rejected] == [(2, "bad time")]


def test_invalid_utf8_inside_a_string_is_rejected() -> None:
    d = decode(report(), b'{"type":"report","service":"\xff","ts":1741595460,"country":"US"}')
    assert len(d.reports) == 1
    assert [r.line for r in d.rejected] == [2]


def test_count_beyond_int64_is_rejected() -> None:
    assert one_rejection(report(count=2**64)) == (1, "bad field")


def test_non_ascii_country_is_rejected() -> None:
    assert one_rejection(report(country="ß")) == (1, "bad country")


def test_good_lines_around_bad_ones_are_kept_with_line_numbers() -> None:
    lines = [
        report(reporter="a"),  # 10
        b"{oops",  # 11
        report(service="Twitter", reporter="b"),  # 12
        b"",  # 13: blank, skipped
        b'{"type":"nope","service":"x","ts":1741595460}',  # 14
        report(service="nosuch"),  # 15
        b"   \t\r\n",  # 16: blank
        report(country="XX"),  # 17
        report(ts="2025-03-10T08:31:00"),  # 18
        report(ts=12),  # 19
        report(count=0),  # 20
        report(service=...),  # 21
        report(country="uk", count=3),  # 22
        b'{"type":"metric","service":"fb","ts":1741595460,"name":"m","value":1}\n',  # 23
    ]
    d = decode(*lines, first_line=10)
    assert sorted((r.line, r.reason) for r in d.rejected) == [
        (11, "not JSON"),
        (14, "unknown type"),
        (15, "unknown service"),
        (17, "bad country"),
        (18, "bad time"),
        (19, "bad time"),
        (20, "bad field"),
        (21, "bad field"),
    ]
    assert d.reports.service == ["x", "x", "x"]
    assert d.reports.country == ["US", "US", "GB"]
    assert d.reports.person == ["a", "b", None]
    assert d.reports.count.tolist() == [1, 1, 3]
    assert [o.service for o in d.others] == ["facebook"]
    assert d.lines == len(lines)
    first = min(d.rejected, key=lambda r: r.line)
    assert str(first).startswith("line 11: not JSON: ")


def test_blank_lines_are_skipped() -> None:
    d = decode(b"", b"\n", b"  \r\n", report(), b"\t")
    assert d.rejected == []
    assert len(d.reports) == 1
    assert d.lines == 5


def test_empty_input() -> None:
    d = decode()
    assert d.lines == 0
    assert len(d.reports) == 0
    assert d.rejected == []


def test_decoder_is_reusable_with_line_offsets() -> None:
    dec = EventDecoder(CATALOG)
    a = dec.decode([report(), b"bad"], 1)
    b = dec.decode([b"bad", report(service="TWITTER")], 3)
    assert [r.line for r in a.rejected] == [2]
    assert [r.line for r in b.rejected] == [3]
    assert b.reports.service == ["x"]


def test_decode_lines_wrapper() -> None:
    d = decode_lines(CATALOG, [report(), b"[]"], first_line=5)
    assert len(d.reports) == 1
    assert [r.line for r in d.rejected] == [6]


# ---------------------------------------------------------------------- properties
SERVICE_NAMES = sorted(CATALOG.names)
COUNTRY_CODES = sorted(COUNTRIES)
TS_MIN = int(dt.datetime(2001, 1, 1, tzinfo=dt.UTC).timestamp())
TS_MAX = int(dt.datetime(2100, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp())


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(SERVICE_NAMES),
    country=st.sampled_from(COUNTRY_CODES),
    lower=st.booleans(),
    reporter=st.none() | st.text(max_size=20),
    ip=st.none() | st.text(max_size=20),
    count=st.integers(1, MAX_COUNT),
    ts=st.integers(TS_MIN, TS_MAX),
    problem_pick=st.integers(0, 10),
)
@pytest.mark.slow
def test_encode_then_decode_round_trip(
    name: str,
    country: str,
    lower: bool,
    reporter: str | None,
    ip: str | None,
    count: int,
    ts: int,
    problem_pick: int,
) -> None:
    svc = CATALOG.resolve(name)
    assert svc is not None
    problems = svc.all_problems
    problem = problems[problem_pick] if problem_pick < len(problems) else None
    line = encode_report(
        name,
        float(ts),
        country.lower() if lower else country,
        problem=problem,
        reporter=reporter,
        ip=ip,
        count=count,
    )
    d = EventDecoder(CATALOG).decode([line])
    assert d.rejected == []
    r = d.reports
    assert r.service == [svc.id]
    assert r.ts.tolist() == [float(ts)]
    assert r.country == [country]
    assert r.problem == [problem or "other"]
    assert r.person == [reporter or ip or None]  # an empty reporter or ip is no person
    assert r.count.tolist() == [count]


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["x", "Twitter", "report", "probe", "status", "metric", "US", "uk", "major"]),
    st.sampled_from(["2025-03-10T08:31:00Z", "2025-03-10T08:31:00", "2025-03-10T08:31:00+02:00"]),
)
JSON_KEYS = st.sampled_from(
    [
        *("type", "service", "ts", "country", "problem", "reporter", "ip", "count"),
        *("target", "ok", "indicator", "name", "value", "site", "status", "latency_ms"),
    ]
)
JSONISH = st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=8).map(msgspec.json.encode)
MUTATED_REPORTS = st.builds(
    lambda base, extra: msgspec.json.encode({**msgspec.json.decode(base), **extra}),
    st.builds(report),
    st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.text(max_size=30).map(str.encode),
            JSONISH,
            MUTATED_REPORTS,
            st.builds(lambda b: report()[:b], st.integers(0, 60)),
            st.sampled_from([b"", b"\n", b"  \r\n", b"[]", b"{}", b"null"]),
        ),
        max_size=30,
    ),
    first_line=st.integers(1, 10_000),
)
@pytest.mark.slow
def test_arbitrary_lines_are_accepted_or_rejected(lines: list[bytes], first_line: int) -> None:
    d = EventDecoder(CATALOG).decode(lines, first_line)
    non_blank = [i for i, ln in enumerate(lines, first_line) if ln.strip()]
    assert len(d.reports) + len(d.others) + len(d.rejected) == len(non_blank)
    assert d.lines == len(lines)
    rejected_lines = [r.line for r in d.rejected]
    assert len(rejected_lines) == len(set(rejected_lines)), "one rejection per line"
    assert set(rejected_lines) <= set(non_blank)
    for r in d.rejected:
        assert r.reason in {
            "not JSON",
            "not an object",
            "unknown type",
            "unknown service",
            "bad country",
            "bad time",
            "bad field",
        }
    for sid, t, c, n in zip(
        d.reports.service, d.reports.ts, d.reports.country, d.reports.count, strict=True
    ):
        assert sid in CATALOG.services
        assert 946_684_800.0 <= t <= 7_258_118_400.0
        assert c in COUNTRIES
        assert n >= 1


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=40), max_size=20))
@pytest.mark.slow
def test_arbitrary_invalid_json_bytes_never_raise(lines: list[bytes]) -> None:
    # Bytes that cannot even start a JSON object never reach string decoding: always safe.
    lines = [b"#" + ln for ln in lines]
    d = EventDecoder(CATALOG).decode(lines)
    assert len(d.reports) == 0
    assert [r.line for r in d.rejected] == list(range(1, len(lines) + 1))
    assert {r.reason for r in d.rejected} <= {"not JSON"}


# ------------------------------------------------------- column-wise times
_ZULU = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z"
zulu_times = st.builds(
    _ZULU.format,
    st.sampled_from([1999, 2000, 2024, 2025, 2100, 2199, 2200, 9999]) | st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
)
odd_times = st.sampled_from(
    [
        "2025-03-10t08:31:00Z",
        "2025-03-10 08:31:00Z",
        "2025-03-10T08:31:00z",
        "2025-03-10T08:31:0AZ",
        "2025-03-10T08:31:00+",
        "2025-0３-10T08:31:00Z",
        "2025-03-10T08:31:00.5Z",
        "",
    ]
) | st.text(max_size=22)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(zulu_times, min_size=1, max_size=40),
    st.lists(odd_times | st.floats(allow_nan=True) | st.integers(-(2**40), 2**40), max_size=3),
    st.sampled_from([EventDecoder(CATALOG).max_ts, T0, T0 + 59.0]),
)
@pytest.mark.slow
def test_times_read_column_wise_are_the_times_read_one_by_one(
    common: list[str], odd: list[str | float], max_ts: float
) -> None:
    """The column-wise reading of "YYYY-MM-DDTHH:MM:SSZ" (events._zulu_seconds) gives every
    value exactly what reading it alone gives (a valid time, or None), with odd values in the
    batch or without them."""
    from outagewatch.events import ReportIn

    for raw in (common, [*common, *odd], [*odd, *common]):
        evs = [ReportIn(service="x", ts=x, country="US") for x in raw]
        got = EventDecoder(CATALOG, max_ts=max_ts)._times(evs)
        one = EventDecoder(CATALOG, max_ts=max_ts)
        assert got == [one._ts(x) for x in raw]
        for x, t in zip(raw, got, strict=True):
            if isinstance(x, str) and t is not None:
                assert t == dt.datetime.fromisoformat(x.upper()).timestamp()


def test_a_batch_is_decoded_chunk_by_chunk_as_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """`decode` works `DECODE_CHUNK` lines at a time: a batch spanning several chunks, with
    bad lines, probes and long person ids at chunk edges, gives what one piece gives (the
    same columns, others and rejections, with their line numbers, in line order)."""
    from outagewatch import events

    cat = Catalog.demo()
    lines: list[bytes] = []
    for i in range(5_000):
        ts = 1_741_000_000 + i
        if i in (0, 2047, 2048, 4999):
            lines.append(b'{"type":"report","ts":"nope","service":"x","country":"US"}')
        elif i in (1, 2049, 3000):
            lines.append(b"{not json")
        elif i % 997 == 0:
            lines.append(
                b'{"type":"probe","ts":%d,"service":"x","target":"https://x.com","ok":false}' % ts
            )
        else:
            person = b"p" * 80 if i in (2046, 2050) else b"p%d" % (i % 300)
            lines.append(
                b'{"type":"report","ts":%d,"service":"x","country":"US","reporter":"%s"}'
                % (ts, person)
            )
    chunked = EventDecoder(cat).decode(lines, 10)
    monkeypatch.setattr(events, "DECODE_CHUNK", 1_000_000)
    whole = EventDecoder(cat).decode(lines, 10)
    assert events.DECODE_CHUNK > len(lines) > 2 * 2048
    assert chunked.lines == whole.lines == 5_000
    assert chunked.rejected == whole.rejected
    assert [r.line for r in chunked.rejected] == [10, 11, 2057, 2058, 2059, 3010, 5009]
    assert chunked.others == whole.others and len(chunked.others) == 5
    for col in ("keys", "ts", "person", "ip", "count", "line"):
        assert column(chunked.reports, col) == column(whole.reports, col), col
    assert len(chunked.reports) == 5_000 - 7 - 5


# ------------------------------------------------------- the compiled scanner (linescan.py)
def exact(lines: list[bytes], first_line: int = 1, max_ts: float | None = None) -> Decoded:
    """What the exact path (msgspec, line by line) makes of `lines`, however many."""
    dec = EventDecoder(CATALOG) if max_ts is None else EventDecoder(CATALOG, max_ts=max_ts)
    out = Decoded()
    dec._decode_lines(lines, first_line, out)
    out._join()
    out.rejected.sort(key=lambda r: r.line)
    out.lines = len(lines)
    return out


def assert_same(got: Decoded, want: Decoded) -> None:
    assert got.rejected == want.rejected
    assert got.others == want.others
    assert got.lines == want.lines
    for col in ("keys", "ts", "person", "ip", "count", "line"):
        assert column(got.reports, col) == column(want.reports, col), col


def plain(ts: str = "2025-03-10T08:31:00Z", **fields: str | int) -> bytes:
    body: dict[str, object] = {"type": "report", "ts": ts, "service": "x", "country": "US"}
    body.update(fields)
    return msgspec.json.encode(body)


FIELD_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["report", "probe", "Report", 1]),
        "ts": zulu_times
        | odd_times
        | st.sampled_from([T0, int(T0), 0, -int(T0), 10**13, "2025-03-10T08:31:00Z"])
        | st.integers(0, 2**40),
        "service": st.sampled_from(["x", "X", "twitter", "netflix", "nope", "", "x\\"]),
        "country": st.sampled_from(["US", "us", "uk", "GB", "ZZ", "", "U\u00e9"]),
        "problem": st.sampled_from(["login", "app", "Login", "", "other", None]),
        "reporter": st.sampled_from(["p1", "p2", "", "p\u00e9", "p" * 70, None])
        | st.text(max_size=8),
        "ip": st.sampled_from(["203.0.113.7", "", None, "2001:db8::1"]),
        "count": st.sampled_from([1, 2, 0, -1, 10**12, 10**12 + 1, 1.5, "3"]),
        "region": st.sampled_from(["CA", None, 3]),
        "city": st.sampled_from(["Paris", ""]),
        "extra": st.sampled_from([1, "x", None]),
    },
)


def _spaced(body: dict[str, object], order: list[int], space: str) -> bytes:
    """`body` as JSON in the given field order, with `space` between every token."""
    items = [list(body.items())[i] for i in order]
    inner = f"{space},{space}".join(
        f"{msgspec.json.encode(k).decode()}{space}:{space}{msgspec.json.encode(v).decode()}"
        for k, v in items
    )
    return f"{space}{{{space}{inner}{space}}}{space}".encode()


UTF8_EDGES = st.sampled_from([
    b"\xc3\xa9", b"\xef\xbf\xbf", b"\xf0\x9f\x98\x80", b"\xf4\x8f\xbf\xbf", b"\x7f",
    b"\xed\x9f\xbf", b"\xe0\xa0\x80",  # valid: the edges of the ranges
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xf4\x90\x80\x80", b"\xc3", b"\xe0\x80\xaf",
    b"\xf5\x80\x80\x80", b"\x80", b"\xc3\xa9\xa9", b"\xe2\x82", b"\xf0\x9f\x98",  # not
])  # fmt: skip


def _with_bytes(field: str, raw: bytes) -> bytes:
    """A plain line whose `field` holds `raw` between its quotes, as it is."""
    return plain(**{field: "@@"}).replace(b"@@", raw)


SCANNER_LINES = st.one_of(
    st.builds(plain),
    st.builds(
        _with_bytes,
        st.sampled_from(["reporter", "service", "country", "problem", "ip", "city"]),
        st.lists(UTF8_EDGES | st.binary(max_size=4), max_size=3).map(b"".join),
    ),
    # Longer values with one byte the scanner must stop at (or not), anywhere in them.
    st.builds(
        lambda field, k, c, n: _with_bytes(field, b"x" * k + c + b"y" * n),
        st.sampled_from(["reporter", "service", "city"]),
        st.integers(0, 17),
        st.sampled_from([b"", b'"', b"\\", b"\\n", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xc3\xa9",
                         b"\xff", b" ", b"~"]),
        st.integers(0, 17),
    ),
    FIELD_VALUES.map(msgspec.json.encode),
    st.builds(
        lambda base, extra: msgspec.json.encode({**msgspec.json.decode(base), **extra}),
        st.builds(plain),
        FIELD_VALUES,
    ),
    st.builds(
        lambda body, seed, space: _spaced(
            body, sorted(range(len(body)), key=lambda i: (i * seed) % 7), space
        ),
        st.builds(lambda extra: {**msgspec.json.decode(plain()), **extra}, FIELD_VALUES),
        st.integers(1, 6),
        st.sampled_from(["", " ", "\t", "\r", "  "]),
    ),
    st.sampled_from([
        b"", b"  ", b"{}", b"[]", b"{", b'{"type":"report"}', b"\xff",
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US","ts":"2025-03-10T08:31:01Z"}',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US"} x',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US",}',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US","count":01}',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US","count":1e2}',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"\\u0078","country":"US"}',
        b'{"type":"report","ts":1741595460,"service":"x","country":"US"}',
        b'{"type":"report","ts":1741595460.5,"service":"x","country":"US"}',
        b'{"type":"report","ts":1741595460e0,"service":"x","country":"US"}',
        b'{"type":"report","ts":01741595460,"service":"x","country":"US"}',
        b'{"type":"report","ts":1741595460,"service":"x","country":"US"}\r',
    ]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(SCANNER_LINES, max_size=40),
    first_line=st.integers(1, 10_000),
    max_ts=st.sampled_from([EventDecoder(CATALOG).max_ts, T0, T0 + 59.0]),
)
@pytest.mark.slow
def test_the_scanner_decodes_as_the_exact_path(
    lines: list[bytes], first_line: int, max_ts: float
) -> None:
    """Whatever the lines, the scanner's decoding (64 lines or more) is the exact path's:
    the same reports (keys, times, persons, addresses, counts, line numbers), others and
    rejections, in the same order."""
    from outagewatch import events

    lines = [*lines, *[plain(reporter=f"pad{i}") for i in range(64 - len(lines))]]
    lines = lines[len(lines) // 2 :] + lines[: len(lines) // 2]  # the padding in the middle
    assert len(lines) >= events.SCAN_MIN_LINES
    got = EventDecoder(CATALOG, max_ts=max_ts).decode(lines, first_line)
    assert_same(got, exact(lines, first_line, max_ts))


def test_the_scanner_takes_the_plain_lines_and_leaves_the_others() -> None:
    from outagewatch import linescan

    lines = [
        plain(reporter="p1", problem="login"),  # taken
        b'  {"country":"GB" , "service":"twitter","type":"report","count":3,\t'
        b'"ts":"2025-03-10T08:31:00Z"}\r',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US","reporter":"p\\u00e9"}',
        b'{"type":"report","ts":"2025-03-10T08:31:00Z","service":"x","country":"US","extra":1}',
        plain(ts="2025-02-29T08:31:00Z"),  # no such day
        plain(reporter="p1", problem="login"),  # the same key and reporter as line 0
        b'{"type":"probe","ts":"2025-03-10T08:31:00Z","service":"x","target":"t","ok":true}',
    ]
    blob = b"\n".join(lines)
    starts, ok, ts, count, spans, same_key = linescan.scan(
        np.frombuffer(blob, np.uint8), len(lines), MIN_TS, 7e9, MAX_COUNT
    )
    assert starts.tolist() == [0, *np.cumsum([len(x) + 1 for x in lines]).tolist()]
    assert ok.tolist() == [True, True, False, False, False, True, False]
    utf8 = [
        plain(reporter="p\u00e9\U0001f600"),
        _with_bytes("reporter", b"p\xed\xa0\x80"),
        _with_bytes("reporter", b"a\x7fb\xc3\xa9cd\x7f"),  # DEL (JSON allows it), UTF-8, DEL
        _with_bytes("reporter", b"ab\xc3\xa9cd\xc3"),  # valid, then a lead byte cut short
    ]
    taken = linescan.scan(np.frombuffer(b"\n".join(utf8), np.uint8), 4, MIN_TS, 7e9, MAX_COUNT)[1]
    # Valid UTF-8 is taken; a surrogate or a cut sequence is msgspec's.
    assert taken.tolist() == [True, False, True, False]
    assert ts[0] == T0 and count[1] == 3
    assert blob[spans[1, 2 * linescan.SERVICE] : spans[1, 2 * linescan.SERVICE + 1]] == b"twitter"
    assert spans[1, 2 * linescan.PROBLEM] == -1  # absent
    assert same_key[5] == 0 and same_key[1] == 1
    many = [*lines, *[plain(reporter=f"p{i}") for i in range(64)]]
    assert_same(EventDecoder(CATALOG).decode(many, 5), exact(many, 5))
    joined = b"\n".join(many)  # as a reader hands it over, unsplit
    assert_same(EventDecoder(CATALOG).decode(many, 5, joined), exact(many, 5))


def test_lines_made_to_collide_in_the_scanner_are_resolved_each_on_its_own() -> None:
    """`_intern` tries a bounded number of slots (an attacker can make values collide: the
    hash is no secret); past it a line is its own first and is resolved on its own, so the
    work stays linear and the result is the same."""
    from outagewatch import linescan

    lines = [plain(problem=p, reporter=f"r{i}") for i, p in enumerate(["login", "app"] * 40)]
    blob = b"\n".join(lines)
    buf = np.frombuffer(blob, np.uint8)
    _, ok, _, _, spans, same_key = linescan.scan(buf, len(lines), MIN_TS, 7e9, MAX_COUNT)
    assert same_key.tolist() == [0, 1] * 40
    fields = (linescan.SERVICE, linescan.COUNTRY, linescan.PROBLEM)
    bounded = linescan._intern(buf, spans, ok, fields, 0)  # no slot may be tried
    assert bounded.tolist() == list(range(80))
    assert_same(EventDecoder(CATALOG).decode(lines, 3), exact(lines, 3))


def test_after_a_batch_the_scanner_mostly_left_the_next_ones_skip_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines of another shape (here `null` problems) cost the scan and then msgspec's path:
    after a batch where the scanner took under half, the next SCAN_BACKOFF batches go to
    msgspec at once; then it is tried again. The results are the same either way."""
    from outagewatch import events, linescan

    calls = []
    scan = linescan.scan

    def counted(*args: object) -> object:
        calls.append(1)
        return scan(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(linescan, "scan", counted)
    other = [plain(reporter=f"p{i}").replace(b"}", b',"problem":null}') for i in range(100)]
    dec = EventDecoder(CATALOG)
    for k in range(events.SCAN_BACKOFF + 2):
        assert_same(dec.decode(other, 1), exact(other, 1))
        assert len(calls) == (1 if k <= events.SCAN_BACKOFF else 2), k
    mine = [plain(reporter=f"p{i}") for i in range(100)]
    for _ in range(events.SCAN_BACKOFF):  # the back-off the last batch above started
        assert_same(dec.decode(mine, 1), exact(mine, 1))
    assert len(calls) == 2
    for _ in range(3):  # then plain lines are scanned every time
        assert_same(dec.decode(mine, 1), exact(mine, 1))
    assert len(calls) == 5


@pytest.mark.slow
def test_mutated_lines_decode_as_the_exact_path() -> None:
    """Plain lines with a few random bytes changed, added or removed (quotes, braces,
    escapes, digits, bytes beyond ASCII, broken UTF-8...): in batches the scanner reads,
    every result is the exact path's. Seeded: the same 300 batches every run."""
    import random

    rng = random.Random(20261203)
    base = [
        plain(reporter="p1", problem="login"),
        plain(ts=int(T0), count=3),  # type: ignore[arg-type]
        plain(ip="203.0.113.9", city="Zo\u00eb"),
        _with_bytes("reporter", b"\xc3\xa9\xe6\x97\xa5"),
    ]
    alphabet = b'{}[]":,\\ \t\r0123456789.-eEtrufalsn\x80\xc3\xa9\xed\xa0\xf0\x9f\x00\x1f\x7fxUSGB'
    for _ in range(300):
        lines = []
        for _ in range(rng.randint(64, 100)):
            line = bytearray(rng.choice(base))
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                i = rng.randrange(len(line))
                op = rng.random()
                if op < 0.4:
                    line[i] = rng.choice(alphabet)
                elif op < 0.7:
                    line[i:i] = bytes([rng.choice(alphabet)])
                else:
                    del line[i]
            lines.append(bytes(line).replace(b"\n", b""))
        max_ts = rng.choice([EventDecoder(CATALOG).max_ts, T0, T0 + 59.0])
        got = EventDecoder(CATALOG, max_ts=max_ts).decode(lines, 7)
        assert_same(got, exact(lines, 7, max_ts))
