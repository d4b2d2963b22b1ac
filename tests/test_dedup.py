"""Deduplication (contract §2): one person counts once per service per window."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outagewatch.pipeline import dedup as mod
from outagewatch.pipeline.dedup import Dedup

W = 900.0


@dataclass(frozen=True)
class Rep:
    service: str
    person: str | None
    ts: float
    count: int = 1


def run(d: Dedup, reps: list[Rep]) -> list[bool]:
    return d.filter(
        [r.service for r in reps],
        [r.person for r in reps],
        [r.ts for r in reps],
        [r.count for r in reps],
    )


def one(d: Dedup, service: str, person: str | None, ts: float, count: int = 1) -> bool:
    (keep,) = run(d, [Rep(service, person, ts, count)])
    return keep


def reference(reps: list[Rep], window: float) -> list[bool]:
    """The rule as stated: a single report with a person counts unless that person already
    has a counted report for the service within `window` of its time (either side)."""
    counted: dict[tuple[str, str], list[float]] = defaultdict(list)
    out = []
    for r in reps:
        if r.person is None or r.count != 1 or window <= 0:
            out.append(True)
            continue
        prior = counted[(r.service, r.person)]
        keep = all(abs(r.ts - c) >= window for c in prior)
        if keep:
            prior.append(r.ts)
        out.append(keep)
    return out


# ---------------------------------------------------------------------- examples
def test_one_person_counts_once_per_service_per_window() -> None:
    d = Dedup(W)
    assert run(d, [Rep("x", "p", 0.0), Rep("x", "p", 1.0), Rep("x", "p", 899.0)]) == [
        True,
        False,
        False,
    ]


def test_reports_in_one_batch_and_across_batches_agree() -> None:
    reps = [Rep("x", "p", t) for t in (0.0, 100.0, 950.0, 1000.0, 1850.0, 1851.0)]
    d1, d2 = Dedup(W), Dedup(W)
    together = run(d1, reps)
    apart = [one(d2, r.service, r.person, r.ts) for r in reps]
    assert together == apart == [True, False, True, False, True, False]


def test_services_are_independent() -> None:
    d = Dedup(W)
    assert run(d, [Rep("x", "p", 0.0), Rep("facebook", "p", 1.0), Rep("x", "p", 2.0)]) == [
        True,
        True,
        False,
    ]


def test_persons_are_independent() -> None:
    d = Dedup(W)
    assert run(d, [Rep("x", "p", 0.0), Rep("x", "q", 1.0), Rep("x", "p", 2.0)]) == [
        True,
        True,
        False,
    ]


def test_no_person_always_counts() -> None:
    d = Dedup(W)
    assert run(d, [Rep("x", None, 5.0)] * 4) == [True] * 4
    assert len(d) == 0


def test_preaggregated_counts_always_count_and_are_not_remembered() -> None:
    d = Dedup(W)
    assert run(d, [Rep("x", "p", 0.0, 50), Rep("x", "p", 1.0, 7), Rep("x", "p", 2.0, 2)]) == [
        True,
        True,
        True,
    ]
    assert len(d) == 0
    assert one(d, "x", "p", 3.0), "a count > 1 report must not make a later single a duplicate"
    assert one(d, "x", "p", 4.0, count=20), "a count > 1 report is never deduplicated"
    assert not one(d, "x", "p", 5.0)


def test_exactly_one_window_later_counts_again() -> None:
    d = Dedup(W)
    assert one(d, "x", "p", 1000.0)
    assert not one(d, "x", "p", 1000.0 + W - 0.001)
    assert one(d, "x", "p", 1000.0 + W)
    assert not one(d, "x", "p", 1000.0 + 2 * W - 1)
    assert one(d, "x", "p", 1000.0 + 2 * W)


def test_out_of_order_earlier_report_within_window_is_a_duplicate() -> None:
    d = Dedup(W)
    assert one(d, "x", "p", 5000.0)
    assert not one(d, "x", "p", 5000.0 - 300.0)
    assert not one(d, "x", "p", 5000.0 - W + 1)
    assert one(d, "x", "p", 5000.0 - W)  # exactly a window earlier: a new window


def test_duplicate_does_not_extend_the_window() -> None:
    d = Dedup(W)
    assert one(d, "x", "p", 0.0)
    assert not one(d, "x", "p", 800.0)
    assert one(d, "x", "p", 900.0)  # judged against the counted report at 0, not 800


def test_zero_window_counts_everything() -> None:
    d = Dedup(0)
    assert run(d, [Rep("x", "p", 0.0)] * 3) == [True, True, True]


def test_dump_and_load_keep_the_decisions() -> None:
    d = Dedup(W)
    d.rotate(0.0)
    run(d, [Rep("x", "p", 10.0), Rep("x", "q", 20.0)])
    d.rotate(W)
    run(d, [Rep("x", "r", W + 10.0)])
    restored = Dedup(W)
    restored.load(d.dump())
    assert len(restored) == len(d) == 3
    later = [Rep("x", p, t) for p, t in (("p", 500.0), ("q", 920.0), ("r", 1000.0), ("s", 1.0))]
    assert run(restored, later) == run(d, later) == [False, True, False, True]


def test_filter_checks_lengths() -> None:
    with pytest.raises(ValueError):
        Dedup(W).filter(["x"], ["p", "q"], [0.0], [1])


def test_far_out_of_order_report_is_judged_against_all_counted_reports() -> None:
    d = Dedup(W)
    assert one(d, "x", "p", 1000.0)
    assert one(d, "x", "p", 50.0)  # more than a window earlier: counts
    assert not one(d, "x", "p", 100.0)  # 50 s after a counted report of the same person


# ---------------------------------------------------------------------- properties
SERVICES = st.sampled_from(["x", "facebook"])
PERSONS = st.one_of(st.none(), st.sampled_from(["p", "q", "r"]))
COUNTS = st.one_of(st.just(1), st.just(1), st.just(1), st.integers(2, 5))


@st.composite
def streams(draw: st.DrawFn, disorder: float = 0.0) -> tuple[list[Rep], float]:
    """Reports whose times go up by random steps; each may arrive up to `disorder` windows
    late (0: in time order)."""
    window = draw(st.sampled_from([1.0, 60.0, 900.0]))
    max_disorder = disorder * window
    n = draw(st.integers(0, 60))
    t = float(draw(st.integers(946_684_800, 4_102_444_800)))
    reps: list[tuple[float, Rep]] = []
    for _ in range(n):
        t += draw(st.sampled_from([0.0, 0.5, 1.0, window / 3, window - 1, window, window + 1]))
        late = draw(st.floats(0.0, max_disorder)) if max_disorder > 0 else 0.0
        reps.append((t + late, Rep(draw(SERVICES), draw(PERSONS), float(t), draw(COUNTS))))
    reps.sort(key=lambda ar: ar[0])  # arrival order
    return [r for _, r in reps], window


@settings(max_examples=200, deadline=None)
@given(streams())
@pytest.mark.slow
def test_counted_reports_are_a_window_apart_in_time_order(stream: tuple[list[Rep], float]) -> None:
    reps, window = stream
    keep = run(Dedup(window), reps)
    counted: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r, k in zip(reps, keep, strict=True):
        if r.person is None or r.count != 1:
            assert k
        elif k:
            counted[(r.service, r.person)].append(r.ts)
    for times in counted.values():
        for a, b in itertools.pairwise(times):
            assert b - a >= window
    # ...and nothing more was dropped than the rule requires: a dropped report is within a
    # window of the last counted one.
    last: dict[tuple[str, str], float] = {}
    for r, k in zip(reps, keep, strict=True):
        if r.person is None or r.count != 1:
            continue
        key = (r.service, r.person)
        if k:
            last[key] = r.ts
        else:
            assert key in last
            assert r.ts - last[key] < window


@settings(max_examples=200, deadline=None)
@given(streams())
@pytest.mark.slow
def test_matches_reference_in_time_order(stream: tuple[list[Rep], float]) -> None:
    reps, window = stream
    assert run(Dedup(window), reps) == reference(reps, window)


@settings(max_examples=200, deadline=None)
@given(streams(disorder=0.99))
@pytest.mark.slow
def test_matches_reference_with_disorder_below_a_window(stream: tuple[list[Rep], float]) -> None:
    """Arrivals late by less than a window (the allowed lateness is far less) are judged by
    the same rule as in-order ones. (Which report of a person counts, and so how many do,
    may depend on the arrival order: 0:01, 0:00, 1:00 with a 60 s window counts one; in time
    order it counts two. Any online dedup has this property.)"""
    reps, window = stream
    assert run(Dedup(window), reps) == reference(reps, window)


@settings(max_examples=200, deadline=None)
@given(
    stream=streams(),
    rotate_at=st.lists(st.booleans(), min_size=61, max_size=61),
    ahead=st.lists(st.sampled_from([0.0, 0.5, 1.0, 60.0]), min_size=61, max_size=61),
    batch=st.integers(1, 7),
)
@pytest.mark.slow
def test_rotating_at_the_watermark_changes_no_decision(
    stream: tuple[list[Rep], float], rotate_at: list[bool], ahead: list[float], batch: int
) -> None:
    """rotate(w) with w at or after every report seen so far, then only reports at or after
    w: the same decisions as a Dedup that never forgets."""
    reps, window = stream
    plain, rotated = Dedup(window), Dedup(window)
    expected = run(plain, reps)
    got: list[bool] = []
    watermark: float | None = None
    for i in range(0, len(reps), batch):
        chunk = reps[i : i + batch]
        got.extend(run(rotated, chunk))
        watermark = max([r.ts for r in chunk] + ([] if watermark is None else [watermark]))
        nxt = reps[i + batch].ts if i + batch < len(reps) else watermark + 10 * window
        if rotate_at[i % 61]:
            w = min(watermark + ahead[i % 61], nxt)
            rotated.rotate(w)
            rotated.rotate(w)  # idempotent at one time
    assert got == expected


def test_rotation_forgets_old_people() -> None:
    d = Dedup(W)
    d.rotate(0.0)
    run(d, [Rep("x", f"p{i}", float(i)) for i in range(100)])
    assert len(d) == 100
    for k in range(1, 4):
        d.rotate(k * 10 * W)
    assert len(d) == 0
    assert one(d, "x", "p1", 30 * W)


@settings(max_examples=200, deadline=None)
@given(
    window=st.sampled_from([60.0, 900.0]),
    lateness=st.sampled_from([0.0, 60.0, 300.0]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["x", "facebook"]),
            st.sampled_from(["p", "q"]),
            st.sampled_from([0.0, 1.0, 30.0, 60.0, 299.0, 300.0, 600.0, 899.0, 900.0]),
            st.floats(0.0, 1.0),  # how late it arrives, as a share of the lateness
            st.booleans(),  # rotate after it
            st.sampled_from([0.0, 59.0, 120.0]),  # how far the rotation clock lags
        ),
        max_size=80,
    ),
)
@pytest.mark.slow
def test_rotating_at_the_final_minute_changes_no_decision(
    window: float,
    lateness: float,
    steps: list[tuple[str, str, float, float, bool, float]],
) -> None:
    """As the pipeline uses it: reports arrive up to `lateness` late, and rotate(clock) is
    called with a clock up to `lateness` (+ two minutes of rounding) behind the newest
    report. Forgetting must not change a decision for an on-time report."""
    t = 1_741_593_600.0
    timed = []
    for svc, person, step, late, rot, lag in steps:
        t += step
        timed.append((t + late * lateness, Rep(svc, person, t), rot, lag))
    timed.sort(key=lambda x: x[0])  # arrival order
    plain, rotated = Dedup(window, lateness_s=lateness), Dedup(window, lateness_s=lateness)
    watermark = -1.0
    clock = -1.0
    for _, rep, rot, lag in timed:
        if rep.ts < watermark - lateness:
            continue  # later than allowed: not an on-time report
        assert run(rotated, [rep]) == run(plain, [rep]), rep
        watermark = max(watermark, rep.ts)
        if rot:
            clock = max(clock, watermark - lateness - lag)
            rotated.rotate(clock)


def test_memory_is_bounded_under_a_flood_of_fresh_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_KEYS people a generation turns early: at most two generations are kept."""
    monkeypatch.setattr(mod, "MAX_KEYS", 1_000)
    d = mod.Dedup(900)
    t0 = 1_700_000_000.0
    for batch in range(20):
        n = 500
        ts = [t0 + batch + i / n for i in range(n)]
        kept = d.filter_stream(
            ["x"] * n, [f"b{batch}-{i}" for i in range(n)], ts, [1] * n, np.asarray(ts)
        )
        assert kept.all()  # fresh ids all count
        assert len(d) <= 2 * 1_000 + n
    # Repeats of the latest people are still caught.
    assert not d.filter(["x"], ["b19-3"], [t0 + 30], [1])[0]


# ---------------------------------------------------------------------- keys and tables
def siphash(key: tuple[int, int], data: bytes, c: int = 1, d: int = 3) -> int:
    """SipHash-c-d as its paper defines it, in plain Python (1-3: CPython's string hash)."""
    mask = (1 << 64) - 1

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & mask

    def rnd(v: list[int]) -> None:
        v[0] = (v[0] + v[1]) & mask
        v[1] = rotl(v[1], 13) ^ v[0]
        v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & mask
        v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & mask
        v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & mask
        v[1] = rotl(v[1], 17) ^ v[2]
        v[2] = rotl(v[2], 32)

    k0, k1 = key
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D]
    v += [k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data) - 7, 8)]
    tail = data[len(words) * 8 :]
    words.append(int.from_bytes(tail, "little") | (len(data) & 0xFF) << 56)
    for m in words:
        v[3] ^= m
        for _ in range(c):
            rnd(v)
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(d):
        rnd(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def test_the_reference_siphash_gives_the_papers_vector() -> None:
    """SipHash-2-4, key 00..0f, message 00..0e (Aumasson and Bernstein, appendix A)."""
    key = (0x0706050403020100, 0x0F0E0D0C0B0A0908)
    assert siphash(key, bytes(range(15)), 2, 4) == 0xA129CA6149BE45E5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
def test_the_compiled_siphash_is_the_reference(parts: list[bytes], k0: int, k1: int) -> None:
    """Each newline-separated part (`person_keys`), and a whole text (`siphash`, newlines
    and all), hash as the reference does."""
    from outagewatch import linescan

    key = np.uint64(k0), np.uint64(k1)
    buf = np.frombuffer(b"\n".join(parts), np.uint8)
    got = linescan.person_keys(buf, len(parts), *key, 1)[0].tolist()
    assert got == [(siphash((k0, k1), p) or 1) if p else 0 for p in parts]
    whole = b"\n".join(parts)
    want = (siphash((k0, k1), whole) or 1) if whole else 0
    assert int(linescan.siphash(np.frombuffer(whole, np.uint8), *key)) == want


def test_reporters_with_newlines_and_other_text_are_judged_by_the_rule() -> None:
    """Persons are hashed from their text joined by newlines; a person holding a newline
    (or any code point) is hashed alone, with the same result as the rule."""
    persons = ["a\nb", "a", "b", "a\nb", "é\u2028", "é\u2028", "\ud800", "\ud800", "", None]
    reps = [Rep("x", p, float(i)) for i, p in enumerate(persons)]
    assert run(Dedup(W), reps) == reference(
        [Rep("x", p or None, r.ts) for p, r in zip(persons, reps, strict=True)], W
    )
    assert run(Dedup(W), reps) == [True, True, True, False, True, False, True, False, True, True]


def test_many_people_grow_the_tables_and_rotations_shrink_them() -> None:
    """Thousands of people (tables grown several times over), then a quiet stream after
    rotations (tables shrunk): the same decisions as the rule."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(0.05, 20_000)) + 1_700_000_000.0
    people = [f"u{int(i)}" for i in rng.integers(0, 6_000, len(t))]
    reps = [Rep(str(rng.choice(["x", "y"])), p, float(s)) for p, s in zip(people, t, strict=True)]
    d = Dedup(W)
    got = [k for i in range(0, len(reps), 1_500) for k in run(d, reps[i : i + 1_500])]
    assert got == reference(reps, W)
    assert d._tables[0].shape[1] >= 8_192
    for k in range(1, 4):
        d.rotate(float(t[-1]) + k * 2 * W)
    assert len(d) == 0
    assert run(d, [Rep("x", "u1", float(t[-1]) + 7 * W)]) == [True]
    assert d._tables[0].shape[1] == mod.MIN_CAPACITY


def test_a_state_from_before_hashed_keys_loads_with_its_decisions() -> None:
    """The dump of the version that kept "service<SEP>person" strings ([start], then
    [service, person, times, generation]) still loads."""
    old: list[list[object]] = [[0.0], ["x", "p", [10.0], 0], ["x", "q", [20.0, 950.0], 1]]
    old.append(["y", "p", [30.0], 1])
    d = Dedup(W)
    d.load(old)
    assert len(d) == 3
    later = [Rep("x", "p", 500.0), Rep("x", "q", 1800.0), Rep("y", "p", 40.0), Rep("x", "r", 1.0)]
    assert run(d, later) == [False, False, False, True]
    again = Dedup(W)
    again.load(d.dump())
    assert again.seed == d.seed and len(again) == len(d)


def test_services_by_index_are_judged_as_by_name() -> None:
    """`filter_indexed` (the pipeline's: services as indices into its vocabulary, which
    grows between batches) decides as `filter_stream` does with the names."""
    rng = np.random.default_rng(8)
    names = ["x", "facebook", "y", "z"]
    by_name, by_index = Dedup(W, seed=(1, 2)), Dedup(W, seed=(1, 2))
    t0 = 1_700_000_000.0
    for batch in range(6):
        vocab = names[: 2 + batch // 2]  # the vocabulary grows between batches
        n = 300
        idx = rng.integers(0, len(vocab), n)
        persons = [None if k % 17 == 0 else f"p{k}" for k in rng.integers(0, 40, n).tolist()]
        ts = np.sort(t0 + batch * 600 + rng.uniform(0, 600, n))
        counts = np.where(rng.random(n) < 0.05, 3, 1)
        want = by_name.filter_stream([vocab[i] for i in idx], persons, ts, counts, ts)
        got = by_index.filter_indexed(idx, vocab, persons, ts, counts, ts)
        assert got.tolist() == want.tolist()
    # Another vocabulary (a restored pipeline's order): hashed again, the same decisions.
    other = ["z", "y", "facebook", "x"]
    idx = np.array([3, 2, 1, 0])
    ts = np.full(4, t0 + 3600.0)
    got = by_index.filter_indexed(idx, other, ["p1"] * 4, ts, np.ones(4, np.int64), ts)
    want = by_name.filter_stream(["x", "facebook", "y", "z"], ["p1"] * 4, ts, [1] * 4, ts)
    assert got.tolist() == want.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=30))
def test_person_hashes_are_the_hash_and_the_sketch_bucket_of_each_person(
    persons: list[str | None],
) -> None:
    """The pipeline's one pass over the reporters (`Dedup.person_hashes`, whatever they
    hold: newlines, surrogates, nothing) gives each one's SipHash-1-3 under the seed and
    `sources.person_buckets`."""
    from outagewatch.pipeline import sources

    d = Dedup(W, seed=(5, 6))
    hp, pb = d.person_hashes(persons, sources.BUCKETS)
    texts = [(p or "").encode("utf-8", "surrogatepass") for p in persons]
    assert hp.tolist() == [(siphash((5, 6), t) or 1) if t else 0 for t in texts]
    assert pb.tolist() == sources.person_buckets(persons).tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(st.characters(exclude_characters="\n"), min_size=1, max_size=6), max_size=30),
    st.integers(0, 30),
    st.integers(0, 30),
)
def test_joined_reporters_read_and_hash_as_their_strings(names: list[str], a: int, b: int) -> None:
    """A scanned batch's reporters stay joined (`events.Texts`): they read, slice, add and
    compare as the list of their strings, and hash to the same keys and buckets."""
    from outagewatch.events import Texts

    texts = Texts("\n".join(names).encode("utf-8", "surrogatepass"), len(names))
    assert list(texts) == names and len(texts) == len(names) and texts == names
    part = texts[a:b]
    assert isinstance(part, Texts) and list(part) == names[a:b]
    both = texts[:a] + texts[a:]
    assert isinstance(both, Texts) and list(both) == names
    assert texts[:a] + names[a:] == names and names[:a] + texts[a:] == names
    d = Dedup(600.0)
    for got, want in zip(d.person_hashes(part, 64), d.person_hashes(names[a:b], 64), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_batch_with_a_reporter_missing_keeps_its_strings() -> None:
    """Reporters stay joined only where every line has one: a line without takes its
    address (or none), as before."""
    from outagewatch.catalog import Catalog
    from outagewatch.events import EventDecoder, Texts

    def line(i: int, who: str) -> bytes:
        rep = f',"reporter":"{who}"' if who else ""
        return (
            f'{{"type":"report","ts":"2025-03-03T00:{i // 60:02d}:{i % 60:02d}Z","service":"x",'
            f'"country":"US"{rep}}}'
        ).encode()

    dec = EventDecoder(Catalog.demo())
    lines = [line(i, f"p{i}") for i in range(3000)]
    got = dec.decode(lines).reports.person
    assert isinstance(got, Texts) and list(got) == [f"p{i}" for i in range(3000)]
    lines[7] = line(7, "")
    got = dec.decode(lines).reports.person
    assert not isinstance(got, Texts) and got[7] is None and got[8] == "p8"
