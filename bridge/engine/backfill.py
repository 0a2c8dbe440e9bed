"""Backfill: bring a system's existing customers under the bridge.

Reads every customer of a system (streaming, constant memory), matches each against what
the bridge knows with the same rules as ingest, links it, and then plans the deliveries
that create the rest elsewhere. Linking and planning are separate phases so that several
systems can be linked first (a person already present in two systems is matched, not
created twice) and planned after.

Resumable: every step is idempotent. A re-run re-reads the system, finds the links it
already made (an unchanged record is an echo and costs nothing) and carries on; deliveries
are coalesced per customer and target, so planning twice creates nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from bridge.adapters.base import Capability, ExternalRecord
from bridge.canonical import utcnow
from bridge.engine import customers as cust
from bridge.engine.ingest import apply_record
from bridge.runtime import Runtime
from bridge.store.models import Customer, Link

log = logging.getLogger("posbridge.backfill")

CHUNK = 200
Progress = Callable[[int], None]


@dataclass
class BackfillReport:
    system: str
    read: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    planned: int = 0
    would_create: dict[str, int] = field(default_factory=dict)


def link_system(
    rt: Runtime, system: str, *, progress: Progress | None = None, chunk_size: int = CHUNK
) -> BackfillReport:
    """Phase 1: read every record of `system` and link or create its canonical customer."""
    adapter = rt.adapter(system)
    if Capability.POLLING not in adapter.capabilities or Capability.ORDERS in adapter.capabilities:
        raise ValueError(f"{system} cannot list its customers")
    report = BackfillReport(system)
    chunk: list[ExternalRecord] = []
    for record in adapter.poll(None):
        if record.deleted:
            continue
        chunk.append(record)
        if len(chunk) >= chunk_size:
            _apply(rt, system, chunk, report)
            if progress:
                progress(len(chunk))
            chunk = []
    if chunk:
        _apply(rt, system, chunk, report)
        if progress:
            progress(len(chunk))
    return report


def _apply(rt: Runtime, system: str, records: list[ExternalRecord], report: BackfillReport) -> None:
    adapter = rt.adapter(system)
    with rt.db.session() as session:
        for record in records:
            result = apply_record(session, rt, adapter, system, record, None, None, utcnow(), plan=False)
            report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
            report.read += 1


def plan_all(rt: Runtime, *, dispatch: bool = True) -> int:
    """Phase 2: a delivery for every (customer, target) whose target lacks or differs."""
    planned: list[tuple[str, int]] = []
    with rt.db.session() as session:
        ids = session.scalars(
            select(Customer.id).where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
        ).all()
    for start in range(0, len(ids), CHUNK):
        with rt.db.session() as session:
            for customer_id in ids[start : start + CHUNK]:
                customer = session.get_one(Customer, customer_id)
                planned += cust.plan_deliveries(
                    session, rt, customer, source="backfill", correlation_id=None, now=utcnow()
                )
    if dispatch:
        for target, delivery_id in planned:
            rt.dispatch.push(target, delivery_id)
    return len(planned)


def dry_run(rt: Runtime, system: str) -> BackfillReport:
    """What a backfill of `system` would do, computed in a transaction that is rolled back."""
    adapter = rt.adapter(system)
    report = BackfillReport(system)
    with rt.db.sessions() as session:
        session.begin()
        try:
            for record in adapter.poll(None):
                if record.deleted:
                    continue
                result = apply_record(session, rt, adapter, system, record, None, None, utcnow(), plan=False)
                report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
                report.read += 1
            session.flush()
            for target in rt.targets():
                if target == system:
                    continue
                linked = select(Link.customer_id).where(Link.system == target)
                count = session.scalar(
                    select(func.count())
                    .select_from(Customer)
                    .where(
                        Customer.deleted.is_(False),
                        Customer.merged_into.is_(None),
                        Customer.id.not_in(linked),
                    )
                )
                report.would_create[target] = int(count or 0)
        finally:
            session.rollback()
    return report
