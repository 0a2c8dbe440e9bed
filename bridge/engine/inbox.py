"""Recording inbound events durably, exactly once per (system, event id)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.adapters.base import InboundEvent, text_problem
from bridge.adapters.errors import PayloadError
from bridge.canonical import utcnow
from bridge.store.models import InboxEvent, InboxState, Link, Order, new_id

# Record versions end up in a BIGINT column (links.external_version).
INT64 = (-(2**63), 2**63 - 1)


def _length(*columns: Any) -> int:
    lengths = []
    for column in columns:
        assert isinstance(column.type, String)
        assert column.type.length is not None
        lengths.append(int(column.type.length))
    return min(lengths)


# Taken from the schema, so a migration that widens a column widens what we accept.
_inbox, _links, _orders = InboxEvent.__table__.c, Link.__table__.c, Order.__table__.c
LIMITS = {
    "event_id": _length(_inbox.event_id),
    "event_type": _length(_inbox.event_type),
    "external_id": _length(_inbox.external_id, _links.external_id),
    "order external_id": _length(_orders.external_id),
    "order customer_ref": _length(_orders.customer_ref),
    "order reference": _length(_orders.reference),
    "order status": _length(_orders.status),
}


class ReplayRefused(Exception):
    """A signed event too old to prove it is new: its inbox row may already be pruned."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _texts(ev: InboundEvent) -> Iterator[tuple[str, str | None, bool]]:
    """(name, value, required) of every text of an event that lands in a column."""
    yield "event_id", ev.event_id, True
    yield "event_type", ev.event_type, True
    yield "external_id", ev.external_id, True
    for ref in ev.merged_from:
        yield "external_id", ref, True
    if ev.record is not None:
        yield "external_id", ev.record.external_id, True
    if ev.order is not None:
        yield "order external_id", ev.order.external_id, True
        yield "order customer_ref", ev.order.customer_ref, False
        yield "order reference", ev.order.reference, False
        yield "order status", ev.order.status, False


def check_storable(events: Sequence[InboundEvent]) -> None:
    """Raise PayloadError (422) for an event the inbox or the engine could not store.

    Adapters parse vendor payloads; this is the one check, for every system, that what
    they produced fits the tables: ids within the column lengths (silently truncating
    them would let two different events collide as duplicates), no text the database
    refuses (NUL, unpaired surrogates), versions within BIGINT, finite numbers, and
    timezone-aware times.
    """
    for ev in events:
        for name, value, required in _texts(ev):
            if value is None and not required:
                continue
            if not isinstance(value, str) or (required and not value):
                raise PayloadError(f"event has an empty or non-text {name}", status=422)
            if len(value) > LIMITS[name]:
                raise PayloadError(f"{name} longer than {LIMITS[name]} characters", status=422)
            problem = text_problem(value)
            if problem:
                raise PayloadError(f"{name} {problem}", status=422)
        record = ev.record
        if record is not None and record.version is not None:
            version = record.version
            if (
                not isinstance(version, int)
                or isinstance(version, bool)
                or not INT64[0] <= version <= INT64[1]
            ):
                raise PayloadError("record version is outside the 64-bit integer range", status=422)
        times = [ev.occurred_at]
        if record is not None:
            times.append(record.updated_at)
        if ev.order is not None:
            times.append(ev.order.updated_at)
        if any(at is not None and at.utcoffset() is None for at in times):
            raise PayloadError("event time without a time zone", status=422)
        for native in [x.native for x in (record, ev.order) if x is not None]:
            for path, value in _leaves(native):
                if isinstance(value, str):
                    problem = text_problem(value)
                    if problem:
                        raise PayloadError(f"{path} {problem}", status=422)
                elif isinstance(value, float) and not math.isfinite(value):
                    raise PayloadError(f"{path} is not a finite number", status=422)


def _leaves(value: Any, path: str = "record") -> Iterator[tuple[str, Any]]:
    # Iterative walk: payloads were depth-limited when parsed, but adapters that build
    # records from XML or from code must not be able to crash this check either.
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield f"{where} key", key
                stack.append((f"{where}.{key}"[:80], child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]"[:80], child) for i, child in enumerate(item))
        else:
            yield where, item


def check_not_replayed(
    events: Sequence[InboundEvent], retention_h: float, now: datetime | None = None
) -> None:
    """Refuse (ReplayRefused) a batch holding an event older than the inbox retention.

    Inside the retention window the inbox key turns a redelivery into a duplicate. Past
    it the row may have been pruned, so the key proves nothing and the event cannot be
    told from a replay of an old signed body: it is refused, never taken as new. No
    genuine delivery is that old (Square, the longest, redelivers for 72 h and retention
    is at least that). Events without a time cannot be judged and rely on the key alone.
    """
    horizon = (now or utcnow()) - timedelta(hours=retention_h)
    for ev in events:
        if ev.occurred_at is not None and ev.occurred_at < horizon:
            raise ReplayRefused(
                f"event {ev.event_id!r} occurred at {ev.occurred_at.isoformat()}, before the "
                f"{retention_h:g} h inbox retention window: refused as a possible replay"
            )


# (system, events, raw body, correlation id of the request that carried them)
Submission = tuple[str, Sequence[InboundEvent], bytes | None, str | None]


def record_batch(
    session: Session | Connection, submissions: Sequence[Submission]
) -> list[tuple[list[int], int]]:
    """Insert the events of many submissions in one statement, skipping ones already seen.

    Returns, per submission, (new inbox ids, duplicates). An event that appears twice in
    the same batch counts as new for its first submission and a duplicate afterwards.
    """
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for system, events, raw_body, correlation_id in submissions:
        for ev in events:
            rows.append(
                {
                    "system": system,
                    "event_id": ev.event_id[:200],
                    "event_type": ev.event_type[:100],
                    "kind": ev.kind.value,
                    "external_id": ev.external_id[:200],
                    "event": ev.to_json(),
                    "raw_body": raw_body,
                    "state": InboxState.PENDING.value,
                    "outcome": None,
                    "error": None,
                    "correlation_id": correlation_id or new_id(),
                    "received_at": now,
                    "enqueued_at": now,
                    "processed_at": None,
                    "attempts": 0,
                }
            )
    inserted: dict[tuple[str, str], int] = {}
    if rows:
        table = InboxEvent.__table__
        assert isinstance(table, Table)
        bind = session.get_bind() if isinstance(session, Session) else session
        insert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(table)
            .on_conflict_do_nothing(index_elements=["system", "event_id"])
            .returning(table.c.id, table.c.system, table.c.event_id)
        )
        for row in session.execute(stmt, rows):
            inserted[(row.system, row.event_id)] = row.id
    results: list[tuple[list[int], int]] = []
    for system, events, _raw, _cid in submissions:
        ids: list[int] = []
        duplicates = 0
        for ev in events:
            row_id = inserted.pop((system, ev.event_id[:200]), None)
            if row_id is None:
                duplicates += 1
            else:
                ids.append(row_id)
        results.append((ids, duplicates))
    return results


def record_events(
    session: Session, system: str, events: Sequence[InboundEvent], raw_body: bytes | None
) -> tuple[list[int], int]:
    """Insert one submission's events. Returns (new row ids, duplicates)."""
    return record_batch(session, [(system, events, raw_body, None)])[0]
