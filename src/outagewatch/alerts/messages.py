"""The words of an alert: opened, cause identified, resolved, an operator's update (plain
text, UTC times)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from outagewatch.alerts.base import Kind, Message
from outagewatch.events import epoch_of
from outagewatch.incidents.severity import severity


def top_cause(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The most likely cause, when one other than `unknown` has been identified."""
    causes = doc.get("causes") or []
    if causes and isinstance(causes[0], Mapping) and causes[0].get("kind") != "unknown":
        return causes[0]
    return None


def render(kind: Kind, doc: Mapping[str, Any], service_name: str) -> Message:
    inc, sid = str(doc["id"]), str(doc["service"])
    if kind == "opened":
        level = "outage" if severity(doc) == "outage" else "problems"
        subject = f"{service_name}: {level} detected"
        lines = [
            f"Started {_hm(doc['started_at'])} UTC, detected {_hm(doc['detected_at'])} UTC.",
            f"{_n(doc['peak_reports_per_minute'])} reports/min at the peak so far "
            f"(usually {doc['baseline_reports_per_minute']:g}); "
            f"{_n(doc['total_reports'])} reports.",
        ]
        lines += _where(doc)
    elif kind == "cause":
        cause = top_cause(doc) or {"kind": "unknown", "confidence": 0, "evidence": []}
        conf = round(100 * float(cause.get("confidence") or 0))
        subject = f"{service_name}: likely cause {cause['kind'].replace('_', ' ')} ({conf}%)"
        lines = [f"- {e}" for e in cause.get("evidence") or []][:5]
        cluster = doc.get("cluster")
        if isinstance(cluster, Mapping) and cluster.get("services"):
            lines.append(
                f"Together with: {', '.join(s for s in cluster['services'] if s != sid)} "
                f"({cluster.get('kind')} {cluster.get('key')})."
            )
    else:
        subject = f"{service_name}: resolved"
        lines = [
            f"Ended {_hm(doc['ended_at'])} UTC after {_duration(doc)}.",
            f"{_n(doc['total_reports'])} reports; peak {_n(doc['peak_reports_per_minute'])}"
            f"/min at {_hm(doc['peak_at'])} UTC.",
        ]
        final = top_cause(doc)
        if final is not None:
            lines.append(f"Likely cause: {final['kind'].replace('_', ' ')}.")
    lines.append(f"Incident {inc}.")
    return Message(kind, inc, sid, subject, "\n".join(lines), dict(doc))


def render_update(doc: Mapping[str, Any], update: Mapping[str, Any], service_name: str) -> Message:
    """An operator's update on an incident: its status and text, as posted."""
    inc, sid = str(doc["id"]), str(doc["service"])
    subject = f"{service_name}: {update['status']} (update from the operator)"
    lines = [f"{_hm(update['at'])} UTC: {update['text']}"]
    if update["status"] == "resolved" and doc.get("status") == "ongoing":
        lines.append("Reports are still above the usual level.")
    lines.append(f"Incident {inc}.")
    return Message("update", inc, sid, subject, "\n".join(lines), dict(doc))


def _where(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for field, key, label in (
        ("countries", "country", "Where"),
        ("problems", "problem", "Problems"),
    ):
        items = doc.get(field) or []
        total = sum(int(i["reports"]) for i in items) or 1
        if items:
            parts = [f"{i[key]} {100 * int(i['reports']) // total}%" for i in items[:3]]
            out.append(f"{label}: {', '.join(parts)}.")
    return out


def _hm(ts: str | None) -> str:
    if not ts:
        return "?"
    return dt.datetime.fromtimestamp(epoch_of(ts), dt.UTC).strftime("%Y-%m-%d %H:%M")


def _n(value: Any) -> str:
    return f"{round(float(value)):,}"


def _duration(doc: Mapping[str, Any]) -> str:
    try:
        start = epoch_of(doc["started_at"])
        end = epoch_of(doc["ended_at"])
    except (ValueError, KeyError):
        return "an unknown time"
    minutes = max(0, int((end - start) // 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
