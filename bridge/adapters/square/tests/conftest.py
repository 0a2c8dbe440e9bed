from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.adapters.square import SquareAdapter
from bridge.adapters.square.sandbox import SquareSandbox
from bridge.adapters.square.settings import SquareSettings
from bridge.sandbox.transport import SyncASGITransport

HOOK_URL = "https://bridge.example.test/hooks/square"
SIGNATURE_KEY = "test-signature-key"


@dataclass
class Receiver:
    """The bridge's side of the webhook: records every delivery as it arrived."""

    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.deliveries.append((dict(request.headers), await request.body()))
            return Response(status_code=200)

        return Starlette(routes=[Route("/hooks/square", hook, methods=["POST"])])

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.deliveries]


@dataclass
class World:
    sandbox: SquareSandbox
    transport: SyncASGITransport
    receiver: Receiver
    adapter: SquareAdapter

    def http(self, token: str | None = "t") -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(transport=self.transport, base_url="http://sandbox", headers=headers)

    def drain(self) -> None:
        assert self.transport.run(self.sandbox.webhooks.drain(10))

    def live(self) -> list[dict[str, Any]]:
        return [c for c in self.sandbox.ground_truth() if not c["deleted"]]


def make_settings(**overrides: Any) -> SquareSettings:
    values: dict[str, Any] = {
        "base_url": "http://sandbox",
        "access_token": "t",
        "webhook_signature_key": SIGNATURE_KEY,
        "notification_url": HOOK_URL,
    }
    values.update(overrides)
    return SquareSettings(**values)


@pytest.fixture
def world() -> Iterator[World]:
    receiver = Receiver()
    sandbox = SquareSandbox(
        webhook_url=HOOK_URL,
        webhook_transport=httpx.ASGITransport(app=receiver.app()),
        signature_key=SIGNATURE_KEY,
        seed=7,
    )
    transport = SyncASGITransport(sandbox.app)
    adapter = SquareAdapter(make_settings(), transport=transport)
    yield World(sandbox, transport, receiver, adapter)
    adapter.close()
    transport.shutdown()
