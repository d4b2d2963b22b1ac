"""How bad an incident is, in the words a status page uses: `problems` or `outage`.

One rule for the service status (`GET /services`), the pages and alert subscriptions'
minimum severity, so they never disagree; and one rule for which incidents the public sees
at all (`public`): an incident suspected to be a fake-report flood stays off the public
status, the feed and alerts unless probes or the service's own status page confirm it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Severity = Literal["problems", "outage"]
SEVERITIES: tuple[Severity, ...] = ("problems", "outage")

OUTAGE_RATIO = 10.0  # peak at least this many times the usual level...
OUTAGE_MIN_PEAK = 30  # ...and at least this many reports a minute


def severity(doc: Mapping[str, Any]) -> Severity:
    """`outage` when public probes fail from the quorum of vantages or the service's own
    status page says major or critical (`detected_by`), or when the peak of reports is far
    above normal and large in absolute terms; else `problems`."""
    if {"probes", "status_page"} & set(doc.get("detected_by") or ()):
        return "outage"
    peak = float(doc.get("peak_reports_per_minute") or 0)
    base = float(doc.get("baseline_reports_per_minute") or 0)
    if peak >= OUTAGE_MIN_PEAK and peak >= OUTAGE_RATIO * max(base, 1.0):
        return "outage"
    return "problems"


CONFIRMING_INDICATORS = frozenset({"minor", "major", "critical"})


def confirmed(probe_confirmed: bool | None, official: Mapping[str, Any] | None) -> bool:
    """Probes fail, or the service's own status page reports trouble."""
    return probe_confirmed is True or (
        official is not None and official.get("indicator") in CONFIRMING_INDICATORS
    )


def public(doc: Mapping[str, Any]) -> bool:
    """Shown on the public status, pages, feed and alerts: not a suspected fake-report
    flood, or confirmed (or detected) by probes or official status regardless of that
    suspicion."""
    if not doc.get("suspected_abuse") or {"probes", "status_page"} & set(
        doc.get("detected_by") or ()
    ):
        return True
    return confirmed(doc.get("probe_confirmed"), doc.get("official_status"))


def at_least(sev: Severity, minimum: Severity) -> bool:
    return SEVERITIES.index(sev) >= SEVERITIES.index(minimum)
