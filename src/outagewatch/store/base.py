"""The store interface, and the packing of minute counts shared by every implementation."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from outagewatch.events import OtherEvent, epoch_of, iso
from outagewatch.incidents.lifecycle import Transition

if TYPE_CHECKING:  # the store needs only its shape: no numba, no scipy to open a store
    from outagewatch.pipeline.pipeline import CountRows

if TYPE_CHECKING:
    from outagewatch.store.rollup import Retention

CHUNK_DTYPE = np.dtype([("m", "<u2"), ("c", "S2"), ("p", "S32"), ("n", "<i8")])


@dataclass(frozen=True)
class InputMark:
    """How much of one replayed input is committed (the replay ledger, see replay_inputs)."""

    id: str
    name: str  # the name it was last read under (`-`: stdin)
    head: bytes  # digest of its first min(offset, 4096) bytes: the quick pre-filter
    offset: int  # bytes committed
    lines: int  # lines committed (a last line without a newline is not finished)
    digest: bytes  # digest of the first `offset` bytes
    updated_at: float


@dataclass(frozen=True)
class Commit:
    """Everything one step of the pipeline produced, written in one transaction."""

    state: bytes
    incidents: Sequence[dict[str, Any]]
    transitions: Sequence[Transition]
    counts: CountRows
    others: Sequence[OtherEvent] = ()
    # The last journal batch folded into `state` (in-process bus): the store records it with
    # the state and drops the journal up to it, in the same transaction.
    journal_seq: int | None = None
    # Whose state this is: "pipeline" (one process) or "partition/N" (a worker's partition).
    state_key: str = "pipeline"
    # The replay ledger's marks that moved since the last commit (stored under `state_key`).
    inputs: Sequence[InputMark] = ()
    # Replay: the counts of hours that compaction would take at once (all but the commit's
    # newest) go straight into day blocks at this retention, not raw hours that compaction
    # reads back (`SQLStore._fold_on_commit`); None: every hour is written raw.
    fold: Retention | None = None


@dataclass(frozen=True, kw_only=True)
class IncidentQuery:
    """Which incidents `IncidentReader.incidents` returns, newest first: those of `service`
    with `status` that overlap [`since`, `until`] (None: no bound), at most `limit` (the
    newest). The SQL stores filter with `incidents_where`, the live view the incidents its
    engine holds with `incident_matches`: the same selection."""

    service: str | None = None
    since: float | None = None
    until: float | None = None
    status: str | None = None
    limit: int | None = None


EVERY_INCIDENT = IncidentQuery()


@dataclass(frozen=True)
class DeliveryUpdate:
    """A delivery's state after an attempt, written whole by `AlertStore.update_delivery`
    (what is left out is stored as NULL)."""

    status: str  # pending, sent or failed
    attempts: int  # attempts made so far
    next_at: float | None = None  # when to try again (pending)
    last_error: str | None = None
    sent_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class DeliveryQuery:
    """Which deliveries `AlertStore.deliveries` lists, newest first: those of `subscription`,
    for `incident`, with `status` (None: any), at most `limit`."""

    subscription: str | None = None
    incident: str | None = None
    status: str | None = None
    limit: int = 100


LATEST_DELIVERIES = DeliveryQuery()


# The store's interface, by concern: each consumer can ask for only what it uses. Both
# stores (store/sql.py's SQLStore and its two dialects) implement all of them.
class PipelineState(Protocol):
    """What the pipeline's driver restores from and commits to."""

    def load_catalog(self) -> str | None: ...
    def save_catalog(self, text: str) -> None: ...
    def load_state(self, key: str = "pipeline") -> bytes | None: ...
    def commit(self, c: Commit) -> None: ...
    def replay_inputs(self, state_key: str = "pipeline") -> list[InputMark]:
        """The replay ledger of `state_key`'s state (see replay_inputs)."""
        ...


class IncidentReader(Protocol):
    """Incidents, their transitions, stored events and minute counts, as written."""

    def incidents(self, query: IncidentQuery = EVERY_INCIDENT) -> list[dict[str, Any]]: ...
    def incident(self, incident_id: str) -> dict[str, Any] | None: ...
    def minute_counts(self, service: str, start: float, end: float) -> NDArray[np.int64]: ...
    def events(self, kind: str, service: str, start: float, end: float) -> list[dict[str, Any]]:
        """Stored events of one type (`probe`, `status`, `metric`) and service with
        `start <= ts < end`, oldest first, as the normalised JSON objects."""
        ...

    def transitions(self, incident: str) -> list[dict[str, Any]]:
        """The incident's transitions in order: {"action", "from", "to", "at", "detail"}."""
        ...


# (day, res, total, data) of a stored block.
Block = tuple[int, int, int, bytes]


class StoredCounts(NamedTuple):
    """A service's stored counts over a span of hours, as one read saw them: the day blocks
    of the days it touches (oldest first) and the raw hours within it (`(hour, packed
    chunk)`, oldest first). Compaction moves an hour from `raw` into its day's block in one
    transaction; read together, every report is in exactly one of the two."""

    blocks: list[Block]
    raw: list[tuple[int, bytes]]


class CountReader(Protocol):
    """What a store offers for reading history (store/counts.py, history/)."""

    def stored_counts(self, service: str, hour0: int, hour1: int) -> StoredCounts:
        """Blocks of days hour0 // 24 .. hour1 // 24 and raw hours hour0..hour1, in one
        snapshot of the store."""
        ...

    def count_services(self) -> list[str]: ...


class HistoryStore(CountReader, Protocol):
    """Compacted day blocks (history.rollup, history.codec) and their compaction."""

    def count_bounds(self) -> tuple[int, int] | None: ...
    def compact_step(self, now: float, retention: Retention, budget: int = 256) -> int: ...


class Journal(Protocol):
    """The in-process bus's journal: accepted batches, durable before the API answers."""

    def append_journal(self, batches: Sequence[bytes], received: float) -> list[int]:
        """Write batches in one transaction; returns their sequence numbers, in order."""
        ...

    def journal_after(self, seq: int) -> list[tuple[int, bytes]]:
        """(seq, batch) of every batch after `seq`, in order: what the saved state has not seen."""
        ...

    def journal_seq(self) -> int:
        """The journal seq recorded with the saved state (0 when none)."""
        ...


class AlertStore(Protocol):
    """Alert subscriptions and the delivery log (store/sql.py has the shapes)."""

    def add_subscription(self, sub: Mapping[str, Any]) -> None: ...
    def subscriptions(self) -> list[dict[str, Any]]: ...
    def delete_subscription(self, sub_id: str) -> bool: ...
    def add_delivery(self, d: Mapping[str, Any]) -> int | None:
        """Queue an alert unless its unique `key` exists; its id, or None when it existed."""
        ...

    def delivery_keys(self, keys: Sequence[str]) -> set[str]: ...
    def update_delivery(self, delivery_id: int, change: DeliveryUpdate) -> None: ...
    def pending_deliveries(self) -> list[dict[str, Any]]: ...
    def delivery(self, delivery_id: int) -> dict[str, Any] | None: ...
    def deliveries(self, query: DeliveryQuery = LATEST_DELIVERIES) -> list[dict[str, Any]]: ...


class OperationsStore(Protocol):
    """Running a live server: scoped tokens (hashes only), the operator's incident updates,
    maintenance windows (store/sql.py has the shapes)."""

    def add_token(self, tok: Mapping[str, Any]) -> None: ...
    def tokens(self) -> list[dict[str, Any]]: ...
    def delete_token(self, token_id: str) -> bool: ...
    def add_update(self, incident: str, at: float, status: str, text: str) -> None: ...
    def updates(self, incidents: Sequence[str]) -> dict[str, list[dict[str, Any]]]: ...
    def add_maintenance(self, w: Mapping[str, Any]) -> None: ...
    def maintenance(self, ending_after: float | None = None) -> list[dict[str, Any]]: ...
    def delete_maintenance(self, window_id: str) -> bool: ...


class Store(
    PipelineState, IncidentReader, HistoryStore, Journal, AlertStore, OperationsStore, Protocol
):
    """All of it: what `open_store` returns. (Partition leases and worker liveness are
    PostgreSQL's alone: store/postgres.py.)"""

    def close(self) -> None: ...


def with_updates(store: Store, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `docs` (§4 incidents) with their `updates` from `store` (times as RFC 3339),
    `maintenance` false and `detected_by` ["reports"] where an older document lacks them."""
    if not docs:
        return docs
    found = store.updates([d["id"] for d in docs])
    return [
        {
            **d,
            "maintenance": bool(d.get("maintenance", False)),
            "detected_by": d.get("detected_by") or ["reports"],
            "updates": [{**u, "at": iso(u["at"])} for u in found.get(d["id"], ())],
        }
        for d in docs
    ]


def incidents_where(mark: str, q: IncidentQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of `Store.incidents` and its values (`mark`: the placeholder):
    `since`/`until` select incidents overlapping that span. (`limit` is the caller's.)"""
    parts: list[str] = []
    args: list[Any] = []
    if q.service is not None:
        parts.append(f"service = {mark}")
        args.append(q.service)
    if q.since is not None:
        parts.append(f"(ended_at IS NULL OR ended_at >= {mark})")
        args.append(float(q.since))
    if q.until is not None:
        parts.append(f"started_at <= {mark}")
        args.append(float(q.until))
    if q.status is not None:
        parts.append(f"status = {mark}")
        args.append(q.status)
    return " AND ".join(parts) or "1 = 1", args


def incident_matches(doc: Mapping[str, Any], q: IncidentQuery) -> bool:
    """Whether `doc` (an incident the engine holds, not yet stored) passes the filter
    `incidents_where` writes in SQL for stored ones (`limit` aside)."""
    if q.service is not None and doc["service"] != q.service:
        return False
    if q.status is not None and doc["status"] != q.status:
        return False
    since, until = q.since, q.until
    if since is not None and doc["ended_at"] is not None and epoch_of(doc["ended_at"]) < since:
        return False
    return not (until is not None and epoch_of(doc["started_at"]) > until)


def code_tables(rows: CountRows) -> tuple[NDArray[np.bytes_], NDArray[np.bytes_]]:
    """The countries and problems `rows` index, as packed rows hold them (CHUNK_DTYPE: two
    bytes, and the first 32 bytes of a problem's UTF-8)."""
    countries = np.array([c.encode() for c in rows.countries] or [b""], "S2")
    problems = np.array([p.encode()[:32] for p in rows.problems] or [b""], "S32")
    return countries, problems


def chunks(rows: CountRows) -> Iterator[tuple[str, int, NDArray[np.void]]]:
    """Split counted rows into (service, hour, packed chunk) for storage."""
    if len(rows) == 0:
        return
    hour = rows.minute // 60
    order = np.lexsort((hour, rows.service))
    svc_sorted = rows.service[order]
    hour_sorted = hour[order]
    brk = np.flatnonzero((np.diff(svc_sorted) != 0) | (np.diff(hour_sorted) != 0)) + 1
    bounds = np.concatenate(([0], brk, [len(order)]))
    countries, problems = code_tables(rows)
    # Pack every row once, in (service, hour) order; each chunk is then a slice of it. The
    # (country, problem) of a row comes from a table of every pair (one gather of whole
    # records, not two columns of strings built and copied in).
    npb = len(problems)
    pairs = np.zeros(len(countries) * npb, CHUNK_DTYPE)
    pairs["c"] = np.repeat(countries, npb)
    pairs["p"] = np.tile(problems, len(countries))
    packed = pairs[rows.country[order].astype(np.int64) * npb + rows.problem[order]]
    packed["m"] = rows.minute[order] - hour_sorted * 60
    packed["n"] = rows.count[order]
    services = rows.services
    for a, b in itertools.pairwise(bounds.tolist()):
        yield services[int(svc_sorted[a])], int(hour_sorted[a]), packed[a:b]


def merge_chunks(a: NDArray[np.void], b: NDArray[np.void]) -> NDArray[np.void]:
    """Sum two chunks of the same service and hour."""
    both = np.concatenate((a, b))
    keys = both[["m", "c", "p"]]
    uniq, inv = np.unique(keys, return_inverse=True)
    out = np.empty(len(uniq), CHUNK_DTYPE)
    out["m"], out["c"], out["p"] = uniq["m"], uniq["c"], uniq["p"]
    out["n"] = np.bincount(inv.ravel(), weights=both["n"]).astype(np.int64)
    return out


def unpack(data: bytes) -> NDArray[np.void]:
    return np.frombuffer(data, CHUNK_DTYPE)
