"""Push: bring one customer's record in one target system up to date.

A delivery names only (customer, target); the push reads the customer's latest state
when it runs, so a burst of changes makes one write. Creates record their intent before
the call and, when retried, ask the adapter to find the record before creating again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import canonical, logs
from bridge.adapters.base import Adapter, Capability, ExternalRecord
from bridge.adapters.errors import (
    AdapterError,
    ChangedError,
    ConflictError,
    NotFoundError,
    Verdict,
    classify,
)
from bridge.canonical import utcnow
from bridge.engine import customers as cust
from bridge.engine.retry import backoff_seconds
from bridge.runtime import Runtime
from bridge.store.models import Attempt, Customer, Delivery, DeliveryState, Link, SystemState

log = logging.getLogger("posbridge.push")

MAX_CONFLICT_ROUNDS = 3
# Unanswered updates remembered per link: more than a delivery's conflict rounds, so none of
# one delivery's own writes can be mistaken for a till edit when it reads back.
PENDING_KEPT = 5
# What `absorb` answers when the record held something we did not know: the customer
# changed, so the projection must be made again before writing.
_ABSORBED = frozenset({"updated", "noop", "linked", "adopted", "created", "recovered"})


@dataclass
class PushResult:
    outcome: str  # done | noop | retry | failed | paused | busy | not_due | already
    action: str = "none"
    target: str | None = None
    wait: float | None = None
    follow_up: int | None = None  # a delivery that was waiting behind this one


def push(rt: Runtime, delivery_id: int) -> PushResult:
    claimed = _claim(rt, delivery_id)
    if isinstance(claimed, PushResult):
        return claimed
    target = claimed
    adapter = rt.adapter(target)
    started = time.monotonic()
    started_at = utcnow()
    action = "none"
    try:
        action, record, values = _write(rt, adapter, delivery_id)
    except Exception as err:
        result = _failed_attempt(rt, delivery_id, target, err, action, started, started_at)
    else:
        result = _finish(rt, delivery_id, target, action, record, values, started, started_at)
    result.target = target
    return result


def _claim(rt: Runtime, delivery_id: int) -> PushResult | str:
    now = utcnow()
    try:
        with rt.db.session() as session:
            delivery = session.scalar(select(Delivery).where(Delivery.id == delivery_id).with_for_update())
            if delivery is not None:
                logs.bind_correlation(delivery.correlation_id)
            if delivery is None or delivery.state != DeliveryState.PENDING:
                return PushResult("already")
            wait = (delivery.next_attempt_at - now).total_seconds()
            if wait > 0.05:
                return PushResult("not_due", wait=wait)
            paused = session.get(SystemState, delivery.target)
            if paused is not None and paused.paused:
                delivery.enqueued_at = None  # the probe that unpauses re-enqueues it
                return PushResult("paused")
            delivery.state = DeliveryState.IN_FLIGHT
            delivery.lease_until = now + timedelta(seconds=rt.settings.lease_s)
            delivery.attempts += 1
            target = delivery.target
    except IntegrityError:
        # Another delivery for this (customer, target) is in flight; it hands over to
        # this one when it finishes (see _follow_up), so nothing is lost by returning.
        return PushResult("busy")
    return target


def _write(
    rt: Runtime, adapter: Adapter, delivery_id: int
) -> tuple[str, ExternalRecord | None, dict[str, Any]]:
    """Do the vendor call(s). Returns (action, record written or found, projected values)."""
    region = rt.settings.default_region
    ext_id: str | None
    version: int | None
    for _round in range(MAX_CONFLICT_ROUNDS):
        with rt.db.session() as session:
            delivery = session.get_one(Delivery, delivery_id)
            customer = cust.lock_customer(session, delivery.customer_id)
            link = session.scalar(
                select(Link).where(Link.customer_id == customer.id, Link.system == delivery.target)
            )
            if delivery.op == "delete":
                if link is None or link.external_id is None:
                    return "none", None, {}
                ext_id, version = link.external_id, link.external_version
                values: dict[str, Any] = {}
            else:
                if customer.deleted or customer.merged_into:
                    return "none", None, {}
                state = cust.load_state(customer)
                wanted = canonical.values_of(state, adapter.fields)
                values = cust.project(adapter, state, region)
                digest = canonical.projection_hash(values)
                if link is not None and link.synced_at is not None and link.projection_hash == digest:
                    return "none", None, values
                key = delivery.idempotency_key
                creating = link is None or link.synced_at is None
                if creating and (link is None or link.create_started_at is None):
                    # Record the intent before the call: a retry then looks before it creates.
                    if link is None:
                        link = Link(customer_id=customer.id, system=delivery.target)
                        session.add(link)
                    link.external_id = adapter.preassigned_id(key)
                    link.create_key = key
                    link.create_started_at = utcnow()
                    first_create = True
                else:
                    first_create = False
                # What earlier tries sent: a create whose answer was lost holds those
                # values, not today's, if the customer changed since.
                earlier: list[dict[str, Any]] = (link.pending_writes or []) if link is not None else []
                if link is not None:
                    # Recorded before the call, like a create's intent: if the answer is
                    # lost, our values read back later are known as ours (ingest.apply_record).
                    sent = [w for w in earlier if w.get("hash") != digest]
                    link.pending_writes = [*sent, {"hash": digest, "values": values}][-PENDING_KEPT:]
                ext_id = link.external_id if link is not None else None
                version = link.external_version if link is not None else None
                known_hash = link.projection_hash if link is not None else None
        if delivery.op == "delete":
            assert ext_id is not None
            with contextlib.suppress(NotFoundError):  # already gone is what we wanted
                adapter.delete(ext_id, version)
            return "delete", None, {}
        native = adapter.from_canonical(wanted)

        def known(record: ExternalRecord, expected: str | None = known_hash) -> bool:
            held = cust.held_values(adapter, record.native, region)
            return canonical.projection_hash(held) == expected

        if creating:
            # A create with a caller-chosen id (Fieldpine) is safe to send again as it is;
            # only systems that pick the id themselves need a look first.
            if not first_create and adapter.preassigned_id(key) is None:
                tried = [{"hash": digest, "values": values}, *reversed(earlier)]
                found = _find_lost_create(adapter, tried, key)
                if found is not None:
                    record_found(rt, delivery_id, found)
                    continue  # linked now: the next round updates it if it differs
            return "create", adapter.create(native, key), values
        assert ext_id is not None
        try:
            if adapter.has(Capability.VERSIONED_WRITES):
                return "update", adapter.update(ext_id, native, version), values
            # Nothing over there refuses a write based on an old read, so a till edit made
            # since we last knew the record would be overwritten, and come back as our own
            # echo: lost everywhere. The adapter writes only over the state we know.
            return "update", adapter.update_unless_changed(ext_id, native, known), values
        except ChangedError as err:
            if not isinstance(err.current, ExternalRecord):
                raise
            absorb(rt, adapter, delivery_id, err.current)
            continue  # the merged state is projected afresh in the next round
        except ConflictError as err:
            # Someone edited it at the till since our version: fold their change in
            # (field by field, by timestamp) and try again with the fresh version.
            with rt.db.session() as session:
                session.add(
                    Attempt(
                        delivery_id=delivery_id,
                        action="update",
                        outcome="conflict",
                        http_status=err.status,
                        error=str(err)[:2000],
                        duration_ms=0.0,
                    )
                )
            current = adapter.fetch(ext_id)
            if current is None:
                raise NotFoundError(f"{adapter.name} record {ext_id} disappeared") from None
            absorb(rt, adapter, delivery_id, current)
        except NotFoundError:
            # Deleted over there behind our back: forget the link, create afresh next round.
            forget_link(rt, delivery_id)
    raise ConflictError(f"still conflicting after {MAX_CONFLICT_ROUNDS} rounds")


def _find_lost_create(adapter: Adapter, tried: list[dict[str, Any]], key: str) -> ExternalRecord | None:
    """The record an earlier create left, looked for with each `pending_writes` entry."""
    seen: set[str] = set()
    for sent in tried:
        if sent["hash"] in seen:
            continue
        seen.add(sent["hash"])
        found = adapter.find_existing(sent["values"], key)
        if found is not None:
            return found
    return None


def attach(session: Session, rt: Runtime, delivery: Delivery, record: ExternalRecord) -> None:
    attach_record(session, rt, delivery.customer_id, delivery.target, record)


def attach_record(
    session: Session, rt: Runtime, customer_id: str, target: str, record: ExternalRecord
) -> None:
    """Record `record` as the customer's record in the target system.

    If an ingest already linked that record to another canonical customer (it saw the
    record before we saw our answer), they are one person: fold them together.
    """
    adapter = rt.adapter(target)
    link = session.scalar(
        select(Link).where(Link.customer_id == customer_id, Link.system == target).with_for_update()
    )
    if link is None:
        link = Link(customer_id=customer_id, system=target)
        session.add(link)
        session.flush()
    clash = session.scalar(
        select(Link)
        .where(Link.system == target, Link.external_id == record.external_id, Link.id != link.id)
        .with_for_update()
    )
    if clash is not None:
        keep = cust.lock_customer(session, customer_id)
        other = cust.lock_customer(session, clash.customer_id)
        session.delete(clash)
        session.flush()
        if other.id != keep.id:
            cust.merge_customers(session, keep, other, utcnow())
    cust.store_written(link, adapter, record, rt.settings.default_region)


def record_found(rt: Runtime, delivery_id: int, record: ExternalRecord) -> None:
    """A lost create turned out to have succeeded: link it as if we had seen the answer."""
    with rt.db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        attach(session, rt, delivery, record)
        # Counted: each of these is a duplicate that a blind retry would have made.
        session.add(
            Attempt(
                delivery_id=delivery_id,
                action="lookup",
                outcome="found",
                duration_ms=0.0,
                error=f"earlier create had succeeded: {record.external_id}",
            )
        )


def absorb(rt: Runtime, adapter: Adapter, delivery_id: int, record: ExternalRecord) -> str:
    """Merge a record read back from the target into the canonical customer.

    Returns the ingest outcome: `echo` or `stale` mean the record held nothing new.
    """
    from bridge.engine.ingest import apply_record, catch_up

    with rt.db.session() as session:
        target = session.get_one(Delivery, delivery_id).target
    # The record's own events still waiting describe the edits in it one by one, each
    # with its time; taken first, they leave only what is newer to this read.
    catch_up(rt, target, record.external_id)
    with rt.db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        result = apply_record(
            session, rt, adapter, delivery.target, record, None, delivery.correlation_id, utcnow()
        )
        if result.outcome in _ABSORBED:
            session.add(
                Attempt(
                    delivery_id=delivery_id,
                    action="reread",
                    outcome="absorbed",
                    duration_ms=0.0,
                    error=f"{record.external_id} had changed there since our last write; merged first",
                )
            )
        return result.outcome


def forget_link(rt: Runtime, delivery_id: int) -> None:
    with rt.db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        link = session.scalar(
            select(Link).where(Link.customer_id == delivery.customer_id, Link.system == delivery.target)
        )
        if link is not None:
            session.delete(link)


def _finish(
    rt: Runtime,
    delivery_id: int,
    target: str,
    action: str,
    record: ExternalRecord | None,
    values: dict[str, Any],
    started: float,
    started_at: datetime,
) -> PushResult:
    now = utcnow()
    with rt.db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        if record is not None:
            attach(session, rt, delivery, record)
            _replan_if_moved(session, rt, delivery, now)
        elif action == "delete":
            link = session.scalar(
                select(Link).where(Link.customer_id == delivery.customer_id, Link.system == target)
            )
            if link is not None:
                session.delete(link)
        delivery.state = DeliveryState.DONE if action != "none" else DeliveryState.SUPERSEDED
        delivery.finished_at = now
        delivery.lease_until = None
        delivery.last_error = None
        session.add(
            Attempt(
                delivery_id=delivery_id,
                started_at=started_at,
                duration_ms=(time.monotonic() - started) * 1000,
                action=action,
                outcome="ok" if action != "none" else "noop",
                http_status=None,
            )
        )
        follow = _follow_up(session, delivery)
    return PushResult("done" if action != "none" else "noop", action=action, follow_up=follow)


def _replan_if_moved(session: Session, rt: Runtime, delivery: Delivery, now: datetime) -> None:
    """The customer changed while our write was in flight: this target needs another one.

    The ingest that changed it planned no delivery here if, at that moment, this system
    already held the new state (the change came from here, at the till, while we were
    writing the older state over it). Our write has now replaced it: send it back.
    """
    customer = cust.lock_customer(session, delivery.customer_id)
    cust.plan_deliveries(
        session,
        rt,
        customer,
        source=None,
        correlation_id=delivery.correlation_id,
        now=now,
        only=delivery.target,
    )


def _follow_up(session: Any, delivery: Delivery) -> int | None:
    return session.scalar(  # type: ignore[no-any-return]
        select(Delivery.id).where(
            Delivery.customer_id == delivery.customer_id,
            Delivery.target == delivery.target,
            Delivery.state == DeliveryState.PENDING,
        )
    )


def _failed_attempt(
    rt: Runtime,
    delivery_id: int,
    target: str,
    err: BaseException,
    action: str,
    started: float,
    started_at: datetime,
) -> PushResult:
    verdict = classify(err)
    status = err.status if isinstance(err, AdapterError) else None
    now = utcnow()
    settings = rt.settings
    log.warning("push of delivery %s to %s: %s (%s)", delivery_id, target, verdict.verdict, verdict.reason)
    with rt.db.session() as session:
        delivery = session.get_one(Delivery, delivery_id)
        session.add(
            Attempt(
                delivery_id=delivery_id,
                started_at=started_at,
                duration_ms=(time.monotonic() - started) * 1000,
                action=action,
                outcome=verdict.verdict.value,
                http_status=status,
                error=verdict.reason[:2000],
            )
        )
        delivery.last_error = verdict.reason[:2000]
        delivery.lease_until = None
        follow = None
        if verdict.verdict == Verdict.AUTH:
            pause(session, target, verdict.reason, now, settings.probe_interval_s)
            delivery.attempts = max(0, delivery.attempts - 1)  # not the customer's fault
            result = _back_to_pending(session, delivery, now + timedelta(seconds=settings.probe_interval_s))
            if result is not None:
                return result
            delivery.enqueued_at = None
            return PushResult("paused")
        if verdict.verdict == Verdict.FAIL or delivery.attempts >= settings.max_attempts:
            delivery.state = DeliveryState.FAILED
            delivery.finished_at = now
            follow = _follow_up(session, delivery)
            return PushResult("failed", follow_up=follow)
        delay = backoff_seconds(
            delivery.attempts,
            base=settings.retry_base_s,
            cap=settings.retry_cap_s,
            retry_after=verdict.retry_after,
        )
        result = _back_to_pending(session, delivery, now + timedelta(seconds=delay))
        if result is not None:
            return result
        delivery.enqueued_at = now if delay <= settings.short_wait_s else None
        return PushResult("retry", wait=delay)


def _back_to_pending(session: Any, delivery: Delivery, when: datetime) -> PushResult | None:
    """Return the delivery to the queue, or hand over to a newer waiting one."""
    newer = _follow_up(session, delivery)
    if newer is not None:
        # A newer delivery already waits for this pair and will push the latest state.
        delivery.state = DeliveryState.SUPERSEDED
        delivery.finished_at = utcnow()
        waiting = session.get(Delivery, newer)
        if waiting is not None and waiting.next_attempt_at < when:
            waiting.next_attempt_at = when
            waiting.attempts = max(waiting.attempts, delivery.attempts)
        return PushResult("retry", wait=(when - utcnow()).total_seconds(), follow_up=None)
    delivery.state = DeliveryState.PENDING
    delivery.next_attempt_at = when
    return None


def pause(session: Any, system: str, reason: str, now: datetime, probe_in: float) -> None:
    state = session.get(SystemState, system)
    if state is None:
        state = SystemState(system=system)
        session.add(state)
    if not state.paused:
        state.paused_at = now
    state.paused = True
    state.reason = reason[:2000]
    state.next_probe_at = now + timedelta(seconds=probe_in)


def delivery_customer(rt: Runtime, delivery_id: int) -> Customer | None:
    with rt.db.session() as session:
        delivery = session.get(Delivery, delivery_id)
        return session.get(Customer, delivery.customer_id) if delivery else None
