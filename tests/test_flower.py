"""Retrying from Flower: a real Flower process, a real broker, a real worker.

Flower cannot retry a failed task by itself, and our failures are delivery rows, not
failed tasks. An operator re-applies `posbridge.retry_delivery` through Flower's task
API; this test does exactly that, with the documented call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.store.models import Delivery, DeliveryState
from tests.conftest import Stack
from tests.harness import ROOT, free_port, port_open, wait_for

AUTH = ("ops", "flower-test-secret")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-flower-"))
    st = Stack("pg-redis", var, extra_env={"POSBRIDGE_MAX_ATTEMPTS": "2"})
    try:
        st.start_worker()
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT), "POSBRIDGE_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    log = (stack.var / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "flower", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, timeout=60, what="flower")
        assert proc.poll() is None, (stack.var / "flower.log").read_text()[-3000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_flower_needs_credentials(flower: str) -> None:
    assert httpx.get(f"{flower}/api/workers", timeout=30).status_code == 401


def test_failed_delivery_retried_through_flower_task_api(stack: Stack, flower: str) -> None:
    stack.reset()
    stack.faults("memb", error_rate=1.0)
    stack.edit("mema", {"first_name": "Katherine", "last_name": "Johnson", "email": "kj@example.com"})
    failed = wait_for(
        lambda: stack.count(Delivery, Delivery.target == "memb", Delivery.state == DeliveryState.FAILED),
        timeout=60,
        what="the delivery to memb to fail",
    )
    assert failed == 1
    assert stack.truth("memb") == []
    stack.faults("memb", error_rate=0.0)  # the operator fixed the cause
    with stack.rt.db.session() as s:
        delivery_id = s.query(Delivery.id).filter(Delivery.state == DeliveryState.FAILED).scalar()
    # The documented call (README, "Retrying from Flower").
    response = httpx.post(
        f"{flower}/api/task/async-apply/posbridge.retry_delivery",
        json={"args": [delivery_id]},
        auth=AUTH,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["task-id"]
    wait_for(lambda: len(stack.truth("memb")) == 1, timeout=60, what="the customer to arrive in memb")
    assert stack.truth("memb")[0]["email"] == "kj@example.com"
    assert stack.count(Delivery, Delivery.state == DeliveryState.FAILED) == 0
