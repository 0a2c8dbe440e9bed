"""Recording inbound events durably, exactly once per (system, event id)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.adapters.base import InboundEvent
from bridge.canonical import utcnow
from bridge.store.models import InboxEvent, InboxState, new_id


def record_events(
    session: Session, system: str, events: Sequence[InboundEvent], raw_body: bytes | None
) -> tuple[list[int], int]:
    """Insert events, skipping ones already seen. Returns (new row ids, duplicates)."""
    if not events:
        return [], 0
    now = utcnow()
    rows = [
        {
            "system": system,
            "event_id": ev.event_id[:200],
            "event_type": ev.event_type[:100],
            "kind": ev.kind.value,
            "external_id": ev.external_id[:200],
            "event": ev.to_json(),
            "raw_body": raw_body,
            "state": InboxState.PENDING.value,
            "correlation_id": new_id(),
            "received_at": now,
            "enqueued_at": now,
            "attempts": 0,
        }
        for ev in events
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(InboxEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["system", "event_id"])
        .returning(InboxEvent.id)
    )
    ids = list(session.scalars(stmt).all())
    return ids, len(rows) - len(ids)


def pending_ids(session: Session, system: str, event_ids: Sequence[str]) -> list[int]:
    return list(
        session.scalars(
            select(InboxEvent.id).where(
                InboxEvent.system == system,
                InboxEvent.event_id.in_(event_ids),
                InboxEvent.state == InboxState.PENDING,
            )
        ).all()
    )
