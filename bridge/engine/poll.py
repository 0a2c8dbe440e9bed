"""Polling: for systems without webhooks, and as a safety net for those with them.

Reads from the stored cursor minus an overlap window (lists are eventually consistent),
records what it finds in the inbox like any webhook (the inbox key deduplicates what it
has already seen), and advances the cursor to the newest change seen. A record exactly as
we last knew it (same change time, same version, same values) is not recorded: its ingest
would be an echo that changes nothing, and after a bridge write every record would
otherwise be ingested twice, once from its webhook and once from the next poll.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.adapters.base import Capability, EventKind, InboundEvent
from bridge.canonical import projection_hash, utcnow
from bridge.engine.customers import held_values
from bridge.engine.inbox import record_events
from bridge.engine.ingest import known_as_is
from bridge.runtime import Runtime
from bridge.store.models import Link, PollCursor

log = logging.getLogger("posbridge.poll")

CHUNK = 200


@dataclass
class PollReport:
    system: str
    seen: int = 0
    new: int = 0
    known: int = 0  # records exactly as we last knew them, not recorded
    cursor: datetime | None = None
    skipped: str | None = None


def poll(rt: Runtime, system: str, *, lease_s: float | None = None) -> PollReport:
    # The lease is short and renewed while the poll makes progress, so a poll whose
    # worker was killed blocks the next one for one lease at most, not for minutes.
    lease_s = rt.settings.lease_s if lease_s is None else lease_s
    lease = _Lease(rt, system, lease_s)
    report = PollReport(system)
    adapter = rt.adapter(system)
    now = utcnow()
    with rt.db.session() as session:
        row = session.scalar(select(PollCursor).where(PollCursor.system == system).with_for_update())
        if row is None:
            # First run: start from now. Existing records are the backfill's job.
            row = PollCursor(system=system, cursor=now)
            session.add(row)
        if row.lease_until is not None and row.lease_until > now:
            report.skipped = "another poll of this system is running"
            return report
        row.lease_until = now + timedelta(seconds=lease_s)
        row.last_started_at = now
        cursor = row.cursor
    overlap = timedelta(seconds=adapter.settings.poll_overlap_s)
    since = cursor - overlap if cursor else None
    newest = cursor
    events: list[InboundEvent] = []
    try:
        if Capability.ORDERS in adapter.capabilities:
            for order in adapter.poll_orders(since):
                lease.renew()
                # Orders may change without a change time (LS One): key on the content.
                stamp = projection_hash(order.native)[:16]
                events.append(
                    InboundEvent(
                        event_id=f"poll:order:{order.external_id}:{stamp}",
                        kind=EventKind.ORDER,
                        external_id=order.external_id,
                        event_type="order.polled",
                        order=order,
                        occurred_at=order.updated_at,
                    )
                )
                newest = _later(newest, order.updated_at)
                if len(events) >= CHUNK:
                    report.new += _flush(rt, system, events, report)
                    report.seen += len(events)
                    events = []
        if Capability.POLLING in adapter.capabilities and Capability.ORDERS not in adapter.capabilities:
            for record in adapter.poll(since):
                lease.renew()
                stamp = (
                    str(record.version)
                    if record.version is not None
                    else (record.updated_at.isoformat() if record.updated_at else "?")
                )
                events.append(
                    InboundEvent(
                        event_id=f"poll:{record.external_id}:{stamp}",
                        kind=EventKind.DELETE if record.deleted else EventKind.UPSERT,
                        external_id=record.external_id,
                        event_type="customer.polled",
                        record=record,
                        occurred_at=record.updated_at,
                    )
                )
                newest = _later(newest, record.updated_at)
                if len(events) >= CHUNK:
                    report.new += _flush(rt, system, events, report)
                    report.seen += len(events)
                    events = []
        report.new += _flush(rt, system, events, report)
        report.seen += len(events)
    except Exception as err:
        # What this pass saw before failing is real: recorded, not thrown away with the pass.
        # The cursor stays, so the next pass reads these again (the inbox key drops them).
        with contextlib.suppress(Exception):
            report.new += _flush(rt, system, events, report)
        with rt.db.session() as session:
            row = session.get_one(PollCursor, system)
            row.lease_until = None
            row.last_error = f"{type(err).__name__}: {err}"[:2000]
        raise
    with rt.db.session() as session:
        row = session.get_one(PollCursor, system)
        row.cursor = newest
        row.lease_until = None
        row.last_success_at = utcnow()
        row.last_error = None
        row.seen = (row.seen or 0) + report.seen
    report.cursor = newest
    return report


class _Lease:
    """Keeps a running poll's lease ahead of the clock, a third of a lease at a time."""

    def __init__(self, rt: Runtime, system: str, lease_s: float) -> None:
        self.rt = rt
        self.system = system
        self.lease_s = lease_s
        self.renewed = time.monotonic()

    def renew(self) -> None:
        if time.monotonic() - self.renewed < self.lease_s / 3:
            return
        with self.rt.db.session() as session:
            row = session.get_one(PollCursor, self.system)
            row.lease_until = utcnow() + timedelta(seconds=self.lease_s)
        self.renewed = time.monotonic()


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _flush(rt: Runtime, system: str, events: list[InboundEvent], report: PollReport) -> int:
    if not events:
        return 0
    with rt.db.session() as session:
        known = _known(session, rt, system, events)
        fresh = [e for e in events if e.event_id not in known]
        ids = record_events(session, system, fresh, None)[0] if fresh else []
    report.known += len(known)
    if ids:
        rt.dispatch.ingest(ids)
    return len(ids)


def _known(session: Session, rt: Runtime, system: str, events: list[InboundEvent]) -> set[str]:
    """Event ids of polled records exactly as their links know them (`known_as_is`).
    Anything else, a stale copy included, goes to the inbox as before."""
    upserts = {e.external_id: e for e in events if e.kind == EventKind.UPSERT and e.record is not None}
    if not upserts:
        return set()
    links = session.scalars(
        select(Link).where(Link.system == system, Link.external_id.in_(list(upserts)))
    ).all()
    adapter = rt.adapter(system)
    region = rt.settings.default_region
    known: set[str] = set()
    for link in links:
        event = upserts[str(link.external_id)]
        record = event.record
        if record is not None and known_as_is(
            link, record, projection_hash(held_values(adapter, record.native, region))
        ):
            known.add(event.event_id)
    return known
