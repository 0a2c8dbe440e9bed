"""The sweeper: the database is the source of truth, the broker only a hint.

Run by beat every few seconds. It re-enqueues work that is due and not (or no longer)
in the broker, returns deliveries whose worker died to the queue, probes paused targets,
and prunes the inbox. Purging every broker message therefore loses no work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, or_, select, update

from bridge.adapters.errors import AuthError
from bridge.canonical import utcnow
from bridge.engine.push import _back_to_pending
from bridge.runtime import Runtime
from bridge.store.models import Attempt, Delivery, DeliveryState, InboxEvent, InboxState, SystemState

log = logging.getLogger("posbridge.sweep")

BATCH = 500


@dataclass
class SweepReport:
    reclaimed: int = 0
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    inbox: list[int] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def sweep(rt: Runtime) -> SweepReport:
    report = SweepReport()
    now = utcnow()
    stale = now - timedelta(seconds=rt.settings.requeue_after_s)
    with rt.db.session() as session:
        # Deliveries whose worker died mid-push (kill -9, lost node): back to the queue.
        for delivery in session.scalars(
            select(Delivery)
            .where(Delivery.state == DeliveryState.IN_FLIGHT, Delivery.lease_until < now)
            .with_for_update()
            .limit(BATCH)
        ):
            session.add(
                Attempt(
                    delivery_id=delivery.id,
                    started_at=now,
                    action="none",
                    outcome="lost",
                    error="lease expired: the worker died or lost the task",
                )
            )
            delivery.lease_until = None
            if _back_to_pending(session, delivery, now) is None:
                delivery.enqueued_at = None
            report.reclaimed += 1
    with rt.db.session() as session:
        paused = set(session.scalars(select(SystemState.system).where(SystemState.paused.is_(True))).all())
        due = session.execute(
            select(Delivery.id, Delivery.target)
            .where(
                Delivery.state == DeliveryState.PENDING,
                Delivery.next_attempt_at <= now,
                or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < stale),
                Delivery.target.not_in(paused) if paused else Delivery.id.is_not(None),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(BATCH)
        ).all()
        if due:
            session.execute(
                update(Delivery).where(Delivery.id.in_([d.id for d in due])).values(enqueued_at=now)
            )
        report.deliveries = [(d.target, d.id) for d in due]
        inbox = session.scalars(
            select(InboxEvent.id)
            .where(
                InboxEvent.state == InboxState.PENDING,
                or_(InboxEvent.enqueued_at.is_(None), InboxEvent.enqueued_at < stale),
            )
            .order_by(InboxEvent.id)
            .limit(BATCH)
        ).all()
        if inbox:
            session.execute(update(InboxEvent).where(InboxEvent.id.in_(inbox)).values(enqueued_at=now))
        report.inbox = list(inbox)
    report.resumed = probe_paused(rt)
    for target, delivery_id in report.deliveries:
        rt.dispatch.push(target, delivery_id)
    if report.inbox:
        rt.dispatch.ingest(report.inbox)
    return report


def probe_paused(rt: Runtime) -> list[str]:
    """Try each paused target whose probe is due; resume it when its credentials work again."""
    now = utcnow()
    resumed: list[str] = []
    with rt.db.session() as session:
        due = session.scalars(
            select(SystemState.system).where(SystemState.paused.is_(True), SystemState.next_probe_at <= now)
        ).all()
    for system in due:
        if system not in rt.systems:
            continue
        try:
            rt.adapter(system).probe()
        except AuthError as err:
            with rt.db.session() as session:
                state = session.get_one(SystemState, system)
                state.reason = str(err)[:2000]
                state.next_probe_at = utcnow() + timedelta(seconds=rt.settings.probe_interval_s)
            continue
        except Exception as err:  # the system is down, not refusing us: probe again later
            log.info("probe of %s failed: %s", system, err)
            with rt.db.session() as session:
                state = session.get_one(SystemState, system)
                state.next_probe_at = utcnow() + timedelta(seconds=rt.settings.probe_interval_s)
            continue
        with rt.db.session() as session:
            state = session.get_one(SystemState, system)
            state.paused = False
            state.reason = None
            state.next_probe_at = None
            session.execute(
                update(Delivery)
                .where(Delivery.target == system, Delivery.state == DeliveryState.PENDING)
                .values(next_attempt_at=utcnow(), enqueued_at=None)
            )
        log.info("%s resumed: probe succeeded", system)
        resumed.append(system)
    return resumed


def prune_inbox(rt: Runtime) -> int:
    """Delete processed inbox rows past retention (at least 72 h: Square redelivers that long)."""
    horizon = utcnow() - timedelta(hours=rt.settings.inbox_retention_h)
    with rt.db.session() as session:
        result = session.execute(
            delete(InboxEvent).where(InboxEvent.received_at < horizon, InboxEvent.state != InboxState.PENDING)
        )
        return int(getattr(result, "rowcount", 0) or 0)
