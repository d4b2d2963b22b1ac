"""The generic anomaly scorer (detect/generic.py) and `score --input --output` (scorecsv.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from outagewatch.detect.generic import GenericScorer, score_series
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


def test_spike_and_dip_in_gaussian_noise() -> None:
    n, sd = 5000, 2.0
    x = noise(n, seed=1, sd=sd)
    spikes = {1500: +8 * sd, 3000: -8 * sd, 4200: +6 * sd}
    for i, d in spikes.items():
        x[i] += d
    s = score_series(minutes(n), x)
    for i in spikes:
        assert s[i] > 0.99, (i, s[i])
    normal = np.ones(n, dtype=bool)
    normal[:10] = False  # warm-up
    for i in spikes:
        normal[i] = False
    assert np.mean(s[normal] < 0.99) >= 0.98
    assert np.mean(s[normal] < 0.9) >= 0.85  # ordinary noise mostly scores < 0.9
    # one spike barely moves the learned state: the next row is ordinary again
    for i in spikes:
        assert s[i + 1] < 0.99


def test_first_rows_score_zero_during_warmup() -> None:
    x = np.array([1.0, 1e6, -1e6, 5.0, 1e9, 3.0, 2.0, 1.0, 0.0, 7.0, 1e12])
    s = score_series(minutes(len(x)), x, warmup=10)
    np.testing.assert_array_equal(s[:10], 0.0)
    assert s[10] > 0.99


@pytest.mark.parametrize("shift", [+20.0, -20.0, +200.0])
def test_level_shift_is_flagged_then_absorbed(shift: float) -> None:
    n, at, sd = 4000, 1500, 1.0
    x = noise(n, seed=2, sd=sd)
    x[at:] += shift * sd
    s = score_series(minutes(n), x)
    assert np.all(s[at : at + 5] > 0.99)  # flagged at its start
    # absorbed: a few hours later the new level is ordinary
    later = s[at + 240 :]
    assert np.mean(later < 0.99) >= 0.98
    assert np.mean(later < 0.9) >= 0.85
    # and before the shift nothing was flagged much
    assert np.mean(s[10:at] < 0.99) >= 0.98


def test_sustained_shift_outlasts_a_single_row_but_not_forever() -> None:
    x = noise(3000, seed=3, sd=1.0)
    x[1000:] += 30.0
    s = score_series(minutes(3000), x)
    flagged = np.flatnonzero(s[1000:] > 0.99)
    first_quiet = next(i for i in range(2000) if np.all(s[1000 + i : 1000 + i + 30] < 0.99))
    assert first_quiet >= 10  # flagged for at least 10 minutes
    assert first_quiet <= 180  # and absorbed within 3 hours
    assert len(flagged) >= 10


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
    scorer = GenericScorer(k)
    vec = np.zeros((n, k))
    for i in range(n):
        vec[i] = scorer.score_one(float(t[i]), x[i])
        scorer.learn_one(float(t[i]), x[i])
    for j in range(k):
        np.testing.assert_allclose(vec[:, j], score_series(t, x[:, j]), rtol=1e-12, atol=1e-12)
    assert np.all(vec[300] > 0.99)


def test_score_one_does_not_change_state() -> None:
    g = GenericScorer(3)
    for i in range(20):
        g.learn_one(i * MINUTE, np.array([1.0 + i % 3, 5.0, np.nan]))
    before = (g.nobs.copy(), g.s1.copy(), g.s2.copy(), g.mad.copy(), g.t_last.copy())
    x = np.array([50.0, 5.0, 3.0])
    a = g.score_one(20 * MINUTE, x)
    b = g.score_one(20 * MINUTE, x)
    np.testing.assert_array_equal(a, b)
    after = (g.nobs, g.s1, g.s2, g.mad, g.t_last)
    for u, v in zip(before, after, strict=True):
        np.testing.assert_array_equal(u, v)
    assert a[0] > 0.99
    assert a[2] == 0.0  # never observed: still warming up


def test_nan_means_no_observation() -> None:
    x = noise(400, seed=5)
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
    s = score_series(minutes(len(x)), x, warmup=5)
    np.testing.assert_array_equal(s[:25], 0.0)  # 20 gaps and 5 observations
    assert s[25] > 0.99


def test_smoothing_depends_on_elapsed_time_not_rows() -> None:
    # scaling time and every time constant by the same factor changes nothing
    rng = np.random.default_rng(6)
    t = np.cumsum(rng.uniform(10.0, 200.0, 500))
    x = 10.0 + np.cumsum(rng.normal(0.0, 0.1, 500)) + rng.normal(0.0, 0.5, 500)
    x[250] += 5.0
    kw = {"level_half_life_s": 600.0, "scale_half_life_s": 3600.0, "trend_damping_s": 1800.0}
    kw2 = {k: 3.0 * v for k, v in kw.items()}
    np.testing.assert_allclose(
        score_series(t, x, **kw), score_series(3.0 * t, x, **kw2), rtol=1e-9, atol=1e-12
    )
    # a longer level half-life follows a level change more slowly (so it is flagged longer)
    y = noise(1000, seed=7, sd=1.0)
    y[500:] += 8.0
    fast = score_series(minutes(1000), y, level_half_life_s=120.0)
    slow = score_series(minutes(1000), y, level_half_life_s=3600.0)
    assert np.sum(slow[500:] > 0.99) > np.sum(fast[500:] > 0.99)


def test_irregular_timestamps_and_gaps() -> None:
    rng = np.random.default_rng(8)
    n = 3000
    t = np.cumsum(rng.exponential(60.0, n))  # Poisson arrivals
    t[1500:] += 6 * 3600.0  # and a 6-hour hole
    x = 50.0 + 0.002 * t / 60.0 + rng.normal(0.0, 1.0, n)  # slow drift
    x[[700, 2200]] += 9.0
    s = score_series(t, x)
    assert s[700] > 0.99
    assert s[2200] > 0.99
    assert s[1500] < 0.99  # the damped trend does not extrapolate wildly across the hole
    normal = np.ones(n, dtype=bool)
    normal[[0, 700, 2200]] = False
    normal[:10] = False
    assert np.mean(s[normal] < 0.99) >= 0.98


def test_damped_trend_follows_a_daily_cycle() -> None:
    n = 3 * 1440
    t = minutes(n)
    base = 1000.0 + 300.0 * np.sin(2 * np.pi * t / 86400.0)
    x = base + np.random.default_rng(9).normal(0.0, 5.0, n)
    spikes = np.arange(1000, n, 337)
    x[spikes] += 30.0  # 6 noise sds
    s = score_series(t, x)
    normal = np.ones(n, dtype=bool)
    normal[spikes] = False
    normal[:10] = False
    assert np.mean(s[normal] < 0.99) >= 0.98
    assert np.mean(s[spikes] > 0.99) >= 0.9
    # without the trend the lag behind the cycle inflates the scale and hides most spikes
    s_flat = score_series(t, x, trend=False)
    assert np.mean(s_flat[spikes] > 0.99) < np.mean(s[spikes] > 0.99)


def test_constant_series_uses_a_scale_floor() -> None:
    x = np.full(60, 100.0)
    x[40] = 100.0 + 1e-6  # far below 0.1% of the level
    x[50] = 103.0
    s = score_series(minutes(60), x)
    np.testing.assert_array_equal(s[10:40], 0.0)
    assert s[40] < 0.1
    assert s[50] > 0.99


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
    with pytest.raises(ValueError, match="level_half_life_s"):
        GenericScorer(1, level_half_life_s=0.0)
    with pytest.raises(ValueError, match="1-d"):
        score_series(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------- score_csv
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    vals = 20.0 + rng.normal(0.0, 1.0, 200)
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
        (
            "timestamp,value\n2024-01-01T00:02:00Z,1\n2024-01-01T00:03:00Z,1\n"
            "2024-01-01T00:01:00Z,1\n",
            ["line 4", "time order"],
        ),
        (  # sorted as text but not in UTC
            "timestamp,value\n2024-01-01T01:00:00+00:00,1\n2024-01-01T01:30:00+01:00,1\n",
            ["line 3", "time order"],
        ),
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
