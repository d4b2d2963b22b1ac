"""The `outagewatch` command line (contract §3).

Exit status 0 on success, 2 on a usage or input error with one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from outagewatch import __version__
from outagewatch.catalog import Catalog
from outagewatch.errors import OutagewatchError, UsageError
from outagewatch.settings import SETTINGS, Settings
from outagewatch.store import Store, open_store


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"outagewatch: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # The settings flags are accepted before or after the command.
    common = _Parser(add_help=False)
    for setting in SETTINGS:
        default = f"; default {setting.default}" if setting.default else ""
        common.add_argument(
            setting.flag,
            dest=setting.env,
            default=argparse.SUPPRESS,
            metavar=setting.flag.lstrip("-").upper().replace("-", "_"),
            help=f"{setting.help} (env {setting.env}{default})",
        )
    p = _Parser(
        prog="outagewatch",
        description="An open, self-hostable outage tracker.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"outagewatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser(
        "replay",
        parents=[common],
        help="feed NDJSON event files through the pipeline in event time",
    )
    r.add_argument("files", nargs="+", metavar="FILE", help="NDJSON files; - reads stdin")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    i = sub.add_parser("incidents", parents=[common], help="list incidents, newest first")
    i.add_argument("--format", choices=("table", "json"), default="table")
    i.add_argument("--service", help="only this service (id or alias)")
    i.add_argument("--since", help="only incidents still going on at or after this time")
    i.add_argument("--until", help="only incidents started at or before this time")

    s = sub.add_parser(
        "score", parents=[common], help="score one generic time series (CSV timestamp,value)"
    )
    s.add_argument("--input", required=True, help="CSV with columns timestamp,value")
    s.add_argument("--output", required=True, help="CSV to write timestamp,value,anomaly_score")
    return p


def parse_time(value: str, flag: str) -> float:
    """RFC 3339 (with Z or an offset; a bare date is midnight UTC) or epoch seconds."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise UsageError(f"{flag} {value!r}: expected RFC 3339 time or epoch seconds")
        return number
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected RFC 3339 time or epoch seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def load_catalog(settings: Settings, store: Store) -> Catalog:
    if settings.catalog:
        catalog = Catalog.load(settings.catalog)
        if store.load_catalog() != catalog.source:
            store.save_catalog(catalog.source)
        return catalog
    stored = store.load_catalog()
    if stored is not None:
        return Catalog.from_toml(stored, f"{settings.db} (stored catalog)")
    return Catalog.demo()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.replay import replay

    store = open_store(settings.db)
    try:
        catalog = load_catalog(settings, store)
        show = sys.stderr.isatty() and not args.no_progress
        summary = replay(store, catalog, settings.pipeline, args.files, show_progress=show)
    finally:
        store.close()
    print("\n".join(summary.lines_text()))
    return 0


def cmd_incidents(args: argparse.Namespace, settings: Settings) -> int:
    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    store = open_store(settings.db)
    try:
        service = None
        catalog = load_catalog(settings, store)
        if args.service is not None:
            svc = catalog.resolve(args.service)
            if svc is None:
                raise UsageError(f"--service {args.service!r}: no such service in the catalog")
            service = svc.id
        docs = store.incidents(service=service, since=since, until=until)
    finally:
        store.close()
    if args.format == "json":
        sys.stdout.write(orjson.dumps(docs, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_table(docs))
    return 0


def _top(items: list[dict[str, Any]], key: str, n: int = 3) -> str:
    total = sum(i["reports"] for i in items) or 1
    return " ".join(f"{i[key]}:{100 * i['reports'] // total}%" for i in items[:n])


def format_table(docs: Sequence[dict[str, Any]]) -> str:
    if not docs:
        return "no incidents\n"
    head = (
        "ID",
        "SERVICE",
        "STATUS",
        "STARTED (UTC)",
        "DELAY",
        "PEAK/MIN",
        "BASE/MIN",
        "REPORTS",
        "ENDED (UTC)",
        "COUNTRIES",
        "PROBLEMS",
    )
    rows = [head]
    for d in docs:
        started = dt.datetime.fromisoformat(d["started_at"])
        detected = dt.datetime.fromisoformat(d["detected_at"])
        delay = int((detected - started).total_seconds() // 60)
        ended = d["ended_at"] or "-"
        rows.append(
            (
                d["id"],
                d["service"],
                d["status"],
                d["started_at"][:16].replace("T", " "),
                f"{delay}m",
                str(d["peak_reports_per_minute"]),
                f"{d['baseline_reports_per_minute']:.2f}",
                f"{d['total_reports']:,}",
                ended[:16].replace("T", " "),
                _top(d["countries"], "country"),
                _top(d["problems"], "problem"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows
    )


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.scorecsv import score_csv

    n = score_csv(args.input, args.output)
    print(f"scored {n:,} rows into {args.output}", file=sys.stderr)
    return 0


COMMANDS = {"replay": cmd_replay, "incidents": cmd_incidents, "score": cmd_score}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.resolve({s.env: getattr(args, s.env, None) for s in SETTINGS})
        return COMMANDS[args.command](args, settings)
    except OutagewatchError as exc:
        print(f"outagewatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("outagewatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
