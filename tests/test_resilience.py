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


def test_backfill_killed_halfway_and_rerun_makes_no_duplicate(clean: Stack) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.harness import ROOT

    st = clean
    st.faults("mema", webhooks_enabled=False)  # these customers predate the bridge
    for n in range(120):
        st.edit("mema", {"first_name": f"Pre{n}", "last_name": "Existing", "email": f"pre{n}@example.com"})
    st.faults("mema", webhooks_enabled=True)
    st.faults("mema", latency_ms=250)  # a slow listing: 12 pages of 10
    env = {**os.environ, **st.env, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "bridge.cli", "backfill", "mema", "--chunk", "10", "--json"]
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it once it has linked some but not all of them.
    from bridge.store.models import Link

    wait_for(lambda: st.count(Link, Link.system == "mema") >= 20 or first.poll() is not None, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    halfway = st.count(Link, Link.system == "mema")
    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert '"read": 120' in second.stdout
    st.faults("mema", latency_ms=0)
    st.settle(timeout=90)
    assert 0 < halfway < 120, "the first run must have been killed halfway"
    assert st.count(Link, Link.system == "mema") == 120
    emails = sorted(c["email"] for c in st.truth("memb"))
    assert len(emails) == 120
    assert len(set(emails)) == 120
    assert len(st.truth("mema")) == 120
