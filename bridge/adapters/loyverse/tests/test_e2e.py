"""Loyverse end to end: a real bridge between the Loyverse sandbox and a memory POS.

Everything is real: the bridge web app and a Celery worker process with beat (two pool
processes), SQLite or Postgres + Redis, the Loyverse sandbox on a port sending batched
`customers.update` webhooks signed with the app's client secret, and the memory POS "mema"
sending signed webhooks. The Loyverse budget is scaled in time (100 requests per 2 s
instead of 300 per 300 s); the sandbox refuses anything past it with a 429, and both
worker processes spend from one shared limiter (the database, or Redis on pg-redis).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters.loyverse.sandbox import LoyverseSandbox
from bridge.store.models import Customer, Delivery, DeliveryState, InboxEvent, Link
from tests.conftest import Stack
from tests.harness import REDIS_URL, wait_for
from tests.memorypos import MemorySandbox

# Loyverse's 300 requests per 300 s, time scaled so that the budget binds in a test run:
LIMIT = 100  # requests ...
WINDOW_S = 5.0  # ... per this many seconds, for the sandbox and the adapter's limiter alike


@pytest.fixture(scope="module", params=["sqlite", "pg-redis"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    leg = request.param
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-loyverse-e2e-{leg}-"))
    # On SQLite the limiter's slots live in the bridge's own database; on pg-redis in
    # Redis. The token names the account, so other runs sharing that Redis spend from
    # budgets of their own.
    limiter_url = REDIS_URL if leg == "pg-redis" else f"sqlite:///{var}/posbridge.sqlite"
    token = f"loyverse-e2e-{uuid.uuid4().hex[:12]}"
    env = {
        "POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA",
        "POSBRIDGE_LOYVERSE_RATE_LIMIT_URL": limiter_url,
    }
    st = Stack(
        leg,
        var,
        extra_env=env,
        systems={
            "loyverse": lambda url: LoyverseSandbox(
                webhook_url=url,
                client_secret="appsecret",
                rate_limit_requests=LIMIT,
                rate_limit_window_s=WINDOW_S,
                tokens=[token],
                seed=13,
            ),
            "mema": lambda url: MemorySandbox(name="mema", webhook_url=url),
        },
    )
    try:
        assert leg != "sqlite" or st.db_url == limiter_url
        assert st.env["POSBRIDGE_LOYVERSE_RATE_LIMIT_REQUESTS"] == str(LIMIT)
        assert float(st.env["POSBRIDGE_LOYVERSE_RATE_LIMIT_WINDOW_S"]) == WINDOW_S
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


def test_till_edit_reaches_mema_once_and_webhooks_for_our_writes_are_free_echoes(clean: Stack) -> None:
    st = clean
    created = st.edit("mema", person(1))
    st.settle()
    truth = st.truth("loyverse")
    assert len(truth) == 1
    record = truth[0]
    assert (record["name"], record["email"]) == ("Ada1 Lovelace", "ada1@example.com")
    assert (record["phone_number"], record["customer_code"]) == ("+14155551001", "ADA-1")
    assert st.writes("loyverse") == 1
    assert st.writes("mema") == 1
    assert outcomes(st, "loyverse") == ["echo"]  # the batched webhook for our own create
    assert outcomes(st, "mema") == ["created"]

    # A person edits the customer at the Loyverse till.
    st.edit("loyverse", {"note": "likes tea"}, record["id"])
    st.settle()
    mema = st.truth("mema")
    assert len(mema) == 1
    assert mema[0]["id"] == created["id"]
    assert (mema[0]["note"], mema[0]["first_name"], mema[0]["code"]) == ("likes tea", "Ada1", "ADA-1")
    assert st.writes("mema") == 2  # the till create, then exactly one update from the bridge
    assert st.writes("loyverse") == 2  # our create and the till edit: nothing written back
    assert outcomes(st, "loyverse") == ["echo", "updated"]
    assert outcomes(st, "mema") == ["created", "echo"]

    # Our own update into Loyverse comes back in a webhook batch as an echo.
    st.edit("mema", {"last_name": "Byron"}, created["id"])
    st.settle()
    record = st.truth("loyverse")[0]
    assert (record["name"], record["note"]) == ("Ada1 Byron", "likes tea")
    assert st.writes("loyverse") == 3
    assert st.writes("mema") == 3
    assert outcomes(st, "loyverse") == ["echo", "echo", "updated"]
    assert outcomes(st, "mema") == ["created", "echo", "updated"]
    assert st.count(Customer) == 1
    assert st.count(Link) == 2
    assert stats(st, "loyverse")["faults"] == {}


def test_200_creates_with_lost_responses_make_exactly_200_customers(clean: Stack) -> None:
    st = clean
    total = 200
    st.faults("loyverse", lose_response_after_commit_rate=0.3, seed=31)
    started = time.monotonic()
    for n in range(total):
        st.edit("mema", person(n))

    def all_there() -> bool:
        return len(st.truth("loyverse")) >= total and st.idle()

    wait_for(all_there, timeout=180, interval=0.5, what=f"{total} customers in Loyverse")
    elapsed = time.monotonic() - started
    st.faults("loyverse", lose_response_after_commit_rate=0.0)
    st.settle(timeout=60)
    after = stats(st, "loyverse")
    lost = after["faults"].get("lost_after_commit", 0)
    print(
        f"\nloyverse[{st.leg}]: {total} creates with lose_response_after_commit_rate=0.3 took "
        f"{elapsed:.1f}s ({lost} answers lost after commit, requests {after['requests']})"
    )
    truth = st.truth("loyverse")
    assert len(truth) == total
    assert sorted(r["email"] for r in truth) == sorted(f"ada{n}@example.com" for n in range(total))
    assert lost > 0
    assert after["faults"].get("429", 0) == 0
    # Every webhook Loyverse sent was for our own creates: all echoes, no second customer.
    assert Counter(outcomes(st, "loyverse")) == {"echo": total}, "webhooks of our creates not recognised"
    assert st.count(Customer, Customer.merged_into.is_(None)) == total
    assert len(st.truth("mema")) == total
    assert st.count(Link, Link.system == "loyverse", Link.synced_at.is_not(None)) == total
    with st.rt.db.session() as s:
        failed = s.query(Delivery.last_error).filter(Delivery.state == DeliveryState.FAILED).all()
    assert failed == []


@pytest.mark.timing
@pytest.mark.timeout(600)
def test_1000_changes_spend_the_shared_budget_without_a_single_429(clean: Stack) -> None:
    st = clean
    if st.leg == "sqlite":
        # The embedded SQLite engine moves about 12 changes/s on two cores, below the
        # scaled budget's 20 requests/s: the budget would never bind, so the leg cannot
        # show what this test is about. Postgres + Redis is faster than the budget.
        pytest.skip("the budget binds only on a leg faster than 20 requests/s")
    total = 1000
    before = stats(st, "loyverse")
    started = time.monotonic()
    for n in range(total):
        st.edit("mema", person(n))

    def all_there() -> bool:
        return len(st.truth("loyverse")) >= total and st.idle()

    wait_for(all_there, timeout=300, interval=0.5, what=f"{total} customers in Loyverse")
    elapsed = time.monotonic() - started
    st.settle(timeout=60)
    after = stats(st, "loyverse")
    requests = after["requests_total"] - before["requests_total"]
    # A sliding window lets the first LIMIT requests go at once; every further LIMIT
    # requests need another window.
    minimum = max(0.0, (requests - LIMIT) / LIMIT * WINDOW_S)
    print(
        f"\nloyverse[{st.leg}]: {total} creates -> {requests} Loyverse requests in {elapsed:.1f}s; "
        f"budget {LIMIT}/{WINDOW_S:g}s allows it in {minimum:.1f}s at best "
        f"({requests / elapsed:.1f} req/s against {LIMIT / WINDOW_S:.1f} allowed); "
        f"faults {after['faults']}"
    )
    assert after["faults"].get("429", 0) == 0
    assert len(st.truth("loyverse")) == total
    assert st.writes("loyverse") == total
    assert requests >= total
    assert Counter(outcomes(st, "loyverse")) == {"echo": total}
    assert elapsed >= minimum  # what the sandbox enforces; a faster run would mean 429s were possible
    # Near the budget's minimum: the limiter must not throttle harder than the budget
    # requires (a margin, long waits handed back to the engine as retries, ...).
    # The margin covers a loaded CI machine, where the pipeline itself (not the limiter)
    # sets the pace; a limiter throttling harder than the budget shows as 3x and more.
    assert elapsed <= 2.5 * minimum + 10, (
        f"{elapsed:.1f}s is far above the budget's {minimum:.1f}s: "
        f"{requests / elapsed:.1f} req/s against {LIMIT / WINDOW_S:.1f} allowed"
    )
