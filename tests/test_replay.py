"""`replay` through the CLI and the store: restarts lose nothing and change nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from outagewatch.cli import main
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate
from outagewatch.store.sqlite import SQLiteStore

START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp()


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six days of two services with three outages, one of them ongoing at the end."""
    traffic = [
        ServiceTraffic("x", 5.0, {"US": 0.6, "GB": 0.4}, {"app": 0.7, "login": 0.3}),
        ServiceTraffic("netflix", 0.5, {"US": 0.8, "CA": 0.2}, {"streaming": 1.0}),
    ]
    surges = [
        Surge("x", START + 3 * 86400 + 3600 * 9, [300.0] * 40, name="a"),
        Surge("netflix", START + 4 * 86400 + 3600 * 20, [15.0] * 20, name="b"),
        Surge("x", START + 6 * 86400 - 1800, [200.0] * 30, name="c"),  # still going at the end
    ]
    sim = simulate(traffic, START, 6 * 1440, surges, seed=9, jitter_s=60)
    path = tmp_path_factory.mktemp("replay") / "week.ndjson"
    path.write_bytes(b"\n".join(sim.lines) + b"\n")
    return path


def _ts(line: bytes) -> float:
    text = orjson.loads(line)["ts"]
    return dt.datetime.fromisoformat(text).timestamp()


def incidents(db: Path) -> list[dict[str, Any]]:
    store = SQLiteStore(str(db))
    try:
        return store.incidents()
    finally:
        store.close()


@pytest.mark.parametrize(
    "cut_at",
    [
        None,  # 55% of the lines: between incidents
        START + 3 * 86400 + 3600 * 9 + 20 * 60,  # 20 minutes into outage "a": it is open
        START + 3 * 86400 + 3600 * 9 + 50 * 60,  # just after it: resolving, not yet final
    ],
)
@pytest.mark.slow
def test_two_halves_give_the_same_incidents_as_one_call(
    stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], cut_at: float | None
) -> None:
    lines = stream.read_bytes().splitlines(keepends=True)
    if cut_at is None:
        cut = len(lines) * 11 // 20  # not on any boundary of the data
    else:
        cut = next(i for i, ln in enumerate(lines) if _ts(ln) >= cut_at)
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    first.write_bytes(b"".join(lines[:cut]))
    second.write_bytes(b"".join(lines[cut:]))
    assert main(["--db", str(tmp_path / "one.db"), "replay", str(stream)]) == 0
    assert main(["--db", str(tmp_path / "two.db"), "replay", str(first)]) == 0
    after_first = incidents(tmp_path / "two.db")
    if cut_at == START + 3 * 86400 + 3600 * 9 + 20 * 60:
        assert [d["status"] for d in after_first] == ["ongoing"]  # the restart is mid-incident
    assert main(["--db", str(tmp_path / "two.db"), "replay", str(second)]) == 0
    one, two = incidents(tmp_path / "one.db"), incidents(tmp_path / "two.db")
    assert len(one) == 3
    assert [d["status"] for d in one].count("ongoing") == 1
    assert orjson.dumps(one) == orjson.dumps(two)
    # Minute counts survive too: the stored per-minute series are the same.
    a, b = SQLiteStore(str(tmp_path / "one.db")), SQLiteStore(str(tmp_path / "two.db"))
    try:
        for service in ("x", "netflix"):
            ma = a.minute_counts(service, START, START + 6 * 86400)
            mb = b.minute_counts(service, START, START + 6 * 86400)
            assert ma.sum() > 0 and (ma == mb).all()
    finally:
        a.close()
        b.close()
    capsys.readouterr()


@pytest.mark.slow
def test_replaying_the_same_file_again_does_not_double_count(
    stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second replay of the same events is all late or duplicate: no new incidents."""
    db = str(tmp_path / "again.db")
    assert main(["--db", db, "replay", str(stream)]) == 0
    before = incidents(tmp_path / "again.db")
    assert main(["--db", db, "replay", str(stream)]) == 0
    out = capsys.readouterr().out
    assert "late: " in out
    after = incidents(tmp_path / "again.db")
    assert [d["id"] for d in after] == [d["id"] for d in before]
    assert [d["total_reports"] for d in after] == [d["total_reports"] for d in before]


def test_summary_counts_rejections_and_keeps_the_good_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(
        b'{"type":"report","service":"x","ts":"2025-03-10T08:31:07Z","country":"US"}\n'
        b"not json\n"
        b'{"type":"report","service":"nope","ts":"2025-03-10T08:31:08Z","country":"US"}\n'
        b'{"type":"metric","service":"twitter","ts":1741595470,"name":"error_rate","value":0.2}\n'
        b'{"type":"report","service":"x","ts":"2025-03-10T08:31:09Z","country":"XX"}\n'
    )
    assert main(["--db", str(tmp_path / "m.db"), "replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "accepted: 2 (report 1, probe 0, status 0, metric 1)" in out
    assert "rejected: 3" in out
    for where in (":2: not JSON", ":3: unknown service", ":5: bad country"):
        assert where in out


BAD_LINES = [
    b"not json",
    b'{"type":"report","service":"nope","ts":"2025-03-06T09:10:00Z","country":"US"}',
    b'{"type":"report","service":"x","ts":"2025-03-06T09:10:61Z","country":"US"}',
    b'{"type":"report","service":"x","ts":"2025-02-30T09:10:00Z","country":"US"}',
    b'{"type":"report","service":"x","ts":"2025-03-06T09:10:00Z","country":"XX"}',
    b'{"type":"report","service":"x","ts":"2025-03-06 09:10:00","country":"US"}',
    b'{"type":"report","service":"x","ts":1.0,"country":"US"}',
    b'{"type":"report","service":"x","ts":"2025-03-06T09:10:00Z","country":"US","count":0}',
    b"",
]


@pytest.mark.slow
def test_bulk_replay_with_bad_lines_matches_line_by_line(
    stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad lines in the middle of an outage week: the bulk path (batches decoded column-wise,
    a batch with a bad line decoded line by line) rejects the same lines for the same reasons
    and finds the same incidents as decoding and feeding every line alone."""
    from outagewatch.catalog import Catalog
    from outagewatch.events import EventDecoder, ReportColumns
    from outagewatch.pipeline.pipeline import Pipeline

    lines = stream.read_bytes().splitlines()
    at = [len(lines) // 3, len(lines) // 2, len(lines) * 3 // 5]  # around outage "a"
    for k in reversed(at):
        lines[k:k] = BAD_LINES
    path = tmp_path / "bad.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["--db", str(tmp_path / "b.db"), "replay", "--no-progress", str(path)]) == 0
    out = capsys.readouterr().out
    bulk = incidents(tmp_path / "b.db")

    catalog = Catalog.demo()
    dec = EventDecoder(catalog)
    rejected = []
    fields = ("keys", "ts", "person", "ip", "count", "line")
    columns: dict[str, list[object]] = {f: [] for f in fields}
    for n, line in enumerate(lines, start=1):
        d = dec.decode([line], n)
        rejected.extend(d.rejected)
        for f in fields:
            columns[f].extend(getattr(d.reports, f))
    reports = ReportColumns(**columns)  # type: ignore[arg-type]
    p = Pipeline(catalog=catalog)
    assert p.ingest(reports) == []
    assert [r.line for r in rejected] == sorted(
        k + i + 1 + j * len(BAD_LINES) for j, k in enumerate(at) for i in range(8)
    )
    for r in rejected[:20]:
        assert f"{path}:{r.line}: {r.reason}: {r.detail}" in out
    assert f"rejected: {len(rejected)}" in out
    one = {t.incident for t in p.drain_transitions() if t.action == "opened"}
    assert len(one) == 3
    assert sorted(d["id"] for d in bulk) == sorted(one)
    docs = {d["id"]: d for d in p.drain_incidents()}
    for doc in bulk:
        assert doc["total_reports"] == docs[doc["id"]]["total_reports"]
        assert doc["started_at"] == docs[doc["id"]]["started_at"]


def test_a_replay_holds_a_longer_ring_unless_the_catalog_is_large() -> None:
    """`replay_settings`: 512 minutes for a catalog of up to 2,000 services (spans of 444
    minutes, a month in few steps), the server's 128 beyond (the rings' memory), and a
    ring set longer still is kept."""
    from dataclasses import replace

    from outagewatch.runtime.replay import REPLAY_RING_SERVICES, replay_settings
    from outagewatch.settings import PipelineSettings

    base = PipelineSettings()
    assert replay_settings(base, 10).ring_minutes == 512
    assert replay_settings(base, REPLAY_RING_SERVICES).ring_minutes == 512
    assert replay_settings(base, REPLAY_RING_SERVICES + 1) is base
    longer = replace(base, ring_minutes=1024)
    assert replay_settings(longer, 10) is longer
