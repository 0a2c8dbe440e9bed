"""Canonical customers in the database: state, matching, projections, delivery planning."""

from __future__ import annotations

import logging
import zlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import canonical
from bridge.adapters.base import Adapter, Capability, ExternalRecord
from bridge.canonical import FieldState, Values, utcnow
from bridge.engine.keys import idempotency_key
from bridge.runtime import Runtime
from bridge.store.models import Customer, Delivery, DeliveryState, Link, MatchKey, Order

log = logging.getLogger("posbridge.engine")


def load_state(customer: Customer) -> dict[str, FieldState]:
    return {name: FieldState.from_json(data) for name, data in (customer.fields or {}).items()}


def save_state(session: Session, customer: Customer, state: dict[str, FieldState]) -> None:
    customer.fields = {name: fs.to_json() for name, fs in sorted(state.items())}
    values = {name: fs.value for name, fs in state.items()}
    customer.display_name = canonical.display_name(values)[:400]
    customer.revision = (customer.revision or 0) + 1
    refresh_match_keys(session, customer, values)


def refresh_match_keys(session: Session, customer: Customer, values: Values) -> None:
    session.execute(delete(MatchKey).where(MatchKey.customer_id == customer.id))
    if customer.deleted or customer.merged_into:
        return
    for kind, value in canonical.match_keys(values):
        session.add(MatchKey(kind=kind, value=value[:320], customer_id=customer.id))


def values(customer: Customer) -> Values:
    return {name: data.get("v") for name, data in (customer.fields or {}).items()}


def lock_keys(session: Session, keys: list[tuple[str, str]]) -> None:
    """Serialise matching on the same e-mail/phone/code across workers (Postgres)."""
    if session.bind is None or session.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already serialises writers
    for kind, value in sorted(keys):
        session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"{kind}:{value}".encode())}
        )


def lock_customer(session: Session, customer_id: str) -> Customer:
    """The live customer behind an id, following merges, locked for update."""
    seen: set[str] = set()
    current = customer_id
    while True:
        customer = session.scalar(select(Customer).where(Customer.id == current).with_for_update())
        if customer is None:
            raise LookupError(f"customer {customer_id} does not exist")
        if not customer.merged_into or customer.merged_into in seen:
            return customer
        seen.add(current)
        current = customer.merged_into


def find_match(
    session: Session, rt: Runtime, incoming: Values, system: str, external_id: str
) -> tuple[Customer, Link | None] | None:
    """The first live customer sharing a configured key and free to take this record.

    Free means not yet linked in `system`, or linked only by the intent of a create of
    ours that has not been answered: a record of that person appearing in that system is
    then the answer (a webhook overtaking a slow or lost response), so the caller adopts
    the intent link instead of inventing a second customer.
    """
    keys = canonical.match_keys(incoming)
    lock_keys(session, keys)
    rules = rt.settings.match_rules
    for rule in rules:
        for kind, value in keys:
            if kind != rule:
                continue
            ids = session.scalars(
                select(MatchKey.customer_id).where(MatchKey.kind == kind, MatchKey.value == value[:320])
            ).all()
            for cid in sorted(ids):
                taken = session.scalar(
                    select(Link).where(Link.customer_id == cid, Link.system == system).with_for_update()
                )
                intent = (
                    taken is not None and taken.synced_at is None and taken.external_id in (None, external_id)
                )
                if taken is not None and not intent:
                    continue
                customer = session.scalar(select(Customer).where(Customer.id == cid).with_for_update())
                if customer is not None and not customer.deleted and not customer.merged_into:
                    return customer, taken
    return None


def project(adapter: Adapter, state: dict[str, FieldState], region: str) -> Values:
    """What `adapter`'s system would hold for this customer, in canonical terms.

    Round-tripping through the adapter's own mapping is what makes this comparable with
    what the system later reports back: equal hashes mean nothing to write.
    """
    wanted = canonical.values_of(state, adapter.fields)
    native = adapter.from_canonical(wanted)
    return held_values(adapter, native, region)


def held_values(adapter: Adapter, native: dict[str, Any], region: str) -> Values:
    raw = adapter.to_canonical(native)
    return canonical.normalize({k: raw.get(k) for k in sorted(adapter.fields)}, region)


def plan_deliveries(
    session: Session,
    rt: Runtime,
    customer: Customer,
    *,
    source: str | None,
    correlation_id: str | None,
    now: datetime,
    only: str | None = None,
) -> list[tuple[str, int]]:
    """Create (coalesced) deliveries for every target (or `only` that one) whose projection changed."""
    if customer.deleted or customer.merged_into:
        return []
    state = load_state(customer)
    region = rt.settings.default_region
    planned: list[tuple[str, int]] = []
    targets = rt.targets() if only is None else [only]
    # One query for all of them: this runs for every ingest and after every push.
    links = {
        link.system: link
        for link in session.scalars(
            select(Link).where(Link.customer_id == customer.id, Link.system.in_(targets))
        )
    }
    for target in targets:
        adapter = rt.adapter(target)
        try:
            wanted = project(adapter, state, region)
        except canonical.NormalizationError as err:
            log.warning("customer %s cannot be projected to %s: %s", customer.id, target, err)
            continue
        link = links.get(target)
        if (
            link is not None
            and link.synced_at is not None
            and link.projection_hash == canonical.projection_hash(wanted)
        ):
            continue
        if link is None and not any(v for v in wanted.values()):
            continue  # nothing this system could hold; creating an empty record helps nobody
        delivery_id = ensure_delivery(session, rt, customer.id, target, source, correlation_id, now)
        if delivery_id is not None:
            planned.append((target, delivery_id))
    return planned


def ensure_delivery(
    session: Session,
    rt: Runtime,
    customer_id: str,
    target: str,
    source: str | None,
    correlation_id: str | None,
    now: datetime,
) -> int | None:
    """One waiting delivery per (customer, target): a later change rides the waiting one."""
    pending = session.scalar(
        select(Delivery.id).where(
            Delivery.customer_id == customer_id,
            Delivery.target == target,
            Delivery.state == DeliveryState.PENDING,
        )
    )
    if pending is not None:
        return None
    delivery = Delivery(
        customer_id=customer_id,
        target=target,
        state=DeliveryState.PENDING,
        next_attempt_at=now + timedelta(seconds=rt.settings.coalesce_window_s),
        idempotency_key=idempotency_key(customer_id, target),
        source_system=source,
        correlation_id=correlation_id,
        enqueued_at=now,
    )
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None  # a concurrent ingest created the waiting delivery first
    return delivery.id


def merge_customers(session: Session, keep: Customer, drop: Customer, now: datetime) -> None:
    """Fold `drop` into `keep`: fields by timestamp, links, orders; `drop` points at `keep`."""
    if keep.id == drop.id:
        return
    state = load_state(keep)
    for name, fs in load_state(drop).items():
        canonical.merge_fields(state, {name: fs.value}, fs.source, fs.at)
    for link in session.scalars(select(Link).where(Link.customer_id == drop.id)).all():
        clash = session.scalar(select(Link).where(Link.customer_id == keep.id, Link.system == link.system))
        if clash is None:
            link.customer_id = keep.id
        else:
            log.warning(
                "merging %s into %s: both linked in %s (%s, %s); keeping %s",
                drop.id,
                keep.id,
                link.system,
                clash.external_id,
                link.external_id,
                clash.external_id,
            )
            session.delete(link)
    session.flush()
    session.execute(
        update(Delivery)
        .where(Delivery.customer_id == drop.id, Delivery.state == DeliveryState.PENDING)
        .values(state=DeliveryState.SUPERSEDED, finished_at=now, last_error=f"merged into {keep.id}")
    )
    session.execute(update(Order).where(Order.customer_id == drop.id).values(customer_id=keep.id))
    drop.merged_into = keep.id
    drop.deleted = True
    refresh_match_keys(session, drop, {})
    save_state(session, keep, state)


def store_written(link: Link, adapter: Adapter, record: ExternalRecord, region: str) -> None:
    """The link now describes `record`, which our own write put there."""
    values = held_values(adapter, record.native, region)
    digest = canonical.projection_hash(values)
    # Stored once per write: its webhook (ingest) and its answer (push) can both record it,
    # and the second must not make the written state its own "overwritten" state.
    if (
        link.synced_at is not None
        and link.projection_hash != digest
        and not adapter.has(Capability.VERSIONED_WRITES)
    ):
        link.overwritten_values = link.last_values
        link.overwritten_at = link.source_updated_at
    link.external_id = record.external_id
    link.external_version = record.version
    link.last_values = values
    link.projection_hash = digest
    if record.updated_at is not None and (
        link.source_updated_at is None or record.updated_at > link.source_updated_at
    ):
        link.source_updated_at = record.updated_at
    link.synced_at = utcnow()
    link.create_started_at = None
    link.pending_writes = None
