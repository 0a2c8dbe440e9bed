"""Fieldpine end to end: a real bridge between the Fieldpine sandbox and a memory POS.

Everything is real: the bridge web app and a Celery worker process with beat, SQLite,
the Fieldpine sandbox on a port sending signed `CustomerChanged` hooks (triggers: the
engine re-reads the record through `fetch()`), and the memory POS "mema" sending signed
webhooks. Creates into Fieldpine carry a CustomerId derived from the delivery's
idempotency key, so a create whose answer was lost can simply be sent again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.store.models import Customer, Delivery, DeliveryState, InboxEvent, Link
from tests.conftest import Stack
from tests.harness import wait_for
from tests.memorypos import MemorySandbox

LISTING = "GET /OpenApi2/Customers"  # fetch() and find_existing() both read through it


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-fieldpine-e2e-{request.param}-"))
    st = Stack(
        request.param,
        var,
        extra_env={"POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA"},
        systems={
            "fieldpine": lambda url: FieldpineSandbox(webhook_url=url, hook_secret="hooksecret", seed=3),
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


def hooks_delivered(st: Stack) -> int:
    return int(stats(st, "fieldpine")["webhooks"].get("delivered", 0))


def test_till_edit_reaches_mema_once_and_hooks_for_our_writes_are_free_echoes(clean: Stack) -> None:
    st = clean
    created = st.edit("mema", person(1))
    st.settle()
    truth = st.truth("fieldpine")
    assert len(truth) == 1
    record = truth[0]
    assert (record["FirstName"], record["LastName"], record["Name"]) == ("Ada1", "Lovelace", "Ada1 Lovelace")
    assert (record["Email"], record["Mobile"]) == ("ada1@example.com", "+14155551001")
    with st.rt.db.session() as s:
        link = s.query(Link).filter(Link.system == "fieldpine").one()
        # The CustomerId is the one the engine chose before the call (the idempotency key).
        assert link.external_id == record["CustomerId"]
    assert hooks_delivered(st) == 1
    assert st.writes("fieldpine") == 1
    assert st.writes("mema") == 1
    assert outcomes(st, "fieldpine") == ["echo"]  # the hook for our own create
    assert outcomes(st, "mema") == ["created"]

    # A person edits the customer at the Fieldpine till: the hook makes the engine re-read it.
    st.edit("fieldpine", {"Email": "ada.new@example.com"}, record["CustomerId"])
    st.settle()
    mema = st.truth("mema")
    assert len(mema) == 1
    assert mema[0]["id"] == created["id"]
    assert (mema[0]["email"], mema[0]["first_name"]) == ("ada.new@example.com", "Ada1")
    assert st.writes("mema") == 2  # the till create, then exactly one update from the bridge
    assert st.writes("fieldpine") == 2  # our create and the till edit: nothing written back
    assert outcomes(st, "fieldpine") == ["echo", "updated"]
    assert outcomes(st, "mema") == ["created", "echo"]

    # Our own update into Fieldpine comes back as a hook, and re-reads as an echo.
    st.edit("mema", {"last_name": "Byron"}, created["id"])
    st.settle()
    assert st.truth("fieldpine")[0]["LastName"] == "Byron"
    assert st.truth("fieldpine")[0]["Name"] == "Ada1 Byron"
    assert hooks_delivered(st) == 3
    assert st.writes("fieldpine") == 3
    assert st.writes("mema") == 3
    assert outcomes(st, "fieldpine") == ["echo", "echo", "updated"]
    assert outcomes(st, "mema") == ["created", "echo", "updated"]
    assert st.count(Customer) == 1
    assert st.count(Link) == 2


def test_200_creates_with_lost_responses_make_exactly_200_customers_without_lookups(
    clean: Stack,
) -> None:
    st = clean
    total = 200
    # Hooks off: every GET the sandbox then sees is a lookup the engine made after a lost
    # answer (find_existing -> fetch). With a caller-chosen CustomerId none is needed: the
    # same POST again is the same customer.
    st.faults("fieldpine", lose_response_after_commit_rate=0.3, webhooks_enabled=False, seed=29)
    started = time.monotonic()
    for n in range(total):
        st.edit("mema", person(n))

    def all_there() -> bool:
        return len(st.truth("fieldpine")) >= total and st.idle()

    wait_for(all_there, timeout=180, interval=0.5, what=f"{total} customers in Fieldpine")
    elapsed = time.monotonic() - started
    st.faults("fieldpine", lose_response_after_commit_rate=0.0)
    st.settle(timeout=60)
    after = stats(st, "fieldpine")
    lost = after["faults"].get("lost_after_commit", 0)
    posts = after["requests"].get("POST /OpenApi2/Customers", 0)
    lookups = after["requests"].get(LISTING, 0)
    print(
        f"\nfieldpine: {total} creates with lose_response_after_commit_rate=0.3 took {elapsed:.1f}s "
        f"({posts} POSTs, {lost} answers lost after commit, {lookups} lookup GETs)"
    )
    truth = st.truth("fieldpine")
    assert len(truth) == total
    assert sorted(r["Email"] for r in truth) == sorted(f"ada{n}@example.com" for n in range(total))
    assert lost > 0
    assert st.writes("fieldpine") == total  # a resent POST with the same CustomerId changes nothing
    assert st.count(Customer, Customer.merged_into.is_(None)) == total
    assert st.count(Link, Link.system == "fieldpine", Link.synced_at.is_not(None)) == total
    with st.rt.db.session() as s:
        ids = {e for (e,) in s.query(Link.external_id).filter(Link.system == "fieldpine").all()}
        states = Counter(state for (state,) in s.query(Delivery.state).all())
    assert ids == {r["CustomerId"] for r in truth}
    assert states[DeliveryState.FAILED] == 0
    # No lookup was needed: a lost answer is repaired by sending the same POST again.
    assert lookups == 0, f"{lookups} find_existing/fetch GETs for {lost} lost answers"
    assert posts == total + lost
