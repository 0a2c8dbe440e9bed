"""LS One through the whole bridge: orders polled, linked to customers, and acting as triggers.

A real stack: the bridge, a worker with beat polling LS One every second, the LS One and
Square sandboxes and the foundation's memory POS ("mema", which holds a customer code).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.lsone.sandbox import LSOneSandbox
from bridge.adapters.square.sandbox import SquareSandbox
from bridge.ops.status import customer_view, unlinked_orders
from bridge.store.models import Customer, Delivery, DeliveryState, Order
from tests.conftest import Stack
from tests.harness import wait_for
from tests.memorypos import MemorySandbox


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-lsone-e2e-"))
    st = Stack(
        "sqlite",
        var,
        extra_env={
            "POSBRIDGE_EXTRA_ADAPTERS": "tests.memorypos.adapter:MemoryA",
            "POSBRIDGE_LSONE_POLL_INTERVAL_S": "1",
            "POSBRIDGE_LSONE_POLL_OVERLAP_S": "5",
            "POSBRIDGE_MAX_ATTEMPTS": "2",
        },
        systems={
            "lsone": lambda url: LSOneSandbox(webhook_url=url),
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
def st(stack: Stack) -> Stack:
    stack.reset()
    return stack


def order(st: Stack, code: str, reference: str, status: int = 4) -> dict[str, object]:
    return st.call(  # type: ignore[no-any-return]
        "lsone",
        "POST",
        "/_sandbox/edit",
        json={"fields": {"customerID": code, "reference": reference, "status": status, "orderType": 1}},
    )


def orders(st: Stack) -> list[Order]:
    with st.rt.db.session() as s:
        return list(s.query(Order).order_by(Order.id).all())


def test_order_for_a_customer_known_only_in_square_creates_it_everywhere_once(st: Stack) -> None:
    # The customer reached only Square: mema was down and the delivery to it failed.
    st.faults("mema", down=True)
    st.edit(
        "square",
        {
            "given_name": "Radia",
            "family_name": "Perlman",
            "email_address": "radia@example.com",
            "reference_id": "C4242",
        },
    )
    wait_for(
        lambda: st.count(Delivery, Delivery.target == "mema", Delivery.state == DeliveryState.FAILED) == 1,
        timeout=60,
        what="the delivery to mema to fail",
    )
    st.faults("mema", down=False)
    assert st.truth("mema") == []
    order(st, "C4242", "WEB-1")
    wait_for(lambda: len(st.truth("mema")) == 1, timeout=60, what="the order to bring the customer to mema")
    st.settle()
    (record,) = st.truth("mema")
    assert record["email"] == "radia@example.com"
    assert record["code"] == "C4242"
    assert len(st.truth("square")) == 1
    assert st.count(Customer) == 1
    (linked,) = orders(st)
    assert linked.customer_id is not None
    assert linked.status == "open"
    # A second order for the same customer writes nothing more anywhere.
    writes = (st.writes("mema"), st.writes("square"))
    order(st, "C4242", "WEB-2", status=128)
    wait_for(lambda: len(orders(st)) == 2, timeout=90, what="the second order")
    st.settle()
    assert (st.writes("mema"), st.writes("square")) == writes
    view = customer_view(st.rt, linked.customer_id)
    assert view is not None
    assert sorted(o["status"] for o in view["orders"]) == ["open", "ready"]


def test_order_for_an_unknown_code_links_when_the_customer_appears(st: Stack) -> None:
    order(st, "C7777", "WEB-9")
    wait_for(lambda: len(orders(st)) == 1, timeout=90, what="the order to be polled")
    st.settle()
    (waiting,) = orders(st)
    assert waiting.customer_id is None
    assert [o["customer_ref"] for o in unlinked_orders(st.rt)] == ["C7777"]
    assert st.truth("mema") == []
    assert st.truth("square") == []
    # The customer is created at a till, anywhere: the order links by itself.
    st.edit(
        "mema", {"first_name": "Ken", "last_name": "Thompson", "email": "ken@example.com", "code": "C7777"}
    )
    st.settle()
    (linked,) = orders(st)
    assert linked.customer_id is not None
    assert unlinked_orders(st.rt) == []
    assert len(st.truth("square")) == 1
    assert st.truth("square")[0]["reference_id"] == "C7777"
