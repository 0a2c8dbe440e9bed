"""The sweeper re-sends only work whose message the broker no longer holds.

No worker runs here: messages stay in their queue, which is what a deep backlog looks
like to the sweeper (a backfill, a target slower than its producers).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from bridge.canonical import utcnow
from bridge.engine.sweep import record_mark, sweep
from bridge.store.models import Customer, Delivery, DeliveryState, InboxEvent, QueueMark
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
        s.execute(delete(InboxEvent))
        s.execute(delete(QueueMark))
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
    assert depth(st) == 6 + 1  # and a marker behind them (see the marker tests below)

    # Every delivery now has a message waiting: a sweep right after sends nothing.
    assert sweep(st.rt).deliveries == []
    assert depth(st) == 7

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


def pending_inbox(st: Stack, n: int, sent_s_ago: float) -> list[int]:
    now = utcnow()
    with st.rt.db.session() as s:
        rows = [
            InboxEvent(
                system="memb",
                event_id=f"sweep-{uuid.uuid4()}",
                event_type="customer.updated",
                kind="upsert",
                external_id=f"x{i}",
                event="{}",
                enqueued_at=now - timedelta(seconds=sent_s_ago),
            )
            for i in range(n)
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def ingest_depth(st: Stack) -> int:
    return st.rt.dispatch.waiting(["ingest"]).get("ingest", 0)


def take_marker(st: Stack, queue: str, settled: bool = True) -> None:
    """What the worker that takes the sweeper's marker does (task posbridge.mark); `settled`:
    and a requeue period has passed since."""
    with st.rt.db.session() as s:
        sent_at = s.get_one(QueueMark, queue).sent_at
    assert sent_at is not None
    record_mark(st.rt, queue, sent_at)
    if settled:
        with st.rt.db.session() as s:
            row = s.get_one(QueueMark, queue)
            assert row.taken_at is not None
            row.taken_at -= timedelta(seconds=st.settings.requeue_after_s + 1)


def backdate_marker(st: Stack, queue: str, seconds: float) -> None:
    with st.rt.db.session() as s:
        row = s.get_one(QueueMark, queue)
        assert row.sent_at is not None
        row.sent_at -= timedelta(seconds=seconds)


def test_inbox_rows_behind_a_backlog_are_not_sent_again(idle_stack: Stack) -> None:
    # A backfill's echoes wait in the ingest queue far longer than a requeue period; each
    # sweep re-sending them filled the queue with copies of rows still on their way.
    st = idle_stack
    empty(st)
    requeue = st.settings.requeue_after_s
    waiting = pending_inbox(st, 3, sent_s_ago=requeue * 30)
    st.rt.dispatch.ingest(waiting)  # their one message, still queued
    assert ingest_depth(st) == 1
    retry = pending_inbox(st, 1, sent_s_ago=requeue + 1)
    with st.rt.db.session() as s:
        # What ingest._reschedule leaves: a failure's reason, and no message anywhere.
        s.get_one(InboxEvent, retry[0]).error = "onsite 503"

    # Behind a backlog, however old, only the failed row whose retry is due goes again;
    # a marker follows it down the queue.
    assert sweep(st.rt).inbox == retry
    assert ingest_depth(st) == 3
    assert sweep(st.rt).inbox == []
    assert ingest_depth(st) == 3  # one marker per requeue period, not one per sweep

    st.purge()  # the broker lost the queue: with nothing queued, every stale row is lost
    with st.rt.db.session() as s:
        s.get_one(InboxEvent, retry[0]).enqueued_at = utcnow() - timedelta(seconds=requeue + 1)
    assert sorted(sweep(st.rt).inbox) == sorted(waiting + retry)
    assert ingest_depth(st) == 1  # no marker down an empty queue


def test_a_taken_marker_shows_what_the_queue_lost_behind_new_work(idle_stack: Stack) -> None:
    # After a broker restart new webhooks fill the queue at once: its depth no longer says
    # anything about the rows whose messages went down with the broker.
    st = idle_stack
    empty(st)
    requeue = st.settings.requeue_after_s
    lost = pending_inbox(st, 2, sent_s_ago=requeue * 3)
    st.rt.dispatch.ingest(lost)
    assert sweep(st.rt).inbox == []  # behind a backlog, and no marker taken yet
    backdate_marker(st, "ingest", requeue * 2)  # so that the next sweep sends another
    st.purge()  # the broker loses its queue, marker and all
    fresh = pending_inbox(st, 2, sent_s_ago=0)
    st.rt.dispatch.ingest(fresh)  # new work arrives at once
    assert sweep(st.rt).inbox == []  # nothing taken: nothing known
    assert ingest_depth(st) == 2  # the marker went down after the new work

    take_marker(st, "ingest", settled=False)
    # Taken, but the messages taken just before it may still be at work: not yet.
    assert sweep(st.rt).inbox == []
    take_marker(st, "ingest")
    # Everything sent a requeue period before the marker has been taken: the two still
    # waiting were lost. The rows sent since are in the queue, untouched.
    assert sorted(sweep(st.rt).inbox) == sorted(lost)


def test_a_taken_marker_shows_lost_deliveries_the_count_cannot(idle_stack: Stack) -> None:
    # The queue's depth also counts messages of deliveries already done (copies, markers),
    # so a count can take them for the lost ones.
    st = idle_stack
    empty(st)
    lost = sent_long_ago(st, 2)
    finished = sent_long_ago(st, 2)
    with st.rt.db.session() as s:
        for d in s.scalars(select(Delivery).where(Delivery.id.in_(finished))):
            d.state = DeliveryState.DONE
    for delivery_id in finished:
        st.rt.dispatch.push("memb", delivery_id)
    assert sweep(st.rt).deliveries == []  # two waiting, two messages: none missing by count
    assert depth(st) == 3

    take_marker(st, "push.memb")
    assert sorted(d for _, d in sweep(st.rt).deliveries) == sorted(lost)
