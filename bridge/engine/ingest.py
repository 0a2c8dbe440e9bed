"""Ingest: one inbox event → the canonical customer → the deliveries it calls for.

Everything a single event changes happens in one transaction: the customer's fields,
the link of the source system, and the deliveries. Echoes (the bridge's own writes coming
back), no-ops and stale events end here and cost no write anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bridge import canonical, logs
from bridge.adapters.base import Adapter, Capability, EventKind, ExternalOrder, ExternalRecord, InboundEvent
from bridge.adapters.errors import Verdict, classify
from bridge.canonical import utcnow
from bridge.engine import customers as cust
from bridge.engine.retry import backoff_seconds
from bridge.runtime import Runtime
from bridge.store.models import (
    Customer,
    Delivery,
    DeliveryState,
    InboxEvent,
    InboxState,
    Link,
    MatchKey,
    Order,
)

log = logging.getLogger("posbridge.ingest")


class Deferred(Exception):
    """The event cannot be decided yet (a create of ours may explain it); try again soon."""


@dataclass
class IngestResult:
    outcome: str
    customer_id: str | None = None
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    retry_in: float | None = None
    system: str | None = None


# Earlier waiting events of one record taken before it, at most (the rest keep their order
# through their own tasks, each catching up on its predecessors).
CATCH_UP_MAX = 20


def ingest(rt: Runtime, inbox_id: int) -> IngestResult:
    system: str | None = None
    result = _ingest(rt, inbox_id, catching_up=True)
    if result.system is None:
        with rt.db.session() as session:
            system = session.scalar(select(InboxEvent.system).where(InboxEvent.id == inbox_id))
        result.system = system
    return result


def catch_up(rt: Runtime, system: str, external_id: str) -> int:
    """Ingest the record's events still waiting in the inbox, oldest first.

    Systems with one change time per record (Loyverse, OnSite, Fieldpine) stamp every field
    that differs from the last state we know with that one time. A record applied while an
    older event of it still waits (behind a backlog, or read back by a push) would stamp
    that older edit with the later time, and it would outrank a newer edit of the same field
    made elsewhere in between. Applied in order, each edit keeps its own time.
    """
    with rt.db.session() as session:
        earlier = _waiting(session, system, external_id, before=None)
    _take(rt, earlier)
    return len(earlier)


def _waiting(session: Session, system: str, external_id: str, before: int | None) -> list[int]:
    query = select(InboxEvent.id).where(
        InboxEvent.system == system,
        InboxEvent.external_id == external_id,
        InboxEvent.state == InboxState.PENDING,
        # Only events that carry their record: a trigger re-reads the present state, and a
        # delete waits out its grace period.
        InboxEvent.kind == EventKind.UPSERT,
    )
    if before is not None:
        query = query.where(InboxEvent.id < before)
    return list(session.scalars(query.order_by(InboxEvent.id).limit(CATCH_UP_MAX)).all())


def follow_up(rt: Runtime, inbox_id: int, result: IngestResult) -> None:
    """Send what an ingest planned: its pushes (after the coalescing window) and, for a
    short wait, its own retry; longer waits are the sweeper's (see engine.retry)."""
    for target, delivery_id in result.deliveries:
        rt.dispatch.push(target, delivery_id, countdown=rt.settings.coalesce_window_s)
    short = rt.settings.short_wait_s
    if result.outcome == "retry" and result.retry_in is not None and result.retry_in <= short:
        rt.dispatch.ingest([inbox_id], countdown=result.retry_in)


def _take(rt: Runtime, earlier: list[int]) -> None:
    for inbox_id in earlier:
        # Each under its own correlation id; the event that caught up keeps its own after.
        with logs.correlated(None):
            # What the row's own task would have sent; its message, when it comes, finds it done.
            follow_up(rt, inbox_id, _ingest(rt, inbox_id, catching_up=False))


def _ingest(rt: Runtime, inbox_id: int, *, catching_up: bool) -> IngestResult:
    with rt.db.session() as session:
        row = session.get(InboxEvent, inbox_id)
        if row is not None:
            logs.bind_correlation(row.correlation_id)
        if row is None:
            return IngestResult("already")
        if row.state != InboxState.PENDING:
            # Most common during a backlog (a catch-up or the sweeper took it first): the
            # system comes with the row, not from another transaction.
            return IngestResult("already", system=row.system)
        system = row.system
        event = InboundEvent.from_json(row.event)
        correlation_id = row.correlation_id
        received_at = row.received_at
        # In the same transaction as the read: one round trip less per event.
        earlier = _waiting(session, system, row.external_id, inbox_id) if catching_up else []
    _take(rt, earlier)
    if event.kind == EventKind.DELETE or (event.record is not None and event.record.deleted):
        # Deletes wait a moment: a merge deletes the merged profiles, and its events come
        # in no guaranteed order. Seen first, the merge re-points the link and the delete
        # then finds nothing to do; seen last, it would unlink a live customer.
        wait = rt.settings.delete_grace_s - (utcnow() - received_at).total_seconds()
        if wait > 0:
            return _reschedule(rt, inbox_id, "delete waits out its grace period", wait, count=False)
    try:
        adapter = rt.adapter(system)
        record = event.record
        if event.kind in (EventKind.TRIGGER, EventKind.UPSERT, EventKind.MERGE) and record is None:
            # Hooks that only say "something changed": the API is the truth.
            record = adapter.fetch(event.external_id)
            if record is None:
                event = InboundEvent(
                    event_id=event.event_id,
                    kind=EventKind.DELETE,
                    external_id=event.external_id,
                    event_type=event.event_type,
                    occurred_at=event.occurred_at,
                )
        for attempt in range(4):
            try:
                with rt.db.session() as session:
                    row = session.scalar(
                        select(InboxEvent).where(InboxEvent.id == inbox_id).with_for_update()
                    )
                    if row is None or row.state != InboxState.PENDING:
                        return IngestResult("already")
                    result = apply_event(session, rt, adapter, system, event, record, correlation_id)
                    result.system = system
                    row.state = InboxState.DONE
                    row.outcome = result.outcome
                    row.processed_at = utcnow()
                    row.error = None
                    return result
            except IntegrityError:
                # Two workers raced on the same new link/customer; the loser re-reads.
                if attempt == 3:
                    raise
    except Deferred as why:
        return _reschedule(rt, inbox_id, str(why), 0.5, count=False)
    except Exception as err:  # classified: the inbox row carries the reason
        verdict = classify(err)
        if isinstance(err, OperationalError):
            verdict = type(verdict)(Verdict.RETRY, str(err))
        elif isinstance(err, canonical.NormalizationError):
            # The record itself holds a value we cannot read (a signed webhook with a
            # birthday of 5): every retry would fail the same way. The row keeps the reason
            # and the raw body for an operator.
            verdict = type(verdict)(Verdict.FAIL, f"record cannot be read: {err}")
        log.warning("ingest of inbox %s failed: %s", inbox_id, verdict.reason)
        if verdict.verdict == Verdict.FAIL:
            with rt.db.session() as session:
                row = session.get(InboxEvent, inbox_id)
                if row is not None:
                    row.state = InboxState.FAILED
                    row.error = verdict.reason[:2000]
                    row.attempts += 1
            return IngestResult("failed")
        with rt.db.session() as session:
            row = session.get(InboxEvent, inbox_id)
            attempts = (row.attempts if row else 0) + 1
        delay = backoff_seconds(
            attempts,
            base=rt.settings.retry_base_s,
            cap=rt.settings.retry_cap_s,
            retry_after=verdict.retry_after,
        )
        return _reschedule(rt, inbox_id, verdict.reason, delay, count=True)
    return IngestResult("noop")


def _reschedule(rt: Runtime, inbox_id: int, reason: str, delay: float, *, count: bool) -> IngestResult:
    with rt.db.session() as session:
        row = session.get(InboxEvent, inbox_id)
        if row is None:
            return IngestResult("already")
        if count:
            row.attempts += 1
            if row.attempts >= rt.settings.max_attempts:
                row.state = InboxState.FAILED
                row.error = reason[:2000]
                return IngestResult("failed")
        row.error = reason[:2000]
        # The sweeper re-enqueues rows whose enqueued_at is older than requeue_after:
        # pretend it was enqueued so that it comes back after `delay`.
        if delay <= rt.settings.short_wait_s:
            row.enqueued_at = utcnow() + timedelta(seconds=delay)  # the task re-sends it itself
        else:
            row.enqueued_at = utcnow() + timedelta(seconds=delay - rt.settings.requeue_after_s)
    return IngestResult("retry", retry_in=delay)


def apply_event(
    session: Session,
    rt: Runtime,
    adapter: Adapter,
    system: str,
    event: InboundEvent,
    record: ExternalRecord | None,
    correlation_id: str | None,
) -> IngestResult:
    now = utcnow()
    if event.kind == EventKind.ORDER and event.order is not None:
        return apply_order(session, rt, system, event.order, correlation_id, now)
    if event.kind == EventKind.DELETE or (record is not None and record.deleted):
        return apply_delete(session, rt, system, event.external_id, correlation_id, now)
    if record is None:
        return IngestResult("ignored")
    if event.kind == EventKind.MERGE:
        repoint_merged(session, rt, system, record.external_id, event.merged_from, now)
    return apply_record(session, rt, adapter, system, record, event.occurred_at, correlation_id, now)


def apply_record(
    session: Session,
    rt: Runtime,
    adapter: Adapter,
    system: str,
    record: ExternalRecord,
    occurred_at: datetime | None,
    correlation_id: str | None,
    now: datetime,
    *,
    plan: bool = True,
) -> IngestResult:
    region = rt.settings.default_region
    incoming = cust.held_values(adapter, record.native, region)
    digest = canonical.projection_hash(incoming)
    at = record.updated_at or occurred_at or now
    link = session.scalar(
        select(Link).where(Link.system == system, Link.external_id == record.external_id).with_for_update()
    )
    if link is not None and link.synced_at is not None:
        if _is_stale(link, record, at):
            return _merge_stale(session, rt, system, link, incoming, at, correlation_id, now)
        if link.projection_hash == digest:
            _advance(link, record, at)
            return IngestResult("echo", link.customer_id)
        pending = link.pending_writes or []
        if any(w.get("hash") == digest for w in pending):
            return _our_unanswered_write(session, rt, adapter, link, record, correlation_id, now)
        customer = cust.lock_customer(session, link.customer_id)
        if customer.id != link.customer_id:
            link.customer_id = customer.id
        previous = link.last_values or {}
        # Only what this system changed since we last knew it takes part in the merge:
        # the rest of its record is our own older write, not a new opinion. That includes a
        # write of ours whose answer we have not seen yet: a till edit made on top of it
        # shows our values too, and stamped with the till's time they would undo anything
        # newer that reached the canonical customer since we sent them.
        changed = {k: v for k, v in incoming.items() if previous.get(k) != v and not _we_sent(pending, k, v)}
        outcome = "updated"
    else:
        outcome_hint = "linked"
        if link is None:
            _defer_if_our_create(session, rt, system, incoming)
        else:
            # Our create with a caller-chosen id (Fieldpine), seen before its answer.
            outcome_hint = "adopted"
        found = None if link is None else cust.lock_customer(session, link.customer_id)
        if found is None:
            matched = cust.find_match(session, rt, incoming, system, record.external_id)
            if matched is not None:
                found, intent = matched
                if intent is not None:
                    link = intent  # our create's answer, seen here first: adopt it
                    link.external_id = record.external_id
                    outcome_hint = "adopted"
        if found is None:
            customer = Customer(fields={}, created_at=now)
            session.add(customer)
            session.flush()
            outcome = "created"
        else:
            customer = found
            outcome = outcome_hint
        if link is None:
            link = Link(customer_id=customer.id, system=system, external_id=record.external_id)
            session.add(link)
        changed = {k: v for k, v in incoming.items() if v is not None}
    if customer.deleted and not customer.merged_into and changed:
        customer.deleted = False  # a live edit elsewhere brings a deleted customer back
    state = cust.load_state(customer)
    merged = canonical.merge_fields(state, changed, system, at, rt.settings.system_priority)
    if merged.changed or outcome == "created":
        cust.save_state(session, customer, state)
        if canonical.CUSTOMER_CODE in merged.changed:
            link_orders(session, customer)
    elif outcome == "updated":
        outcome = "noop"
    link.last_values = incoming
    link.projection_hash = digest
    _advance(link, record, at)
    link.synced_at = link.synced_at or now
    session.flush()
    if not plan:
        # A backfill links everything first and plans afterwards, bulk creates first:
        # deliveries planned here would race it with one create per customer.
        return IngestResult(outcome, customer.id)
    deliveries = cust.plan_deliveries(
        session, rt, customer, source=system, correlation_id=correlation_id, now=now
    )
    return IngestResult(outcome, customer.id, deliveries)


def _we_sent(pending: list[dict[str, Any]], name: str, value: Any) -> bool:
    return any(name in (w.get("values") or {}) and w["values"][name] == value for w in pending)


def _our_unanswered_write(
    session: Session,
    rt: Runtime,
    adapter: Adapter,
    link: Link,
    record: ExternalRecord,
    correlation_id: str | None,
    now: datetime,
) -> IngestResult:
    """Our update landed but its answer never reached us; this is its echo, or a re-read.

    Taken for a till edit, its values (the canonical state when we sent it) would be merged
    with the write's own, later, time and undo any edit made meanwhile elsewhere or at this
    very till. Recorded as our write instead; if the canonical customer has moved on since,
    the plan below sends the newer state here.
    """
    customer = cust.lock_customer(session, link.customer_id)
    cust.store_written(link, adapter, record, rt.settings.default_region)
    session.flush()
    deliveries = cust.plan_deliveries(
        session, rt, customer, source=link.system, correlation_id=correlation_id, now=now
    )
    return IngestResult("echo", customer.id, deliveries)


def _clobbered(link: Link, incoming: canonical.Values, at: datetime) -> canonical.Values:
    """What a till changed in a state our own later write overwrote, or nothing.

    A system without versioned writes cannot refuse a write based on an old read, so a
    till edit that lands between our read and our write is overwritten, and its event,
    arriving after our write was recorded, looks stale. It is not: the edit is newer than
    the state we wrote over. Its changes (against that state) still take part in the merge,
    by their own time; the system itself then gets the merged result.
    """
    # Set only by our writes to systems without versioned writes (customers.store_written).
    if link.overwritten_values is None or link.overwritten_at is None:
        return {}
    if at <= link.overwritten_at:
        return {}
    before = link.overwritten_values
    return {k: v for k, v in incoming.items() if before.get(k) != v}


def _merge_stale(
    session: Session,
    rt: Runtime,
    system: str,
    link: Link,
    incoming: canonical.Values,
    at: datetime,
    correlation_id: str | None,
    now: datetime,
) -> IngestResult:
    """An older state of the record than the last we knew. It still tells two things: a
    till edit our later write overwrote (`_clobbered`), and how old the values it shows
    are: one change time per record can have dated one of them too late (`canonical.redate`).
    """
    clobbered = _clobbered(link, incoming, at)
    if not clobbered:
        # Most stale events (a poll's overlap) tell nothing new: decided without a lock.
        # (The column alone: an object loaded here unlocked would shadow the locked read.)
        fields = session.scalar(select(Customer.fields).where(Customer.id == link.customer_id))
        state = {name: canonical.FieldState.from_json(data) for name, data in (fields or {}).items()}
        if not any(canonical.redate(state, incoming, system, at)):
            return IngestResult("stale", link.customer_id)
    customer = cust.lock_customer(session, link.customer_id)
    state = cust.load_state(customer)
    moved, restored = canonical.redate(state, incoming, system, at)
    merged = canonical.merge_fields(state, clobbered, system, at, rt.settings.system_priority)
    if not (moved or restored or merged.changed):
        return IngestResult("stale", customer.id)
    cust.save_state(session, customer, state)
    if not (restored or merged.changed):
        return IngestResult("stale", customer.id)
    # The link keeps describing what the system holds now; the merged state differs from
    # it, so the plan below writes the till's edit back there too.
    deliveries = cust.plan_deliveries(
        session, rt, customer, source=system, correlation_id=correlation_id, now=now
    )
    return IngestResult("recovered", customer.id, deliveries)


def _is_stale(link: Link, record: ExternalRecord, at: datetime) -> bool:
    if record.version is not None and link.external_version is not None:
        return record.version < link.external_version
    return link.source_updated_at is not None and at < link.source_updated_at


def known_as_is(link: Link, record: ExternalRecord, digest: str) -> bool:
    """An echo with nothing to advance: `apply_record` would change nothing at all, so a
    poll need not queue the record (after our write its webhook is the one echo)."""
    return (
        link.synced_at is not None
        and record.updated_at is not None
        and record.updated_at == link.source_updated_at
        and (record.version is None or record.version == link.external_version)
        and link.projection_hash == digest
    )


def _advance(link: Link, record: ExternalRecord, at: datetime) -> None:
    if record.version is not None:
        link.external_version = max(record.version, link.external_version or record.version)
    if link.source_updated_at is None or at > link.source_updated_at:
        link.source_updated_at = at


def _defer_if_our_create(session: Session, rt: Runtime, system: str, incoming: canonical.Values) -> None:
    """An unknown record without match keys may be our own create, not yet answered.

    A record with keys is matched to the customer whose create it answers (see
    `find_match`). One without keys cannot be told apart, so while any create into
    `system` is unfinished, wait for the pushes to record their links: the event then
    turns out to be an echo instead of a second canonical customer.
    """
    if canonical.match_keys(incoming):
        return
    unfinished = select(Delivery.customer_id).where(
        Delivery.target == system, Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT])
    )
    creating = session.scalar(
        select(Link.id)
        .where(
            Link.system == system,
            Link.synced_at.is_(None),
            Link.create_started_at.is_not(None),
            Link.customer_id.in_(unfinished),
        )
        .limit(1)
    )
    if creating is not None:
        raise Deferred(f"creates into {system} are unanswered")


def apply_delete(
    session: Session, rt: Runtime, system: str, external_id: str, correlation_id: str | None, now: datetime
) -> IngestResult:
    link = session.scalar(
        select(Link).where(Link.system == system, Link.external_id == external_id).with_for_update()
    )
    if link is None:
        return IngestResult("ignored")
    customer = cust.lock_customer(session, link.customer_id)
    session.delete(link)
    session.flush()
    if rt.settings.delete_policy == "propagate":
        planned = []
        for target in rt.targets():
            if target == system or Capability.DELETE not in rt.classes[target].capabilities:
                continue
            other = session.scalar(select(Link).where(Link.customer_id == customer.id, Link.system == target))
            if other is None or other.external_id is None:
                continue
            delivery_id = cust.ensure_delivery(session, rt, customer.id, target, system, correlation_id, now)
            if delivery_id is not None:
                session.get_one(Delivery, delivery_id).op = "delete"
                planned.append((target, delivery_id))
        customer.deleted = True
        return IngestResult("deleted", customer.id, planned)
    # Default policy: the customer is marked deleted and unlinked there; nothing else is
    # written, and waiting deliveries for it are dropped.
    customer.deleted = True
    cust.refresh_match_keys(session, customer, {})
    for delivery in session.scalars(
        select(Delivery).where(Delivery.customer_id == customer.id, Delivery.state == DeliveryState.PENDING)
    ):
        delivery.state = DeliveryState.SUPERSEDED
        delivery.finished_at = now
        delivery.last_error = f"customer deleted in {system}"
    return IngestResult("deleted", customer.id)


def repoint_merged(
    session: Session, rt: Runtime, system: str, to_id: str, from_ids: tuple[str, ...], now: datetime
) -> None:
    """A merge in `system`: the new record inherits the links of the merged ones."""
    links = session.scalars(
        select(Link)
        .where(Link.system == system, Link.external_id.in_(from_ids))
        .order_by(Link.created_at)
        .with_for_update()
    ).all()
    if not links:
        return  # already re-pointed (the merge's other event came first) or never known
    keep = cust.lock_customer(session, links[0].customer_id)
    for other in links[1:]:
        drop = cust.lock_customer(session, other.customer_id)
        if drop.id != keep.id:
            cust.merge_customers(session, keep, drop, now)
    survivor = session.scalar(
        select(Link).where(Link.system == system, Link.customer_id == keep.id).with_for_update()
    )
    existing = session.scalar(
        select(Link).where(Link.system == system, Link.external_id == to_id).with_for_update()
    )
    for link in session.scalars(select(Link).where(Link.system == system, Link.external_id.in_(from_ids))):
        if link is not survivor:
            session.delete(link)
    session.flush()
    if existing is None and survivor is not None:
        # The merged profile carries the fields we already hold, so its event is not an
        # edit: keep the projection hash and version history of the surviving link.
        survivor.external_id = to_id
        survivor.external_version = None
        survivor.source_updated_at = None
    elif survivor is not None and survivor is not existing:
        session.delete(survivor)
    session.flush()


def apply_order(
    session: Session,
    rt: Runtime,
    system: str,
    order: ExternalOrder,
    correlation_id: str | None,
    now: datetime,
) -> IngestResult:
    row = session.scalar(select(Order).where(Order.system == system, Order.external_id == order.external_id))
    if row is None:
        row = Order(system=system, external_id=order.external_id)
        session.add(row)
    elif row.source_updated_at and order.updated_at and order.updated_at < row.source_updated_at:
        return IngestResult("stale", row.customer_id)
    row.reference = order.reference
    row.customer_ref = order.customer_ref
    row.status = order.status
    row.data = order.native
    row.source_updated_at = order.updated_at
    customer = None
    if order.customer_ref:
        cid = session.scalar(
            select(MatchKey.customer_id).where(
                MatchKey.kind == "customer_code", MatchKey.value == order.customer_ref.casefold()
            )
        )
        customer = cust.lock_customer(session, cid) if cid else None
    session.flush()
    if customer is None:
        row.customer_id = None
        return IngestResult("order_unlinked")
    row.customer_id = customer.id
    deliveries = cust.plan_deliveries(
        session, rt, customer, source=system, correlation_id=correlation_id, now=now
    )
    return IngestResult("order_linked", customer.id, deliveries)


def link_orders(session: Session, customer: Customer) -> None:
    code = cust.values(customer).get(canonical.CUSTOMER_CODE)
    if not code:
        return
    for order in session.scalars(
        select(Order).where(Order.customer_id.is_(None), Order.customer_ref.is_not(None))
    ):
        if order.customer_ref and order.customer_ref.casefold() == str(code).casefold():
            order.customer_id = customer.id
