"""What a POST carries, checked before it is published (docs/contract.md §6): the body parsed
as one JSON object or a list of them, and each item made an event of the path's kind (`ts` defaults
to the arrival time; a report's `ip` is the client's address, never a value in the body) and
checked by the same decoder `replay` uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from outagewatch.events import Decoded, EventDecoder

_ENCODE = msgspec.json.Encoder().encode
_DECODE_BODY = msgspec.json.Decoder().decode


@dataclass
class Prepared:
    """The items of one POST, checked: accepted ones as normalised NDJSON lines."""

    lines: list[bytes] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}
    kinds: dict[str, int] = field(default_factory=dict)


def parse_body(body: bytes) -> list[Any]:
    """A POST body: one JSON object or a list of them. Raises ValueError when it is neither."""
    try:
        doc = _DECODE_BODY(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    except RecursionError:  # msgspec's depth limit: [[[[...]]]]
        raise ValueError("body is not JSON: nested too deeply") from None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return doc
    raise ValueError("body must be a JSON object or a list of objects")


def prepare(
    decoder: EventDecoder, kind: str, items: Sequence[Any], now: float, ip: str | None = None
) -> Prepared:
    """Check posted items of one kind (docs/contract.md §6): `type` from the path, `ts` defaults to
    `now`, and for reports `ip` is the client's address, never a value in the body."""
    out = Prepared()
    lines: list[bytes] = []
    index: list[int] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.rejected.append({"index": i, "reason": "not an object: each item is a JSON object"})
            continue
        ev = dict(item)
        ev["type"] = kind
        if ev.get("ts") is None:
            ev["ts"] = now
        if kind == "report":
            ev.pop("ip", None)
            if ip:
                ev["ip"] = ip
        lines.append(_ENCODE(ev))
        index.append(i)
    decoded = decoder.decode(lines, 1)
    bad = {r.line - 1 for r in decoded.rejected}
    for r in decoded.rejected:
        out.rejected.append({"index": index[r.line - 1], "reason": f"{r.reason}: {r.detail}"})
    out.rejected.sort(key=lambda r: int(r["index"]))
    services = _services_in_order(decoded, len(lines), bad)
    for j, line in enumerate(lines):
        if j not in bad:
            out.lines.append(line)
            out.services.append(services[j])
    if out.lines:
        out.kinds[kind] = len(out.lines)
    return out


def _services_in_order(decoded: Decoded, n: int, bad: set[int]) -> list[str]:
    """The resolved service of every line (rejected lines get "")."""
    resolved = [k[0] for k in decoded.reports.keys] + [o.service for o in decoded.others]
    out = [""] * n
    it = iter(resolved)
    for j in range(n):
        if j not in bad:
            out[j] = next(it)
    return out
