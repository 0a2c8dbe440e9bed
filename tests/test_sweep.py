"""The sweeper re-sends only work whose message the broker no longer holds.

No worker runs here: messages stay in their queue, which is what a deep backlog looks
like to the sweeper (a backfill, a target slower than its producers).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from bridge.canonical import utcnow
from bridge.engine.sweep import sweep
from bridge.store.models import Customer, Delivery, DeliveryState
from tests.conftest import LEGS, Stack


@pytest.fixture(scope="module", params=LEGS)
def idle_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-sweep-{request.param}-"))
    st = Stack(request.param, var)
    try:
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


def sent_long_ago(st: Stack, n: int) -> list[int]:
    """`n` due deliveries to memb, each sent (by its enqueued_at) a few requeue periods ago."""
    now = utcnow()
    ids = []
    with st.rt.db.session() as s:
        for i in range(n):
            customer = Customer(fields={}, created_at=now)
            s.add(customer)
            s.flush()
            delivery = Delivery(
                customer_id=customer.id,
                target="memb",
                state=DeliveryState.PENDING,
                next_attempt_at=now - timedelta(seconds=10),
                idempotency_key=f"k-{customer.id}",
                enqueued_at=now - timedelta(seconds=st.settings.requeue_after_s * 3 + i),
            )
            s.add(delivery)
            s.flush()
            ids.append(delivery.id)
    return ids


def empty(st: Stack) -> None:
    """No worker runs here, so Stack.reset (which waits for work to finish) cannot be used."""
    with st.rt.db.session() as s:
        s.execute(delete(Delivery))
        s.execute(delete(Customer))
    st.purge()


def depth(st: Stack) -> int:
    return st.rt.dispatch.waiting(["push.memb"]).get("push.memb", 0)


def test_waiting_work_is_not_sent_again_and_lost_work_is(idle_stack: Stack) -> None:
    st = idle_stack
    empty(st)
    ids = sent_long_ago(st, 6)
    for delivery_id in ids[:4]:  # four messages still queued; two were lost
        st.rt.dispatch.push("memb", delivery_id)
    assert depth(st) == 4

    report = sweep(st.rt)
    # The two it re-sends are the longest-waiting: those are the ones most surely lost.
    assert sorted(d for _, d in report.deliveries) == sorted(ids[-2:])
    assert depth(st) == 6

    # Every delivery now has a message waiting: a sweep right after sends nothing.
    assert sweep(st.rt).deliveries == []
    assert depth(st) == 6

    st.purge()  # the broker loses everything (a Redis restart without persistence)
    with st.rt.db.session() as s:  # and a requeue period passes
        for d in s.scalars(select(Delivery).where(Delivery.id.in_(ids))):
            d.enqueued_at = utcnow() - timedelta(seconds=st.settings.requeue_after_s + 1)
    assert sorted(d for _, d in sweep(st.rt).deliveries) == sorted(ids)
    assert depth(st) == 6


def test_messages_sent_since_do_not_hide_an_older_lost_one(idle_stack: Stack) -> None:
    # After a broker restart new work fills the queue at once; those messages are not the
    # lost ones, and must not make the sweeper wait for the queue to drain.
    st = idle_stack
    empty(st)
    lost = sent_long_ago(st, 2)
    fresh = sent_long_ago(st, 3)
    with st.rt.db.session() as s:
        for d in s.scalars(select(Delivery).where(Delivery.id.in_(fresh))):
            d.enqueued_at = utcnow()
    for delivery_id in fresh:
        st.rt.dispatch.push("memb", delivery_id)
    assert sorted(d for _, d in sweep(st.rt).deliveries) == sorted(lost)
