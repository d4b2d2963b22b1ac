"""The command line (contract §3): exit codes, one-line errors, replay, incidents."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from outagewatch.cli import main
from outagewatch.events import encode_report

T0 = 1_741_595_460.0  # 2025-03-10T08:31:00Z


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory with no outagewatch settings in the environment."""
    for name in list(os.environ):
        if name.startswith("OUTAGEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(*argv: str) -> int:
    """Run the CLI in-process; usage errors from argparse exit via SystemExit."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run argv expecting exit 2 with exactly one line on stderr; return that line."""
    code = run(*argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith("outagewatch: ")
    return err.strip()


def write_events(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(ln + b"\n" for ln in lines))
    return path


GOOD = encode_report("x", T0, "US", reporter="alice")
GOOD2 = encode_report("twitter", T0 + 60, "gb", problem="login")
# Two later reports: three reports in a row reach a time before the stream's time does.
TAIL = [encode_report("netflix", T0 + 150, "US", reporter=p) for p in ("bob", "carol")]
METRIC = b'{"type":"metric","service":"x","ts":1741595460,"name":"error_rate","value":0.1}'


# ---------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        [],
        ["replay"],
        ["score", "--output", "o.csv"],
        ["incidents", "--format", "yaml"],
        ["--db"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    one_line_error(capsys, *argv)


@pytest.mark.parametrize("flag", ["--since", "--until"])
@pytest.mark.parametrize("value", ["yesterday", "2025-13-01", "10:00 tomorrow", ""])
def test_bad_time_flag(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    msg = one_line_error(capsys, "--db", "t.db", "incidents", flag, value)
    assert flag in msg


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_since_is_a_usage_error(capsys: pytest.CaptureFixture[str], value: str) -> None:
    one_line_error(capsys, "--db", "t.db", "incidents", "--since", value)


@pytest.mark.parametrize(
    "value", ["2025-03-10T08:31:00Z", "2025-03-10T10:31:00+02:00", "1741595460", "2025-03-10"]
)
def test_good_time_flags(capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert run("--db", "t.db", "incidents", "--since", value, "--until", value) == 0
    assert capsys.readouterr().out == "no incidents\n"


def test_unknown_service(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, "--db", "t.db", "incidents", "--service", "myspace")
    assert "myspace" in msg


def test_service_alias_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", "t.db", "incidents", "--service", "Twitter", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_invalid_catalog_on_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad-catalog.toml"
    bad.write_text('[services.x]\ndepends_on = ["ghost"]\n', encoding="utf-8")
    events = write_events(tmp_path / "ev.ndjson", [GOOD])
    msg = one_line_error(capsys, "--db", "t.db", "--catalog", str(bad), "replay", str(events))
    assert str(bad) in msg
    assert "'x'" in msg
    assert "depends_on" in msg


def test_invalid_catalog_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "env-catalog.toml"
    bad.write_text("[services.X]\n", encoding="utf-8")
    monkeypatch.setenv("OUTAGEWATCH_CATALOG", str(bad))
    events = write_events(tmp_path / "ev.ndjson", [GOOD])
    msg = one_line_error(capsys, "--db", "t.db", "replay", str(events))
    assert str(bad) in msg


def test_missing_catalog_on_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_events(tmp_path / "ev.ndjson", [GOOD])
    msg = one_line_error(capsys, "--db", "t.db", "--catalog", "nope.toml", "replay", str(events))
    assert "nope.toml" in msg


def test_invalid_catalog_with_service_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[services.x]\ncolour = 1\n", encoding="utf-8")
    msg = one_line_error(
        capsys, "--db", "t.db", "--catalog", str(bad), "incidents", "--service", "x"
    )
    assert str(bad) in msg


def test_invalid_catalog_on_incidents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[services.x]\ncolour = 1\n", encoding="utf-8")
    msg = one_line_error(capsys, "--db", "t.db", "--catalog", str(bad), "incidents")
    assert str(bad) in msg


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_replay_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = tmp_path / "events.ndjson"
    if kind == "directory":
        target.mkdir()
    good = write_events(tmp_path / "good.ndjson", [GOOD])
    msg = one_line_error(capsys, "--db", "t.db", "replay", str(good), str(target))
    assert str(target) in msg


@pytest.mark.parametrize("url", ["postgresql://u:p@localhost/ow", "postgres://localhost/ow"])
def test_postgres_url_is_a_one_line_error(capsys: pytest.CaptureFixture[str], url: str) -> None:
    msg = one_line_error(capsys, "--db", url, "incidents")
    assert "PostgreSQL" in msg or "postgres" in msg.lower()


def test_db_that_is_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.db").write_bytes(b"not sqlite" * 500)
    msg = one_line_error(capsys, "--db", "junk.db", "incidents")
    assert "junk.db" in msg


def test_subprocess_exit_code_and_one_line_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[services.x]\nname = 'X'\nlinks = []\n", encoding="utf-8")
    events = write_events(tmp_path / "ev.ndjson", [GOOD])
    script = Path(sys.executable).parent / "outagewatch"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "outagewatch.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTAGEWATCH_")}
    proc = subprocess.run(
        [*cmd, "--db", str(tmp_path / "s.db"), "--catalog", str(bad), "replay", str(events)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr
    assert "links" in proc.stderr


def test_the_console_script_leaves_after_a_replay_with_everything_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outagewatch replay` ends its process without tearing the interpreter down
    (`cli.LEAVE_AT_ONCE`): its summary still reaches a pipe whole, its exit status is the
    command's and the store holds what it counted, as after `main` in this process."""
    script = Path(sys.executable).parent / "outagewatch"
    if not script.exists():
        pytest.fail(f"no console script beside {sys.executable}: `make install` makes it")
    events = write_events(tmp_path / "ev.ndjson", [GOOD, GOOD2, b"not json"])
    # Buffered output, as a pipe has it by default: it must be flushed before the exit.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTAGEWATCH_") and k != "PYTHONUNBUFFERED"
    }
    proc = subprocess.run(
        [str(script), "--db", str(tmp_path / "s.db"), "replay", "--no-progress", str(events)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert main(["--db", str(tmp_path / "t.db"), "replay", "--no-progress", str(events)]) == 0
    here = capsys.readouterr().out.splitlines()
    there = proc.stdout.splitlines()
    assert len(there) == len(here) > 3 and there[1:] == here[1:]  # the first line has times
    assert there[-1].endswith("at the end")  # the last line, flushed before the exit
    # Committed: a second replay of the same file counts nothing again.
    again = subprocess.run(
        [str(script), "--db", str(tmp_path / "s.db"), "replay", "--no-progress", str(events)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0 and "skipped, counted by an earlier run: 3 lines" in again.stdout


# ---------------------------------------------------------------------- replay
def test_replay_with_bad_lines_exits_0_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(
        tmp_path / "mixed.ndjson",
        [
            GOOD,  # 1
            b"this is not json",  # 2
            encode_report("myspace", T0, "US"),  # 3
            b"",  # 4: blank
            encode_report("x", T0 + 30, "XX"),  # 5
            GOOD2,  # 6
            b'{"type":"report","service":"x","ts":"2025-03-10T08:31:00","country":"US"}',  # 7
            METRIC,  # 8
            encode_report("x", T0 + 90, "US", reporter="alice"),  # 9: a duplicate
            *TAIL,  # 10, 11: the stream's time passes the lines before (pipeline.clock)
        ],
    )
    assert run("--db", "r.db", "replay", str(events)) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "accepted: 6 (report 5, probe 0, status 0, metric 1)" in out
    assert "duplicates: 1" in out
    assert "rejected: 4" in out
    for reason in ("not JSON", "unknown service", "bad country", "bad time"):
        assert f"  {reason}: 1" in out
    for line, reason in ((2, "not JSON"), (3, "unknown service"), (5, "bad country")):
        assert f"{events}:{line}: {reason}:" in out
    assert f"{events}:7: bad time:" in out


def test_replay_of_two_files_numbers_lines_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_events(tmp_path / "a.ndjson", [GOOD, b"{broken"])
    b = write_events(tmp_path / "b.ndjson", [b"nope", GOOD2])
    assert run("--db", "r.db", "replay", str(a), str(b)) == 0
    out = capsys.readouterr().out
    assert "replayed 2 file(s)" in out
    assert f"{a}:2: not JSON" in out
    assert f"{b}:1: not JSON" in out
    assert "rejected: 2" in out


def test_replay_reads_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"".join(ln + b"\n" for ln in [GOOD, b"[1, 2]", GOOD2, METRIC])
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    assert run("--db", "r.db", "replay", "-") == 0
    out = capsys.readouterr().out
    assert "accepted: 3 (report 2, probe 0, status 0, metric 1)" in out
    assert "rejected: 1" in out
    assert "-:2:" in out


def test_replay_twice_resumes_and_dedups_across_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_events(tmp_path / "1.ndjson", [GOOD])
    second = write_events(
        tmp_path / "2.ndjson", [encode_report("x", T0 + 60, "US", reporter="alice"), *TAIL]
    )
    assert run("--db", "r.db", "replay", str(first)) == 0
    assert run("--db", "r.db", "replay", str(second)) == 0
    out = capsys.readouterr().out
    assert "duplicates: 1" in out.split("replayed")[-1]


@pytest.mark.parametrize(
    "bad",
    [
        b'{"type":"report","service":"\xff","ts":1741595460,"country":"US"}',
        b'{"type":"report","service":"x","ts":1741595460,"country":"US","count":18446744073709551616}',
    ],
)
def test_replay_survives_hostile_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bytes
) -> None:
    events = write_events(tmp_path / "hostile.ndjson", [GOOD, bad, GOOD2])
    assert run("--db", "r.db", "replay", str(events)) == 0
    out = capsys.readouterr().out
    assert "rejected: 1" in out
    assert "accepted: 2" in out


# ---------------------------------------------------------------------- incidents
def test_incidents_json_on_empty_db(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", "e.db", "incidents", "--format", "json") == 0
    out = capsys.readouterr().out
    assert json.loads(out) == []


def test_incidents_table_on_empty_db(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--db", "e.db", "incidents") == 0
    assert capsys.readouterr().out == "no incidents\n"
    assert run("--db", "e.db", "incidents", "--format", "table") == 0
    assert capsys.readouterr().out == "no incidents\n"


def test_db_defaults_to_env_then_cwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("incidents") == 0
    assert (tmp_path / "outagewatch.db").exists()
    monkeypatch.setenv("OUTAGEWATCH_DB", str(tmp_path / "from-env.db"))
    assert run("incidents") == 0
    assert (tmp_path / "from-env.db").exists()
    assert run("--db", "flag.db", "incidents") == 0  # the flag wins
    assert (tmp_path / "flag.db").exists()
    capsys.readouterr()


# ---------------------------------------------------------------------- stored catalog
def test_catalog_is_stored_and_used_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = tmp_path / "mine.toml"
    cat.write_text(
        '[services.intranet]\nname = "Intranet"\naliases = ["wiki"]\nproblems = ["login"]\n',
        encoding="utf-8",
    )
    first = write_events(tmp_path / "1.ndjson", [encode_report("intranet", T0, "DE")])
    assert run("--db", "c.db", "--catalog", str(cat), "replay", str(first)) == 0
    assert "accepted: 1 (report 1," in capsys.readouterr().out
    cat.unlink()  # from now on only the stored copy exists

    # Without --catalog: the stored catalog, not the demo one.
    assert run("--db", "c.db", "incidents", "--service", "WIKI", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []
    msg = one_line_error(capsys, "--db", "c.db", "incidents", "--service", "x")
    assert "'x'" in msg

    later = write_events(
        tmp_path / "2.ndjson",
        [encode_report("wiki", T0 + 60, "DE", problem="login"), encode_report("x", T0, "US")],
    )
    assert run("--db", "c.db", "replay", str(later)) == 0
    out = capsys.readouterr().out
    assert "accepted: 1 (report 1," in out
    assert "unknown service: 1" in out


def test_demo_catalog_is_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_events(tmp_path / "ev.ndjson", [GOOD, encode_report("intranet", T0, "DE")])
    assert run("--db", "d.db", "replay", str(events)) == 0
    out = capsys.readouterr().out
    assert "accepted: 1 (report 1," in out
    assert "unknown service: 1" in out


@pytest.mark.slow
def test_score_command_writes_a_score_per_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["timestamp,value"]
    rows += [f"2025-03-10T{h:02d}:{m:02d}:00Z,{100 + (m % 7)}" for h in range(6) for m in range(60)]
    rows.append("2025-03-10T06:00:00Z,900")  # a spike
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("\n".join(rows) + "\n")
    assert main(["score", "--input", str(src), "--output", str(dst)]) == 0
    out = dst.read_text().splitlines()
    assert out[0] == "timestamp,value,anomaly_score"
    assert len(out) == len(rows)
    scores = [float(line.rsplit(",", 1)[1]) for line in out[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[-1] > 0.99
    assert sum(s > 0.99 for s in scores[:-1]) <= len(scores) // 50
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2025-03-10T00:00:00Z,abc\n")
    assert main(["score", "--input", str(bad), "--output", str(dst)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_settings_flags_work_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    db = str(tmp_path / "after.db")
    assert main(["replay", "--db", db, str(empty)]) == 0
    assert (tmp_path / "after.db").exists()
    assert main(["incidents", "--db", db, "--format", "json"]) == 0
    assert main(["replay", "--lateness-s", "x", str(empty)]) == 2
    capsys.readouterr()
