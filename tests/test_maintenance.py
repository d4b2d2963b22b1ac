"""Maintenance windows in the pure pipeline: handed in as data, they mark the incidents that
open inside them and keep their minutes out of the baseline."""

from __future__ import annotations

import pytest

from outagewatch.pipeline.pipeline import Pipeline, dump_state, load_state
from outagewatch.sim.simulate import Surge, simulate
from test_e2e_seeds import CATALOG, DAY, epoch, ramped, run, utc, x_traffic

START = utc("2025-03-03T00:00:00")


def learned(p: Pipeline, service: str) -> int:
    """Minutes the baseline of the service's total series has learned from."""
    s = p.series
    return int(s.nobs[s.total_of[s.service_index[service]]])


@pytest.mark.slow
def test_minutes_inside_a_window_do_not_teach_the_baseline() -> None:
    lines = simulate([x_traffic()], START, 2 * 1440, seed=4, aggregate=True).lines
    plain, _ = run(lines, Pipeline(catalog=CATALOG))
    kept = Pipeline(catalog=CATALOG)
    kept.set_maintenance([("x", START + DAY, START + DAY + 6 * 3600)])
    kept, _ = run(lines, kept)
    assert learned(plain, "x") > 0
    # Six hours (360 minutes) were not learned from; the rest was, as without a window.
    assert learned(plain, "x") - learned(kept, "x") == 360
    # A window of another service, or of a group x is not in, changes nothing for x.
    other = Pipeline(catalog=CATALOG)
    other.set_maintenance([("meta", START, START + 2 * DAY), ("facebook", START, START + DAY)])
    other, _ = run(lines, other)
    assert learned(other, "x") == learned(plain, "x")


@pytest.mark.slow
def test_an_incident_opened_inside_a_window_is_marked_and_the_state_keeps_windows() -> None:
    history = simulate([x_traffic()], START, 2 * 1440, seed=5, aggregate=True).lines
    onset = START + 2 * DAY + 3 * 3600
    surges = [
        Surge("x", onset, ramped(2000, 20), name="planned"),
        Surge("x", onset + 4 * 3600, ramped(2000, 20), name="unplanned"),
    ]
    live = simulate([x_traffic()], START + 2 * DAY, 10 * 60, surges, seed=6).lines
    p = Pipeline(catalog=CATALOG)
    p.set_maintenance([("x", onset - 600, onset + 3600)])
    p = load_state(dump_state(p), catalog=CATALOG)  # the windows survive a restart
    assert p.maintenance == (("x", onset - 600, onset + 3600),)
    p, docs = run(history + live, p)
    assert len(docs) == 2
    assert abs(epoch(docs[0]["started_at"]) - onset) <= 180
    assert [d["maintenance"] for d in docs] == [True, False]
