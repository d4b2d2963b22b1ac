"""The `outagewatch` command line (docs/contract.md §3).

Exit status 0 on success, 2 on a usage or input error with one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from outagewatch import __version__
from outagewatch.catalog import Catalog
from outagewatch.errors import OutagewatchError, UsageError
from outagewatch.settings import SETTINGS, Settings, shown_db

if TYPE_CHECKING:
    from outagewatch.store import Store


def open_store(db: str) -> Store:
    """The store `--db` names (imported here: `--help` and usage errors need none of it)."""
    from outagewatch.store import open_store as open_named

    return open_named(db)


def is_postgres_url(url: str) -> bool:
    from outagewatch.store import is_postgres_url as named_postgres

    return named_postgres(url)


if TYPE_CHECKING:
    from outagewatch.store.lock import WriterLock


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

    sv = sub.add_parser(
        "serve", parents=[common], help="the whole system in one process: API, pages, detection"
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=int, default=8000, help="port to listen on")

    dm = sub.add_parser(
        "demo",
        parents=[common],
        help="serve the built-in demo catalog with a simulated live crowd and outages",
    )
    dm.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dm.add_argument("--port", type=int, default=8000, help="port to listen on")
    dm.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="simulated minutes per wall-clock minute (default 20: the first outage opens, "
        "peaks and resolves within about 3 minutes)",
    )

    a = sub.add_parser(
        "probe-agent",
        parents=[common],
        help="run the server's probes from another place and post the results to it (the "
        "probe list is fetched from the server unless --catalog is given)",
    )
    a.add_argument("--server", required=True, help="base URL of the outagewatch server")
    a.add_argument("--vantage", required=True, help="name of this place, e.g. eu-west")
    a.add_argument("--once", action="store_true", help="run every probe once, post, and exit")

    sub.add_parser(
        "worker",
        parents=[common],
        help="scale-out: consume events from NATS JetStream for the partitions this worker "
        "owns, run the pipeline, write to the shared PostgreSQL store (stops cleanly on SIGTERM)",
    )
    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="replay event files into a fresh temporary store and grade the incidents against "
        "labelled true outages",
    )
    ev.add_argument("files", nargs="+", metavar="FILE", help="NDJSON event files; - reads stdin")
    ev.add_argument("--labels", required=True, help="NDJSON: one {service, start, end} a line")
    ev.add_argument("--format", choices=("table", "json"), default="table")

    ex = sub.add_parser("export", parents=[common], help="stream stored history out")
    ex.add_argument("--what", required=True, choices=("counts", "incidents"))
    ex.add_argument("--service", help="only this service (id or alias)")
    ex.add_argument("--since", help="from this time (RFC 3339 or epoch seconds)")
    ex.add_argument("--until", help="up to this time (RFC 3339 or epoch seconds)")
    ex.add_argument("--format", required=True, choices=("csv", "ndjson", "parquet"))
    ex.add_argument("--out", required=True, metavar="FILE", help="file to write")
    bk = sub.add_parser(
        "backup",
        parents=[common],
        help="a consistent copy of a live SQLite store (PostgreSQL: use pg_dump)",
    )
    bk.add_argument("file", metavar="FILE", help="the new file to write the copy to")
    return p


def parse_time(value: str, flag: str) -> float:
    """RFC 3339 (with Z or an offset; a bare date is midnight UTC) or epoch seconds."""
    from outagewatch import events  # numpy: not for `--help`

    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise UsageError(f"{flag} {value!r}: expected RFC 3339 time or epoch seconds")
        return number
    try:
        return events.parse_time(value, forms="iso8601", naive_utc=True)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected RFC 3339 time or epoch seconds") from None


def load_catalog(settings: Settings, store: Store) -> Catalog:
    if settings.catalog:
        catalog = Catalog.load(settings.catalog)
        if store.load_catalog() != catalog.source:
            store.save_catalog(catalog.source)
        return catalog
    stored = store.load_catalog()
    if stored is not None:
        return Catalog.from_toml(stored, f"{shown_db(settings.db)} (stored catalog)")
    return Catalog.demo()


def stored_catalog(settings: Settings) -> Catalog:
    """`load_catalog` on a store opened for it alone."""
    store = open_store(settings.db)
    try:
        return load_catalog(settings, store)
    finally:
        store.close()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch import jit

    jit.prefer_ahead_of_time()  # before the kernels are imported: no numba in a replay
    from outagewatch.runtime.replay import replay
    from outagewatch.store.rollup import Retention

    with _writer(settings, "replay"):
        store = open_store(settings.db)
        try:
            catalog = load_catalog(settings, store)
            show = sys.stderr.isatty() and not args.no_progress
            retention = Retention(settings.minute_days, settings.rollup_days)
            summary = replay(
                store, catalog, settings.pipeline, args.files, show_progress=show, fold=retention
            )
            if not summary.interrupted:  # SIGTERM: commit and go, compact next time
                _compact_after_replay(store, settings, summary.newest_hour)
        finally:
            store.close()
    print("\n".join(summary.lines_text()))
    return 130 if summary.interrupted else 0


def _writer(settings: Settings, command: str) -> WriterLock:
    """The store's writer lock (store/lock.py): one writing process per database."""
    from outagewatch.store.lock import WriterLock

    return WriterLock.acquire(settings.db, command, shown_db(settings.db))


def _span(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """--since and --until as epoch seconds (None when not given)."""
    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    return since, until


def cmd_incidents(args: argparse.Namespace, settings: Settings) -> int:
    since, until = _span(args)
    store = open_store(settings.db)
    try:
        service = None
        catalog = load_catalog(settings, store)
        if args.service is not None:
            svc = catalog.resolve(args.service)
            if svc is None:
                raise UsageError(f"--service {args.service!r}: no such service in the catalog")
            service = svc.id
        from outagewatch.store.base import IncidentQuery, with_updates

        query = IncidentQuery(service=service, since=since, until=until)
        docs = with_updates(store, store.incidents(query))
    finally:
        store.close()
    if args.format == "json":
        import orjson  # here: ~4 ms (uuid, json) of the start of commands that do not need it

        sys.stdout.write(orjson.dumps(docs, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_table(docs))
    return 0


def _top(items: list[dict[str, Any]], key: str, n: int = 3) -> str:
    total = sum(i["reports"] for i in items) or 1
    return " ".join(f"{i[key]}:{100 * i['reports'] // total}%" for i in items[:n])


def _cause(doc: dict[str, Any]) -> str:
    """The top cause and its confidence, and the cluster: `upstream 0.95 (upstream:cloudflare)`."""
    causes = doc.get("causes") or []
    text = f"{causes[0]['kind']} {causes[0]['confidence']:.2f}" if causes else "-"
    cluster = doc.get("cluster")
    if cluster:
        text += f" ({cluster['kind']}:{cluster['key']})"
    return text


def format_table(docs: Sequence[dict[str, Any]]) -> str:
    if not docs:
        return "no incidents\n"
    from outagewatch.events import epoch_of  # numpy: not for `--help`

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
        "CAUSE",
    )
    rows = [head]
    for d in docs:
        delay = int((epoch_of(d["detected_at"]) - epoch_of(d["started_at"])) // 60)
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
                _cause(d),
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


def cmd_probe_agent(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.probes.agent import ProbeAgent, run_agent

    # The probe list comes from the server (GET /api/v1/probes/config) unless a catalog
    # file is given here.
    catalog = Catalog.load(settings.catalog) if settings.catalog else None
    agent = ProbeAgent(
        catalog,
        server=args.server,
        vantage=args.vantage,
        token=settings.token,
        allow_private=settings.allow_private_targets,
    )
    return run_agent(agent, once=args.once)


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise UsageError(f"--port {value}: expected 0 to 65535")
    return value


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.server import Server, run

    port = _port(args.port)
    # With a bus (NATS), this process is an API node: the workers write the pipeline state.
    lock = _writer(settings, "serve") if not settings.nats_url else None
    try:
        catalog = stored_catalog(settings)
        banner = f"outagewatch: serving on http://{args.host}:{port}/ (db {shown_db(settings.db)})"
        run(Server(settings, catalog), args.host, port, banner)
    finally:
        if lock is not None:
            lock.release()
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    import os
    import tempfile

    from outagewatch.runtime.demo import DemoClock, DemoFeed, load_history, run_feed
    from outagewatch.server import Server, run

    if not 0.1 <= args.speed <= 1000:
        raise UsageError(f"--speed {args.speed}: expected 0.1 to 1000")
    port = _port(args.port)
    if "OUTAGEWATCH_DB" not in os.environ and getattr(args, "OUTAGEWATCH_DB", None) is None:
        # A demo starts from nothing and leaves the user's database alone.
        folder = tempfile.mkdtemp(prefix="outagewatch-demo-")
        settings = dataclasses.replace(settings, db=os.path.join(folder, "demo.db"))
    catalog = Catalog.load(settings.catalog) if settings.catalog else Catalog.demo()
    clock = DemoClock(speed=args.speed)
    feed = DemoFeed(clock, catalog)

    async def history(server: Server) -> None:
        await load_history(server, feed)

    async def live_feed(server: Server) -> None:
        await run_feed(server, feed)

    server = Server(settings, catalog, clock=clock, warmup=[history], tasks=[live_feed])
    lock = _writer(settings, "demo")
    banner = (
        f"outagewatch demo: open http://{args.host}:{port}/ — simulated time runs "
        f"{args.speed:g}x; the first outage starts in about {180 / args.speed:.0f} s "
        f"(db {shown_db(settings.db)})"
    )
    try:
        run(server, args.host, port, banner)
    finally:
        lock.release()
    return 0


COMMANDS = {
    "replay": cmd_replay,
    "incidents": cmd_incidents,
    "score": cmd_score,
    "serve": cmd_serve,
    "demo": cmd_demo,
}
COMMANDS["probe-agent"] = cmd_probe_agent


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.runtime.worker import run_worker

    return run_worker(settings, load_catalog)


COMMANDS["worker"] = cmd_worker


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch import jit

    jit.prefer_ahead_of_time()  # replays in memory: as `replay`, no numba
    from outagewatch.evaluate import format_table as grades_table
    from outagewatch.evaluate import parse_labels, run_evaluate

    try:
        data = open_input_bytes(args.labels)
    except OSError as exc:
        raise UsageError(f"--labels {args.labels}: {exc.strerror or exc}") from None
    if settings.catalog:
        catalog = Catalog.load(settings.catalog)
    elif not is_postgres_url(settings.db) and not Path(settings.db).exists():
        catalog = Catalog.demo()  # evaluating must not create a database here
    else:
        catalog = stored_catalog(settings)
    labels = parse_labels(data, catalog, args.labels)
    grades = run_evaluate(catalog, settings.pipeline, args.files, labels)
    if args.format == "json":
        import orjson

        sys.stdout.write(orjson.dumps(grades).decode() + "\n")
    else:
        sys.stdout.write(grades_table(grades))
    return 0


def open_input_bytes(name: str) -> bytes:
    with open(name, "rb") as f:
        return f.read()


COMMANDS["evaluate"] = cmd_evaluate


REPLAY_COMPACT_BUDGET = 1024  # raw hours and blocks per compaction step after a replay


def _compact_after_replay(store: Store, settings: Settings, newest_hour: int | None) -> None:
    """Roll the replayed history up as if it were now the end of the replayed events (the
    newest hour replay committed counts of; the stored counts' last hour when it committed
    none). The commits folded most hours already (`Commit.fold`): what is left are blocks
    to coarsen and hours stored raw before."""
    from outagewatch.history.compactor import compact
    from outagewatch.store.rollup import Retention

    if newest_hour is None:
        bounds = store.count_bounds()
        if bounds is None:
            return
        newest_hour = bounds[1]
    # Steps are kept short for a live server's ingest; replay holds the writer lock, so it
    # takes larger ones (fewer transactions, day blocks re-coded less often).
    retention = Retention(settings.minute_days, settings.rollup_days)
    compact(store, (newest_hour + 1) * 3600.0, retention, budget=REPLAY_COMPACT_BUDGET)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.history.export import export

    since, until = _span(args)
    store = open_store(settings.db)
    try:
        service = None
        if args.service is not None:
            svc = load_catalog(settings, store).resolve(args.service)
            if svc is None and args.service not in store.count_services():
                raise UsageError(f"--service {args.service!r}: no such service")
            service = args.service if svc is None else svc.id
        n = export(
            store, args.what, args.format, args.out, service=service, since=since, until=until
        )
    finally:
        store.close()
    print(f"exported {n:,} {args.what} rows to {args.out}", file=sys.stderr)
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from outagewatch.history.backup import backup

    size = backup(settings.db, args.file)
    print(f"backed up {shown_db(settings.db)} to {args.file} ({size:,} bytes)", file=sys.stderr)
    return 0


COMMANDS["export"] = cmd_export
COMMANDS["backup"] = cmd_backup


LEAVE_AT_ONCE = frozenset({"replay"})
"""Commands after which the console script (`run`) leaves without tearing the interpreter
down, as mypy does: a replay makes many objects and freeing them one by one at exit takes
~30 ms (3% of a month's replay), after its store is closed and its summary printed."""


def main(argv: Sequence[str] | None = None, *, leave_at_once: bool = False) -> int:
    """The command line; `leave_at_once` (the console script's): after a command of
    `LEAVE_AT_ONCE` that returned, flush the output and end the process there."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.resolve({s.env: getattr(args, s.env, None) for s in SETTINGS})
        code = COMMANDS[args.command](args, settings)
        if leave_at_once and args.command in LEAVE_AT_ONCE:
            _leave(code)
        return code
    except OutagewatchError as exc:
        print(f"outagewatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("outagewatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _leave(code: int) -> NoReturn:
    """End the process with `code` once stdout and stderr are flushed, without freeing the
    interpreter's objects or running exit hooks (nothing of a finished command needs
    them: its store is closed, its lock released)."""
    with contextlib.suppress(OSError):  # a closed pipe: nothing more can be shown
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


def run() -> NoReturn:
    """The `outagewatch` console script."""
    sys.exit(main(leave_at_once=True))


if __name__ == "__main__":
    run()
