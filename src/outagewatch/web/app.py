"""The web application: `create_app` builds the FastAPI app's routes over an `AppHost` (what they
need of the server that runs them, web/host.py; `outagewatch.server.Server` in `serve`), and
`asgi_app` puts the ingest fast path in front of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from outagewatch import __version__
from outagewatch.errors import OverloadedError
from outagewatch.web.admin import build_router as build_admin
from outagewatch.web.api import build_router, error_response
from outagewatch.web.auth import Auth, document_scopes
from outagewatch.web.catalog_api import CatalogEdits
from outagewatch.web.catalog_api import build_router as build_catalog_api
from outagewatch.web.follow import build_router as build_follow
from outagewatch.web.health import StoreHealth
from outagewatch.web.host import AppHost
from outagewatch.web.ingest import ApiError, ASGIApp, Ingest
from outagewatch.web.metrics import Metrics
from outagewatch.web.operations import build_router as build_operations
from outagewatch.web.ratelimit import RateLimiter
from outagewatch.web.subscriptions import make_router
from outagewatch.web.visitors import Visitors
from outagewatch.web.visitors import build_router as build_visitors


def create_app(host: AppHost) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.live = await host.start()
        app.state.store_health.remember()  # the files as the server opened them
        try:
            yield
        finally:
            await host.stop()

    app = FastAPI(
        title="outagewatch",
        version=__version__,
        description="Crowd reports, probes and telemetry in; incidents with causes out.",
        lifespan=lifespan,
    )
    app.state.store_health = StoreHealth(host.settings.db)
    install_errors(app)
    st = host.settings
    limiter = RateLimiter(st.rate_per_ip, st.rate_per_block) if st.rate_per_ip > 0 else None
    auth = Auth(st.token, lambda: host.reader)
    app.state.auth = auth
    ingest = Ingest(lambda: app.state.live, auth, st.trusted_proxies, limiter)
    app.state.ingest = ingest
    app.include_router(build_router(ingest))
    host.open()
    assert host.alerter is not None
    app.include_router(make_router(host.alerter, auth.dependency("admin"), auth.dependency("read")))
    app.include_router(build_operations(host, auth))
    app.include_router(build_follow())
    edits = CatalogEdits(host)
    app.include_router(build_catalog_api(host, auth, edits))
    # Visitors' email subscriptions and the admin page (issue 19).
    visitors = Visitors(host)
    app.state.visitors = visitors
    host.alerter.unsubscribe = visitors.unsubscribe_url
    app.include_router(build_visitors(host, visitors))
    app.include_router(build_admin(host, auth, edits))
    metrics = Metrics(lambda: (host.live, host.engine, host.bus), ingest)
    app.add_api_route(
        "/metrics",
        metrics.endpoint,
        methods=["GET"],
        include_in_schema=True,
        response_class=PlainTextResponse,
        dependencies=[Depends(auth.dependency("read"))],
        responses={
            c: {
                "description": "no token, or a token without the `read` scope",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for c in (401, 403)
        },
        summary="Prometheus metrics (text exposition format)",
    )
    from outagewatch.web.pages import build_pages

    build_pages(app, host.settings)
    document_scopes(app)
    return app


def asgi_app(host: AppHost) -> ASGIApp:
    """What uvicorn serves: the app, with the ingest POSTs answered before the framework's
    middleware stack (the same handler as the documented routes; see ingest.py), and every
    request admitted against the load-shedding limits there."""
    app = create_app(host)
    ingest: Ingest = app.state.ingest

    def pressure() -> OverloadedError | None:
        # A bus that has fallen behind refuses a POST before its body is read or parsed.
        return host.bus.overloaded() if host.bus is not None else None

    ingest.pressure = pressure
    return ingest.asgi(app)


def install_errors(app: FastAPI) -> None:
    """Every 4xx and 5xx the API gives is `{"error": {"code", "message"}}`."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail: Any = exc.detail
        if isinstance(detail, dict) and "code" in detail:
            code, message = str(detail["code"]), str(detail.get("message", ""))
        else:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
            message = str(detail) if detail else "error"
            if exc.status_code == 404:
                message = f"no such path: {request.url.path}"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")
