"""What users see, on the seed scenarios: the CLI's output, the HTTP API's JSON and the
incident JSON, gathered into one dict of name -> text so that a refactor can be checked to
change none of it byte for byte (tests/test_golden.py).

`python tests/golden_outputs.py` writes tests/golden/seeds-{sqlite,postgresql}.json from the
current code (PostgreSQL must be running, as for the tests): run
it on the commit whose behaviour is the reference, commit the file, then the test compares
every later change against it. Inputs are generated here (sim/scenarios.py, seeded), never
stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson

from outagewatch import cli
from outagewatch.sim.scenarios import scenario, scenario_catalog, to_lines

# One file per store: PostgreSQL's jsonb orders an incident's keys its own way.
GOLDEN = {
    b: Path(__file__).with_name("golden") / f"seeds-{b}.json" for b in ("sqlite", "postgresql")
}
START = 1_760_000_400.0  # 2025-10-09T08:20:00Z
# Each cause's scenario on its own catalog or the demo one; small enough to replay in seconds.
SCENARIOS = ("capacity", "upstream", "regional", "rotating_ids")
BIG = 16_384
SETTLE_S = 3 * 3600  # the API's clock: this long after the outage starts


def _catalog_toml(name: str, tmp: Path) -> list[str]:
    """--catalog flags for the scenario (none: the demo catalog)."""
    from outagewatch.sim import scenarios

    spec = scenarios._SPECS[name]
    if spec.catalog == "demo":
        return []
    path = tmp / f"{name}.toml"
    path.write_text(spec.catalog)
    return ["--catalog", str(path)]


def _cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    if code != 0:
        raise AssertionError(f"outagewatch {' '.join(argv)} exited {code}")
    # The replay summary's speed is the one thing that varies from run to run.
    return re.sub(r" in [0-9.]+ s \([0-9,]+ lines/s\)", " in T s (R lines/s)", out.getvalue())


async def _api(db: str, name: str) -> dict[str, str]:
    from outagewatch.server import Server
    from outagewatch.settings import Settings
    from outagewatch.web.app import create_app

    settings = Settings.resolve({"OUTAGEWATCH_DB": db, "OUTAGEWATCH_TOKEN": "t"}, {})
    clock_t = START + SETTLE_S
    server = Server(settings, scenario_catalog(name), clock=lambda: clock_t, tick_interval_s=3600)
    app = create_app(server)
    app.state.live = await server.start()
    got: dict[str, str] = {}
    try:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def get(path: str) -> bytes:
                r = await client.get(path)
                got[f"GET {path}"] = f"{r.status_code}\n{r.text}"
                return r.content

            incidents = orjson.loads(await get("/api/v1/incidents"))
            services = sorted({d["service"] for d in incidents})
            for doc in incidents:
                await get(f"/api/v1/incidents/{doc['id']}")
            for sid in services:
                await get(f"/api/v1/services/{sid}")
                await get(f"/api/v1/services/{sid}/history?days=3")
            await get("/api/v1/services")
            await get("/api/v1/incidents/no-such-incident")
            await get("/openapi.json")
    finally:
        await server.stop()
    return got


DbFor = Callable[[str], contextlib.AbstractContextManager[str]]


def outputs(db_for: DbFor) -> dict[str, str]:
    """Every output of every scenario, by a name saying what it is."""
    got: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in SCENARIOS:
            events = tmp / f"{name}.ndjson"
            events.write_bytes(b"\n".join(to_lines(scenario(name, START))) + b"\n")
            cat = _catalog_toml(name, tmp)
            with db_for(name) as db:
                base = ["--db", db, *cat]
                got[f"{name}: replay"] = _cli([*base, "replay", "--no-progress", str(events)])
                got[f"{name}: replay again"] = _cli([*base, "replay", "--no-progress", str(events)])
                got[f"{name}: incidents"] = _cli([*base, "incidents"])
                got[f"{name}: incidents --format json"] = _cli(
                    [*base, "incidents", "--format", "json"]
                )
                for key, text in asyncio.run(_api(db, name)).items():
                    got[f"{name}: {key}"] = text
    return got


@contextlib.contextmanager
def sqlite_db(name: str) -> Iterator[str]:
    """A fresh SQLite store for the scenario."""
    with tempfile.TemporaryDirectory() as d:
        yield str(Path(d) / f"{name}.db")


def encode(got: dict[str, str]) -> bytes:
    """The golden file's bytes: outputs up to 16 KB in full, larger ones (a service's
    per-minute series) by their SHA-256, so the file stays small."""
    small = {
        k: v
        if len(v) <= BIG
        else f"sha256:{hashlib.sha256(v.encode()).hexdigest()} ({len(v)} chars)"
        for k, v in got.items()
    }
    return orjson.dumps(small, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


@contextlib.contextmanager
def postgres_db(name: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for the scenario."""
    from services import fresh_pg_schema

    with fresh_pg_schema(f"golden_{name}") as url:
        yield url


DB_FOR: dict[str, DbFor] = {"sqlite": sqlite_db, "postgresql": postgres_db}


def main() -> int:
    for backend, path in GOLDEN.items():
        got = outputs(DB_FOR[backend])
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode(got))
        print(f"wrote {path}: {len(got)} outputs, {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
