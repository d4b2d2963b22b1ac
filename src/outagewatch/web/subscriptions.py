"""HTTP API of alerts: subscriptions (scope `admin`) and the delivery log (scope `read`).

    POST   /api/v1/subscriptions        create; 201 with the subscription (webhook secret once)
    GET    /api/v1/subscriptions        list
    GET    /api/v1/subscriptions/{id}   one
    DELETE /api/v1/subscriptions/{id}   204
    GET    /api/v1/deliveries           the delivery log, newest first
                                        (query: subscription, incident, status, limit)

Errors are `fastapi.HTTPException` with `detail={"code", "message"}`; the app's handler
turns them into the contract's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from outagewatch.alerts.alerter import Alerter, SubscriptionError
from outagewatch.alerts.channels import REGISTRY
from outagewatch.store.base import DeliveryQuery
from outagewatch.web.schemas import Error

STATUSES = ("pending", "sent", "failed")


def subscribe_doc() -> str:
    """The POST's description: every registered channel with its own fields."""
    return "\n".join(
        [
            "Subscribe a channel to a service, a group, or everything.",
            "",
            "Body: `channel`; `service` or `group` (or neither: everything); `min_severity` "
            "(problems, outage; default problems); and the channel's own fields:",
            "",
            *(f"- `{c.name}`: {c.help}" for c in REGISTRY.values()),
        ]
    )


def _error(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail={"code": code, "message": message})


def make_router(
    alerter: Alerter, admin: Callable[..., Any], read: Callable[..., Any] | None = None
) -> APIRouter:
    """The routes; `admin` guards the subscriptions, `read` (default: `admin`) the log."""
    router = APIRouter(
        prefix="/api/v1",
        tags=["alerts"],
        responses={c: {"model": Error} for c in (400, 401, 403, 404, 422)},
    )
    need_admin = [Depends(admin)]
    need_read = [Depends(read or admin)]

    @router.post(
        "/subscriptions", status_code=201, description=subscribe_doc(), dependencies=need_admin
    )
    async def create_subscription(request: Request) -> dict[str, Any]:
        """Subscribe a channel to a service, a group, or everything."""
        try:
            body = await request.json()
        except ValueError:
            raise _error(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _error(422, SubscriptionError.code, "the body must be a JSON object")
        try:
            return await alerter.add_subscription(body)
        except SubscriptionError as exc:
            raise _error(422, exc.code, exc.message) from None

    @router.get("/subscriptions", dependencies=need_admin)
    async def list_subscriptions() -> list[dict[str, Any]]:
        return alerter.subscriptions()

    @router.get("/subscriptions/{sub_id}", dependencies=need_admin)
    async def get_subscription(sub_id: str) -> dict[str, Any]:
        found = alerter.subscription(sub_id)
        if found is None:
            raise _error(404, "not_found", f"no subscription {sub_id!r}")
        return found

    @router.delete("/subscriptions/{sub_id}", status_code=204, dependencies=need_admin)
    async def delete_subscription(sub_id: str) -> Response:
        if not await alerter.delete_subscription(sub_id):
            raise _error(404, "not_found", f"no subscription {sub_id!r}")
        return Response(status_code=204)

    @router.get("/deliveries", dependencies=need_read)
    async def deliveries(
        subscription: str | None = None,
        incident: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Every alert queued: kind, channel, status (pending, sent, failed), attempts,
        the last error, and times (epoch seconds)."""
        if status is not None and status not in STATUSES:
            raise _error(
                422, "bad_query", f"`status` {status!r}: expected one of {', '.join(STATUSES)}"
            )
        query = DeliveryQuery(
            subscription=subscription, incident=incident, status=status, limit=limit
        )
        return await alerter.deliveries(query)

    return router
