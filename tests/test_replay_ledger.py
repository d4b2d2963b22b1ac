"""The replay ledger: a re-run, a grown file, a copy on stdin or a resumed run counts each
line once; SIGTERM commits, prints the summary and exits 130; bad inputs (BOM, over-long
lines) lose nothing around them."""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outagewatch.cli import main
from outagewatch.runtime.replay_inputs import InputReader
from outagewatch.sim.simulate import ServiceTraffic, Surge, simulate
from outagewatch.store.sqlite import SQLiteStore

START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC).timestamp()
DAYS = 3


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    traffic = [ServiceTraffic("x", 4.0, {"US": 0.6, "GB": 0.4}, {"app": 1.0})]
    surges = [Surge("x", START + 2 * 86400 + 3600 * 9, [200.0] * 30, name="a")]
    sim = simulate(traffic, START, DAYS * 1440, surges, seed=3, jitter_s=30)
    path = tmp_path_factory.mktemp("ledger") / "days.ndjson"
    path.write_bytes(b"\n".join(sim.lines) + b"\n")
    return path


def totals(db: Path) -> tuple[np.ndarray, list[tuple[str, int]]]:
    store = SQLiteStore(str(db))
    try:
        counts = store.minute_counts("x", START, START + DAYS * 86400)
        incs = [(d["id"], d["total_reports"]) for d in store.incidents()]
    finally:
        store.close()
    return counts, incs


@pytest.fixture(scope="module")
def clean(
    stream: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    db = tmp_path_factory.mktemp("clean") / "clean.db"
    assert main(["--db", str(db), "replay", str(stream)]) == 0
    counts, incs = totals(db)
    assert counts.sum() > 0 and len(incs) == 1
    return counts, incs


@pytest.mark.slow
def test_replaying_the_same_file_twice_leaves_the_counts_unchanged(
    stream: Path, clean: tuple[np.ndarray, list[tuple[str, int]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    db = tmp_path / "twice.db"
    assert main(["--db", str(db), "replay", str(stream)]) == 0
    capsys.readouterr()
    assert main(["--db", str(db), "replay", str(stream)]) == 0
    out = capsys.readouterr().out
    n = len(stream.read_bytes().splitlines())
    assert f"skipped, counted by an earlier run: {n:,} lines" in out
    assert "replayed 1 file(s), 0 lines" in out
    counts, incs = totals(db)
    assert (counts == clean[0]).all()
    assert incs == clean[1]


@pytest.mark.slow
def test_a_grown_file_a_copy_on_stdin_and_a_repeat_in_one_call_count_once(
    stream: Path, clean: tuple[np.ndarray, list[tuple[str, int]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    data = stream.read_bytes()
    cut = data.index(b"\n", len(data) // 3) + 1
    grow = tmp_path / "log.ndjson"
    grow.write_bytes(data[:cut])
    db = str(tmp_path / "grow.db")
    assert main(["--db", db, "replay", str(grow), str(grow)]) == 0  # twice in one call
    assert "skipped, counted by an earlier run: " in capsys.readouterr().out
    with grow.open("ab") as f:
        f.write(data[cut:])
    # The whole file piped in: its first part is known by content, not by name.
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(io.BytesIO(data))))
    assert main(["--db", db, "replay", "-"]) == 0
    out = capsys.readouterr().out
    known = data[:cut].count(b"\n")
    assert f"skipped, counted by an earlier run: {known:,} lines" in out
    assert main(["--db", db, "replay", str(grow)]) == 0  # all of it known now
    counts, incs = totals(tmp_path / "grow.db")
    assert (counts == clean[0]).all()
    assert incs == clean[1]


def test_an_edited_file_is_another_input(
    stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = stream.read_bytes().splitlines(keepends=True)[:200]
    a = tmp_path / "a.ndjson"
    a.write_bytes(b"".join(lines))
    db = str(tmp_path / "e.db")
    assert main(["--db", db, "replay", str(a)]) == 0
    a.write_bytes(b"".join([*lines[:100], lines[100].replace(b'"US"', b'"GB"'), *lines[101:]]))
    assert main(["--db", db, "replay", str(a)]) == 0
    out = capsys.readouterr().out.split("replayed")[-1]
    assert "skipped, counted by an earlier run: 0 lines" in out
    assert " 200 lines" in out


@pytest.mark.slow
def test_sigterm_after_a_commit_then_a_rerun_equals_one_clean_replay(
    stream: Path, clean: tuple[np.ndarray, list[tuple[str, int]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A real process: it replays the first half (a file: committed with its ledger mark),
    then reads stdin, where a few more lines come; SIGTERM. It commits what it fed, prints its
    summary and exits 130; the same command again, now with the rest on stdin, counts the
    rest once."""
    data = stream.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    first = tmp_path / "first.ndjson"
    first.write_bytes(data[:cut])
    db = tmp_path / "t.db"
    env = {**os.environ, "OUTAGEWATCH_DB": str(db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "outagewatch.cli", "replay", str(first), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for the commit of the first file
        time.sleep(0.2)
        if db.exists():
            con = sqlite3.connect(str(db))
            try:
                n = con.execute("SELECT count(*) FROM replay_inputs").fetchone()[0]
            except sqlite3.Error:
                n = 0
            finally:
                con.close()
            if n:
                break
    else:
        proc.kill()
        raise AssertionError("no commit within 60 s")
    more = data[cut : data.index(b"\n", cut + 20_000) + 1]  # a few hundred lines on stdin
    proc.stdin.write(more)
    proc.stdin.flush()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted by SIGTERM" in out
    assert b"replayed 2 file(s)" in out
    assert b"Traceback" not in err
    rest = io.BufferedReader(io.BytesIO(data[cut:]))
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=rest))
    assert main(["--db", str(db), "replay", str(first), "-"]) == 0
    fed = int(out.split(b" lines in ")[0].split(b", ")[-1].replace(b",", b""))
    assert fed > data[:cut].count(b"\n")  # some stdin lines were fed before the signal
    assert f"counted by an earlier run: {fed:,} lines" in capsys.readouterr().out
    counts, incs = totals(db)
    assert (counts == clean[0]).all()
    assert incs == clean[1]


def test_a_bom_keeps_the_first_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bom.ndjson"
    path.write_bytes(
        b'\xef\xbb\xbf{"type":"report","service":"x","ts":"2025-03-10T08:31:07Z","country":"US"}\r\n'
        b'{"type":"report","service":"x","ts":"2025-03-10T08:31:08Z","country":"GB"}\r\n'
    )
    assert main(["--db", str(tmp_path / "b.db"), "replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "accepted: 2 (report 2" in out
    assert "rejected: 0" in out


def test_an_over_long_line_is_rejected_with_its_number_and_memory_stays_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = b'{"type":"report","service":"x","ts":"2025-03-10T08:31:07Z","country":"US"}\n'
    path = tmp_path / "long.ndjson"
    with path.open("wb") as f:
        f.write(good)
        f.write(b'{"type":"report","problem":"' + b"a" * (3 << 20) + b'"}\n')  # 3 MiB
        f.write(good.replace(b"US", b"GB"))
        f.write(b"\0" * (5 << 20))  # no newline until the end: /dev/zero's kind
        f.write(b"\n")
        f.write(good.replace(b"US", b"FR"))
    assert main(["--db", str(tmp_path / "l.db"), "replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "accepted: 3 (report 3" in out
    assert ":2: line too long: 3,145,758 bytes, more than the 1,048,576 a line may have" in out
    assert ":4: line too long: 5,242,880 bytes" in out


def test_the_reader_never_holds_a_line_longer_than_the_cap() -> None:
    class Zero(io.RawIOBase):
        """/dev/zero for 64 MiB, counting what was read."""

        def __init__(self) -> None:
            self.left = 64 << 20

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    reader = InputReader(io.BufferedReader(Zero(), 1 << 20), max_line=1 << 20, batch_bytes=1 << 20)  # type: ignore[type-var]
    tracemalloc.start()
    try:
        batches = list(reader.batches())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20  # a few batches' worth, not the 64 MiB line
    assert [r.reason for b in batches for r in b.rejected] == ["line too long"]
    assert [ln for b in batches for ln in b.lines] == [b""]
    assert reader.pos == 64 << 20


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=60),
    st.integers(1, 24),
    st.integers(1, 64),
    st.booleans(),
)
def test_batches_hold_the_input_lines_and_reject_exactly_the_long_ones(
    lengths: list[int], max_line: int, batch_bytes: int, last_newline: bool
) -> None:
    """Whether a batch is split at once or only when a line is asked for (`SplitLines`,
    when no line can be over the cap), the lines handed out, their numbers and the
    rejected ones are those of splitting the input at its newlines."""
    lines = [bytes([97 + i % 26]) * n for i, n in enumerate(lengths)]
    data = b"\n".join(lines) + (b"\n" if last_newline and lines else b"")
    reader = InputReader(io.BytesIO(data), max_line=max_line, batch_bytes=batch_bytes)
    got: list[tuple[int, bytes]] = []
    rejected: list[int] = []
    for b in reader.batches():
        assert b.joined is None or b.joined == b"\n".join(b.lines)
        got += [(b.first_line + i, ln) for i, ln in enumerate(b.lines)]
        rejected += [r.line for r in b.rejected]
    want = data.split(b"\n")
    if data.endswith(b"\n"):
        want.pop()
    if not data:
        want = []
    too_long = [i + 1 for i, ln in enumerate(want) if len(ln) > max_line]
    assert rejected == too_long
    kept = [(i + 1, ln) for i, ln in enumerate(want) if i + 1 not in too_long]
    assert [(k, ln) for k, ln in got if k not in too_long] == kept
    assert reader.pos == len(data)


def test_a_mark_recorded_with_sha1_still_finds_its_input_and_goes_on_with_sha1() -> None:
    """Marks are XXH3-128 digests (16 bytes) now; a store's marks from before are SHA-1 (20
    bytes). A re-run must still recognise those inputs (or it would count them twice), and
    their marks stay SHA-1 as they move on."""
    import hashlib

    from outagewatch.runtime.replay_inputs import Ledger
    from outagewatch.store.base import InputMark

    lines = [b'{"n":%d}' % i for i in range(2000)]
    first = b"\n".join(lines[:1200]) + b"\n"
    data = first + b"\n".join(lines[1200:]) + b"\n"

    def sha1(b: bytes) -> bytes:
        return hashlib.sha1(b, usedforsecurity=False).digest()

    old = InputMark("m1", "f", sha1(first[:4096]), len(first), 1200, sha1(first), 0.0)
    reader, mark = Ledger([old]).open(io.BytesIO(data), "f")
    assert mark is old and reader.pos == len(first) and reader.next_line == 1201
    fed = [ln for b in reader.batches() for ln in b.lines]
    assert fed == lines[1200:]
    moved = Ledger([old]).record(old, reader, "f")
    assert moved.digest == sha1(data) and moved.head == sha1(data[:4096])

    reader, mark = Ledger([]).open(io.BytesIO(data), "g")  # a new input: XXH3-128
    for _ in reader.batches():
        pass
    new = Ledger([]).record(mark, reader, "g")
    assert len(new.digest) == len(new.head) == 16
    again, found = Ledger([new]).open(io.BytesIO(data), "g")
    assert found is new and again.pos == len(data)
