"""`outagewatch score`: anomaly scores for one metric in a CSV file.

Input: a header line and columns `timestamp,value` (other columns are ignored). Rows are
scored in file order: timestamps that step back, repeat or skip (a gap of more than twice the
usual interval) are one warning line on stderr (how many, first line), not an error.
Output: `timestamp,value,anomaly_score`, one row per input row, timestamp and value
strings copied unchanged, scores in [0, 1] with 6 decimals. Blank lines are skipped. An empty
(or `nan`/`NA`/`null`) value is "no observation": score 0, the value is copied as is.
Timestamps are anything pandas parses; zoned ones are converted to UTC, naive ones are taken
as UTC. Scoring is causal (`outagewatch.detect.generic.score_series`).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from numpy.typing import NDArray

from outagewatch.detect.generic import score_series
from outagewatch.errors import InputError, UsageError

COLUMNS = ("timestamp", "value", "anomaly_score")
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
_PANDAS_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV file")
    try:
        return pd.read_csv(
            p,
            dtype=str,
            na_filter=False,
            skip_blank_lines=False,
            index_col=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{path}: line 1: empty file, expected the header 'timestamp,value'"
        ) from None
    except pd.errors.ParserError as e:
        m = _PANDAS_LINE.search(str(e))
        if m:
            want, line, got = m.groups()
            raise InputError(f"{path}: line {line}: expected {want} fields, saw {got}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else "cannot parse CSV"
        raise InputError(f"{path}: {first}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def _to_seconds(raw: pd.Series[str]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(seconds since the Unix epoch, UTC; mask of timestamps that cannot be parsed)."""
    text = raw.str.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        retry = parsed.isna() & text.ne("")
        if bool(retry.any()):
            parsed[retry] = pd.to_datetime(text[retry], utc=True, format="mixed", errors="coerce")
    bad = np.asarray(parsed.isna().to_numpy(), dtype=np.bool_)
    naive = np.asarray(parsed.dt.tz_convert(None).to_numpy(), dtype="datetime64[us]")
    secs = np.where(bad, np.nan, naive.astype(np.int64) / 1e6)
    return secs, bad


def _to_values(raw: pd.Series[str]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(values with NaN for missing, mask of unparseable or non-finite values)."""
    text = raw.str.strip()
    missing = np.asarray(text.str.lower().isin(_MISSING).to_numpy(), dtype=np.bool_)
    num = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
    bad = ~missing & ~np.isfinite(num)
    return np.where(missing, np.nan, num), bad


def _stderr(msg: str) -> None:
    print(f"outagewatch: {msg}", file=sys.stderr)


def _interval(d: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if d >= size:
            return f"{d / size:g} {unit}"
    return f"{d:g} s"


def order_warning(secs: NDArray[np.float64], lines: NDArray[np.int64]) -> str:
    """What is irregular about the timestamps (in seconds, file order; `lines` their line
    numbers): rows that step back, repeat the row before, or skip (come more than twice the
    usual interval after it). '' when there is nothing to say."""
    if len(secs) < 2:
        return ""
    d = np.diff(secs)
    parts = []
    back = np.flatnonzero(d < 0)
    if len(back):
        parts.append(
            f"rows stepping back in time: {len(back):,} (first at line {lines[back[0] + 1]})"
        )
    same = np.flatnonzero(d == 0)
    if len(same):
        parts.append(
            f"rows repeating the timestamp before: {len(same):,} "
            f"(first at line {lines[same[0] + 1]})"
        )
    pos = d[d > 0]
    if len(pos):
        usual = float(np.median(pos))
        skip = np.flatnonzero(d > 2.0 * usual)
        if len(skip):
            parts.append(
                f"gaps of more than twice the usual interval of {_interval(usual)}: "
                f"{len(skip):,} (first at line {lines[skip[0] + 1]})"
            )
    return ", ".join(parts)


def score_csv(input_path: str, output_path: str, warn: Callable[[str], None] | None = None) -> int:
    """Score the `timestamp,value` CSV `input_path` into `output_path`; return rows written.

    A note on irregular timestamps goes to `warn` (default: one line on stderr)."""
    df = _read(input_path)
    names = [str(c).strip() for c in df.columns]
    for col in ("timestamp", "value"):
        if col not in names:
            header = ",".join(names)
            raise InputError(f"{input_path}: line 1: missing column '{col}' (header is '{header}')")
    df.columns = pd.Index(names)
    lines = np.arange(len(df)) + 2  # the header is line 1
    blank = np.ones(len(df), dtype=bool)
    for col in df.columns:
        blank &= df[col].str.strip().eq("").to_numpy(dtype=bool)
    ts_raw = df["timestamp"][~blank]
    val_raw = df["value"][~blank]
    lines = lines[~blank]

    secs, bad_time = _to_seconds(ts_raw)
    values, bad_value = _to_values(val_raw)
    problems: list[tuple[int, str]] = []
    bad_ts = np.flatnonzero(bad_time)
    if len(bad_ts):
        i = int(bad_ts[0])
        problems.append(
            (
                int(lines[i]),
                f"column 'timestamp': cannot parse timestamp {ts_raw.iloc[i]!r}",
            )
        )
    bad_vals = np.flatnonzero(bad_value)
    if len(bad_vals):
        i = int(bad_vals[0])
        problems.append(
            (int(lines[i]), f"column 'value': not a finite number: {val_raw.iloc[i]!r}")
        )
    if problems:
        line, msg = min(problems)
        raise InputError(f"{input_path}: line {line}, {msg}")
    note = order_warning(secs, lines)
    if note:
        (warn or _stderr)(f"{input_path}: warning: {note}; rows are scored in file order")

    scores = np.round(score_series(secs, values), 6)
    out = pd.DataFrame(
        {
            "timestamp": ts_raw.to_numpy(dtype=object),
            "value": val_raw.to_numpy(dtype=object),
            "anomaly_score": scores,
        },
        columns=list(COLUMNS),
    )
    try:
        out.to_csv(output_path, index=False, float_format="%.6f", lineterminator="\n")
    except OSError as e:
        raise UsageError(f"{output_path}: cannot write: {e.strerror or e}") from None
    return len(out)
