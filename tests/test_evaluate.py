"""`evaluate` (contract §7): the pure grading on hand-made cases with known answers, bad
labels files, and the command end to end on a scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from outagewatch.catalog import Catalog
from outagewatch.cli import main
from outagewatch.errors import InputError
from outagewatch.evaluate import Label, grade, parse_labels
from outagewatch.events import iso
from outagewatch.sim.scenarios import scenario, to_lines

T0 = 1_741_600_800.0  # 2025-03-10T10:00:00Z
CAT = Catalog.demo()


def inc(
    service: str, start: float, detected: float, end: float | None, **kw: Any
) -> dict[str, Any]:
    return {
        "service": service,
        "started_at": iso(start),
        "detected_at": iso(detected),
        "ended_at": None if end is None else iso(end),
        "suspected_abuse": False,
        **kw,
    }


def test_two_labels_one_found_three_minutes_late_one_false_incident() -> None:
    labels = [
        Label("netflix", T0, T0 + 1800),
        Label("youtube", T0 + 7200, T0 + 9000),
    ]
    incidents = [
        # Netflix: found; started 1 minute after the true start, confirmed 3 minutes after it.
        inc("netflix", T0 + 60, T0 + 180, T0 + 1900),
        # Gmail: nothing labelled there: a false incident.
        inc("gmail", T0 + 3600, T0 + 3720, T0 + 4200),
        # A suspected flood on YouTube is not public: left out, so YouTube is missed.
        inc("youtube", T0 + 7200, T0 + 7260, None, suspected_abuse=True),
    ]
    g = grade(labels, incidents, now=T0 + 2 * 86_400, span_days=2.0, services=10)
    assert g == {
        "labels": 2,
        "incidents": 2,
        "matched": 1,
        "recall": 0.5,
        "precision": 0.5,
        "false_incidents": 1,
        "false_per_1000_service_days": 50.0,  # 1 / (2 days x 10 services) x 1000
        "delay_median_min": 3.0,
        "delay_p90_min": 3.0,
        "started_error_median_min": 1.0,
        "per_label": [
            {"service": "netflix", "start": iso(T0), "matched": True, "delay_min": 3.0},
            {"service": "youtube", "start": iso(T0 + 7200), "matched": False, "delay_min": None},
        ],
    }


def test_matching_window_and_ongoing_incidents() -> None:
    lab = [Label("netflix", T0, T0 + 600)]
    # Starting 5 minutes before the label still matches; 6 minutes before and ended: not.
    assert grade(lab, [inc("netflix", T0 - 360, T0 - 300, T0 - 300)], now=T0, span_days=1,
                 services=1)["matched"] == 1  # fmt: skip
    assert grade(lab, [inc("netflix", T0 - 400, T0 - 380, T0 - 301)], now=T0, span_days=1,
                 services=1)["matched"] == 0  # fmt: skip
    # An ongoing incident reaches `now`; one starting after the label's end does not match.
    assert grade(lab, [inc("netflix", T0 - 3600, T0 - 3500, None)], now=T0 + 60, span_days=1,
                 services=1)["matched"] == 1  # fmt: skip
    g = grade(lab, [inc("netflix", T0 + 601, T0 + 700, None)], now=T0 + 900, span_days=1,
              services=1)  # fmt: skip
    assert g["matched"] == 0 and g["false_incidents"] == 1
    # Two incidents for one label: the earliest gives the delay; both are true.
    g = grade(lab, [inc("netflix", T0 + 300, T0 + 360, T0 + 500),
                    inc("netflix", T0 + 60, T0 + 120, T0 + 200)], now=T0, span_days=1,
              services=1)  # fmt: skip
    assert g["per_label"][0]["delay_min"] == 2.0 and g["precision"] == 1.0
    # No labels, no incidents: nothing to divide by.
    g = grade([], [], now=T0, span_days=0, services=3)
    assert g["recall"] is None and g["precision"] is None and g["delay_median_min"] is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"start": "2025-03-10T10:00:00Z", "end": "2025-03-10T11:00:00Z"}', "'service'"),
        (b'{"service": "nope", "start": 1, "end": 2}', "unknown service 'nope'"),
        (b'{"service": "netflix", "end": 2}', "missing field 'start'"),
        (b'{"service": "netflix", "start": "2025-03-10T10:00:00", "end": 2}', "field 'start'"),
        (b'{"service": "netflix", "start": 100, "end": 50}', "'end' is before 'start'"),
    ],
)
def test_bad_labels_name_the_line_and_reason(line: bytes, reason: str) -> None:
    good = b'{"service": "Netflix", "start": "2025-03-10T10:00:00Z", "end": 1741604400}'
    with pytest.raises(InputError) as e:
        parse_labels(b"\n".join([good, b"", line]), CAT, "l.ndjson")
    assert str(e.value).startswith("l.ndjson:3: ") and reason in str(e.value)
    assert parse_labels(good + b"\n\n", CAT) == [Label("netflix", T0, T0 + 3600)]


def test_bad_labels_file_is_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.ndjson"
    events.write_bytes(b"")
    labels = tmp_path / "l.ndjson"
    labels.write_bytes(b'{"service": "netflix", "start": 1, "end": "soon"}\n')
    assert main(["evaluate", str(events), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "l.ndjson:1:" in err and "'end'" in err
    assert main(["evaluate", str(events), "--labels", str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_evaluate_end_to_end_agrees_with_replay_and_incidents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two true outages (Netflix, YouTube 12 minutes later) and a labelled Gmail outage that
    never happened: evaluate grades what `replay` + `incidents` give, and leaves no store."""
    monkeypatch.chdir(tmp_path)
    start = T0 + 3 * 3600
    events = tmp_path / "e.ndjson"
    events.write_bytes(b"\n".join(to_lines(scenario("unrelated_pair", start, seed=1))) + b"\n")
    labels = tmp_path / "l.ndjson"
    labels.write_bytes(
        b"\n".join(
            orjson.dumps({"service": s, "start": iso(start + d), "end": iso(start + d + 1800)})
            for s, d in (("netflix", 0), ("youtube", 720), ("gmail", 3600))
        )
    )
    assert main(["evaluate", str(events), "--labels", str(labels), "--format", "json"]) == 0
    g = orjson.loads(capsys.readouterr().out)
    assert set(tmp_path.iterdir()) == {events, labels}  # no database left behind
    db = str(tmp_path / "x.db")
    assert main(["replay", "--db", db, str(events)]) == 0
    capsys.readouterr()
    assert main(["incidents", "--db", db, "--format", "json"]) == 0
    docs = orjson.loads(capsys.readouterr().out)
    by = {d["service"]: d for d in docs}
    assert set(by) == {"netflix", "youtube"}
    assert g["labels"] == 3 and g["matched"] == 2 and g["incidents"] == 2
    assert g["recall"] == round(2 / 3, 4) and g["precision"] == 1.0 and g["false_incidents"] == 0
    delays = {p["service"]: p["delay_min"] for p in g["per_label"]}
    for svc, d in (("netflix", 0), ("youtube", 720)):
        want = (parse(by[svc]["detected_at"]) - (start + d)) / 60
        assert delays[svc] == round(want, 2)
    assert delays["gmail"] is None
    assert main(["evaluate", str(events), "--labels", str(labels)]) == 0
    table = capsys.readouterr().out
    assert "recall" in table and "0.6667" in table and "gmail" in table


def parse(s: str) -> float:
    from outagewatch.events import parse_ts

    t = parse_ts(s)
    assert t is not None
    return t


def test_evaluate_counts_the_newest_reports_too(tmp_path: Path) -> None:
    """The files are all there is: the reports the stream clock holds at their end (the
    newest, until more reach their time) count in the incident that is still open."""
    from outagewatch.evaluate import replay_into_temp
    from outagewatch.settings import PipelineSettings
    from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

    traffic = [ServiceTraffic("netflix", 10.0, {"US": 1.0}, {"streaming": 1.0}, diurnal=0.0)]
    minutes = 1500
    surge = Surge("netflix", T0 + (minutes - 20) * 60, [200.0] * 20, name="end")
    sim = simulate(traffic, T0, minutes, [surge], seed=3, aggregate=True)
    events = tmp_path / "e.ndjson"
    events.write_bytes(b"\n".join(sim.lines) + b"\n")
    [doc] = replay_into_temp(Catalog.demo(), PipelineSettings(), [str(events)]).incidents
    begun = parse(doc["started_at"])
    want = sum(
        int(d.get("count", 1)) for d in map(orjson.loads, sim.lines) if parse(d["ts"]) >= begun
    )
    assert doc["total_reports"] == want
