"""The Loyverse sandbox in-process behind SyncASGITransport, and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.adapters.loyverse import LoyverseAdapter
from bridge.adapters.loyverse.sandbox import LoyverseSandbox
from bridge.adapters.loyverse.settings import LoyverseSettings
from bridge.sandbox.transport import SyncASGITransport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BASE_URL = "http://sandbox/v1.0"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


class Receiver:
    """Where the sandbox posts its webhooks: keeps every delivery as received."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []

        async def hook(request: Request) -> Response:
            self.deliveries.append(({k.lower(): v for k, v in request.headers.items()}, await request.body()))
            return Response(status_code=200)

        self.app = Starlette(routes=[Route("/hooks/loyverse", hook, methods=["POST"])])
        self.transport = httpx.ASGITransport(app=self.app)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.deliveries]


class Env:
    """One sandbox, its transport, and adapters talking to it."""

    def __init__(self, **sandbox_kwargs: Any) -> None:
        self.receiver = Receiver()
        sandbox_kwargs.setdefault("webhook_url", "http://receiver/hooks/loyverse")
        sandbox_kwargs.setdefault("webhook_transport", self.receiver.transport)
        self.sandbox = LoyverseSandbox(**sandbox_kwargs)
        self.transport = SyncASGITransport(self.sandbox.app)
        # A fresh token per environment: the sandbox budget and the process-local
        # limiter are both per account, and tests must not spend each other's.
        self.token = f"tok-{uuid.uuid4().hex}"
        self.http = httpx.Client(
            base_url=BASE_URL, transport=self.transport, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.control = httpx.Client(base_url="http://sandbox/_sandbox", transport=self.transport)

    def settings(self, **overrides: Any) -> LoyverseSettings:
        values: dict[str, Any] = {
            "base_url": BASE_URL,
            "access_token": self.token,
            "rate_limit_requests": 100_000,
            "rate_limit_window_s": 1.0,
            **overrides,
        }
        return LoyverseSettings(**values)

    def adapter(self, **overrides: Any) -> LoyverseAdapter:
        return LoyverseAdapter(self.settings(**overrides), transport=self.transport)

    def drain(self) -> None:
        assert self.transport.run(self.sandbox.webhooks.drain(10.0))

    def till(self, fields: dict[str, Any], customer_id: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"fields": fields}
        if customer_id:
            payload["id"] = customer_id
        response = self.control.post("/edit", json=payload)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        return dict(self.control.get("/stats").json())

    def close(self) -> None:
        async def quiesce() -> None:
            # Cancel batches still waiting for their window, and let the cancellations run
            # before the loop stops, so no task is left pending.
            self.sandbox.webhooks.reset()
            await asyncio.sleep(0.01)

        self.transport.run(quiesce())
        self.http.close()
        self.control.close()
        self.transport.shutdown()


@pytest.fixture
def make_env() -> Iterator[Callable[..., Env]]:
    envs: list[Env] = []

    def make(**kwargs: Any) -> Env:
        env = Env(**kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()
