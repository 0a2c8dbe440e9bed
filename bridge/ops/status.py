"""Read models for operators: per-system status, deliveries, one customer's story."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bridge.canonical import utcnow
from bridge.runtime import Runtime
from bridge.store.models import (
    Attempt,
    Customer,
    Delivery,
    DeliveryState,
    InboxEvent,
    InboxState,
    Link,
    Order,
    PollCursor,
    SystemState,
)


def system_status(rt: Runtime) -> list[dict[str, Any]]:
    now = utcnow()
    rows: list[dict[str, Any]] = []
    with rt.db.session() as s:
        linked = dict(
            s.execute(
                select(Link.system, func.count()).where(Link.synced_at.is_not(None)).group_by(Link.system)
            ).all()
        )
        by_state: dict[tuple[str, str], int] = {
            (target, state): n
            for target, state, n in s.execute(
                select(Delivery.target, Delivery.state, func.count()).group_by(
                    Delivery.target, Delivery.state
                )
            ).all()
        }
        inbox_pending = dict(
            s.execute(
                select(InboxEvent.system, func.count())
                .where(InboxEvent.state == InboxState.PENDING)
                .group_by(InboxEvent.system)
            ).all()
        )
        states = {st.system: st for st in s.scalars(select(SystemState))}
        cursors = {c.system: c for c in s.scalars(select(PollCursor))}
        for system in rt.systems:
            state = states.get(system)
            cursor = cursors.get(system)
            lag = (
                (now - cursor.last_success_at).total_seconds() if cursor and cursor.last_success_at else None
            )
            rows.append(
                {
                    "system": system,
                    "title": rt.classes[system].title,
                    "capabilities": sorted(c.value for c in rt.classes[system].capabilities),
                    "linked": int(linked.get(system, 0)),
                    "pending": by_state.get((system, DeliveryState.PENDING), 0)
                    + by_state.get((system, DeliveryState.IN_FLIGHT), 0),
                    "failed": by_state.get((system, DeliveryState.FAILED), 0),
                    "done": by_state.get((system, DeliveryState.DONE), 0),
                    "inbox_pending": int(inbox_pending.get(system, 0)),
                    "paused": bool(state and state.paused),
                    "paused_reason": state.reason if state and state.paused else None,
                    "poll_lag_s": round(lag, 1) if lag is not None else None,
                    "poll_error": cursor.last_error if cursor else None,
                }
            )
    return rows


def delivery_rows(
    rt: Runtime, *, state: str | None = None, system: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    with rt.db.session() as s:
        query = select(Delivery, Customer.display_name).join(Customer, Customer.id == Delivery.customer_id)
        if state:
            query = query.where(Delivery.state == state)
        if system:
            query = query.where(Delivery.target == system)
        query = query.order_by(Delivery.id.desc()).limit(limit)
        return [
            {
                "id": d.id,
                "customer_id": d.customer_id,
                "customer": name,
                "target": d.target,
                "op": d.op,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
                "last_error": d.last_error,
                "source": d.source_system,
                "updated_at": d.updated_at.isoformat() if d.updated_at else None,
            }
            for d, name in s.execute(query).all()
        ]


def customer_view(rt: Runtime, customer_id: str) -> dict[str, Any] | None:
    with rt.db.session() as s:
        customer = s.get(Customer, customer_id)
        if customer is None:
            return None
        links = s.scalars(select(Link).where(Link.customer_id == customer.id).order_by(Link.system)).all()
        deliveries = s.scalars(
            select(Delivery).where(Delivery.customer_id == customer.id).order_by(Delivery.id.desc()).limit(20)
        ).all()
        attempts = s.scalars(
            select(Attempt)
            .where(Attempt.delivery_id.in_([d.id for d in deliveries] or [-1]))
            .order_by(Attempt.id.desc())
            .limit(50)
        ).all()
        orders = s.scalars(
            select(Order).where(Order.customer_id == customer.id).order_by(Order.id.desc())
        ).all()
        return {
            "id": customer.id,
            "display_name": customer.display_name,
            "deleted": customer.deleted,
            "merged_into": customer.merged_into,
            "fields": {
                name: {"value": data.get("v"), "source": data.get("s"), "at": data.get("t")}
                for name, data in sorted((customer.fields or {}).items())
            },
            "links": [
                {
                    "system": link.system,
                    "external_id": link.external_id,
                    "version": link.external_version,
                    "synced_at": link.synced_at.isoformat() if link.synced_at else None,
                    "creating": link.synced_at is None,
                }
                for link in links
            ],
            "deliveries": [
                {
                    "id": d.id,
                    "target": d.target,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                }
                for d in deliveries
            ],
            "attempts": [
                {
                    "delivery_id": a.delivery_id,
                    "started_at": a.started_at.isoformat(),
                    "duration_ms": round(a.duration_ms or 0, 1),
                    "action": a.action,
                    "outcome": a.outcome,
                    "http_status": a.http_status,
                    "error": a.error,
                }
                for a in attempts
            ],
            "orders": [
                {
                    "system": o.system,
                    "id": o.external_id,
                    "reference": o.reference,
                    "status": o.status,
                    "customer_ref": o.customer_ref,
                }
                for o in orders
            ],
        }


def unlinked_orders(rt: Runtime, limit: int = 100) -> list[dict[str, Any]]:
    with rt.db.session() as s:
        return [
            {
                "system": o.system,
                "id": o.external_id,
                "reference": o.reference,
                "customer_ref": o.customer_ref,
                "status": o.status,
            }
            for o in s.scalars(
                select(Order).where(Order.customer_id.is_(None)).order_by(Order.id.desc()).limit(limit)
            )
        ]


def search_customers(rt: Runtime, text: str, limit: int = 50) -> list[dict[str, Any]]:
    pattern = f"%{text.strip()}%"
    with rt.db.session() as s:
        query = select(Customer).where(Customer.merged_into.is_(None))
        if text.strip():
            from bridge.store.models import MatchKey

            keyed = select(MatchKey.customer_id).where(MatchKey.value.ilike(pattern))
            query = query.where(
                Customer.display_name.ilike(pattern) | Customer.id.in_(keyed) | (Customer.id == text)
            )
        return [
            {
                "id": c.id,
                "display_name": c.display_name,
                "deleted": c.deleted,
                "updated_at": c.updated_at.isoformat(),
            }
            for c in s.scalars(query.order_by(Customer.updated_at.desc()).limit(limit))
        ]
