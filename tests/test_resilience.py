"""Crashes and lost messages: a killed worker, a purged broker, refused credentials."""

from __future__ import annotations

from bridge.engine.ingest import ingest
from bridge.store.models import Delivery, DeliveryState, InboxEvent, InboxState, SystemState
from tests.conftest import Stack
from tests.harness import wait_for


def person(n: int) -> dict[str, str]:
    return {"first_name": f"Grace{n}", "last_name": "Hopper", "email": f"grace{n}@example.com"}


def test_kill_9_mid_push_completes_once_after_restart(clean: Stack) -> None:
    st = clean
    st.faults("memb", latency_ms=1500)
    st.edit("mema", person(1))
    wait_for(
        lambda: st.count(Delivery, Delivery.target == "memb", Delivery.state == DeliveryState.IN_FLIGHT) == 1,
        timeout=20,
        what="push to memb in flight",
    )
    assert st.worker is not None
    st.worker.kill9()
    st.worker = None
    st.faults("memb", latency_ms=0)
    st.start_worker()
    st.settle(timeout=40)
    assert len(st.truth("memb")) == 1
    assert st.writes("memb") == 1
    assert st.count(Delivery, Delivery.target == "memb", Delivery.state == DeliveryState.DONE) == 1


def test_purged_broker_loses_no_work(clean: Stack) -> None:
    st = clean
    st.stop_worker()
    for n in range(4):
        st.edit("mema", person(n))
    st.drain()
    wait_for(lambda: st.count(InboxEvent, InboxEvent.state == InboxState.PENDING) == 4, what="4 inbox rows")
    # Ingest two of them here, so that deliveries are pending too, with no message anywhere.
    with st.rt.db.session() as s:
        ids = [i for (i,) in s.query(InboxEvent.id).order_by(InboxEvent.id).limit(2).all()]
    for inbox_id in ids:
        assert ingest(st.rt, inbox_id).deliveries
    assert st.count(Delivery, Delivery.state == DeliveryState.PENDING) == 2
    st.purge()
    st.start_worker()
    st.settle(timeout=40)
    assert len(st.truth("memb")) == 4
    assert st.writes("memb") == 4


def test_auth_failure_pauses_target_and_resumes_by_itself(clean: Stack) -> None:
    st = clean
    sandbox = st.sandboxes["memb"]
    sandbox.tokens = frozenset({"rotated-token"})
    st.edit("mema", person(7))

    def paused() -> bool:
        with st.rt.db.session() as s:
            state = s.get(SystemState, "memb")
            return bool(state and state.paused)

    wait_for(paused, timeout=20, what="memb paused")
    from bridge.ops.status import system_status

    status = {row["system"]: row for row in system_status(st.rt)}
    assert status["memb"]["paused"] is True
    assert status["memb"]["pending"] == 1
    assert len(st.truth("memb")) == 0
    sandbox.tokens = None  # the credentials work again
    st.settle(timeout=30)
    assert not paused()
    assert len(st.truth("memb")) == 1
