"""The one exception tree of outagewatch.

    OutagewatchError                 base of everything raised on purpose
    ├── UsageError                   a bad flag, setting or argument (CLI exit 2)
    ├── InputError                   bad input data; names file, line and field
    │   ├── CatalogError             an invalid catalog (file, service, key)
    │   └── EventError               one bad event line (line number, reason)
    ├── StoreError                   the database cannot be opened or is of an unknown version
    └── BusError                     accepted events could not be made durable
        └── OverloadedError          the writer is full or behind: refuse now (503 + Retry-After)

Every error carries a one-line message fit for stderr or a JSON error body.
"""

from __future__ import annotations


class OutagewatchError(Exception):
    """Base class for every error outagewatch raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(OutagewatchError):
    """A bad command-line flag, setting or argument."""

    code = "usage"


class InputError(OutagewatchError):
    """Bad input data."""

    code = "bad_input"


class CatalogError(InputError):
    """An invalid service catalog: the message names the file, the service and the key."""

    code = "bad_catalog"


class EventError(InputError):
    """One bad event; `reason` is a short machine-friendly reason, `detail` the human message."""

    code = "bad_event"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class StoreError(OutagewatchError):
    """The store cannot be opened, migrated or written."""

    code = "store"


class BusError(OutagewatchError):
    """Accepted events could not be made durable on the bus (the API answers 503)."""

    code = "bus"


class OverloadedError(BusError):
    """The writer's queue is full or too far behind: refuse now rather than queue without bound."""

    code = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds a client should wait before retrying
