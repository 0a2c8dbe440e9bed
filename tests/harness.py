"""Real parts for tests: servers on real ports, databases, brokers, worker processes."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx

from bridge.demo.processes import (  # noqa: F401 - the suite's names for them
    ROOT,
    ServerThread,
    WorkerProcess,
    free_port,
    port_open,
    wait_for,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN = os.environ.get("POSBRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POSBRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("POSBRIDGE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def service_or_skip(name: str, host: str, port: int) -> None:
    import pytest

    if port_open(host, port):
        return
    if IN_CI:
        pytest.fail(f"{name} on {host}:{port} is required in CI and does not answer")
    pytest.skip(f"{name} on {host}:{port} is not running")


def create_pg_database() -> str:
    from sqlalchemy import create_engine, text

    name = f"posbridge_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine, text

    from bridge.store.db import dispose_all

    dispose_all()
    name = url.rsplit("/", 1)[1]
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def sandbox_call(base: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, base + path, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def waiting_among_done(customer_ids: list[str], targets: tuple[str, ...], now: Any) -> list[dict[str, Any]]:
    """Delivery rows of a store in mid-backfill: per customer and target two done and one
    waiting, all sent a while ago (behind a deep queue)."""
    from datetime import timedelta

    from bridge.store.models import DeliveryState

    return [
        {
            "customer_id": cid,
            "target": target,
            "state": state,
            "idempotency_key": cid[:30],
            "next_attempt_at": now - timedelta(seconds=30),
            "enqueued_at": now - timedelta(seconds=20),
        }
        for cid in customer_ids
        for target in targets
        for state in (DeliveryState.DONE, DeliveryState.DONE, DeliveryState.PENDING)
    ]
