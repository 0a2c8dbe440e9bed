from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bridge.adapters.onsite import OnSiteAdapter, OnSiteSettings
from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.sandbox.transport import SyncASGITransport

DEMO_HEADERS = {
    "user-agent": "com.lightspeed.onsite.demo/1.0",
    "x-pappid": "12345678-90ab-cdef-1234-567890abcdef",
}
DEMO_AUTH = ("lightspeed", "admin")


def make_settings(**overrides: Any) -> OnSiteSettings:
    values: dict[str, Any] = {
        "base_url": "http://sandbox",
        "username": "lightspeed",
        "password": "admin",
        "app_id": "com.lightspeed.onsite.demo",
        "private_app_id": "12345678-90ab-cdef-1234-567890abcdef",
        **overrides,
    }
    return OnSiteSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def sandbox() -> OnSiteSandbox:
    return OnSiteSandbox(seed=7)


@pytest.fixture
def transport(sandbox: OnSiteSandbox) -> Iterator[SyncASGITransport]:
    t = SyncASGITransport(sandbox.app)
    yield t
    t.shutdown()


@pytest.fixture
def make_adapter(transport: SyncASGITransport) -> Iterator[Callable[..., OnSiteAdapter]]:
    made: list[OnSiteAdapter] = []

    def factory(**overrides: Any) -> OnSiteAdapter:
        adapter = OnSiteAdapter(make_settings(**overrides), transport=transport)
        made.append(adapter)
        return adapter

    yield factory
    for adapter in made:
        adapter.close()


@pytest.fixture
def adapter(make_adapter: Callable[..., OnSiteAdapter]) -> OnSiteAdapter:
    return make_adapter()


@pytest.fixture
def raw(transport: SyncASGITransport) -> Callable[..., httpx.Client]:
    """A plain OnSite client (cookie jar on) as another app or a seed script would use."""

    def factory(**kwargs: Any) -> httpx.Client:
        options: dict[str, Any] = {"auth": DEMO_AUTH, "headers": DEMO_HEADERS, **kwargs}
        return httpx.Client(base_url="http://sandbox", transport=transport, **options)

    return factory
