"""Pydantic models that document the HTTP API in /openapi.json (docs/contract.md §4 and §6).

Handlers answer with pre-encoded JSON for speed; these models are what the document
promises, and tests check real responses against them.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from outagewatch.events import MAX_COUNT
from outagewatch.incidents.causes import KINDS as CAUSE_KINDS


class ErrorBody(BaseModel):
    code: str = Field(description="short machine-readable code, e.g. not_found, invalid_body")
    message: str = Field(description="what was wrong, naming the field or item")


class Error(BaseModel):
    error: ErrorBody


class Rejected(BaseModel):
    index: int = Field(description="position of the item in the posted list (0 for one object)")
    reason: str


class Accepted(BaseModel):
    accepted: int
    rejected: list[Rejected]


class ServiceSummary(BaseModel):
    id: str
    name: str
    aliases: list[str]
    group: str | None
    status: Literal["ok", "problems", "outage", "maintenance", "unknown"]


class Minute(BaseModel):
    t: str = Field(description="start of the minute, RFC 3339 UTC")
    reports: int = Field(description="reports counted in the minute, after deduplication")
    baseline: float | None = Field(description="typical reports per minute (null: not learned)")


class ProbeResult(BaseModel):
    target: str
    site: str
    vantage: str = Field(description="where the probe ran (`local`: the server itself)")
    ok: bool
    status: int | None
    latency_ms: float | None
    at: str = Field(description="when the check ran, RFC 3339 UTC")


class ProbeConfig(BaseModel):
    service: str
    url: str
    site: str
    interval_s: int
    expect_status: int | None = None
    keyword: str | None = None
    timeout_s: float = 10.0


class ServiceDetail(BaseModel):
    id: str
    name: str
    status: Literal["ok", "problems", "outage", "maintenance", "unknown"]
    incident: str | None
    minutes: list[Minute]
    probes: list[ProbeResult] = Field(
        default_factory=list, description="the latest result per (target, vantage), last 24 h"
    )
    status_detail: str | None = Field(
        None,
        description='one sentence, e.g. "failing from eu-west only; fine from us-east" '
        "(null when there is nothing to add)",
    )


class HistoryDay(BaseModel):
    date: str = Field(description="the UTC day, YYYY-MM-DD")
    status: Literal["ok", "problems", "outage"] = Field(
        description="the worst severity of the day's public incidents"
    )
    incidents: int = Field(description="public incidents going on that day")
    outage_minutes: int = Field(description="minutes of the day inside one of them")
    reports: int = Field(description="reports counted that day, after deduplication")


class ServiceHistory(BaseModel):
    id: str
    days: list[HistoryDay] = Field(description="oldest first, the last one is today")


class CountryCount(BaseModel):
    country: str
    reports: int


class ProblemCount(BaseModel):
    problem: str
    reports: int


class Cause(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: str = Field(
        json_schema_extra={"enum": list(CAUSE_KINDS)},
        description="One of the kinds of the cause rules (incidents.causes.KINDS).",
    )
    confidence: float = Field(ge=0, le=1)
    evidence: list[str]


class Cluster(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    kind: Literal["group", "upstream", "regional"]
    key: str
    services: list[str]


class OfficialStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    indicator: Literal["none", "minor", "major", "critical", "maintenance"]
    since: str
    updated_at: str
    description: str | None
    incident: str | None


Signal = Literal["reports", "probes", "status_page"]


def _by_reports() -> list[Signal]:
    return ["reports"]


UPDATE_STATUSES = ("investigating", "identified", "monitoring", "resolved", "postmortem")


class Update(BaseModel):
    at: str = Field(description="when it was posted, RFC 3339 UTC")
    status: Literal["investigating", "identified", "monitoring", "resolved", "postmortem"]
    text: str


class Incident(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    service: str
    status: Literal["ongoing", "resolved"]
    started_at: str
    detected_at: str
    peak_at: str
    ended_at: str | None
    peak_reports_per_minute: int
    baseline_reports_per_minute: float
    total_reports: int
    countries: list[CountryCount]
    problems: list[ProblemCount]
    probe_confirmed: bool | None
    suspected_abuse: bool = Field(
        description="the reports look like a fake flood (few addresses, heavy repeaters or "
        "timer-like arrivals): kept off the public status, feed and alerts unless probes or "
        "the official status confirm the incident"
    )
    abuse_evidence: list[str] = Field(
        default_factory=list, description="what the suspicion rests on (empty when none)"
    )
    causes: list[Cause]
    cluster: Cluster | None
    official_status: OfficialStatus | None = Field(
        None, description="what the service's own status page says (latest), when it has one"
    )
    detected_by: list[Signal] = Field(
        default_factory=_by_reports,
        description="what confirmed the incident: a crowd surge, public probes failing from "
        "the quorum of vantages, the service's own status page saying major or critical",
    )
    maintenance: bool = Field(
        False, description="opened inside a maintenance window of its service (no alerts)"
    )
    updates: list[Update] = Field(
        default_factory=list, description="the operator's posts, oldest first"
    )


class Health(BaseModel):
    status: Literal["ok"]
    watermark: str | None = Field(description="event time the pipeline has reached")
    queue: int = Field(description="batches waiting for the writer")


_TS = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def _item(required: list[str], **properties: str | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one ingested event: an object of these properties, in order (a
    bare type name stands for `{"type": name}`)."""
    props = {
        k: {"type": v} if isinstance(v, str) else copy.deepcopy(v) for k, v in properties.items()
    }
    return {"type": "object", "required": required, "properties": props}


REPORT_ITEM = _item(
    ["service", "country"],
    service={"type": "string", "description": "service id or alias"},
    country={"type": "string", "description": "ISO 3166-1 alpha-2; UK is GB"},
    problem="string",
    region="string",
    city="string",
    reporter="string",
    ts=_TS,
    count={"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
)
PROBE_ITEM = _item(
    ["service", "target", "ok"],
    service="string",
    target="string",
    site="string",
    vantage="string",
    ok="boolean",
    status="integer",
    latency_ms="number",
    error="string",
    ts=_TS,
)
METRIC_ITEM = _item(
    ["service", "name", "value"], service="string", name="string", value="number", ts=_TS
)


def body_schema(item: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a POST taking one event object or a list of them."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            item,
                            {"type": "array", "items": item, "minItems": 1, "maxItems": 1000},
                        ]
                    }
                }
            },
        }
    }


# ---------------------------------------------------------------- operating (docs/contract.md §8)
class TokenInfo(BaseModel):
    id: str
    name: str
    scopes: list[Literal["admin", "ingest", "read"]]
    created_at: float = Field(description="epoch seconds")


class TokenCreated(TokenInfo):
    token: str = Field(description="the bearer token: shown this once, stored only as a hash")


class Window(BaseModel):
    id: str
    service: str = Field(description="a service id, or a group id (every service of it)")
    starts_at: str
    ends_at: str
    title: str


TOKEN_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "scopes"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "scopes": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": ["admin", "ingest", "read"]},
        },
    },
}
UPDATE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["status", "text"],
    "additionalProperties": False,
    "properties": {
        "status": {"type": "string", "enum": list(UPDATE_STATUSES)},
        "text": {"type": "string", "minLength": 1, "maxLength": 5000},
    },
}
WINDOW_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["service", "starts_at", "ends_at", "title"],
    "additionalProperties": False,
    "properties": {
        "service": {"type": "string", "description": "a service id or alias, or a group id"},
        "starts_at": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        "ends_at": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}


class EmailSubscription(BaseModel):
    email: str
    services: list[str] = Field(description="the service ids")
    status: str = Field(description="`confirmation_sent`: the mailed link must be followed")


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a POST taking one JSON object."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
