"""Fuzzing the two parsers of outside input: the NDJSON event codec and the catalog loader.

The codec: any bytes and almost-valid events of every type (wrong types, missing fields,
huge numbers, NaN literals, odd unicode, nested junk, very long lines) are each accepted or
rejected with their line number and a reason naming the field; no exception escapes, and the
good lines around bad ones are all kept. Decoding a batch at once or line by line gives the
same answer (the decoder keeps caches across lines).

The catalog: any text, and TOML documents built from catalog-shaped junk, load or fail with
a one-line `CatalogError` naming the file (and the service, for a service's mistake); never
a raw KeyError, TypeError or RecursionError.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outagewatch.catalog import METRIC_ROLES, Catalog
from outagewatch.errors import CatalogError
from outagewatch.events import MAX_TS, MIN_TS, Decoded, EventDecoder, ReportIn, parse_ts
from outagewatch.geo import COUNTRIES

CATALOG = Catalog.demo()
T = 1_760_000_400.0
REASONS = {
    "not JSON",
    "not an object",
    "unknown type",
    "unknown service",
    "bad country",
    "bad time",
    "bad field",
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- events
BASES: dict[str, dict[str, Any]] = {
    "report": {"type": "report", "service": "x", "ts": T, "country": "US", "problem": "app"},
    "probe": {"type": "probe", "service": "x", "ts": T, "target": "https://x.com/", "ok": False},
    "status": {"type": "status", "service": "x", "ts": T, "indicator": "major"},
    "metric": {"type": "metric", "service": "x", "ts": T, "name": "error_rate", "value": 0.5},
}
FIELDS = sorted(
    {k for b in BASES.values() for k in b}
    | {"region", "city", "reporter", "ip", "count", "site", "vantage", "status", "latency_ms"}
    | {"error", "description", "incident"}
)
WEIRD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "X",
        "TWITTER",
        "uk",
        "ß",
        "İ",
        "x\u0301",
        "🙂",
        "\u202e",
        "<script>alert(1)</script>",
        "2025-10-09T08:20:00Z",
        "2025-10-09T08:20:60Z",
        "2025-10-09 08:20:05Z",
        "2025-10-09T08:20:05",
        "2025-10-09T08:20:05+14:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "1999-12-31T23:59:59Z",
        "2200-01-01T00:00:01Z",
        "NaN",
        "1e999",
    ]
)
TS_TEXT = st.from_regex(
    r"(19|20|21|22)[0-9]{2}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]"
    r"(:[0-6][0-9](\.[0-9]{1,6})?)?(Z|[+-][01][0-9]:[0-5][0-9])?",
    fullmatch=True,
)
SCALARS = st.one_of(
    TS_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: far beyond 64 bits
    st.sampled_from([0, -1, 1, 2**63, -(2**63) - 1, 10**12, 10**12 + 1, 10**400]),
    st.floats(),  # NaN and infinities are written as NaN / Infinity literals (not JSON)
    st.text(max_size=12),
    WEIRD_TEXT,
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def dumps(doc: Any) -> bytes:
    """JSON as another program might write it: Python's json (NaN literals, big ints)."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def almost_valid(draw: st.DrawFn) -> bytes:
    """An event of some type with a few fields dropped or replaced by junk."""
    ev = dict(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(FIELDS) | st.text(max_size=5))
        if draw(st.booleans()):
            ev.pop(key, None)
        else:
            ev[key] = draw(JUNK)
    return dumps(ev)


def good_line(i: int) -> bytes:
    kind = sorted(BASES)[i % 4]
    return msgspec.json.encode(dict(BASES[kind], ts=T + i))


BAD_LINES = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    almost_valid(),
    almost_valid().map(lambda b: b[: len(b) // 2]),  # cut short
    st.sampled_from([b"", b"\r", b" \t ", b"[]", b"{}", b"null", b"\xef\xbb\xbf{}", b"{}{}"]),
)


def check_rejections(d: Decoded, lines: list[bytes], first: int) -> None:
    numbers = [r.line for r in d.rejected]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    non_blank = {n for n, ln in enumerate(lines, first) if ln.strip()}
    assert set(numbers) <= non_blank
    assert len(d.reports) + len(d.others) + len(d.rejected) == len(non_blank)
    for r in d.rejected:
        assert r.reason in REASONS, r
        assert r.detail and "\n" not in r.detail and len(r.detail) <= 300, r
        assert str(r).startswith(f"line {r.line}: {r.reason}: ")
        # The detail names what was wrong.
        named = {
            "bad field": ("`$.", "missing required field `"),
            "bad time": ("ts",),
            "bad country": ("country",),
            "unknown type": ("type",),
            "unknown service": ("no service or alias",),
            "not an object": ("Expected `object`",),
        }.get(r.reason, ("",))
        assert any(w in r.detail for w in named), r


def check_accepted(d: Decoded) -> None:
    for sid, t, c in zip(d.reports.service, d.reports.ts, d.reports.country, strict=True):
        assert sid in CATALOG.services and c in COUNTRIES and MIN_TS <= t <= MAX_TS
    for o in d.others:
        ev = msgspec.json.decode(o.body)
        assert ev["type"] == o.type and ev["service"] == o.service in CATALOG.services
        assert ev["ts"] == o.ts and MIN_TS <= o.ts <= MAX_TS


@FUZZ
@given(
    cells=st.lists(st.tuples(st.booleans(), BAD_LINES), min_size=1, max_size=25),
    first=st.integers(1, 10**6),
)
@pytest.mark.slow
def test_bad_lines_are_rejected_by_number_and_good_ones_kept(
    cells: list[tuple[bool, bytes]], first: int
) -> None:
    lines = [good_line(i) if good else bad for i, (good, bad) in enumerate(cells)]
    good = {n for n, (g, _) in enumerate(cells, first) if g}
    d = EventDecoder(CATALOG).decode(lines, first)
    assert d.lines == len(lines)
    check_rejections(d, lines, first)
    check_accepted(d)
    assert not good & {r.line for r in d.rejected}, "a good line was rejected"


@FUZZ
@given(lines=st.lists(st.one_of(BAD_LINES, st.integers(0, 50).map(good_line)), max_size=25))
@pytest.mark.slow
def test_a_batch_decodes_as_its_lines_one_by_one(lines: list[bytes]) -> None:
    whole = EventDecoder(CATALOG).decode(lines)
    fresh = [EventDecoder(CATALOG).decode([ln], n) for n, ln in enumerate(lines, 1)]
    assert whole.rejected == [r for d in fresh for r in d.rejected]
    assert whole.reports.keys == [k for d in fresh for k in d.reports.keys]
    assert whole.reports.ts.tolist() == [t for d in fresh for t in d.reports.ts.tolist()]
    assert whole.reports.person == [p for d in fresh for p in d.reports.person]
    # Other events come after the batch's reports; the same, in order, per kind of list.
    assert sorted(o.body for o in whole.others) == sorted(o.body for d in fresh for o in d.others)


def test_nesting_and_very_long_lines_are_clear_rejections() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    lines = [
        good_line(2),  # a report
        dumps(dict(BASES["report"], extra=None))[:-1] + b', "z": ' + deep + b"}",  # unknown field
        dumps(dict(BASES["report"])).replace(b'"US"', deep),  # a known field
        b'{"type": "report", "service": "' + b"x" * 2_000_000 + b'", "ts": 1, "country": "US"}',
        dumps(dict(BASES["report"], region="r" * 2_000_000)),
        b"{" * 100_000,
        dumps(dict(BASES["status"], indicator="!" * 2_000_000)),
        good_line(1),  # a probe
    ]
    d = EventDecoder(CATALOG).decode(lines)
    check_rejections(d, lines, 1)
    assert [(r.line, r.reason) for r in d.rejected] == [
        (2, "not JSON"),
        (3, "bad country"),
        (4, "unknown service"),
        (6, "not JSON"),
        (7, "bad field"),
    ]
    assert "nested too deeply" in d.rejected[0].detail
    assert d.rejected[-1].detail.endswith("at `$.indicator`")
    assert len(d.reports) == 2 and len(d.others) == 1  # lines 1, 5 and 8 are kept


@FUZZ
@given(
    service=st.sampled_from(sorted(CATALOG.names)).map(str.upper) | st.text(max_size=6),
    country=st.sampled_from(sorted(COUNTRIES)).map(str.lower) | st.text(max_size=3),
    problem=st.none() | st.text(max_size=8) | st.sampled_from(["APP", "login", "other"]),
    ts=st.floats(MIN_TS - 10, MAX_TS + 10) | WEIRD_TEXT | TS_TEXT,
    text=st.text(),
)
@pytest.mark.slow
def test_a_report_is_kept_exactly_or_rejected(
    service: str, country: str, problem: str | None, ts: float | str, text: str
) -> None:
    ev = ReportIn(service, ts, country, problem, region=text, city=text, reporter=text or None)
    d = EventDecoder(CATALOG).decode([msgspec.json.encode(ev)])
    svc = CATALOG.resolve(service)
    if d.rejected:
        check_rejections(d, [b"-"], 1)
        if d.rejected[0].reason == "bad time":  # only a time outside 2000-2200 or invalid
            t = ts if isinstance(ts, float) else parse_ts(ts)
            assert t is None or not MIN_TS <= t <= MAX_TS, ts
        return
    assert svc is not None
    assert d.reports.service == [svc.id]
    code = country.upper()
    assert d.reports.country == ["GB" if code == "UK" else code]
    known = {p.lower(): p for p in svc.problems}
    assert d.reports.problem == [known.get((problem or "").lower(), "other")]
    assert d.reports.ts.tolist() == [ts if isinstance(ts, float) else parse_ts(ts)]
    assert d.reports.person == [text or None]


# ---------------------------------------------------------------------------- catalog
def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    TEXT,
    st.sampled_from(["x", "cloudflare", "meta", "load", "errors", "https://a.example/", "feed"]),
    st.sampled_from(["public", "statuspage", "http://", "https://a b", "ftp://a/"]),
    st.sampled_from([0, 4, 5, 60, 86_400, 86_401, 99, 100, 599, 600, 0.05, 0.1, 300.5]),
)
TOML_JUNK = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Plausible values two times in three, junk otherwise."""
    return st.one_of(plausible, plausible, TOML_JUNK)


GOOD_IDS = ["x", "cloudflare", "a-1", "b", "c9", "meta", "z-z-9"]
BAD_IDS = st.sampled_from(["X", "-a", "a b", "", "é", "a_b"]) | TEXT
IDS = st.one_of(*[st.sampled_from(GOOD_IDS)] * 4, BAD_IDS)  # one in five is bad
NAMES = st.lists(st.sampled_from(["twitter", "X", "b", "Tw", "x "]) | TEXT, max_size=3)
PROBE = st.fixed_dictionaries(
    {"url": st.sampled_from(["https://a.example/", "http://b.example:8080/x?y", "nope"])},
    optional={
        "site": mostly(st.sampled_from(["public", "primary", " "])),
        "interval_s": mostly(st.integers(0, 100_000)),
        "expect_status": mostly(st.integers(0, 1000)),
        "keyword": mostly(TEXT),
        "timeout_s": mostly(st.floats(0, 400) | st.integers(0, 400)),
    },
)
STATUS_PAGE = st.fixed_dictionaries(
    {"url": st.sampled_from(["https://s.example/api", "x"])},
    optional={
        "kind": mostly(st.sampled_from(["statuspage", "feed", "rss"])),
        "interval_s": mostly(st.integers(0, 100_000)),
    },
)
SERVICE_BODY = st.fixed_dictionaries(
    {},
    optional={
        "name": mostly(TEXT),
        "aliases": mostly(NAMES),
        "group": mostly(st.sampled_from(["meta", "google", ""])),
        "depends_on": mostly(st.lists(IDS, max_size=3)),
        "problems": mostly(st.lists(TEXT, max_size=3)),
        "metrics": mostly(
            st.dictionaries(TEXT, st.sampled_from(METRIC_ROLES) | TOML_SCALARS, max_size=3)
        ),
        "probes": mostly(st.lists(PROBE, max_size=2)),
        "status_page": mostly(STATUS_PAGE),
    },
)


@st.composite
def catalog_text(draw: st.DrawFn) -> str:
    """A catalog as a person might write it: [services.ID] tables (rarely, a bad or repeated
    ID, or junk at the top level)."""
    rarely = st.integers(0, 12).map(lambda n: n == 6)
    parts = []
    if draw(rarely):
        parts.append(f"{toml_str(draw(TEXT))} = {toml_value(draw(TOML_JUNK))}")
    ids = draw(st.lists(st.sampled_from(GOOD_IDS), unique=True, max_size=4))
    if draw(rarely):
        ids.append(draw(IDS))
    for sid in ids:
        parts.append(f"[services.{toml_str(sid)}]")
        body = draw(SERVICE_BODY)
        parts += [f"{toml_str(k)} = {toml_value(v)}" for k, v in body.items()]
    if draw(rarely):
        parts.append(f"services = {toml_value(draw(TOML_JUNK))}")
    return "\n".join(parts) + "\n"


def load_or_clear_error(text: str) -> Catalog | None:
    try:
        return Catalog.from_toml(text, "fuzz.toml")
    except CatalogError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.toml: ") and "\n" not in msg, msg
        return None


@FUZZ
@given(text=catalog_text())
@pytest.mark.slow
def test_catalog_junk_loads_or_names_file_service_and_key(text: str) -> None:
    cat = load_or_clear_error(text)
    if cat is None:
        return
    for sid, svc in cat.services.items():
        assert svc.id == sid and isinstance(svc.name, str) and svc.name.strip()
        assert all(dep in cat.services and dep != sid for dep in svc.depends_on)
        assert set(svc.metrics.values()) <= set(METRIC_ROLES)
        assert cat.resolve(sid) is svc
        for alias in svc.aliases:
            assert cat.resolve(alias) is svc


def test_catalog_errors_name_the_service_and_key() -> None:
    cases = {
        '[services.b]\nprobes = [1]\n[services."a b"]\n': "service 'b': key 'probes[0]'",
        "[services.b]\nmetrics = {m = [1]}\n": "service 'b': key 'metrics.m'",
        "[services.b]\nstatus_page = {url = 'https://a/', kind = {}}\n": "key 'status_page.kind'",
        "[services.b]\n[services.b]\n": "service 'b': duplicate service id",
        "services = 3\n": "key 'services'",
    }
    for text, named in cases.items():
        with_err = None
        try:
            Catalog.from_toml(text, "fuzz.toml")
        except CatalogError as exc:
            with_err = str(exc)
        assert with_err is not None and named in with_err, (text, with_err)


@FUZZ
@given(text=st.text(st.characters(exclude_categories=["Cs"]), max_size=200))
def test_any_text_loads_or_is_a_clear_catalog_error(text: str) -> None:
    load_or_clear_error(text)


@settings(max_examples=50, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_file_loads_or_is_a_clear_catalog_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(raw)
        try:
            Catalog.load(path)
        except CatalogError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)


def test_deep_nesting_and_long_dependency_chains_are_clear() -> None:
    deep = ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000]
    for text in deep:
        assert load_or_clear_error(text) is None
    chain = "".join(f'[services.s{i}]\ndepends_on = ["s{i + 1}"]\n' for i in range(3000))
    cat = load_or_clear_error(chain + "[services.s3000]\n")
    assert cat is not None and len(cat) == 3001
    try:
        Catalog.from_toml(chain + '[services.s3000]\ndepends_on = ["s7"]\n', "fuzz.toml")
    except CatalogError as exc:
        assert "service 's3000': key 'depends_on': forms a cycle: s7 -> s8" in str(exc)
    else:
        raise AssertionError("a cycle of 2994 services was not found")
