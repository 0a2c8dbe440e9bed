"""The tables. The database, not the broker, is the source of truth for all work."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from bridge.canonical import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which stores naive) and Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        from datetime import UTC

        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        from datetime import UTC

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def new_id() -> str:
    return str(uuid.uuid4())


class DeliveryState(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class InboxState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # field name → {"v": value, "s": source system, "t": source timestamp}
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    display_name: Mapped[str] = mapped_column(String(400), default="")
    revision: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    merged_into: Mapped[str | None] = mapped_column(String(36), ForeignKey("customers.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MatchKey(Base):
    """Indexed match keys (e-mail, E.164 phone, customer code) of live customers."""

    __tablename__ = "match_keys"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Link(Base):
    """A canonical customer's record in one system."""

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("system", "external_id", name="uq_links_system_external"),
        UniqueConstraint("customer_id", "system", name="uq_links_customer_system"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(36), ForeignKey("customers.id"), index=True)
    system: Mapped[str] = mapped_column(String(32))
    # NULL while a create is in progress: the row then records the intent.
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    external_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_updated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The last projection known to be in that system, in canonical terms, and its hash.
    projection_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What our last write replaced (values and change time), for systems whose writes
    # overwrite blindly: a till edit that reaches us late, timed between that state and our
    # write, was overwritten by us and must still be merged (see ingest._clobbered).
    overwritten_values: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    overwritten_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Updates sent but not yet answered, `{"hash", "values"}` of each projection (the newest
    # last, a few kept). When an answer is lost (a killed worker, a dropped response), the
    # record read back or its webhook shows our own values: that is our write landing, not
    # a till edit made after it, and a till edit made on top of it changed only the fields
    # it does not share with our write. More than one: a retry may send a newer state
    # before the lost one is seen.
    pending_writes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    create_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    create_started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboxEvent(Base):
    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("system", "event_id", name="uq_inbox_system_event"),
        Index("ix_inbox_state_enqueued", "state", "enqueued_at"),
        Index("ix_inbox_received", "received_at"),
        # Ingest takes a record's earlier waiting events first (ingest.catch_up). Not a
        # partial index on `state = 'pending'`: psycopg prepares a statement on its sixth
        # run, and Postgres's generic plan for it cannot use a partial index whose
        # predicate only a bound parameter meets; it then read every waiting row of the
        # system (tests/test_query_plans.py).
        Index("ix_inbox_record", "system", "external_id", "id"),
        # Failed ingests waiting for the sweeper's retry; the predicate names no parameter,
        # so a generic plan can use it.
        Index(
            "ix_inbox_retrying",
            "enqueued_at",
            sqlite_where=text("error IS NOT NULL"),
            postgresql_where=text("error IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(Text)  # InboundEvent.to_json()
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=InboxState.PENDING)
    outcome: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(36), default=new_id)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # At most one waiting and one running delivery per (customer, target): the
        # database enforces coalescing and the one-in-flight rule, not the workers.
        Index(
            "uq_deliveries_pending",
            "customer_id",
            "target",
            unique=True,
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
        Index(
            "uq_deliveries_in_flight",
            "customer_id",
            "target",
            unique=True,
            sqlite_where=text("state = 'in_flight'"),
            postgresql_where=text("state = 'in_flight'"),
        ),
        Index("ix_deliveries_state_due", "state", "next_attempt_at"),
        # The sweeper's "never sent, or sent before the queue's read horizon".
        Index("ix_deliveries_target_state_sent", "target", "state", "enqueued_at"),
        # "Is one already waiting?", asked for every planned change: the unique indexes
        # above are partial, so a generic plan cannot use them (see InboxEvent).
        Index("ix_deliveries_customer_target_state", "customer_id", "target", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(36), ForeignKey("customers.id"))
    target: Mapped[str] = mapped_column(String(32))
    op: Mapped[str] = mapped_column(String(16), default="sync")  # sync (create or update) | delete
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    source_system: Mapped[str | None] = mapped_column(String(32), nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete | lookup | none
    outcome: Mapped[str] = mapped_column(String(20))  # ok | retry | failed | auth | conflict | noop | lost
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class PollCursor(Base):
    __tablename__ = "poll_cursors"

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[datetime | None] = mapped_column(nullable=True)
    last_started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seen: Mapped[int] = mapped_column(Integer, default=0)


class SystemState(Base):
    """Per-target health: an auth failure pauses a target until a probe succeeds."""

    __tablename__ = "system_state"

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    paused_at: Mapped[datetime | None] = mapped_column(nullable=True)
    next_probe_at: Mapped[datetime | None] = mapped_column(nullable=True)


class QueueMark(Base):
    """How far each queue has been read, for telling a lost message from a waiting one.

    The sweeper sends a marker down a queue that holds a backlog; the worker that takes it
    records when it was sent. Queues are first in, first out, so a row sent before a marker
    that has been taken, and still not done, had its message lost (see engine.sweep).
    """

    __tablename__ = "queue_marks"

    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The last marker sent, so that a backlog carries one per requeue period, not per sweep.
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The marker taken most recently, and when: trusted once the messages taken just before
    # it have had a requeue period to finish.
    taken_mark: Mapped[datetime | None] = mapped_column(nullable=True)
    taken_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The newest marker so trusted.
    settled_mark: Mapped[datetime | None] = mapped_column(nullable=True)


class Order(Base):
    """An order from an order-sourcing system (LS One), linked to a customer when known."""

    __tablename__ = "orders"
    __table_args__ = (UniqueConstraint("system", "external_id", name="uq_orders_system_external"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    customer_ref: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    customer_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("customers.id"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(40), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_updated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
