"""Lightspeed OnSite end to end: a real bridge between the OnSite sandbox and a memory POS.

Everything is real: the bridge web app and a Celery worker process with beat polling
OnSite every second (OnSite sends no webhooks), SQLite, the OnSite sandbox speaking XML
with sessions, seats and LOCK/PUT/UNLOCK on a port, and the memory POS "mema" sending
signed webhooks. OnSite's customer ID (`customer_id`) carries the canonical customer code,
which is also what OnSite validates (unique), so a clash is a genuine vendor 400.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.canonical import utcnow
from bridge.store.models import Attempt, Customer, Delivery, DeliveryState, InboxEvent, Link, PollCursor
from tests.conftest import Stack
from tests.harness import wait_for
from tests.memorypos import MemorySandbox

POLL_OVERLAP_S = 5
LOCK_ROUTE = "LOCK /api/customers/{id:int}/"
UNLOCK_ROUTE = "UNLOCK /api/customers/{id:int}/"
PUT_ROUTE = "PUT /api/customers/{id:int}/"


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-onsite-e2e-{request.param}-"))
    st = Stack(
        request.param,
        var,
        extra_env={
            "POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA",
            "POSBRIDGE_ONSITE_POLL_INTERVAL_S": "1",
            "POSBRIDGE_ONSITE_POLL_OVERLAP_S": str(POLL_OVERLAP_S),
            "POSBRIDGE_ONSITE_CUSTOMER_CODE_FIELD": "customer_id",
        },
        systems={
            # Ten seats instead of five: a response lost after commit on the very first
            # request of a session (the fault the lost-create test injects) leaks a seat
            # until the 15-minute idle timeout, as on a real server.
            "onsite": lambda url: OnSiteSandbox(webhook_url=url, seat_limit=10, seed=5),
            "mema": lambda url: MemorySandbox(name="mema", webhook_url=url),
        },
    )
    try:
        st.start_worker()
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture
def clean(stack: Stack) -> Stack:
    stack.reset()
    if stack.worker is None or stack.worker._dead():
        stack.start_worker()
    return stack


def person(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "first_name": f"Ada{n}",
        "last_name": "Lovelace",
        "email": f"ada{n}@example.com",
        "phone": f"+1415555{1000 + n:04d}",
        "code": f"ADA-{n}",
        **extra,
    }


def outcomes(st: Stack, system: str) -> list[str]:
    """Inbox outcomes of `system`; "adopted" (an echo that overtook our answer) reads as "echo"."""
    with st.rt.db.session() as s:
        rows = s.query(InboxEvent.outcome).filter(InboxEvent.system == system).all()
    return sorted(ours(o or "<pending>") for (o,) in rows)


def ours(outcome: str) -> str:
    """Our own create seen back before its answer is recorded is "adopted", else "echo"."""
    return "echo" if outcome == "adopted" else outcome


def stats(st: Stack, system: str) -> dict[str, Any]:
    return st.call(system, "GET", "/_sandbox/stats")  # type: ignore[no-any-return]


def wait_for_poll_started_after(st: Stack, since: datetime, timeout: float = 60) -> None:
    """Wait until a poll of OnSite that started at or after `since` has completed."""

    def started() -> datetime | None:
        with st.rt.db.session() as s:
            row = s.get(PollCursor, "onsite")
            at = row.last_started_at if row is not None else None
        return at if at is not None and at >= since else None

    began = wait_for(started, timeout=timeout, what=f"an OnSite poll started after {since}")

    def finished() -> bool:
        with st.rt.db.session() as s:
            row = s.get(PollCursor, "onsite")
            return bool(row is not None and row.last_success_at and row.last_success_at >= began)

    wait_for(finished, timeout=timeout, what="that OnSite poll to finish")


def onsite_record(st: Stack, code: str) -> dict[str, Any]:
    found = [r for r in st.truth("onsite") if r["customer_id"] == code]
    assert len(found) == 1, (code, st.truth("onsite"))
    return found[0]


def test_till_edit_reaches_mema_once_and_polled_echoes_cost_nothing(clean: Stack) -> None:
    st = clean
    created = st.edit("mema", person(1))
    st.settle()
    # The next polls read our own create back from OnSite inside their overlap window:
    # the record is exactly as our write left it, so it is not even queued.
    wait_for_poll_started_after(st, utcnow())
    st.settle()
    record = onsite_record(st, "ADA-1")
    assert (record["first"], record["last"], record["email"]) == ("Ada1", "Lovelace", "ada1@example.com")
    assert [p["number"] for p in record["phone_numbers"] if p["number"]] == ["+14155551001"]
    assert record["locked"] is False
    assert st.writes("onsite") == 1
    assert st.writes("mema") == 1
    assert outcomes(st, "onsite") == []
    assert outcomes(st, "mema") == ["created"]

    # A person edits the customer at the OnSite till; only polling can find it.
    edited_at = utcnow()
    st.edit("onsite", {"notes": "likes tea", "email": "ada.new@example.com"}, str(record["id"]))
    wait_for(
        lambda: st.truth("mema")[0]["note"] == "likes tea",
        timeout=40,
        what="the OnSite till edit to reach mema",
    )
    # Let polls run past the overlap window: re-reading the edit (and the record our
    # update to mema did not touch) must cost nothing anywhere.
    wait_for_poll_started_after(st, edited_at + timedelta(seconds=POLL_OVERLAP_S + 1))
    st.settle()
    mema = st.truth("mema")
    assert len(mema) == 1
    assert mema[0]["id"] == created["id"]
    assert (mema[0]["note"], mema[0]["email"], mema[0]["code"]) == (
        "likes tea",
        "ada.new@example.com",
        "ADA-1",
    )
    assert st.writes("mema") == 2  # the till create, then exactly one update from the bridge
    assert st.writes("onsite") == 2  # our create, then the till edit: nothing written back
    assert outcomes(st, "onsite") == ["updated"]
    assert outcomes(st, "mema") == ["created", "echo"]
    assert st.count(Customer) == 1
    assert st.count(Link) == 2


def test_200_creates_with_lost_responses_make_exactly_200_customers(clean: Stack) -> None:
    st = clean
    total = 200
    st.faults("onsite", lose_response_after_commit_rate=0.3, seed=23)
    started = time.monotonic()
    for n in range(total):
        st.edit("mema", person(n))

    def all_there() -> bool:
        return len(st.truth("onsite")) >= total and st.idle()

    wait_for(all_there, timeout=240, interval=0.5, what=f"{total} customers in OnSite")
    elapsed = time.monotonic() - started
    lost = stats(st, "onsite")["faults"].get("lost_after_commit", 0)
    st.faults("onsite", lose_response_after_commit_rate=0.0)
    st.settle(timeout=120)
    print(
        f"\nonsite: {total} creates with lose_response_after_commit_rate=0.3 took {elapsed:.1f}s "
        f"({lost} responses lost after commit)"
    )
    truth = st.truth("onsite")
    assert len(truth) == total
    assert sorted(r["email"] for r in truth) == sorted(f"ada{n}@example.com" for n in range(total))
    assert lost > 0
    # Every OnSite record the polls found was our own create: none may become a second
    # canonical customer (that would be pushed back to mema as a duplicate person). A create
    # whose answer we got is known to its link and not queued at all; one whose answer was
    # lost is queued, and must be adopted as ours.
    polled = Counter(outcomes(st, "onsite"))
    assert set(polled) <= {"echo"}, ("polled creates not recognised as ours", polled)
    assert st.count(Customer, Customer.merged_into.is_(None)) == total
    assert len(st.truth("mema")) == total
    assert st.count(Link, Link.system == "onsite", Link.synced_at.is_not(None)) == total
    with st.rt.db.session() as s:
        failed = s.query(Delivery.last_error).filter(Delivery.state == DeliveryState.FAILED).all()
    assert failed == []


def test_failed_put_releases_the_lock_and_fails_with_the_vendor_reason(clean: Stack) -> None:
    st = clean
    st.edit("mema", person(1))
    second = st.edit("mema", person(2))
    st.settle()
    wait_for(lambda: len(st.truth("onsite")) == 2, timeout=30, what="both customers in OnSite")
    before = stats(st, "onsite")
    writes = st.writes("onsite")
    # OnSite refuses a customer ID another customer already has: our PUT gets a 400.
    st.edit("mema", {"code": "ADA-1"}, second["id"])

    def failed() -> list[Delivery]:
        with st.rt.db.session() as s:
            return list(
                s.query(Delivery)
                .filter(Delivery.target == "onsite", Delivery.state == DeliveryState.FAILED)
                .all()
            )

    wait_for(failed, timeout=30, what="the OnSite delivery to fail")
    st.settle()
    assert st.call("onsite", "GET", "/_sandbox/locks") == {"locks": {}}
    deliveries = failed()
    assert len(deliveries) == 1
    reason = deliveries[0].last_error or ""
    assert "400" in reason
    assert "lsserver.error.duplicate" in reason
    assert "'ADA-1' is already in use" in reason
    with st.rt.db.session() as s:
        attempts = s.query(Attempt).filter(Attempt.delivery_id == deliveries[0].id).all()
        assert [(a.outcome, a.http_status) for a in attempts] == [("fail", 400)]
    after = stats(st, "onsite")
    calls = {
        route: after["requests"].get(route, 0) - before["requests"].get(route, 0)
        for route in (LOCK_ROUTE, PUT_ROUTE, UNLOCK_ROUTE)
    }
    # LOCK may be sent twice: the first after a sandbox reset meets an expired session.
    assert calls[LOCK_ROUTE] >= 1
    assert (calls[PUT_ROUTE], calls[UNLOCK_ROUTE]) == (1, 1)
    assert st.writes("onsite") == writes  # the refused PUT changed nothing
    assert onsite_record(st, "ADA-2")["email"] == "ada2@example.com"
    assert all(not r["locked"] for r in st.truth("onsite"))
