"""A bounded HTTP/1.1 load generator on raw asyncio streams (run as its own process).

Each of `--connections` keep-alive connections sends one request, reads the whole
response, and sends the next; with `--rate` the connections together send at most that
many requests per second (each on its own schedule). Bodies are cycled from a file of
NDJSON lines, one body per line. Prints one JSON object: requests, statuses, seconds,
latency percentiles in ms (of all answers, and by status), and the refusals (429/503)
that came without `Retry-After`.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/api/v1/reports \
        --bodies bodies.ndjson --connections 32 --seconds 10 [--rate 2500] [--token T]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np


def build_requests(method: str, url: str, bodies: list[bytes], token: str | None) -> list[bytes]:
    u = urlsplit(url)
    path = u.path or "/"
    head = f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if method == "GET":
        return [head.encode() + b"\r\n"]
    out = []
    for body in bodies:
        h = head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        out.append(h.encode() + body)
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether a Retry-After header came)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    retry_after = False
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif line[:12].lower() == b"retry-after:":
            retry_after = True
    if length:
        await reader.readexactly(length)
    return status, retry_after


async def worker(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    deadline: float,
    interval: float,
    latencies: list[float],
    statuses: Counter[int],
    by_status: dict[int, list[float]],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    next_at = time.perf_counter()
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            if interval:
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += interval
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            status, retry_after = await read_response(reader)
            took = time.perf_counter() - t0
            latencies.append(took)
            by_status.setdefault(status, []).append(took)
            statuses[status] += 1
            if status >= 500 or status == 429:
                if not retry_after:
                    statuses[-2] += 1  # a refusal without Retry-After
                await asyncio.sleep(0.01)
    except (ConnectionError, asyncio.IncompleteReadError):
        statuses[-1] += 1  # the connection failed
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    u = urlsplit(args.url)
    bodies = []
    if args.bodies:
        with open(args.bodies, "rb") as f:
            bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    requests = build_requests(args.method, args.url, bodies or [b""], args.token)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    by_status: dict[int, list[float]] = {}
    interval = args.connections / args.rate if args.rate else 0.0
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    await asyncio.gather(
        *(
            worker(
                u.hostname or "127.0.0.1",
                u.port or 80,
                requests,
                k * 7919,
                deadline,
                interval,
                latencies,
                statuses,
                by_status,
            )
            for k in range(args.connections)
        )
    )
    seconds = time.perf_counter() - t0
    lat = np.asarray(latencies or [0.0]) * 1000
    if args.latencies:
        np.save(args.latencies, lat.astype(np.float32))
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 3),
        "rps": round(len(latencies) / seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "by_status": {
            str(k): {
                "p50_ms": round(float(np.percentile(v, 50)) * 1000, 2),
                "p99_ms": round(float(np.percentile(v, 99)) * 1000, 2),
            }
            for k, v in sorted(by_status.items())
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--url", required=True)
    ap.add_argument("--method", default="POST", choices=("POST", "GET"))
    ap.add_argument("--bodies", help="file of request bodies, one per line")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s in all (0: no limit)")
    ap.add_argument("--token")
    ap.add_argument("--latencies", help="also save every latency (ms, float32) to this .npy file")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
