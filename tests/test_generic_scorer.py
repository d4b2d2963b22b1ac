"""The generic anomaly scorer (detect/generic.py) and `score --input --output` (scorecsv.py)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from outagewatch.detect.generic import GenericScorer, likelihood, score_matrix, score_series
from outagewatch.errors import InputError, UsageError
from outagewatch.scorecsv import score_csv

MINUTE = 60.0
FloatArray = NDArray[np.float64]


def minutes(n: int) -> FloatArray:
    return np.arange(n, dtype=np.float64) * MINUTE


def noise(n: int, seed: int, level: float = 100.0, sd: float = 2.0) -> FloatArray:
    return level + np.random.default_rng(seed).normal(0.0, sd, n)


# ---------------------------------------------------------------------- the scorer
def test_scores_are_in_unit_interval_and_finite() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.full(50, 7.0),  # constant: the scale floor must avoid 0/0
            rng.normal(0.0, 1e9, 200),  # huge
            rng.normal(0.0, 1e-9, 200),  # tiny
            rng.standard_cauchy(200),  # heavy tails
        ]
    )
    s = score_series(minutes(len(x)), x)
    assert s.shape == x.shape
    assert np.all(np.isfinite(s))
    assert s.min() >= 0.0
    assert s.max() <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=80),
    gaps=st.lists(st.floats(0.0, 7200.0), min_size=80, max_size=80),
)
@pytest.mark.slow
def test_scores_in_unit_interval_property(xs: list[float], gaps: list[float]) -> None:
    t = np.cumsum(gaps[: len(xs)])
    s = score_series(t, np.array(xs), warmup=3)
    assert np.all((s >= 0.0) & (s <= 1.0))


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=60),
    tail=st.lists(st.one_of(st.floats(-1e9, 1e9), st.just(math.nan)), min_size=0, max_size=30),
    cut_frac=st.floats(0.0, 1.0),
    gaps=st.lists(st.floats(0.0, 600.0), min_size=90, max_size=90),
)
@pytest.mark.slow
def test_causal_later_rows_never_change_earlier_scores(
    xs: list[float], tail: list[float], cut_frac: float, gaps: list[float]
) -> None:
    cut = int(cut_frac * (len(xs) - 1)) + 1  # rows [0, cut) are kept, the rest replaced
    a = np.array(xs)
    b = np.array(xs[:cut] + tail)
    ta = np.cumsum(gaps[: len(a)])
    tb = np.cumsum(gaps[: len(b)])
    sa = score_series(ta, a, warmup=3)
    sb = score_series(tb, b, warmup=3)
    np.testing.assert_array_equal(sa[:cut], sb[:cut])


@pytest.mark.slow
def test_spike_and_dip_in_gaussian_noise() -> None:
    n, sd = 5000, 2.0
    x = noise(n, seed=1, sd=sd)
    spikes = {1500: +8 * sd, 3000: -9 * sd, 4200: +40 * sd}
    for i, d in spikes.items():
        x[i] += d
    s = score_series(minutes(n), x)
    for i in spikes:
        assert s[i] > 0.99, (i, s[i])
    normal = np.ones(n, dtype=bool)
    for i in spikes:
        normal[i] = False
    # calibrated: ordinary noise stays far from 1 (0.5 is a 1-in-100,000 event)
    assert np.mean(s[normal] < 0.3) >= 0.99  # 0.3: a 1-in-1,000 event
    assert np.sum(s[normal] > 0.5) <= 3  # the odd new record of the range seen so far
    # one spike barely moves the learned state: the rows after it are ordinary again
    for i in spikes:
        assert np.all(s[i + 1 : i + 200] < 0.5)


@pytest.mark.slow
def test_likelihood_keeps_resolution_near_one() -> None:
    p = np.array([1.0, 0.5, 1e-5, 1e-8, 1e-9, 1e-10, 1e-30])
    np.testing.assert_allclose(
        likelihood(np.log(p)), [0.0, 0.0301, 0.5, 0.8, 0.9, 1.0, 1.0], atol=1e-4
    )
    # tail probabilities that erf would round to exactly 1.0 stay apart
    x = noise(3000, seed=11, sd=1.0)
    x[2000:2010] += 3.0  # a modest sustained shift
    x[2500:2510] += 5.0  # a larger one
    s = score_series(minutes(3000), x, spatial_after=10**9, resid_factor=0.0)
    a, b = s[2000:2010].max(), s[2500:2510].max()
    assert 0.2 < a < b < 1.0


@pytest.mark.slow
def test_refractory_period_after_a_flag() -> None:
    x = noise(3000, seed=12, sd=1.0)
    x[1000:1100] += 25.0  # a lasting anomaly: flagged at its start only
    x[1500] += 60.0  # after the refractory period: flagged again
    s = score_series(minutes(3000), x, refractory=120)
    assert s[1000] == 1.0
    np.testing.assert_array_equal(s[1001:1121], 0.0)  # 120 quiet rows
    assert s[1500] == 1.0
    loud = score_series(minutes(3000), x, refractory=0)
    assert np.sum(loud[1000:1120] > 0.7) > 1  # without it the anomaly keeps scoring


@pytest.mark.slow
def test_out_of_range_value_is_flagged_at_once() -> None:
    rng = np.random.default_rng(13)
    x = np.where(rng.random(2000) < 0.3, rng.uniform(0.0, 100.0, 2000), 50.0)  # wild, in 0..100
    x[1500] = 106.0  # beyond the range seen by more than 5% of it
    x[1800] = 99.0  # inside it
    s = score_series(minutes(2000), x)
    assert s[1500] == 1.0
    assert s[1800] < 0.5
    early = score_series(minutes(2000), x, spatial_after=10**9)
    assert early[1500] < 1.0  # the spatial rule is what flags it


@pytest.mark.slow
def test_seasonality_where_the_series_has_it() -> None:
    step = 300.0  # a daily square wave at 5-minute rows
    n = 12 * 288
    t = np.arange(n) * step
    tod = (t % 86400.0) / 86400.0
    x = np.where((tod > 0.3) & (tod < 0.6), 80.0, 20.0) + np.random.default_rng(3).normal(0, 1, n)
    a, b = 9 * 288 + int(0.3 * 288) + 1, 9 * 288 + int(0.6 * 288)
    x[a:b] = 20.0 + np.random.default_rng(4).normal(0, 1, b - a)  # one day the high phase fails
    s = score_series(t, x)
    assert s[a : a + 12].max() > 0.7  # flagged within the hour
    flat = score_series(t, x, season_slots=1)
    assert flat[a:b].max() < 0.1  # a model without the time of day cannot see it


def test_first_rows_score_zero_during_warmup() -> None:
    x = np.array([1.0, 1e6, -1e6, 5.0, 1e9, 3.0, 2.0, 1.0, 0.0, 7.0, 1e12])
    s = score_series(minutes(len(x)), x, warmup=10, spatial_after=10)
    np.testing.assert_array_equal(s[:10], 0.0)
    assert s[10] > 0.99


@pytest.mark.parametrize("shift", [+20.0, -20.0, +200.0])
@pytest.mark.slow
def test_level_shift_is_flagged_then_absorbed(shift: float) -> None:
    n, at, sd = 4000, 1500, 1.0
    x = noise(n, seed=2, sd=sd)
    x[at:] += shift * sd
    s = score_series(minutes(n), x)
    assert s[at] > 0.99  # flagged at its start
    # absorbed: once the refractory period is over the new level is ordinary
    later = s[at + 120 :]
    assert np.mean(later < 0.1) >= 0.98
    assert np.sum(later > 0.5) <= 2
    # and before the shift nothing was flagged much
    assert np.sum(s[:at] > 0.5) <= 2


@pytest.mark.slow
def test_sustained_shift_is_learned_not_flagged_forever() -> None:
    x = noise(3000, seed=3, sd=1.0)
    x[1000:] += 30.0
    s = score_series(minutes(3000), x, refractory=0)  # no refractory: the model alone
    flagged = np.flatnonzero(s[1000:] > 0.7)
    assert len(flagged) >= 1 and flagged[0] == 0
    assert np.mean(s[1300:] < 0.5) >= 0.99  # absorbed within a few hundred rows


@pytest.mark.slow
def test_vectorised_equals_independent_runs() -> None:
    rng = np.random.default_rng(4)
    n, k = 600, 5
    t = np.cumsum(rng.uniform(1.0, 300.0, n))  # irregular, shared by all series
    levels = np.array([0.01, 1.0, 100.0, 1e4, -50.0])
    sds = np.array([0.001, 0.1, 5.0, 300.0, 2.0])
    x = levels + rng.normal(0.0, 1.0, (n, k)) * sds
    x[rng.random((n, k)) < 0.2] = np.nan  # each series has its own gaps
    x[300] = levels + 20 * sds
    x[:40, 4] = np.nan  # one series starts late
    scorer = GenericScorer(k, refractory=0)
    vec = np.zeros((n, k))
    for i in range(n):
        vec[i] = scorer.score_one(float(t[i]), x[i])
        scorer.learn_one(float(t[i]), x[i])
    for j in range(k):
        one = score_series(t, x[:, j], refractory=0)
        np.testing.assert_allclose(vec[:, j], one, rtol=1e-12, atol=1e-12)
    assert np.all(vec[300] > 0.99)
    # and score_matrix (each series with its own timestamps) agrees too
    both = score_matrix(np.repeat(t[:, None], k, 1), x, refractory=0)
    np.testing.assert_allclose(both, vec, atol=1e-12)


def test_score_one_does_not_change_state() -> None:
    g = GenericScorer(3)
    for i in range(150):
        g.learn_one(i * MINUTE, np.array([1.0 + i % 3, 5.0, np.nan]))
    before = g.dump()
    x = np.array([50.0, 5.0, 3.0])
    a = g.score_one(150 * MINUTE, x)
    b = g.score_one(150 * MINUTE, x)
    np.testing.assert_array_equal(a, b)
    assert str(g.dump()) == str(before)
    assert a[0] > 0.99
    assert a[2] == 0.0  # never observed: still warming up
    # a dumped state restored into a fresh scorer scores the same
    h = GenericScorer(3)
    h.load(before)
    np.testing.assert_array_equal(h.score_one(150 * MINUTE, x), a)
    with pytest.raises(ValueError, match="shape"):
        GenericScorer(2).load(before)


@pytest.mark.slow
def test_nan_means_no_observation() -> None:
    x = noise(400, seed=5)
    x[:2] = [90.0, 110.0]  # the range is seen early: no new records (and flags) later
    x[200] += 30.0
    t = minutes(400)
    holes = np.zeros(400, dtype=bool)
    holes[[3, 50, 51, 52, 199, 250, 399]] = True
    with_nan = x.copy()
    with_nan[holes] = np.nan
    s_nan = score_series(t, with_nan)
    s_drop = score_series(t[~holes], x[~holes])
    np.testing.assert_array_equal(s_nan[holes], 0.0)
    np.testing.assert_allclose(s_nan[~holes], s_drop, rtol=1e-12, atol=1e-12)
    assert s_nan[200] > 0.99
    # infinities are treated like NaN
    with_inf = with_nan.copy()
    with_inf[holes] = np.inf
    np.testing.assert_array_equal(score_series(t, with_inf), s_nan)


def test_warmup_counts_observations_not_rows() -> None:
    x = np.array([np.nan] * 20 + [1.0, 2.0, 1.0, 2.0, 1.0, 100.0])
    s = score_series(minutes(len(x)), x, warmup=5, spatial_after=5)
    np.testing.assert_array_equal(s[:25], 0.0)  # 20 gaps and 5 observations
    assert s[25] > 0.99


@pytest.mark.slow
def test_time_only_places_rows_in_the_day() -> None:
    # the smoothing counts rows: the same rows at other instants of the same times of day
    # (whole days later, or with gaps of whole days) score the same
    rng = np.random.default_rng(6)
    t = np.arange(2000) * 300.0
    x = 10.0 + np.cumsum(rng.normal(0.0, 0.1, 2000)) + rng.normal(0.0, 0.5, 2000)
    x[1400] += 9.0
    s = score_series(t, x)
    np.testing.assert_array_equal(score_series(t + 7 * 86400.0, x), s)
    gaps = t + np.where(np.arange(2000) >= 1000, 3 * 86400.0, 0.0)
    np.testing.assert_array_equal(score_series(gaps, x), s)
    assert s[1400] > 0.7


@pytest.mark.slow
def test_irregular_timestamps_and_gaps() -> None:
    rng = np.random.default_rng(8)
    n = 3000
    t = np.cumsum(rng.exponential(60.0, n))  # Poisson arrivals
    t[1500:] += 6 * 3600.0  # and a 6-hour hole
    x = 50.0 + 0.002 * np.arange(n) + rng.normal(0.0, 1.0, n)  # slow drift
    x[[700, 2200]] += 15.0
    s = score_series(t, x)
    assert s[700] > 0.7
    assert s[2200] > 0.7
    normal = np.ones(n, dtype=bool)
    normal[[700, 2200]] = False
    assert np.mean(s[normal] < 0.3) >= 0.99


@pytest.mark.slow
def test_rows_stepping_back_in_time_are_scored_in_file_order() -> None:
    x = noise(400, seed=14, sd=1.0)
    x[300] += 20.0
    t = minutes(400)
    back = t.copy()
    back[200:] -= 3600.0  # the clock steps back an hour (a repeated hour)
    s = score_series(back, x, season_slots=1)
    np.testing.assert_array_equal(s, score_series(t, x, season_slots=1))
    assert s[300] > 0.99
    g = GenericScorer(1)
    g.learn_one(100.0, np.array([1.0]))
    with pytest.raises(ValueError, match="backwards"):
        g.learn_one(99.0, np.array([1.0]))  # the scorer itself needs time in order


def test_constant_series_uses_a_scale_floor() -> None:
    x = np.full(200, 100.0)
    x[140] = 100.0 + 1e-6  # far below 0.1% of the level
    x[180] = 103.0
    s = score_series(minutes(200), x)
    assert np.all(s[:140] < 0.05)
    assert s[140] < 0.1  # p = 0.16: ordinary
    assert s[180] > 0.99


def test_learn_one_rejects_bad_input() -> None:
    g = GenericScorer(2)
    g.learn_one(100.0, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="backwards"):
        g.learn_one(99.0, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        g.learn_one(101.0, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="shape"):
        g.score_one(101.0, np.array([1.0]))
    with pytest.raises(ValueError, match="warmup"):
        GenericScorer(1, warmup=1)
    with pytest.raises(ValueError, match="level_half_life"):
        GenericScorer(1, level_half_life=0.0)
    with pytest.raises(ValueError, match="refractory"):
        GenericScorer(1, refractory=-1)
    with pytest.raises(ValueError, match="1-d"):
        score_series(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------- score_csv
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    vals = 20.0 + rng.normal(0.0, 1.0, 200)
    vals[:2] = [16.0, 24.0]  # the range is seen early: no new records (and flags) later
    vals[150] = 60.0
    stamps = [f"2024-03-01T{i // 60:02d}:{i % 60:02d}:00Z" for i in range(200)]
    cells = [f"{v:.3f}" for v in vals]
    cells[20] = ""  # no observation
    lines = ["timestamp,value", *(f"{s},{c}" for s, c in zip(stamps, cells, strict=True))]
    src = write(tmp_path / "in.csv", "\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    assert score_csv(src, str(out)) == 200
    rows = read_rows(out)
    assert out.read_text(encoding="utf-8").splitlines()[0] == "timestamp,value,anomaly_score"
    assert len(rows) == 201
    body = rows[1:]
    assert [r[0] for r in body] == stamps
    assert [r[1] for r in body] == cells
    scores = np.array([float(r[2]) for r in body])
    assert all(len(r[2].split(".")[1]) == 6 for r in body)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert scores[20] == 0.0
    assert scores[150] > 0.99
    assert np.mean(scores < 0.99) >= 0.98
    # the same numbers as scoring the series directly
    t = minutes(200)
    v = np.array([np.nan if c == "" else float(c) for c in cells])
    np.testing.assert_allclose(scores, np.round(score_series(t, v), 6), atol=1e-9)


def test_csv_keeps_timestamp_strings_and_mixed_zones(tmp_path: Path) -> None:
    text = (
        "\ufefftimestamp,value,host\n"  # a BOM and an extra column
        "2024-01-01T00:00:00+02:00,1.5,a\n"  # 2023-12-31 22:00 UTC
        "2023-12-31 22:30,2,a\n"  # naive: taken as UTC
        "\n"  # blank lines are skipped
        '"Dec 31, 2023 23:00 UTC", 3 ,b\n'
        "2024-01-01T00:30:00+01:00,nan,b\n"  # 23:30 UTC; nan = no observation
        "2024-01-01T00:00:00Z,,c\n"
    )
    src = write(tmp_path / "in.csv", text)
    out = tmp_path / "out.csv"
    assert score_csv(src, str(out)) == 5
    rows = read_rows(out)
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert [r[0] for r in rows[1:]] == [
        "2024-01-01T00:00:00+02:00",
        "2023-12-31 22:30",
        "Dec 31, 2023 23:00 UTC",
        "2024-01-01T00:30:00+01:00",
        "2024-01-01T00:00:00Z",
    ]
    assert [r[1] for r in rows[1:]] == ["1.5", "2", " 3 ", "nan", ""]
    assert [r[2] for r in rows[1:]] == ["0.000000"] * 5  # all within warm-up


def test_csv_header_only(tmp_path: Path) -> None:
    src = write(tmp_path / "in.csv", "timestamp,value\n")
    out = tmp_path / "out.csv"
    assert score_csv(src, str(out)) == 0
    assert out.read_text(encoding="utf-8") == "timestamp,value,anomaly_score\n"


GOOD = "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time,value\n2024-01-01,1\n", ["line 1", "'timestamp'"]),
        ("timestamp,val\n2024-01-01,1\n", ["line 1", "'value'"]),
        (
            f"timestamp,value\n{GOOD},1\n{GOOD},2\nnot a time,3\n",
            ["line 4", "'timestamp'", "not a time"],
        ),
        (f"timestamp,value\n{GOOD},1\n\n,3\n", ["line 4", "'timestamp'"]),  # blank line counted
        (f"timestamp,value\n{GOOD},1\n{GOOD},abc\n", ["line 3", "'value'", "abc"]),
        (f"timestamp,value\n{GOOD},1\n{GOOD},inf\n", ["line 3", "'value'", "inf"]),
        (f"timestamp,value\n{GOOD},1\n{GOOD},1,extra\n", ["line 3", "expected 2 fields"]),
        ("", ["line 1", "empty"]),
        # the first problem in file order is reported, whatever its kind
        (f"timestamp,value\n{GOOD},x\nbad,1\n", ["line 2", "'value'"]),
    ],
)
def test_csv_errors_name_file_line_and_column(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    src = write(tmp_path / "in.csv", text)
    with pytest.raises(InputError) as err:
        score_csv(src, str(tmp_path / "out.csv"))
    msg = str(err.value)
    assert msg.startswith(src)
    assert "\n" not in msg
    for part in expected:
        assert part in msg
    assert not (tmp_path / "out.csv").exists()


def test_csv_missing_or_unreadable_input(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no such file") as err:
        score_csv(missing, str(tmp_path / "out.csv"))
    assert missing in str(err.value)
    with pytest.raises(InputError, match="directory"):
        score_csv(str(tmp_path), str(tmp_path / "out.csv"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"timestamp,value\n\xff\xfe\x00,1\n")
    with pytest.raises(InputError, match="UTF-8"):
        score_csv(str(binary), str(tmp_path / "out.csv"))


def test_csv_unwritable_output(tmp_path: Path) -> None:
    src = write(tmp_path / "in.csv", f"timestamp,value\n{GOOD},1\n")
    with pytest.raises(UsageError, match="cannot write"):
        score_csv(src, str(tmp_path / "no" / "such" / "dir" / "out.csv"))


@pytest.mark.slow
def test_csv_rows_out_of_time_order_are_a_warning(tmp_path: Path) -> None:
    stamps = [f"2024-03-01T{i // 60:02d}:{i % 60:02d}:00Z" for i in range(300)]
    stamps[150] = stamps[149]  # a repeated timestamp, line 152
    stamps[200:205] = stamps[100:105]  # the clock steps back, lines 202..206 (1 step back)
    stamps[260] = "2024-03-01T09:00:00+00:00"  # sorted as text, but later in UTC than 04:21
    del stamps[280:290]  # a gap of 11 minutes
    vals = noise(len(stamps), seed=15, sd=1.0)
    vals[:2] = [95.0, 105.0]
    vals[250] += 30.0
    lines = ["timestamp,value", *(f"{a},{v:.3f}" for a, v in zip(stamps, vals, strict=True))]
    src = write(tmp_path / "in.csv", "\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    notes: list[str] = []
    assert score_csv(src, str(out), warn=notes.append) == len(stamps)
    assert len(notes) == 1 and "\n" not in notes[0]
    msg = notes[0]
    assert msg.startswith(f"{src}: warning: ")
    assert "stepping back in time: 2 (first at line 202)" in msg  # 200 and 262 step back
    assert "repeating the timestamp before: 1 (first at line 152)" in msg
    assert "gaps of more than twice the usual interval of 1 min: 3 (first at line 207)" in msg
    assert msg.endswith("rows are scored in file order")
    rows = read_rows(out)[1:]
    assert [r[0] for r in rows] == stamps  # one row per input row, in file order
    scores = np.array([float(r[2]) for r in rows])
    assert scores[250] > 0.99
    # regular timestamps: no warning at all
    notes.clear()
    ok = write(tmp_path / "ok.csv", "timestamp,value\n" + "".join(
        f"2024-03-01T00:{i:02d}:00Z,1\n" for i in range(30)
    ))  # fmt: skip
    score_csv(ok, str(out), warn=notes.append)
    assert notes == []


@pytest.mark.slow
def test_cli_score_warns_on_stderr_and_keeps_every_row(tmp_path: Path) -> None:
    src = write(
        tmp_path / "in.csv",
        "timestamp,value\n2024-01-01T00:02:00Z,1\n2024-01-01T00:03:00Z,2\n2024-01-01T00:01:00Z,3\n",
    )
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [Path(sys.executable).parent / "outagewatch", "score", "--input", src, "--output", out],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1
    assert "stepping back in time: 1 (first at line 4)" in warnings[0]
    assert len(read_rows(out)) == 4
