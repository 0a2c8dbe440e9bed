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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from bridge import canonical
from bridge.adapters.base import Capability, ExternalRecord
from bridge.adapters.errors import Verdict, classify
from bridge.canonical import utcnow
from bridge.engine import customers as cust
from bridge.engine.ingest import apply_record
from bridge.engine.keys import idempotency_key
from bridge.engine.push import attach_record
from bridge.engine.retry import backoff_seconds
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


def bulk_create(rt: Runtime, target: str, customer_ids: Sequence[str], *, rounds: int = 5) -> int:
    """Create the customers missing in `target` through its bulk endpoint, `max_bulk` a call.

    Each entry carries the same deterministic idempotency key a single create would, and
    its intent is recorded first, so an interrupted backfill resends safely. A call that
    succeeds in part is retried with the failed entries only; whatever still fails (or
    fails for good) is left to an ordinary delivery, which ends `failed` with the
    vendor's reason if it must. Returns the number of records created.
    """
    adapter = rt.adapter(target)
    region = rt.settings.default_region
    created = 0
    for start in range(0, len(customer_ids), adapter.max_bulk):
        pending: dict[str, tuple[str, dict[str, Any]]] = {}
        with rt.db.session() as session:
            for customer_id in customer_ids[start : start + adapter.max_bulk]:
                customer = session.get(Customer, customer_id)
                if customer is None or customer.deleted or customer.merged_into:
                    continue
                link = session.scalar(
                    select(Link).where(Link.customer_id == customer_id, Link.system == target)
                )
                if link is not None and link.synced_at is not None:
                    continue
                state = cust.load_state(customer)
                if not any(cust.project(adapter, state, region).values()):
                    continue
                key = idempotency_key(customer_id, target)
                if link is None:
                    link = Link(customer_id=customer_id, system=target)
                    session.add(link)
                link.external_id = adapter.preassigned_id(key)
                link.create_key = key
                link.create_started_at = link.create_started_at or utcnow()
                pending[key] = (
                    customer_id,
                    adapter.from_canonical(canonical.values_of(state, adapter.fields)),
                )
        for attempt in range(1, rounds + 1):
            if not pending:
                break
            items = list(pending.items())
            results = adapter.create_many([(key, native) for key, (_cid, native) in items])
            retry_after = 0.0
            with rt.db.session() as session:
                for (key, (customer_id, _native)), result in zip(items, results, strict=True):
                    if isinstance(result, ExternalRecord):
                        attach_record(session, rt, customer_id, target, result)
                        del pending[key]
                        created += 1
                        continue
                    verdict = classify(result)
                    if verdict.verdict != Verdict.RETRY:
                        del pending[key]  # an ordinary delivery takes it from here
                    else:
                        retry_after = max(retry_after, verdict.retry_after or 0.0)
            if pending and attempt < rounds:
                time.sleep(
                    backoff_seconds(attempt, base=rt.settings.retry_base_s, cap=30.0, retry_after=retry_after)
                )
    return created


def plan_all(rt: Runtime, *, dispatch: bool = True, bulk: bool = True) -> int:
    """Phase 2: a delivery for every (customer, target) whose target lacks or differs.

    Targets with a bulk endpoint get their missing customers created through it first;
    the deliveries then only cover what is left (updates, and entries the bulk call
    could not create).
    """
    with rt.db.session() as session:
        ids = session.scalars(
            select(Customer.id).where(Customer.deleted.is_(False), Customer.merged_into.is_(None))
        ).all()
    if bulk:
        for target in rt.targets():
            if Capability.BULK not in rt.classes[target].capabilities:
                continue
            with rt.db.session() as session:
                synced = set(
                    session.scalars(
                        select(Link.customer_id).where(Link.system == target, Link.synced_at.is_not(None))
                    ).all()
                )
            missing = [cid for cid in ids if cid not in synced]
            if missing:
                made = bulk_create(rt, target, missing)
                log.info("backfill: %d customers created in %s through its bulk endpoint", made, target)
    planned = 0
    for start in range(0, len(ids), CHUNK):
        chunk: list[tuple[str, int]] = []
        with rt.db.session() as session:
            for customer_id in ids[start : start + CHUNK]:
                customer = session.get_one(Customer, customer_id)
                chunk += cust.plan_deliveries(
                    session, rt, customer, source="backfill", correlation_id=None, now=utcnow()
                )
        # Sent as each chunk commits: held back until all were planned (minutes at 100,000),
        # the first ones looked lost to the sweeper, which sent them too, and the workers
        # then claimed each of them two or three times.
        if dispatch:
            for target, delivery_id in chunk:
                rt.dispatch.push(target, delivery_id)
        planned += len(chunk)
    return planned


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
