"""One bad clock cannot blind detection (pipeline.clock): a line days ahead is rejected, lines a
few minutes ahead do not move the time, and results do not depend on the batch size."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder, Rejection, ReportColumns, encode_report
from outagewatch.pipeline.clock import StreamClock
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

CATALOG = Catalog.demo()
START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp()
ONSET = START + 86400 + 10 * 3600  # day 2, 10:00
OUTAGE_MIN = 65


def cols(ts: Sequence[float]) -> ReportColumns:
    n = len(ts)
    return ReportColumns(
        keys=[("x", "US", "app")] * n,
        ts=np.asarray(ts, np.float64),
        person=[None] * n,
        ip=[None] * n,
        count=np.ones(n, np.int64),
        line=np.arange(1, n + 1),
    )


def run_clock(ts: Sequence[float], sizes: Sequence[int]) -> tuple[list[float], list[Rejection]]:
    clock = StreamClock(agree=3, max_ahead_s=900)
    out: list[float] = []
    refused: list[Rejection] = []
    rep = cols(ts)
    i = 0
    for size in sizes:
        columns = ("keys", "ts", "person", "ip", "count", "line")
        part = ReportColumns(*(getattr(rep, f)[i : i + size] for f in columns))
        got, rej = clock.admit(part)
        out += got.ts.tolist()
        refused += rej
        i += size
        if i >= len(ts):
            break
    return out, refused


def test_a_lone_line_far_ahead_is_rejected_naming_the_limit() -> None:
    ts = [1000.0 + 10 * i for i in range(20)]
    ts.insert(5, 1000.0 + 9 * 86400)
    out, refused = run_clock(ts, [len(ts)])
    assert len(out) == 18  # the last two wait for a third arrival to reach them
    assert out == sorted(out) and max(out) < 2000
    [r] = refused
    assert r.line == 6 and r.reason == "too far ahead"
    assert "is more than 15 minutes ahead of the stream" in r.detail


def test_the_stream_jumps_when_three_arrivals_in_a_row_agree() -> None:
    ts = [1000.0 + 10 * i for i in range(10)] + [1000.0 + 86400 + i for i in range(10)]
    out, refused = run_clock(ts, [len(ts)])
    assert refused == []
    assert len(out) == 18 and max(out) >= 1000 + 86400


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.slow
def test_any_batching_gives_the_same_released_sequence(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = np.arange(2000) * 7.0 + rng.normal(0, 30, 2000)
    ahead = rng.random(2000) < 0.15
    ts = np.where(ahead, base + rng.choice([240.0, 2000.0, 9 * 86400.0], 2000), base).tolist()
    whole = run_clock(ts, [len(ts)])
    ones = run_clock(ts, [1] * len(ts))
    sizes = rng.integers(1, 50, 500).tolist()
    mixed = run_clock(ts, sizes)
    assert whole == ones == mixed
    assert whole[1]  # some were rejected


def test_the_held_reports_survive_a_restart() -> None:
    p = Pipeline()
    dec = EventDecoder(CATALOG)
    lines = [encode_report("x", START + 60 * i, "US") for i in range(10)]
    lines.append(encode_report("x", START + 60 * 14, "US"))  # 5 minutes ahead: held
    p.ingest(dec.decode(lines).reports)
    assert len(p.clock.held) == 2  # the last in-order one and the one ahead
    q = load_state(dump_state(p))
    assert q.clock.held.ts.tolist() == p.clock.held.ts.tolist() and q.clock.wm == p.clock.wm
    assert q.clock.held.keys == p.clock.held.keys


# ------------------------------------------------------------------ detection, end to end
@pytest.fixture(scope="module")
def clean_lines() -> list[bytes]:
    traffic = [ServiceTraffic("x", 5.0, {"US": 0.6, "GB": 0.4}, {"app": 0.7, "login": 0.3})]
    surges = [Surge("x", ONSET, [120.0] * OUTAGE_MIN, name="o")]
    return simulate(traffic, START, 2 * 1440, surges, seed=4, jitter_s=20).lines


def _ts(line: bytes) -> float:
    return dt.datetime.fromisoformat(orjson.loads(line)["ts"]).timestamp()


def run(lines: Sequence[bytes], step: int = 5000) -> tuple[Pipeline, list[dict[str, Any]]]:
    p = Pipeline()
    dec = EventDecoder(CATALOG)
    docs: dict[str, Any] = {}
    for i in range(0, len(lines), step):
        p.ingest(dec.decode(lines[i : i + step], i + 1).reports)
        for doc in p.drain_incidents():
            docs[doc["id"]] = doc
    for doc in p.ongoing():
        docs[doc["id"]] = doc
    return p, sorted(docs.values(), key=lambda d: d["started_at"])


def outage(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if abs(_iso(d["started_at"]) - ONSET) < 30 * 60]
    assert len(found) == 1, docs
    return found[0]


def _iso(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


def minutes(doc: dict[str, Any]) -> float:
    return (_iso(doc["ended_at"]) - _iso(doc["started_at"])) / 60


@pytest.mark.slow
def test_one_line_nine_days_ahead_leaves_the_incident_whole(clean_lines: list[bytes]) -> None:
    _, clean = run(clean_lines)
    ref = outage(clean)
    at = next(i for i, ln in enumerate(clean_lines) if _ts(ln) >= ONSET - 3 * 3600)
    bad = encode_report("x", _ts(clean_lines[at]) + 9 * 86400, "US", reporter="skewed")
    lines = [*clean_lines[:at], bad, *clean_lines[at:]]
    p, docs = run(lines)
    got = outage(docs)
    assert got["total_reports"] >= 0.9 * ref["total_reports"]
    assert minutes(got) >= 0.9 * minutes(ref)
    assert p.stats.late <= 2 * run(clean_lines)[0].stats.late + 10


@pytest.mark.slow
def test_one_line_a_minute_four_minutes_ahead_leaves_the_incident_whole(
    clean_lines: list[bytes],
) -> None:
    _, clean = run(clean_lines)
    ref = outage(clean)
    lines: list[bytes] = []
    last_minute = -1
    for ln in clean_lines:
        lines.append(ln)
        m = int(_ts(ln) // 60)
        if m != last_minute:
            last_minute = m
            lines.append(encode_report("x", m * 60 + 240, "GB", reporter=f"fast-{m}"))
    p, docs = run(lines)
    got = outage(docs)
    assert got["total_reports"] >= 0.9 * ref["total_reports"]
    assert minutes(got) >= 0.9 * minutes(ref)
    # Batch size does not matter, also here (one by one over the outage's hours).
    q, docs_small = run(lines, step=7)
    assert docs_small == docs
    assert q.stats == p.stats
    assert q.clock.wm == p.clock.wm and math.isfinite(p.clock.wm)
