"""The sweeper: the database is the source of truth, the broker only a hint.

Run by beat every few seconds. It re-enqueues work that is due and not (or no longer)
in the broker, returns deliveries whose worker died to the queue, probes paused targets,
and prunes the inbox. Purging every broker message therefore loses no work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.adapters.errors import AuthError
from bridge.canonical import utcnow
from bridge.engine.push import _back_to_pending
from bridge.runtime import Runtime
from bridge.store.models import (
    Attempt,
    Delivery,
    DeliveryState,
    InboxEvent,
    InboxState,
    QueueMark,
    SystemState,
)

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
    targets = rt.targets()
    queues = ["ingest", *(f"push.{t}" for t in targets)]
    # Asked before the transaction: a broker round trip should not hold row locks.
    queued = rt.dispatch.waiting(queues)
    with rt.db.session() as session:
        read = _read_horizons(session, rt, queues, now)
        paused = set(session.scalars(select(SystemState.system).where(SystemState.paused.is_(True))).all())
        due = _due_deliveries(session, rt, [t for t in targets if t not in paused], queued, read, now)
        if due:
            session.execute(
                update(Delivery).where(Delivery.id.in_([d for _, d in due])).values(enqueued_at=now)
            )
        report.deliveries = due
        inbox = _lost_inbox(session, queued, read, stale)
        if inbox:
            session.execute(update(InboxEvent).where(InboxEvent.id.in_(inbox)).values(enqueued_at=now))
        report.inbox = list(inbox)
    report.resumed = probe_paused(rt)
    for target, delivery_id in report.deliveries:
        rt.dispatch.push(target, delivery_id)
    if report.inbox:
        rt.dispatch.ingest(report.inbox)
    # After the re-sends, so that a marker follows them down the queue.
    for queue in _markers_due(rt, [q for q in queues if queued.get(q, 0) > 0]):
        rt.dispatch.mark(queue, utcnow())
    return report


def _lost_inbox(
    session: Session, queued: dict[str, int], read: dict[str, datetime], stale: datetime
) -> list[int]:
    """Waiting inbox rows whose message is gone (or never left)."""
    # An ingest message carries many ids (the web's group commit, these batches), so
    # the queue's depth cannot be matched against rows. An empty (or uncounted) queue
    # proves every row sent a requeue period ago and still waiting lost; behind a
    # backlog only the queue's marks can (see `_read_horizons`). Re-sending every stale
    # row instead, as this once did, put each row of a 5,000-customer backfill's
    # backlog in the queue up to 22 times, and the ingest workers read rows already done.
    lost: list[ColumnElement[bool]] = [InboxEvent.enqueued_at.is_(None)]
    sent_before = stale if not queued.get("ingest") else read.get("ingest")
    if sent_before is not None:
        lost.append(InboxEvent.enqueued_at < sent_before)
    # A failed ingest's retry is this sweep's to send (ingest._reschedule): no message
    # of it can be waiting, however deep the queue.
    lost.append(and_(InboxEvent.error.is_not(None), InboxEvent.enqueued_at < stale))
    # One index range per rule, not one OR: Postgres cannot bound an index scan by an
    # OR, and behind a backlog of 266,000 echoes the OR read every waiting row each
    # sweep, half the database's time (tests/test_query_plans.py).
    found = union(
        *(select(InboxEvent.id).where(InboxEvent.state == InboxState.PENDING, rule) for rule in lost)
    ).subquery()
    return list(session.scalars(select(found.c.id).order_by(found.c.id).limit(BATCH)).all())


def _read_horizons(session: Session, rt: Runtime, queues: list[str], now: datetime) -> dict[str, datetime]:
    """Per queue: a message sent before this and not yet worked on was lost.

    A queue is read first in, first out, so once a marker has been taken every message sent
    before it has been taken too. A row sent before a taken marker and still waiting was
    lost (a broker restart, a worker killed holding it), however deep the queue is now. The
    marker counts once the messages taken just before it have had a requeue period to
    finish, and the row must have been sent a requeue period before the marker: producers
    stamp a row a moment before its message leaves (a commit, a backfill's chunk).
    """
    settle = timedelta(seconds=rt.settings.requeue_after_s)
    horizons: dict[str, datetime] = {}
    for row in session.scalars(select(QueueMark).where(QueueMark.queue.in_(queues))):
        mark = row.settled_mark
        if row.taken_mark is not None and row.taken_at is not None and row.taken_at <= now - settle:
            mark = row.taken_mark
        if mark is not None:
            horizons[row.queue] = mark - settle
    return horizons


def _markers_due(rt: Runtime, queues: list[str]) -> list[str]:
    """The queues holding a backlog whose last marker left a requeue period ago or more:
    one marker per period, so a long backlog carries a few of them, not one per sweep."""
    if not queues:
        return []
    now = utcnow()
    since = now - timedelta(seconds=rt.settings.requeue_after_s)
    due: list[str] = []
    with rt.db.session() as session:
        for queue in sorted(queues):  # one lock order for sweeps that overlap
            row = _mark_row(session, queue)
            if row.sent_at is None or row.sent_at <= since:
                row.sent_at = now
                due.append(queue)
    return due


def record_mark(rt: Runtime, queue: str, sent_at: datetime) -> None:
    """A worker took the marker sent down `queue` at `sent_at` (task posbridge.mark)."""
    now = utcnow()
    settle = timedelta(seconds=rt.settings.requeue_after_s)
    with rt.db.session() as session:
        row = _mark_row(session, queue)
        if row.taken_mark is not None and row.taken_at is not None and row.taken_at <= now - settle:
            row.settled_mark = max(row.settled_mark or row.taken_mark, row.taken_mark)
            row.taken_mark = None
        # A marker taken while the previous one still settles is dropped: the next one
        # follows within a requeue period.
        if row.taken_mark is None and (row.settled_mark is None or sent_at > row.settled_mark):
            row.taken_mark, row.taken_at = sent_at, now


def _mark_row(session: Session, queue: str) -> QueueMark:
    row = session.scalar(select(QueueMark).where(QueueMark.queue == queue).with_for_update())
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = QueueMark(queue=queue)
            session.add(row)
            session.flush()
    except IntegrityError:  # a concurrent sweep or marker made it first
        row = session.scalars(select(QueueMark).where(QueueMark.queue == queue).with_for_update()).one()
    return row


def _due_deliveries(
    session: Session,
    rt: Runtime,
    targets: list[str],
    queued: dict[str, int],
    read: dict[str, datetime],
    now: datetime,
) -> list[tuple[str, int]]:
    """Due deliveries the broker holds no message for, as far as can be told.

    A delivery sent `requeue_after_s` ago and still pending is either waiting in its queue
    behind others or its message was lost (a broker restart, a worker killed holding it).
    Re-sending all of them floods a deep queue: during a backfill every waiting delivery
    was sent again every period, the duplicates outgrew the real work and the workers spent
    their time claiming deliveries that were already done. The queue's depth tells how many
    can still be in it; only the rest, the longest-waiting first, are sent again. Messages
    the count cannot tell apart (the queue also holds duplicates and markers) are found
    by the queue's marks instead (`_read_horizons`).
    """
    stale = now - timedelta(seconds=rt.settings.requeue_after_s)
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
        unsent_or_lost: list[ColumnElement[bool]] = [Delivery.enqueued_at.is_(None)]
        if f"push.{target}" in read:
            unsent_or_lost.append(Delivery.enqueued_at < read[f"push.{target}"])
        # A range of (target, state, enqueued_at) per rule, as for the inbox above.
        found = union(
            *(select(Delivery.id, Delivery.next_attempt_at).where(*mine, rule) for rule in unsent_or_lost)
        ).subquery()
        unsent = session.execute(select(found.c.id).order_by(found.c.next_attempt_at).limit(BATCH)).scalars()
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
