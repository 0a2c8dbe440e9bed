"""The tasks. Each re-checks the database before acting: a task is a hint, not an order."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bridge import logs, metrics
from bridge.canonical import utcnow
from bridge.engine import ingest as ingest_mod
from bridge.engine import poll as poll_mod
from bridge.engine import push as push_mod
from bridge.engine import sweep as sweep_mod
from bridge.runtime import Runtime, get_runtime
from bridge.store import upkeep as upkeep_mod
from bridge.store.models import Delivery, DeliveryState
from workers.app import task

log = logging.getLogger("posbridge.tasks")


@task("posbridge.ingest")
def ingest(inbox_ids: list[int] | int) -> dict[str, Any]:
    rt = get_runtime()
    ids = [inbox_ids] if isinstance(inbox_ids, int) else list(inbox_ids)
    outcomes: dict[str, int] = {}
    for inbox_id in ids:
        started = time.perf_counter()
        with logs.correlated(None):  # the ingest binds the event's id when it reads it
            result = ingest_mod.ingest(rt, inbox_id)
            log.info("ingest of inbox %s (%s): %s", inbox_id, result.system, result.outcome)
        system = result.system or "unknown"
        metrics.INGEST_SECONDS.labels(system, result.outcome).observe(time.perf_counter() - started)
        if result.outcome in ("echo", "adopted"):  # adopted: our own write, seen before its answer
            metrics.ECHOES.labels(system).inc()
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        ingest_mod.follow_up(rt, inbox_id, result)
    return outcomes


@task("posbridge.push")
def push(delivery_id: int) -> dict[str, Any]:
    rt = get_runtime()
    started = time.perf_counter()
    with logs.correlated(None):  # the push binds the delivery's id when it claims it
        result = push_mod.push(rt, delivery_id)
        log.info(
            "push of delivery %s to %s: %s (%s)", delivery_id, result.target, result.outcome, result.action
        )
    if result.target:
        metrics.PUSH_SECONDS.labels(result.target, result.outcome).observe(time.perf_counter() - started)
        if result.outcome == "retry":
            metrics.RETRIES.labels(result.target).inc()
    # Short waits ride a countdown; longer ones are the sweeper's (see engine.retry).
    short = result.wait is not None and result.wait <= rt.settings.short_wait_s
    if result.outcome in ("not_due", "retry") and short and result.wait is not None:
        target = _target(rt, delivery_id)
        if target:
            rt.dispatch.push(target, delivery_id, countdown=result.wait)
    if result.follow_up is not None:
        target = _target(rt, result.follow_up)
        if target:
            rt.dispatch.push(target, result.follow_up)
    return {"outcome": result.outcome, "action": result.action}


def _target(rt: Runtime, delivery_id: int) -> str | None:
    with rt.db.session() as session:
        return session.scalar(select(Delivery.target).where(Delivery.id == delivery_id))


@task("posbridge.poll")
def poll(system: str) -> dict[str, Any]:
    report = poll_mod.poll(get_runtime(), system)
    return {"seen": report.seen, "new": report.new, "known": report.known, "skipped": report.skipped}


@task("posbridge.sweep")
def sweep() -> dict[str, Any]:
    report = sweep_mod.sweep(get_runtime())
    return {
        "reclaimed": report.reclaimed,
        "deliveries": len(report.deliveries),
        "inbox": len(report.inbox),
        "resumed": report.resumed,
    }


@task("posbridge.upkeep")
def upkeep() -> dict[str, Any]:
    report = upkeep_mod.run(get_runtime().db)
    return {"analyzed": report.analyzed, "vacuumed": report.vacuumed, "skipped": report.skipped}


@task("posbridge.mark")
def mark(queue: str, sent_at: str) -> None:
    # Sent down the queue it names (ingest or a push queue), so it runs when that queue's
    # earlier messages have been taken.
    sweep_mod.record_mark(get_runtime(), queue, datetime.fromisoformat(sent_at))


@task("posbridge.prune_inbox")
def prune_inbox() -> int:
    return sweep_mod.prune_inbox(get_runtime())


def retry_deliveries(rt: Runtime, *, delivery_id: int | None = None, system: str | None = None) -> list[int]:
    """Put failed deliveries back in the queue (fresh attempts); shared by CLI, Flower and ops page."""
    now = utcnow()
    with rt.db.session() as session:
        query = select(Delivery).where(Delivery.state == DeliveryState.FAILED)
        if delivery_id is not None:
            query = query.where(Delivery.id == delivery_id)
        if system is not None:
            query = query.where(Delivery.target == system)
        revived: list[tuple[str, int]] = []
        for delivery in session.scalars(query.with_for_update()):
            waiting = session.scalar(
                select(Delivery.id).where(
                    Delivery.customer_id == delivery.customer_id,
                    Delivery.target == delivery.target,
                    Delivery.state == DeliveryState.PENDING,
                )
            )
            if waiting is not None:
                session.execute(update(Delivery).where(Delivery.id == waiting).values(next_attempt_at=now))
                delivery.state = DeliveryState.SUPERSEDED
                revived.append((delivery.target, waiting))
                continue
            delivery.state = DeliveryState.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = now
            delivery.enqueued_at = now
            delivery.finished_at = None
            revived.append((delivery.target, delivery.id))
    for target, revived_id in revived:
        rt.dispatch.push(target, revived_id)
    return [i for _, i in revived]


@task("posbridge.retry_delivery")
def retry_delivery(delivery_id: int) -> list[int]:
    return retry_deliveries(get_runtime(), delivery_id=int(delivery_id))


@task("posbridge.retry_failed")
def retry_failed(system: str | None = None) -> list[int]:
    return retry_deliveries(get_runtime(), system=system or None)
