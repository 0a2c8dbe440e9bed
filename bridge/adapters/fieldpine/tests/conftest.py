from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.adapters.fieldpine import FieldpineAdapter
from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.adapters.fieldpine.settings import FieldpineSettings
from bridge.sandbox.transport import SyncASGITransport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
API_KEY = "test-api-key"
HOOK_SECRET = "hook-secret-for-tests"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


class Receiver:
    """A webhook endpoint that records what the sandbox sends it."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

        async def hook(request: Request) -> Response:
            self.requests.append((dict(request.headers), await request.body()))
            return Response(status_code=204)

        self.app = Starlette(routes=[Route("/hooks/fieldpine", hook, methods=["POST"])])


def make_adapter(transport: httpx.BaseTransport, **overrides: Any) -> FieldpineAdapter:
    settings = FieldpineSettings(
        base_url="http://sandbox", api_key=overrides.pop("api_key", API_KEY), **overrides
    )
    return FieldpineAdapter(settings, transport=transport)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def sandbox(receiver: Receiver) -> FieldpineSandbox:
    return FieldpineSandbox(
        seed=7,
        webhook_url="http://receiver/hooks/fieldpine",
        webhook_transport=httpx.ASGITransport(app=receiver.app),
        hook_secret=HOOK_SECRET,
    )


@pytest.fixture
def transport(sandbox: FieldpineSandbox) -> Iterator[SyncASGITransport]:
    t = SyncASGITransport(sandbox.app)
    yield t
    t.shutdown()


@pytest.fixture
def adapter(transport: SyncASGITransport) -> Iterator[FieldpineAdapter]:
    a = make_adapter(transport)
    yield a
    a.close()


@pytest.fixture
def http(transport: SyncASGITransport) -> Iterator[httpx.Client]:
    with httpx.Client(transport=transport, base_url="http://sandbox", headers={"X-Api-Key": API_KEY}) as c:
        yield c
