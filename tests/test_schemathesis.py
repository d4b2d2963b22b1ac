"""Schemathesis against the running server's own `/openapi.json`.

A real uvicorn serves `asgi_app` (what `outagewatch serve` serves, ingest fast path
included) on a loopback port, with an incident in its store, so the incident endpoints
answer real documents. Every operation of the document gets generated requests, valid and
invalid, with and without each scope, and every answer must be no 5xx and match the document:
documented status code, documented content type, documented body schema and headers.
Half of the generated requests name a real service, alias, country or incident, so the
successful paths (202, 200) are checked as well as the errors.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from outagewatch.catalog import Catalog
from outagewatch.server import Server
from outagewatch.settings import Settings
from outagewatch.web.app import asgi_app
from webutil import TOKEN, Clock, free_port, history_lines, outage, publish, uvicorn_in_thread

EXAMPLES = 40  # per operation (valid and invalid requests)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Every operation of /openapi.json (a test below fails when the document has another).
OPERATIONS = (
    "POST /api/v1/reports",
    "POST /api/v1/probes",
    "POST /api/v1/metrics",
    "GET /api/v1/services",
    "GET /api/v1/services/{service_id}",
    "GET /api/v1/services/{service_id}/history",
    "GET /api/v1/incidents",
    "GET /api/v1/incidents/{incident_id}",
    "GET /healthz",
    "GET /feeds/incidents.atom",
    "GET /metrics",
    "GET /api/v1/probes/config",
    "POST /api/v1/subscriptions",
    "GET /api/v1/subscriptions",
    "GET /api/v1/subscriptions/{sub_id}",
    "DELETE /api/v1/subscriptions/{sub_id}",
    "GET /api/v1/deliveries",
    "POST /api/v1/tokens",
    "GET /api/v1/tokens",
    "DELETE /api/v1/tokens/{token_id}",
    "POST /api/v1/incidents/{incident_id}/updates",
    "POST /api/v1/maintenance",
    "GET /api/v1/maintenance",
    "DELETE /api/v1/maintenance/{window_id}",
    "GET /feeds/services/{service_id}.atom",
    "GET /badges/{service_id}.svg",
    "POST /api/v1/email-subscriptions",
    # Last: these change the catalog the operations above draw real names from.
    "GET /api/v1/catalog",
    "PUT /api/v1/services/{service_id}",
    "DELETE /api/v1/services/{service_id}",
)


@dataclass
class Served:
    base: str
    server: Server
    incident: str
    schema: Any  # schemathesis' OpenApiSchema
    scoped: list[dict[str, str]]  # Authorization headers of a token per scope


def _uvicorn(tmp: Path, clock: Clock) -> tuple[uvicorn.Server, Server, threading.Thread]:
    env = {
        "OUTAGEWATCH_DB": str(tmp / "st.db"),
        "OUTAGEWATCH_TOKEN": TOKEN,
        "OUTAGEWATCH_RATE_PER_IP": "1000000",
        "OUTAGEWATCH_RATE_PER_BLOCK": "100000000",
        # Email on (visitors' subscriptions answer 202), to a port where nothing listens:
        # the confirmation mails fail in the background, as they may in production.
        "OUTAGEWATCH_SMTP_HOST": "127.0.0.1",
        "OUTAGEWATCH_SMTP_PORT": str(free_port()),
        "OUTAGEWATCH_PUBLIC_URL": "http://status.example.org",
    }

    async def warm(server: Server) -> None:
        await publish(server, history_lines(("x",), clock.t - 2 * 86_400, 2 * 1440))

    server = Server(
        Settings.resolve(env, {}), Catalog.demo(), clock=clock, tick_interval_s=3600, warmup=[warm]
    )
    uv, thread = uvicorn_in_thread(asgi_app(server))
    return uv, server, thread


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    clock = Clock()
    uv, server, thread = _uvicorn(tmp_path_factory.mktemp("st"), clock)
    try:
        port = uv.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        assert server._loop is not None
        # An outage of X, so the incident endpoints and the feed have a document to show.
        asyncio.run_coroutine_threadsafe(outage(server, clock, "x"), server._loop).result(120)
        docs = httpx.get(f"{base}/api/v1/incidents").json()
        assert [d["service"] for d in docs] == ["x"]
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        scoped = []
        for scope in ("admin", "ingest", "read"):
            body = {"name": scope, "scopes": [scope]}
            r = httpx.post(f"{base}/api/v1/tokens", json=body, headers=AUTH)
            scoped.append({"Authorization": f"Bearer {r.json()['token']}"})
        yield Served(base, server, docs[0]["id"], schema, scoped)
    finally:
        uv.should_exit = True
        thread.join(60)


def _realistic(case: Case[Any], served: Served, data: st.DataObject) -> None:
    """Sometimes replace generated names with real ones, so successful answers are checked."""
    # The demo catalog's names, not the server's: the catalog operations change that one,
    # and data generation must not depend on state that changes between examples.
    names = [*sorted(Catalog.demo().names), "Twitter", "X"]
    if not data.draw(st.sampled_from([True, True, False]), label="real names"):
        return
    params = case.path_parameters or {}
    if "service_id" in params:
        params["service_id"] = data.draw(st.sampled_from(names))
    if "incident_id" in params:
        params["incident_id"] = served.incident
    query = case.query or {}
    if "service" in query:
        query["service"] = data.draw(st.sampled_from(names))
    if "status" in query:
        query["status"] = data.draw(st.sampled_from(["ongoing", "resolved"]))
    for key in ("since", "until"):
        if key in query:
            query[key] = data.draw(st.sampled_from(["2025-10-09T08:00:00Z", "1760000000", "nan"]))
    items = case.body if isinstance(case.body, list) else [case.body]
    for item in items:
        if isinstance(item, dict):
            if "service" in item:
                item["service"] = data.draw(st.sampled_from(names))
            if "country" in item:
                item["country"] = data.draw(st.sampled_from(["US", "gb", "UK", "de"]))
            item.pop("ts", None)  # arrival time
            if isinstance(item.get("services"), list):
                item["services"] = [data.draw(st.sampled_from(names))]
            if "email" in item:
                item["email"] = data.draw(st.sampled_from(["ann@example.com", "b@x.org", "no"]))


def run_schemathesis(served: Served, label: str, checks: list[CheckFunction]) -> None:
    """Generated requests (valid and invalid; with the bootstrap token, a token of each scope,
    an unknown token and none) to one operation;
    every answer must pass `checks`."""
    op = served.schema.find_operation_by_label(label)
    assert op is not None, label
    cases = op.as_strategy(GenerationMode.POSITIVE) | op.as_strategy(GenerationMode.NEGATIVE)
    session = requests.Session()

    @given(case=cases, data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is shown
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Case[Any], data: st.DataObject) -> None:
        _realistic(case, served, data)
        headers = data.draw(
            st.sampled_from([AUTH, AUTH, {}, {"Authorization": "Bearer nope"}, *served.scoped])
        )
        case.call_and_validate(
            base_url=served.base, session=session, headers=headers, checks=checks, timeout=30
        )

    try:
        check()
    finally:
        session.close()


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_answer_is_documented_and_no_5xx(served: Served, label: str) -> None:
    run_schemathesis(served, label, CHECKS)


def test_every_operation_of_the_document_is_tested(served: Served) -> None:
    doc = httpx.get(f"{served.base}/openapi.json").json()
    labels = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("value", ["nan", "-inf", "1e999", "Infinity"])
def test_query_times_must_be_finite(served: Served, value: str) -> None:
    for key in ("since", "until"):
        r = httpx.get(f"{served.base}/api/v1/incidents", params={key: value})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_query"
        assert key in r.json()["error"]["message"]


def test_a_deeply_nested_body_is_a_clear_422(served: Served) -> None:
    for body in (
        b"[" * 10_000 + b"]" * 10_000,
        b'{"service": "x", "z": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ):
        r = httpx.post(
            f"{served.base}/api/v1/reports",
            content=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_body"
