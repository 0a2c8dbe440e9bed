"""The LS One sandbox behind the adapter, in-process over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.adapters.lsone import LSOneAdapter
from bridge.adapters.lsone.sandbox import LSOneSandbox
from bridge.adapters.lsone.settings import LSOneSettings
from bridge.sandbox.transport import SyncASGITransport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Rig:
    sandbox: LSOneSandbox
    transport: SyncASGITransport
    adapter: LSOneAdapter
    control: httpx.Client

    def till(self, fields: dict[str, Any], gid: str | None = None) -> dict[str, Any]:
        """A clerk makes or changes an order at the POS (POST /_sandbox/edit)."""
        payload: dict[str, Any] = {"fields": fields}
        if gid:
            payload["id"] = gid
        response = self.control.post("/_sandbox/edit", json=payload)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def faults(self, **changes: Any) -> None:
        assert self.control.post("/_sandbox/faults", json=changes).status_code == 200

    def auth_stats(self) -> dict[str, Any]:
        return dict(self.control.get("/_sandbox/auth").json())

    def requests(self, route: str) -> int:
        stats = self.control.get("/_sandbox/stats").json()
        return int(stats["requests"].get(route, 0))

    def adapter_for(self, **settings: Any) -> LSOneAdapter:
        base = {"base_url": "http://sandbox", "username": "bridge", "password": "s3cret-pass"}
        return LSOneAdapter(LSOneSettings(**{**base, **settings}), transport=self.transport)


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    transports: list[SyncASGITransport] = []

    def make(settings: dict[str, Any] | None = None, **sandbox_args: Any) -> Rig:
        sandbox = LSOneSandbox(**sandbox_args)
        transport = SyncASGITransport(sandbox.app)
        transports.append(transport)
        control = httpx.Client(transport=transport, base_url="http://sandbox")
        base = {"base_url": "http://sandbox", "username": "bridge", "password": "s3cret-pass"}
        adapter = LSOneAdapter(LSOneSettings(**{**base, **(settings or {})}), transport=transport)
        return Rig(sandbox, transport, adapter, control)

    yield make
    for transport in transports:
        transport.shutdown()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()
