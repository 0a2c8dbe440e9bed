"""The sweeper: the database is the source of truth, the broker only a hint.

Run by beat every few seconds. It re-enqueues work that is due and not (or no longer)
in the broker, returns deliveries whose worker died to the queue, probes paused targets,
and prunes the inbox. Purging every broker message therefore loses no work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from bridge.adapters.errors import AuthError
from bridge.canonical import utcnow
from bridge.engine.push import _back_to_pending
from bridge.runtime import Runtime
from bridge.store.models import Attempt, Delivery, DeliveryState, InboxEvent, InboxState, SystemState

log = logging.getLogger("posbridge.sweep")

BATCH = 500
# A message can wait behind a long backlog (a backfill) for many requeue periods; one
# sent this long ago and still not consumed is re-sent whatever the queue says.
FORGOTTEN_FACTOR = 20


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
    targets = rt.targets()
    # Asked before the transaction: a broker round trip should not hold row locks.
    queued = rt.dispatch.waiting([f"push.{t}" for t in targets])
    with rt.db.session() as session:
        paused = set(session.scalars(select(SystemState.system).where(SystemState.paused.is_(True))).all())
        due = _due_deliveries(session, rt, [t for t in targets if t not in paused], queued, now)
        if due:
            session.execute(
                update(Delivery).where(Delivery.id.in_([d for _, d in due])).values(enqueued_at=now)
            )
        report.deliveries = due
        # Inbox rows go back as one message of up to BATCH ids per sweep, and an ingest of
        # a row already done costs one read: re-sending them all cannot flood the queue,
        # and waiting for a busy queue to drain would leave lost ones unseen for minutes.
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


def _due_deliveries(
    session: Session, rt: Runtime, targets: list[str], queued: dict[str, int], now: datetime
) -> list[tuple[str, int]]:
    """Due deliveries the broker holds no message for, as far as can be told.

    A delivery sent `requeue_after_s` ago and still pending is either waiting in its queue
    behind others or its message was lost (a broker restart, a worker killed holding it).
    Re-sending all of them floods a deep queue: during a backfill every waiting delivery
    was sent again every period, the duplicates outgrew the real work and the workers spent
    their time claiming deliveries that were already done. The queue's depth tells how many
    can still be in it; only the rest, the longest-waiting first, are sent again.
    """
    stale = now - timedelta(seconds=rt.settings.requeue_after_s)
    forgotten = now - timedelta(seconds=rt.settings.requeue_after_s * FORGOTTEN_FACTOR)
    due_now = (Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
    picked: dict[int, str] = {}
    # One grouped count for every target: sent before `stale` (may be lost) and since.
    counts: dict[str, tuple[int, int]] = {
        target: (int(old or 0), int(recent or 0))
        for target, old, recent in session.execute(
            select(
                Delivery.target,
                func.count().filter(Delivery.enqueued_at < stale),
                func.count().filter(Delivery.enqueued_at >= stale),
            )
            .where(*due_now, Delivery.target.in_(targets))
            .group_by(Delivery.target)
        )
    }
    for target in targets:
        mine = (*due_now, Delivery.target == target)
        unsent = session.execute(
            select(Delivery.id)
            .where(*mine, or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < forgotten))
            .order_by(Delivery.next_attempt_at)
            .limit(BATCH)
        ).scalars()
        picked.update(dict.fromkeys(unsent, target))
        sent, recent = counts.get(target, (0, 0))
        # The queue also holds the messages sent since `stale`: only the rest of its depth
        # can be messages of the older ones.
        older_queued = max(0, queued.get(f"push.{target}", 0) - recent)
        missing = min(BATCH, sent - older_queued)
        if missing > 0:
            lost = session.execute(
                select(Delivery.id)
                .where(*mine, Delivery.enqueued_at < stale)
                .order_by(Delivery.enqueued_at)
                .limit(missing)
            ).scalars()
            picked.update(dict.fromkeys(lost, target))
    return [(target, delivery_id) for delivery_id, target in picked.items()]


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
