"""What every notification channel shares: the message, the error, the HTTP post.

A channel is a `Notifier` with one method, `send(config, message, key)`. It raises
`NotifierError(message, permanent=...)`: a permanent error (a 4xx answer, a refused address,
a rejected recipient) is logged at once as failed; any other failure is retried by the
`Alerter` with exponential backoff. Channels never retry by themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from outagewatch.errors import OutagewatchError
from outagewatch.netguard import TargetRefusedError

Kind = Literal["opened", "cause", "resolved", "update"]
KINDS: tuple[Kind, ...] = ("opened", "cause", "resolved", "update")


class NotifierError(OutagewatchError):
    """A channel could not deliver. `permanent`: retrying cannot help."""

    code = "notifier"

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """One alert, rendered once when it is queued (a restart sends the very same text)."""

    kind: Kind
    incident: str
    service: str
    subject: str  # one line
    text: str  # a few lines of plain text
    doc: Mapping[str, Any]  # the docs/contract.md §4 incident object at the time

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "incident": self.incident,
            "service": self.service,
            "subject": self.subject,
            "text": self.text,
            "doc": dict(self.doc),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Message:
        return cls(d["kind"], d["incident"], d["service"], d["subject"], d["text"], d["doc"])


class Notifier(Protocol):
    async def send(self, config: Mapping[str, Any], message: Message, key: str) -> None: ...


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> httpx.Response:
    """POST `body`; a 2xx answer returns, anything else raises `NotifierError`.

    4xx answers are permanent (except 408 and 429), 5xx and network errors are not.
    """
    try:
        resp = await client.post(
            url, content=body, headers={"Content-Type": "application/json", **headers}
        )
    except TargetRefusedError as exc:
        raise NotifierError(str(exc), permanent=True) from None
    except httpx.TimeoutException:
        raise NotifierError(f"{_host(url)}: timed out") from None
    except httpx.HTTPError as exc:
        raise NotifierError(f"{_host(url)}: {type(exc).__name__}: {exc}") from None
    if 200 <= resp.status_code < 300:
        return resp
    permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
    snippet = resp.text[:200].strip()
    raise NotifierError(
        f"{_host(url)} answered {resp.status_code}" + (f": {snippet}" if snippet else ""),
        permanent=permanent,
    )


def _host(url: str) -> str:
    """The URL without its path: webhook paths often hold secrets, which stay out of logs."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")
