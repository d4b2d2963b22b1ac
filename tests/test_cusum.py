"""The sequential surge test (detect.cusum): its step, its closed-form skip of quiet minutes,
its threshold, and what it changes in the pipeline (faster confirmation of small surges on
quiet services; state that survives a restart)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from outagewatch.catalog import Catalog
from outagewatch.detect.cusum import (
    BIAS_DECAY,
    RECENT_COLUMNS,
    SURGE_SIZES,
    cusum_skip,
    cusum_step,
    first_sizes,
    guard_ratio,
    log_into,
    threshold,
    zero_increment,
)
from outagewatch.errors import UsageError
from outagewatch.events import EventDecoder, parse_ts
from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.settings import PipelineSettings
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

KS = np.asarray(SURGE_SIZES, np.float64)
START = 1_749_427_200.0  # 2025-06-09T00:00:00Z, a Monday


State = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
GUARD = guard_ratio(2.0, 1.6)


def fresh(n: int) -> State:
    nk = len(KS)
    return (np.zeros((n, nk)), np.zeros((n, nk)), np.zeros((n, nk)), np.zeros((n, RECENT_COLUMNS)))


def step(
    state: State,
    x: NDArray[np.float64],
    mu: NDArray[np.float64],
    disp: NDArray[np.float64],
    h: float = 1e9,
    first: NDArray[np.int8] | None = None,
) -> NDArray[np.bool_]:
    n = len(x)
    fired = np.zeros(n, np.bool_)
    ratio = np.zeros(n)
    sizes = np.zeros(n, np.int8) if first is None else first
    minute = (x.astype(np.float32), mu, disp.astype(np.float32), np.ones(n, np.bool_))
    # The window test's guards (min_ratio 2.0): the CUSUM's own ratio guard is GUARD.
    cusum_step((*state, KS, sizes, h, GUARD), minute, (2.0, 6.0, 0.0), (fired, ratio))
    return fired


@pytest.mark.slow
def test_the_increment_is_the_negative_binomial_likelihood_ratio() -> None:
    """One minute from 0: S_k = max(0, log NB(x; k mu) - log NB(x; mu))."""
    from scipy.stats import nbinom

    mu, disp = 2.0, 0.125  # exact in float32
    r = 1 / disp
    state = fresh(1)
    step(state, np.array([7.0]), np.array([mu]), np.array([disp]))

    def logpmf(x: float, mean: float) -> float:
        return float(nbinom.logpmf(x, r, r / (r + mean)))

    want = [max(0.0, logpmf(7, k * mu) - logpmf(7, mu)) for k in SURGE_SIZES]
    np.testing.assert_allclose(state[0][0], want, rtol=1e-9)
    assert np.allclose(zero_increment(np.array([mu]), np.array([disp]), KS)[0],
                       [logpmf(0, k * mu) - logpmf(0, mu) for k in SURGE_SIZES])  # fmt: skip


def test_a_quiet_run_in_closed_form_equals_stepping_minute_by_minute() -> None:
    rng = np.random.default_rng(5)
    n, run = 30, 17
    state = fresh(n)
    disp = rng.uniform(0.005, 0.5, n).astype(np.float32).astype(np.float64)
    for _ in range(5):  # some history, so that S and the run sums are not 0
        step(state, rng.poisson(6, n).astype(float), rng.uniform(0.1, 3, n), disp)
    stepped: State = (state[0].copy(), state[1].copy(), state[2].copy(), state[3].copy())
    mus = rng.uniform(0.05, 2.0, (run, n))
    for t in range(run):
        step(stepped, np.zeros(n), mus[t], disp)
    rows = np.arange(n)
    zero_sum = sum(zero_increment(np.maximum(mus[t], 1e-3), disp, KS) for t in range(run))
    cusum_skip(*state[:3], rows, np.asarray(zero_sum), np.maximum(mus, 1e-3).sum(axis=0))
    for a, b in zip(state[:3], stepped[:3], strict=True):  # not the bias EWMAs (`recent`)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def ln(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """`log_into` of `values` (the test's own logarithm)."""
    a = np.ascontiguousarray(values, np.float64)
    out = np.empty_like(a)
    log_into(a, out, np.empty(len(a), np.int64))
    return out


def test_the_logarithm_is_within_one_unit_in_the_last_place() -> None:
    """`log_into` against the exact logarithm (long double), over the arguments the test
    takes (mu + r and k mu + r: ~1e-3 to ~1e11) and beyond, around 1 (where ln is ~0 and a
    relative error shows most) and at powers of two; libm's log is within 1 ulp too."""
    rng = np.random.default_rng(7)
    a = np.concatenate(
        [
            np.exp(rng.uniform(-700.0, 700.0, 200_000)),
            np.exp(rng.uniform(-8.0, 26.0, 200_000)),
            1.0 + rng.uniform(-1e-3, 1e-3, 50_000),
            np.nextafter(1.0, [0.0, 2.0]),
            np.ldexp(1.0, np.arange(-1000, 1000)),
            [np.sqrt(0.5), np.sqrt(2.0), 1e-3, 1e9 + 1e-3, np.finfo(np.float64).max],
        ]
    )
    got = ln(a)
    exact = np.log(a.astype(np.longdouble))
    ulps = np.abs((got.astype(np.longdouble) - exact) / np.spacing(np.abs(got))).astype(float)
    assert np.nanmax(ulps[got != 0.0]) < 1.0
    assert ln(np.array([1.0]))[0] == 0.0
    np.testing.assert_allclose(got, np.log(a), rtol=3e-16, atol=0.0)


def test_a_step_is_the_exact_formula_for_every_series_and_size() -> None:
    """`cusum_step` computes every series and size at once, without branches; each S_k and
    run sum equals the formula worked one by one (with the same logarithm), bit for bit: a
    run that ends (at or below 0, or no report while at 0), one that goes on, sizes below a
    series' first left as they are, series not warm held at 0 (their EWMAs left alone), and
    the EWMAs, restarted where no S_k was above 0."""
    rng = np.random.default_rng(11)
    n = 400
    state = fresh(n)
    state[0][:] = rng.choice([0.0, 0.0, 1e-6, 0.05, 0.5, 3.0, 12.0], (n, len(KS)))
    state[1][:] = np.where(state[0] > 0, 3.0, 0.0)
    state[2][:] = np.where(state[0] > 0, 1.5, 0.0)
    state[3][:] = rng.uniform(0.0, 4.0, (n, RECENT_COLUMNS))
    x = rng.choice([0.0, 0.0, 1.0, 2.0, 7.0], n).astype(np.float32)
    mu = rng.uniform(0.0, 5.0, n)
    disp = rng.uniform(0.0, 0.5, n).astype(np.float32)
    eligible = rng.random(n) < 0.9
    first = rng.choice([0, 1, 2], n).astype(np.int8)
    want = [a.copy() for a in state]
    cases = {"ends": 0, "goes on": 0, "left": 0}
    for i in range(n):
        if not eligible[i]:
            for a in want[:3]:
                a[i] = 0.0
            continue
        m = max(mu[i], 1e-3)
        r = 1.0 / max(float(disp[i]), 1e-9)
        xi = float(x[i])
        if not want[0][i].any():
            want[3][i, 2:] = want[3][i, :2]
        want[3][i, 0] = BIAS_DECAY * want[3][i, 0] + (1.0 - BIAS_DECAY) * xi
        want[3][i, 1] = BIAS_DECAY * want[3][i, 1] + (1.0 - BIAS_DECAY) * m
        log_base = ln(np.array([m + r]))[0]
        for j, k in enumerate(KS):
            if j < first[i]:
                cases["left"] += 1
                continue
            s0 = want[0][i, j]
            d = log_base - ln(np.array([k * m + r]))[0]
            s = s0 + (xi * (math.log(k) + d) + r * d)
            if s <= 0.0 or (xi == 0.0 and s0 == 0.0):
                cases["ends"] += 1
                want[0][i, j] = want[1][i, j] = want[2][i, j] = 0.0
            else:
                cases["goes on"] += 1
                want[0][i, j] = s
                want[1][i, j] += xi
                want[2][i, j] += m
    fired = np.zeros(n, np.bool_)
    test = (*state, KS, first, 1e9, GUARD)  # h = 1e9: no alarm
    assert not cusum_step(test, (x, mu, disp, eligible), (2.0, 6.0, 0.0), (fired, np.zeros(n)))
    assert min(cases.values()) > 100
    for got, exact in zip(state, want, strict=True):
        np.testing.assert_array_equal(got, exact)


def test_the_threshold_follows_the_budget() -> None:
    assert threshold(1.0) == pytest.approx(math.log(1000 * 1440 * 8 * len(SURGE_SIZES)))
    assert threshold(0.1) - threshold(1.0) == pytest.approx(math.log(10))
    with pytest.raises(UsageError, match="budget"):
        PipelineSettings(false_alarm_budget=-1)


def test_alarm_needs_the_guards_and_restarts() -> None:
    """S far above h but the run only 1.6x the forecast: no alarm (an organic bump)."""
    state = fresh(1)
    for _ in range(200):
        assert not step(state, np.array([16.0]), np.array([10.0]), np.array([0.005]), h=5.0)[0]
    state = fresh(1)
    assert step(state, np.array([40.0]), np.array([2.0]), np.array([0.05]), h=5.0)[0]
    assert not state[0].any() and not state[1].any()  # restarted after the alarm


def test_the_ratio_guard_lies_between_the_organic_bump_and_the_smallest_outage() -> None:
    """guard_ratio: where a run's Poisson likelihood under 2x equals that under 1.6x."""
    g = guard_ratio(2.0, 1.6)
    assert 1.6 < g < 2.0 and g == pytest.approx(1.7926, abs=1e-4)
    mu = 100.0
    assert g * mu * math.log(2.0) - 2.0 * mu == pytest.approx(g * mu * math.log(1.6) - 1.6 * mu)
    with pytest.raises(UsageError, match="organic_ratio"):
        PipelineSettings(organic_ratio=2.0)


def test_a_bump_on_a_forecast_running_low_does_not_alarm() -> None:
    """The same 1.9x run alarms on a forecast that was right in the hours before it, and not
    on one whose forecast ran 1.3x low then (the guard's bias correction)."""
    mu, disp = np.array([10.0]), np.array([0.005])
    outcomes = []
    for before in (10.0, 13.0):
        state = fresh(1)
        for _ in range(300):  # five hours: no run starts (S stays 0 under 1.3x at h = 1e9)
            step(state, np.array([before]), mu, disp)
        assert not state[0].any()
        fired = False
        for _ in range(30):
            fired = fired or bool(step(state, np.array([19.0]), mu, disp, h=18.0)[0])
        outcomes.append(fired)
    assert outcomes == [True, False]


def test_two_fold_cusums_run_on_a_services_total_only() -> None:
    """Sizes below 3x are tested on total series (kind 0) alone: a part's S_2 stays 0."""
    assert SURGE_SIZES[0] == 2.0
    first = first_sizes(np.array([0, 1, 2], np.int8))
    assert first.tolist() == [0, 1, 1]
    state = fresh(3)
    for _ in range(5):
        step(state, np.full(3, 20.0), np.full(3, 10.0), np.full(3, 0.005), first=first)
    assert state[0][0, 0] > 0 and (state[0][1:, 0] == 0).all()
    assert (state[0][:, 1] > 0).all()  # S_3 runs everywhere


def quiet_service_outage(budget: float, rate: float = 1.0, extra: float = 4.0) -> dict[str, object]:
    """A quiet service (by default 1 report/min) and an outage (by default 5x: 4 extra reports
    a minute)."""
    traffic = [ServiceTraffic("shopify", rate, {"US": 1.0}, {"checkout": 1.0}, diurnal=0.0)]
    onset = START + 2 * 86_400 + 13 * 3600
    surge = Surge("shopify", onset, [extra] * 30, name="o")
    sim = simulate(traffic, START, 2 * 1440 + 15 * 60, [surge], seed=7, aggregate=True)
    cat = Catalog.demo()
    p = Pipeline(PipelineSettings(false_alarm_budget=budget), catalog=cat)
    dec = EventDecoder(cat)
    docs: dict[str, dict[str, object]] = {}
    for i in range(0, len(sim.lines), 20_000):
        p.ingest(dec.decode(sim.lines[i : i + 20_000]).reports)
        docs.update({d["id"]: d for d in p.drain_incidents()})
    docs.update({d["id"]: d for d in p.ongoing()})
    if not docs:
        return {"delay": math.inf}  # not found
    [doc] = docs.values()
    det = parse_ts(str(doc["detected_at"]))
    assert det is not None
    return {"delay": (det - onset) / 60}


@pytest.mark.slow
def test_the_sequential_test_confirms_a_small_surge_on_a_quiet_service_sooner() -> None:
    windows_only = quiet_service_outage(0.0)["delay"]
    sequential = quiet_service_outage(1.0)["delay"]
    assert isinstance(windows_only, float) and isinstance(sequential, float)
    assert sequential < windows_only
    assert sequential <= 5


def two_fold_delays(budget: float) -> list[float]:
    """Six one-hour 2x outages on a flat 10 reports/min service, 10 hours apart after a day
    and a half of warm-up: each outage's delay in minutes (inf: missed)."""
    traffic = [ServiceTraffic("discord", 10.0, {"US": 1.0}, {"app": 1.0}, diurnal=0.0)]
    onsets = [START + 36 * 3600 + i * 10 * 3600 for i in range(6)]
    surges = [Surge("discord", t, [10.0] * 60, name=f"o{i}") for i, t in enumerate(onsets)]
    sim = simulate(traffic, START, 4 * 1440, surges, seed=9, aggregate=True)
    cat = Catalog.demo()
    p = Pipeline(PipelineSettings(false_alarm_budget=budget), catalog=cat)
    p.ingest(EventDecoder(cat).decode(sim.lines).reports)
    docs = [*p.drain_incidents(), *p.ongoing()]
    out = []
    for t in onsets:
        found = [parse_ts(str(d["detected_at"])) for d in docs
                 if t - 120 <= (parse_ts(str(d["started_at"])) or 0) <= t + 3600]  # fmt: skip
        out.append(min(((f or 0) - t) / 60 for f in found) if found else math.inf)
    return out


@pytest.mark.slow
def test_a_two_fold_outage_is_confirmed_near_the_exact_cusum_delay() -> None:
    """10 reports/min doubling: the exact 2x CUSUM delay at this threshold is 5.4 minutes
    (benchmarks/bench_detection.py); the windows alone need a window whose ratio passes
    min_ratio = 2 by chance. Median over six outages, within 1.5x of the exact delay."""
    import statistics

    sequential = statistics.median(two_fold_delays(1.0))
    windows_only = statistics.median(two_fold_delays(0.0))
    assert sequential <= 8.1
    assert sequential < windows_only


def test_the_cusum_state_survives_a_restart() -> None:
    traffic = [ServiceTraffic("netflix", 3.0, {"US": 1.0}, {"streaming": 1.0}, diurnal=0.0)]
    bit = Surge("netflix", START + 1499 * 60, [6.0], name="more in the last minute")
    sim = simulate(traffic, START, 1500, [bit], seed=2, aggregate=True)
    cat = Catalog.demo()
    p = Pipeline(catalog=cat)
    p.ingest(EventDecoder(cat).decode(sim.lines).reports)
    p.advance_to(START + 1500 * 60)
    assert p.series.view("cusum").any()
    q = load_state(dump_state(p), catalog=cat)
    for name in ("cusum", "cusum_x", "cusum_mu"):
        np.testing.assert_array_equal(q.series.view(name), p.series.view(name))


def test_the_budget_is_a_setting() -> None:
    from outagewatch.settings import Settings

    got = Settings.resolve({"OUTAGEWATCH_FALSE_ALARM_BUDGET": "0.5"}, {})
    assert got.pipeline.false_alarm_budget == 0.5
    assert Settings.resolve({}, {}).pipeline.false_alarm_budget == 1.0
    for bad in ("x", "-1", "nan", "1e9"):
        with pytest.raises(UsageError, match="--false-alarm-budget"):
            Settings.resolve({"OUTAGEWATCH_FALSE_ALARM_BUDGET": bad}, {})


def test_the_cusum_is_held_while_the_service_has_an_open_incident() -> None:
    """A run carried over from an outage must not open a second incident after it resolves
    (the benchmark once saw 2 reports on a 0.1/min service do that 35 minutes after a 10x
    outage): while an incident is open, its service's CUSUMs start each minute from 0."""
    from outagewatch.incidents.lifecycle import Incident, State

    traffic = [ServiceTraffic("netflix", 3.0, {"US": 1.0}, {"streaming": 1.0}, diurnal=0.0)]
    sim = simulate(traffic, START, 1500, [], seed=2, aggregate=True)
    cat = Catalog.demo()
    results = []
    for is_open in (False, True):
        p = Pipeline(catalog=cat)
        p.ingest(EventDecoder(cat).decode(sim.lines).reports)
        m = p.closed_until
        p.advance_to(m * 60.0)
        rows = p.series.service_series[p.series.service_index["netflix"]]
        p.series.cusum[rows, 1] = 10.0  # a run well on its way (k = 3)
        p.series.cusum_x[rows, 1] = 40.0
        p.series.cusum_mu[rows, 1] = 12.0
        if is_open:
            inc = Incident(id="netflix-x", service="netflix", started_min=m - 30,
                           detected_at=(m - 20) * 60.0, baseline=3.0, peak_min=m - 20,
                           last_hot_min=m - 1, acc_until=m - 30)  # fmt: skip
            inc.move(State.ONGOING, (m - 20) * 60.0)
            p.incidents[inc.id] = inc
            p.open_by_service["netflix"] = inc
        p.advance_to((m + 1) * 60.0)  # one minute (whatever its reports) is ticked
        results.append(p.series.cusum[rows, 1].copy())
    carried, held = results
    assert (carried > 4.0).all()  # one minute of ~3 reports cannot take 10 to 0
    assert (held < carried).all() and (held <= 6.0).all()  # one minute's evidence at most
