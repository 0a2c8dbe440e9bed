"""The Square integration end to end, on a real running bridge.

A module-scoped `Stack` runs the bridge web app, a Celery worker with beat, a database
and a broker (SQLite + SQLite broker, Postgres + Redis) with two systems: the Square
sandbox and the foundation's memory POS (`mema`). Till edits happen in the sandboxes;
everything else (webhooks, ingest, pushes, echoes, conflicts, merges) is the real engine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bridge.adapters.square.sandbox import SquareSandbox
from bridge.adapters.square.webhook import SIGNATURE_HEADER, sign
from bridge.store.models import Attempt, Customer, Delivery, DeliveryState, InboxEvent, Link
from tests.conftest import Stack
from tests.harness import wait_for
from tests.memorypos import MemorySandbox

pytestmark = pytest.mark.slow

SQUARE_TOKEN = "sandbox-access-token"
CUSTOMER_PATH = "/v2/customers/{customer_id}"


# One leg: the engine's acceptance (tests/test_pipeline.py) runs on all three, and
# `posbridge demo` (tests/test_demo.py) drives Square on the embedded SQLite default.
@pytest.fixture(scope="module", params=["pg-redis"])
def square_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-square-{request.param}-"))
    st = Stack(
        request.param,
        var,
        extra_env={"POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA"},
        systems={
            "square": lambda url: SquareSandbox(webhook_url=url),
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
def st(square_stack: Stack) -> Stack:
    square_stack.reset()
    if square_stack.worker is None or square_stack.worker._dead():
        square_stack.start_worker()
    return square_stack


# -- helpers ------------------------------------------------------------------------------
def person(n: int = 0, **extra: str) -> dict[str, str]:
    """A customer as the memory POS till takes it."""
    return {"first_name": "Ada", "last_name": f"Lovelace{n}", "email": f"ada{n}@example.com", **extra}


def outcomes(st: Stack, system: str) -> list[str]:
    with st.rt.db.session() as s:
        rows = s.scalars(select(InboxEvent.outcome).where(InboxEvent.system == system)).all()
    return sorted(str(o) for o in rows)


def link_of(st: Stack, system: str, customer_id: str) -> Link | None:
    with st.rt.db.session() as s:
        return s.scalar(select(Link).where(Link.system == system, Link.customer_id == customer_id))


def links(st: Stack, system: str) -> list[Link]:
    with st.rt.db.session() as s:
        return list(s.scalars(select(Link).where(Link.system == system)).all())


def requests(st: Stack, system: str, route: str) -> int:
    return int(st.call(system, "GET", "/_sandbox/stats")["requests"].get(route, 0))


def square_profile(st: Stack, customer_id: str) -> dict[str, Any]:
    found = [c for c in st.truth("square") if c["id"] == customer_id]
    assert len(found) == 1, f"square profile {customer_id} not live: {st.truth('square')}"
    return found[0]


def mema_record(st: Stack, record_id: str) -> dict[str, Any]:
    found = [c for c in st.truth("mema") if c["id"] == record_id]
    assert len(found) == 1, f"mema record {record_id} not live"
    return found[0]


def created_in_both(st: Stack, n: int = 0, **extra: str) -> tuple[dict[str, Any], Link]:
    """A person created at the memory till and synced to Square; (mema record, square link)."""
    created = st.edit("mema", person(n, **extra))
    st.settle()
    with st.rt.db.session() as s:
        mema_link = s.scalar(select(Link).where(Link.system == "mema", Link.external_id == created["id"]))
        assert mema_link is not None
        square_link = s.scalar(
            select(Link).where(Link.system == "square", Link.customer_id == mema_link.customer_id)
        )
    assert square_link is not None, st.tail()
    assert square_link.external_id is not None, st.tail()
    return created, square_link


# -- 1. echo ------------------------------------------------------------------------------
def test_square_till_edit_reaches_memory_once_and_echoes_cost_nothing(st: Stack) -> None:
    profile = st.edit(
        "square",
        {
            "given_name": "Grace",
            "family_name": "Hopper",
            "email_address": "grace@example.com",
            "phone_number": "+14155550123",
        },
    )
    st.settle()
    mem = st.truth("mema")
    assert len(mem) == 1
    assert {k: mem[0][k] for k in ("first_name", "last_name", "email", "phone")} == {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": "grace@example.com",
        "phone": "+14155550123",
    }
    assert st.writes("square") == 1  # the till create, nothing written back
    assert st.writes("mema") == 1  # one create; its webhook came back as an echo
    assert outcomes(st, "square") == ["created"]
    assert outcomes(st, "mema") == ["echo"]

    # The other way: a memory till edit is pushed to Square, and Square's webhook for our
    # own update comes back as an echo costing nothing.
    st.edit("mema", {"note": "prefers email"}, mem[0]["id"])
    st.settle()
    assert square_profile(st, profile["id"])["note"] == "prefers email"
    assert square_profile(st, profile["id"])["version"] == 1
    assert st.writes("square") == 2
    assert st.writes("mema") == 2
    assert outcomes(st, "square") == ["created", "echo"]
    assert outcomes(st, "mema") == ["echo", "updated"]
    assert st.count(Customer) == 1
    assert st.count(Link) == 2


# -- 2. stale version -----------------------------------------------------------------------
def test_stale_version_conflict_keeps_both_till_edits(st: Stack) -> None:
    created, square_link = created_in_both(st, 1)
    square_id = square_link.external_id
    assert square_id is not None
    assert square_link.external_version == 0
    # Square's webhooks are off: the bridge does not learn of the Square till edit.
    st.faults("square", webhooks_enabled=False)
    st.edit("square", {"note": "allergic to nuts"}, square_id)
    assert square_profile(st, square_id)["version"] == 1
    puts_before = requests(st, "square", "PUT " + CUSTOMER_PATH)
    gets_before = requests(st, "square", "GET " + CUSTOMER_PATH)
    st.edit("mema", {"email": "ada.new@example.com"}, created["id"])
    st.settle(timeout=60)

    final = square_profile(st, square_id)
    assert final["note"] == "allergic to nuts"
    assert final["email_address"] == "ada.new@example.com"
    assert final["version"] == 2  # the till edit, then our one successful update
    mem = mema_record(st, created["id"])
    assert mem["note"] == "allergic to nuts"
    assert mem["email"] == "ada.new@example.com"
    assert len(st.truth("square")) == 1
    assert len(st.truth("mema")) == 1
    # One refused update with the stale version, a re-read, one update with the fresh one.
    assert requests(st, "square", "PUT " + CUSTOMER_PATH) - puts_before == 2
    assert requests(st, "square", "GET " + CUSTOMER_PATH) - gets_before >= 1
    assert st.writes("square") == 3  # our create, the till edit, our merged update
    assert st.writes("mema") == 3  # the till create, the till edit, the note from Square
    with st.rt.db.session() as s:
        link = s.scalar(select(Link).where(Link.system == "square", Link.external_id == square_id))
        assert link is not None
        assert link.external_version == 2
        pushes = s.scalars(
            select(Delivery).where(Delivery.target == "square", Delivery.customer_id == link.customer_id)
        ).all()
        failed = [d for d in pushes if d.state == DeliveryState.FAILED]
        assert not failed, [d.last_error for d in failed]
        updates = s.scalars(
            select(Attempt)
            .join(Delivery, Delivery.id == Attempt.delivery_id)
            .where(Delivery.target == "square", Attempt.action == "update")
        ).all()
    # The push that met the conflict ended well (conflict rounds happen inside one push).
    assert updates
    assert updates[-1].outcome == "ok"
    assert {a.outcome for a in updates} <= {"ok", "conflict"}


# -- 3. lost answers ------------------------------------------------------------------------
def test_200_creates_with_lost_answers_make_200_square_profiles(st: Stack) -> None:
    total = 200
    st.faults("square", lose_response_after_commit_rate=0.3, seed=1234)
    started = time.monotonic()
    for i in range(total):
        st.edit("mema", person(1000 + i))
    st.settle(timeout=240)
    elapsed = time.monotonic() - started
    lost = st.call("square", "GET", "/_sandbox/stats")["faults"].get("lost_after_commit", 0)
    print(
        f"\n[{st.leg}] {total} memory till creates -> Square with 30% lost answers: "
        f"{elapsed:.1f} s ({total / elapsed:.1f}/s), {lost} answers lost"
    )

    profiles = st.truth("square")
    assert len(profiles) == total
    assert sorted(p["email_address"] for p in profiles) == sorted(
        f"ada{1000 + i}@example.com" for i in range(total)
    )
    assert lost > 0
    with st.rt.db.session() as s:
        inbox = Counter(f"{sys}:{o}" for sys, o in s.execute(select(InboxEvent.system, InboxEvent.outcome)))
    state = f"inbox outcomes {dict(inbox)}"
    live = (Customer.merged_into.is_(None), Customer.deleted.is_(False))
    assert st.count(Customer, *live) == total, state
    square_links = links(st, "square")
    assert len(square_links) == total, state
    assert len({link.customer_id for link in square_links}) == total
    assert {link.external_id for link in square_links} == {p["id"] for p in profiles}
    assert all(link.synced_at is not None for link in square_links)
    assert len(st.truth("mema")) == total, state
    assert st.count(Delivery, Delivery.state == DeliveryState.FAILED) == 0
    # Square's webhook for a create whose answer was lost must wait for our create to be
    # recorded (an echo), not make a second canonical customer that is folded in later.
    assert st.count(Customer) == total, state


def test_create_answer_lost_longer_than_the_lease_makes_no_second_customer(st: Stack) -> None:
    # Every answer from Square is lost (creates and the searches of find_existing alike)
    # for longer than the lease; Square's own webhook for our create arrives meanwhile.
    st.faults("square", lose_response_after_commit_rate=1.0)
    started = time.monotonic()
    created = st.edit("mema", person(7))
    # Keep every answer lost for three leases: the create is retried (or, once Square's
    # webhook for it has been adopted as its answer, finished) all that time.
    wait_for(
        lambda: len(st.truth("square")) >= 1 and time.monotonic() - started > 3 * st.settings.lease_s,
        timeout=60,
        what="three leases of lost answers after the create",
    )
    assert st.count(Delivery, Delivery.target == "square", Delivery.attempts >= 2) == 1
    st.faults("square", lose_response_after_commit_rate=0.0)
    st.settle(timeout=90)

    state = f"inbox outcomes {outcomes(st, 'square')}"
    assert len(st.truth("square")) == 1
    assert [r["id"] for r in st.truth("mema")] == [created["id"]], state
    assert st.count(Customer) == 1, state
    (square_link,) = links(st, "square")
    assert square_link.synced_at is not None
    assert square_link.external_id == st.truth("square")[0]["id"]
    with st.rt.db.session() as s:
        failed = s.scalars(select(Delivery.last_error).where(Delivery.state == DeliveryState.FAILED)).all()
    assert failed == []


# -- 4. merges ------------------------------------------------------------------------------
def two_people_in_both(st: Stack) -> tuple[Link, Link]:
    _, first = created_in_both(st, 2)
    _, second = created_in_both(st, 3, phone="+14155550177")
    assert first.customer_id != second.customer_id
    return first, second


def merge_at_square(st: Stack, first: Link, second: Link) -> dict[str, Any]:
    answer = st.call(
        "square", "POST", "/_sandbox/merge", json={"customer_ids": [first.external_id, second.external_id]}
    )
    return answer["customer"]  # type: ignore[no-any-return]


def assert_merge_repointed(
    st: Stack, first: Link, second: Link, merged: dict[str, Any], mema_before: dict[str, Any], writes: int
) -> None:
    assert [p["id"] for p in st.truth("square")] == [merged["id"]]
    # No new canonical customer: the two became one (the other points at it).
    state = f"square inbox: {outcomes(st, 'square')}; mema records: {len(st.truth('mema'))}"
    assert st.count(Customer) == 2, state
    assert st.count(Customer, Customer.merged_into.is_(None), Customer.deleted.is_(False)) == 1, state
    with st.rt.db.session() as s:
        square_links = s.scalars(select(Link).where(Link.system == "square")).all()
        assert [link.external_id for link in square_links] == [merged["id"]]
        survivor = s.get_one(Customer, square_links[0].customer_id)
        assert not survivor.deleted
        assert survivor.merged_into is None
        gone = {first.customer_id, second.customer_id} - {survivor.id}
        assert len(gone) == 1
        assert s.get_one(Customer, gone.pop()).merged_into == survivor.id
        survivor_values = {k: v["v"] for k, v in survivor.fields.items()}
        mema_links = s.scalars(select(Link).where(Link.system == "mema")).all()
    # The merged profile's values are the canonical customer's.
    assert survivor_values["email"] == merged["email_address"]
    assert survivor_values["phone_mobile"] == merged["phone_number"]
    assert survivor_values["family_name"] == merged["family_name"]
    # The memory POS got no new record; it was written only where a field really changed.
    mema_after = {c["id"]: c for c in st.truth("mema")}
    assert set(mema_after) == set(mema_before)
    changed = [i for i in mema_after if mema_after[i] != mema_before[i]]
    assert st.writes("mema") - writes == len(changed) <= 1
    kept = [mema_after[str(link.external_id)] for link in mema_links if link.customer_id == survivor.id]
    assert len(kept) == 1
    assert (kept[0]["email"], kept[0]["phone"], kept[0]["last_name"]) == (
        merged["email_address"],
        merged["phone_number"],
        merged["family_name"],
    )
    # Nothing but the merge itself was written at Square (no write-back, no echo storm).
    assert st.writes("square") == 2 + 3  # two creates; the merged profile and two deletes
    assert st.count(Delivery, Delivery.state == DeliveryState.FAILED) == 0


def test_square_merge_repoints_links_without_a_new_customer(st: Stack) -> None:
    first, second = two_people_in_both(st)
    mema_before = {c["id"]: c for c in st.truth("mema")}
    writes = st.writes("mema")
    merged = merge_at_square(st, first, second)
    st.settle(timeout=60)
    assert_merge_repointed(st, first, second, merged, mema_before, writes)


def send_square_webhook(st: Stack, event_type: str, customer: dict[str, Any], merge: dict[str, Any]) -> None:
    """Deliver one Square event exactly as the sandbox would have signed it."""
    sb = st.sandboxes["square"]
    data: dict[str, Any] = {"type": "customer", "id": customer["id"]}
    if event_type == "customer.deleted":
        data["deleted"] = True
    data["object"] = {"customer": customer, "event_context": {"merge": merge}}
    body = json.dumps(
        {
            "merchant_id": sb.merchant_id,
            "type": event_type,
            "event_id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()
    answer = httpx.post(
        f"{st.web.url}/webhooks/square",
        content=body,
        headers={
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(sb.signature_key, sb.notification_url or "", body),
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1


def test_square_merge_with_deletes_delivered_first_repoints_links(st: Stack) -> None:
    # Square does not order webhooks: the deletes of the merged-away profiles may come
    # before the customer.created that names the merge. The outcome must be the same.
    first, second = two_people_in_both(st)
    mema_before = {c["id"]: c for c in st.truth("mema")}
    writes = st.writes("mema")
    st.faults("square", webhooks_enabled=False)
    merged = merge_at_square(st, first, second)
    every = {c["id"]: c for c in st.call("square", "GET", "/_sandbox/customers")["customers"]}
    context = {"from_customer_ids": [first.external_id, second.external_id], "to_customer_id": merged["id"]}
    for old in (first, second):
        record = {k: v for k, v in every[str(old.external_id)].items() if k != "deleted"}
        send_square_webhook(st, "customer.deleted", record, context)
    wait_for(
        lambda: (
            st.idle()
            and st.count(InboxEvent, InboxEvent.event_type == "customer.deleted", InboxEvent.state == "done")
            == 2
        ),
        timeout=30,
        what="both deletes ingested",
    )
    send_square_webhook(st, "customer.created", merged, context)
    st.settle(timeout=60)
    assert_merge_repointed(st, first, second, merged, mema_before, writes)


# -- 5. deletes -----------------------------------------------------------------------------
def test_square_delete_marks_customer_deleted_and_writes_nothing_to_memory(st: Stack) -> None:
    created, square_link = created_in_both(st, 4)
    mema_writes = st.writes("mema")
    st.call(
        "square",
        "DELETE",
        f"/v2/customers/{square_link.external_id}",
        headers={"authorization": f"Bearer {SQUARE_TOKEN}"},
    )
    wait_for(lambda: "deleted" in outcomes(st, "square"), timeout=30, what="the delete webhook ingested")
    st.settle()
    assert st.truth("square") == []
    with st.rt.db.session() as s:
        customer = s.get_one(Customer, square_link.customer_id)
        assert customer.deleted
        assert customer.merged_into is None
    assert link_of(st, "square", square_link.customer_id) is None
    # Default policy ("mark"): the memory POS keeps its record, untouched.
    assert st.writes("mema") == mema_writes
    assert mema_record(st, created["id"]) == created
    assert st.count(Delivery, Delivery.target == "mema", Delivery.state.in_(["pending", "in_flight"])) == 0


# -- 6. backfill through the bulk endpoint --------------------------------------------------
def test_backfill_creates_through_bulk_calls_and_resends_only_failed_entries(st: Stack) -> None:
    from bridge.engine.backfill import link_system, plan_all

    st.faults("mema", webhooks_enabled=False)  # these customers predate the bridge
    for n in range(250):
        # Five carry a phone Square refuses: those entries fail inside otherwise good calls.
        phone = "12" if n % 50 == 7 else f"+1415555{n:04d}"
        st.edit(
            "mema",
            {
                "first_name": f"Bulk{n}",
                "last_name": "Loaded",
                "email": f"bulk{n}@example.com",
                "phone": phone,
            },
        )
    st.faults("mema", webhooks_enabled=True)
    # Lost answers and 5xx make whole bulk calls fail: only resends can repair them.
    st.faults("square", lose_response_after_commit_rate=0.5, error_rate=0.1, seed=11)
    planned_before = st.count(Delivery)
    report = link_system(st.rt, "mema")
    assert report.read == 250
    # Linking plans nothing: a delivery planned now would race the bulk calls below with a
    # single create per customer.
    assert st.count(Delivery) == planned_before
    plan_all(st.rt)
    st.faults("square", lose_response_after_commit_rate=0.0, error_rate=0.0)
    st.settle(timeout=120)
    profiles = st.truth("square")
    requests = st.call("square", "GET", "/_sandbox/stats")["requests"]
    bulk_calls = requests.get("POST /v2/customers/bulk-create", 0)
    single_creates = requests.get("POST /v2/customers", 0)
    print(
        f"\nsquare[{st.leg}]: {len(profiles)} profiles from {bulk_calls} bulk calls, "
        f"{single_creates} single creates"
    )
    assert len(profiles) == 245
    assert len({p["email_address"] for p in profiles}) == 245
    assert bulk_calls > 3  # at least one call was lost and resent
    with st.rt.db.session() as s:
        assert s.query(Link).filter(Link.system == "square", Link.synced_at.is_not(None)).count() == 245
        failed_rows = s.execute(
            select(Delivery.customer_id, Delivery.last_error).where(
                Delivery.target == "square", Delivery.state == DeliveryState.FAILED
            )
        ).all()
    failed = [reason for _cid, reason in failed_rows]
    # The refused entries end as failed deliveries carrying Square's reason, nothing else.
    assert len({cid for cid, _ in failed_rows}) == 5  # one customer may fail twice (a later change)
    assert all("PHONE" in (reason or "") for reason in failed), failed
    assert single_creates >= 5  # one each; a lost answer (faults still on) may repeat one
