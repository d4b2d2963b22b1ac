"""The decoder's key indices (`ReportColumns.kid`): the pipeline finds each report's series
by an array look-up where the compiled decoder gave them, and must end exactly where it
ends by hashing every report's key (the same series, in the same order, the same state)."""

from __future__ import annotations

import numpy as np

from outagewatch.catalog import Catalog
from outagewatch.events import EventDecoder, ReportColumns
from outagewatch.pipeline.pipeline import Pipeline, dump_state
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate

START = 1_740_960_000.0  # 2025-03-03T00:00:00Z


def lines() -> list[bytes]:
    traffic = [
        ServiceTraffic(
            "netflix", 4.0, {"US": 0.5, "GB": 0.3, "DE": 0.2}, {"app": 0.7, "login": 0.3}
        ),
        ServiceTraffic("youtube", 2.0, {"US": 0.6, "FR": 0.4}, {"app": 1.0}),
    ]
    surge = Surge("netflix", START + 500 * 60, [60.0] * 15, name="outage")
    return simulate(traffic, START, 900, [surge], seed=3).lines


def without_ids(rep: ReportColumns) -> ReportColumns:
    return ReportColumns(rep.keys, rep.ts, rep.person, rep.ip, rep.count, rep.line)


def test_key_indices_give_the_state_hashing_the_keys_gives() -> None:
    catalog = Catalog.demo()
    decoder = EventDecoder(catalog)
    with_ids, hashed = Pipeline(catalog=catalog), Pipeline(catalog=catalog)
    hashed.dedup.seed = with_ids.dedup.seed
    given = 0
    data = lines()
    for a in range(0, len(data), 3_000):
        rep = decoder.decode(data[a : a + 3_000], a + 1).reports
        given += len(rep.kid) == len(rep) > 0
        with_ids.ingest(rep)
        hashed.ingest(without_ids(rep))
    assert given > 0  # the compiled path gave indices
    assert with_ids.drain_transitions() == hashed.drain_transitions()
    assert dump_state(with_ids) == dump_state(hashed)


def test_indices_of_another_decoder_are_not_mixed_up() -> None:
    """Two decoders number the keys they meet in their own orders."""
    catalog = Catalog.demo()
    data = lines()
    one, two = EventDecoder(catalog), EventDecoder(catalog)
    two.decode(list(reversed(data[:3_000])))  # meets the keys in another order
    p, q = Pipeline(catalog=catalog), Pipeline(catalog=catalog)
    q.dedup.seed = p.dedup.seed
    for a in range(0, 9_000, 3_000):
        decoder = two if a == 0 else one  # two numbered the first keys in reverse
        rep = decoder.decode(data[a : a + 3_000], a + 1).reports
        p.ingest(rep)
        q.ingest(without_ids(rep))
    assert np.array_equal(p._combo_table, q._combo_table)
    assert dump_state(p) == dump_state(q)
