"""Shared fixtures: a complete running bridge (the "stack") on each database/broker leg."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from tests.harness import (
    AMQP_URL,
    REDIS_URL,
    ServerThread,
    WorkerProcess,
    create_pg_database,
    drop_pg_database,
    free_port,
    service_or_skip,
    wait_for,
)

LEGS = ("sqlite", "pg-redis", "pg-rabbitmq")
MEMORY_ADAPTERS = "tests.memorypos.adapter:MemoryA,tests.memorypos.adapter:MemoryB"


def leg_urls(leg: str, var: Path) -> tuple[str, str]:
    if leg == "sqlite":
        return f"sqlite:///{var}/posbridge.sqlite", f"sqla+sqlite:///{var}/broker.sqlite"
    service_or_skip("Postgres", "127.0.0.1", 5432)
    if leg == "pg-redis":
        service_or_skip("Redis", "127.0.0.1", 6379)
        # A Redis db of its own (1-15), so that two stacks never consume each other's tasks.
        return create_pg_database(), REDIS_URL.rsplit("/", 1)[0] + f"/{secrets.randbelow(15) + 1}"
    service_or_skip("RabbitMQ", "127.0.0.1", 5672)
    return create_pg_database(), AMQP_URL


SandboxFactory = Callable[[str], Any]  # webhook URL -> a bridge.sandbox.Sandbox


def memory_systems() -> dict[str, SandboxFactory]:
    from tests.memorypos import MemorySandbox

    return {name: (lambda url, n=name: MemorySandbox(name=n, webhook_url=url)) for name in ("mema", "memb")}


class Stack:
    """The bridge web app, a worker process with beat, and one sandbox per enabled system.

    By default the systems are the two memory POS instances; integration tests pass the
    real sandboxes (`systems={"square": lambda url: SquareSandbox(webhook_url=url), ...}`).
    Every adapter is pointed at its sandbox through the sandbox's own `adapter_env`.
    """

    def __init__(
        self,
        leg: str,
        var: Path,
        extra_env: dict[str, str] | None = None,
        systems: dict[str, SandboxFactory] | None = None,
    ) -> None:
        self.leg = leg
        self.var = var
        self.db_url, self.broker_url = leg_urls(leg, var)
        factories = systems or memory_systems()
        web_port = free_port()
        self.web_url = f"http://127.0.0.1:{web_port}"
        self.sandboxes = {name: make(f"{self.web_url}/webhooks/{name}") for name, make in factories.items()}
        self.sandbox_servers = {name: ServerThread(sb.app).start() for name, sb in self.sandboxes.items()}
        names = list(self.sandboxes)
        self.env = {
            "POSBRIDGE_VAR_DIR": str(var),
            "POSBRIDGE_DATABASE_URL": self.db_url,
            "POSBRIDGE_BROKER_URL": self.broker_url,
            "POSBRIDGE_SYSTEMS": ",".join(names),
            "POSBRIDGE_COALESCE_WINDOW_S": "0.6",
            "POSBRIDGE_LEASE_S": "4",
            "POSBRIDGE_REQUEUE_AFTER_S": "2",
            "POSBRIDGE_SWEEP_INTERVAL_S": "0.5",
            "POSBRIDGE_RETRY_BASE_S": "0.2",
            "POSBRIDGE_RETRY_CAP_S": "1.5",
            "POSBRIDGE_PROBE_INTERVAL_S": "1",
            "POSBRIDGE_LOG_JSON": "false",
            "POSBRIDGE_TRIGGER_TOKEN": "trigger-secret",
            "POSBRIDGE_DELETE_GRACE_S": "1",
            # Stacks may run side by side (pytest-xdist) on one RabbitMQ: queues of their own.
            "POSBRIDGE_QUEUE_PREFIX": f"t{secrets.token_hex(3)}.",
        }
        if systems is None:
            self.env["POSBRIDGE_EXTRA_ADAPTERS"] = MEMORY_ADAPTERS
        for name, sb in self.sandboxes.items():
            prefix = f"POSBRIDGE_{name.upper()}_"
            self.env[prefix + "POLL_INTERVAL_S"] = "3600"
            self.env[prefix + "TIMEOUT_S"] = "3"
            for key, value in sb.adapter_env(self.sandbox_servers[name].url).items():
                self.env[prefix + key.upper()] = value
        self.env.update(extra_env or {})
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        from bridge.config import Settings
        from bridge.runtime import Runtime
        from bridge.store.migrate import upgrade
        from bridge.web.app import create_app
        from workers.app import build_app, queues_for
        from workers.dispatch import CeleryDispatcher

        self.settings = Settings()
        upgrade(self.db_url)
        self.celery = build_app(self.settings, tasks=False)
        self.queues = queues_for(self.settings)
        self.rt = Runtime(self.settings, dispatcher=CeleryDispatcher(self.celery))
        self.rt.validate()
        self.web = ServerThread(create_app(self.rt), port=web_port).start()
        self.purge()
        self.worker: WorkerProcess | None = None
        self.log_path = var / "worker.log"

    # -- processes ----------------------------------------------------------------------
    def start_worker(self) -> WorkerProcess:
        self.worker = WorkerProcess(self.env, self.log_path).start()
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def purge(self) -> None:
        with self.celery.connection_for_write() as conn:
            for queue in self.queues:
                with contextlib.suppress(Exception):
                    from kombu import Queue

                    Queue(queue, channel=conn.default_channel).declare()
                    conn.default_channel.queue_purge(queue)

    def reset(self) -> None:
        from bridge.store import models as m

        wait_for(self.idle, timeout=30, what="previous work to finish")
        with self.rt.db.session() as s:
            for table in (
                m.Attempt,
                m.Delivery,
                m.Order,
                m.MatchKey,
                m.Link,
                m.InboxEvent,
                m.PollCursor,
                m.SystemState,
            ):
                s.execute(delete(table))
            s.execute(m.Customer.__table__.update().values(merged_into=None))
            s.execute(delete(m.Customer))
        for name in self.sandboxes:
            self.call(name, "POST", "/_sandbox/reset")
        # Task messages of the previous test name rows that are gone (and ids the next test
        # reuses): the worker would only spend the next test's time answering "already".
        self.purge()

    def close(self) -> None:
        self.stop_worker()
        self.web.stop()
        for server in self.sandbox_servers.values():
            server.stop()
        self.rt.close()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.db_url.startswith("postgresql"):
            drop_pg_database(self.db_url)

    # -- sandboxes ----------------------------------------------------------------------
    def call(self, system: str, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.sandbox_servers[system].url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def edit(self, system: str, fields: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
        return self.call(system, "POST", "/_sandbox/edit", json={"id": record_id, "fields": fields})  # type: ignore[no-any-return]

    def truth(self, system: str) -> list[dict[str, Any]]:
        return [
            c for c in self.call(system, "GET", "/_sandbox/customers")["customers"] if not c.get("deleted")
        ]

    def writes(self, system: str) -> int:
        return int(self.call(system, "GET", "/_sandbox/stats")["writes"])

    def faults(self, system: str, **faults: Any) -> None:
        self.call(system, "POST", "/_sandbox/faults", json=faults)

    def drain(self) -> None:
        for name in self.sandboxes:
            self.call(name, "POST", "/_sandbox/drain")

    # -- bridge state -------------------------------------------------------------------
    def count(self, model: Any, *where: Any) -> int:
        with self.rt.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def idle(self) -> bool:
        from bridge.store.models import Delivery, DeliveryState, InboxEvent, InboxState

        return (
            self.count(InboxEvent, InboxEvent.state == InboxState.PENDING) == 0
            and self.count(Delivery, Delivery.state.in_([DeliveryState.PENDING, DeliveryState.IN_FLIGHT]))
            == 0
        )

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until webhooks are delivered and the bridge has no work left, twice over."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge did not settle within {timeout}s; worker log:\n{self.tail()}")
            self.drain()
            quiet = quiet + 1 if self.idle() else 0
            time.sleep(0.3)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path.exists() else ""


@pytest.fixture(scope="module", params=LEGS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-{request.param}-"))
    st = Stack(request.param, var)
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
