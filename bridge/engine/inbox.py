"""Recording inbound events durably, exactly once per (system, event id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.adapters.base import InboundEvent
from bridge.canonical import utcnow
from bridge.store.models import InboxEvent, InboxState, new_id

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
