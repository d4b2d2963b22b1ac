"""What a public report may say: one person, now.

`POST /api/v1/reports` without the operator token is what anyone on the internet can send,
so a public report is one person's report at its time of arrival:

- `count` (pre-aggregated history, docs/contract.md §2) is for trusted imports only: a public item
  with a `count` other than 1 is rejected with a reason (the other items are kept), so one
  request cannot weigh as a million people.
- `ts` may be given (an app that queued a report for a moment), but one more than
  `PUBLIC_SKEW_S` away from the time of arrival is counted at the time of arrival instead:
  nobody can write into past minutes (or park reports in future ones) from outside.

Requests bearing the operator token (a partner forwarding reports, a history import) keep
both fields as sent.
"""

from __future__ import annotations

from typing import Any

from outagewatch.events import time_of

PUBLIC_SKEW_S = 120.0  # a public `ts` further than this from arrival is the arrival time


def restrict_public(items: list[Any], now: float) -> tuple[list[int], list[dict[str, Any]]]:
    """Apply the public rules to posted report items (changed in place).

    Returns the indices of the items kept and `{"index", "reason"}` for those rejected."""
    kept: list[int] = []
    rejected: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            kept.append(i)  # the decoder names what is wrong with it
            continue
        count = item.get("count", 1)
        if count != 1 or isinstance(count, bool):
            rejected.append(
                {
                    "index": i,
                    "reason": f"bad field: `count` {str(count)[:20]!r}: a public report is one "
                    "person's (count 1); pre-aggregated counts need the operator token",
                }
            )
            continue
        ts = item.get("ts")
        if ts is not None:
            t = time_of(ts)
            if t is not None and abs(t - now) > PUBLIC_SKEW_S:
                item["ts"] = now
        kept.append(i)
    return kept, rejected
