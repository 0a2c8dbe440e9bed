"""One test per recorded payload: the client reads it, and the sandbox still answers alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bridge.adapters.errors import AuthError
from bridge.adapters.lsone import LSOneAdapter
from bridge.adapters.lsone.client import jwt_claims
from bridge.adapters.lsone.settings import LSOneSettings

from .conftest import Rig, load_fixture


def replay(routes: dict[tuple[str, str], str]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Serve recorded vendor responses by (method, path); everything else is a 404."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        name = routes.get((request.method, request.url.path))
        if name is None:
            return httpx.Response(404, json={"title": "Not Found", "status": 404})
        recorded = load_fixture(name)
        return httpx.Response(recorded["status"], headers=recorded["headers"], json=recorded["body"])

    return httpx.MockTransport(handle), seen


def replay_adapter(transport: httpx.BaseTransport) -> LSOneAdapter:
    settings = LSOneSettings(base_url="http://lsone", username="bridge", password="pw")
    return LSOneAdapter(settings, transport=transport)


def fixture_shape(name: str) -> tuple[int, set[str]]:
    recorded = load_fixture(name)
    return recorded["status"], set(recorded["body"])


LOGIN = {("POST", "/api/authorize/authenticate"): "authenticate__ok.json"}


def test_authenticate_ok_gives_a_jwt_with_exp_and_a_refresh_cookie(rig: Rig) -> None:
    recorded = load_fixture("authenticate__ok.json")
    claims = jwt_claims(recorded["body"]["token"])
    assert claims["exp"] - claims["iat"] == pytest.approx(20 * 60)
    assert "refreshToken=" in recorded["headers"]["set-cookie"]

    transport, seen = replay({**LOGIN, ("GET", "/api/customer/orders"): "orders_page__two.json"})
    adapter = replay_adapter(transport)
    # The recorded token is old by now; pin the client's clock to when it was fresh.
    adapter.api._clock = lambda: float(claims["iat"]) + 1
    adapter.probe()
    assert seen[-1].headers["authorization"] == f"Bearer {recorded['body']['token']}"
    assert seen[0].read() == b'{"userName":"bridge","password":"pw"}'

    live = rig.control.post("/api/authorize/authenticate", json={"userName": "u", "password": "p"})
    assert (live.status_code, set(live.json())) == fixture_shape("authenticate__ok.json")
    assert live.headers["set-cookie"].startswith("refreshToken=")


def test_order_open_maps_to_an_open_order_of_its_customer(rig: Rig) -> None:
    body = load_fixture("order__open.json")["body"]
    transport, _ = replay({**LOGIN, ("GET", f"/api/customer/orders/{body['gid']}"): "order__open.json"})
    order = replay_adapter(transport).fetch_order(body["gid"])
    assert order is not None
    assert order.external_id == "2cd5ace7-24cb-4023-8fb6-d4f799bb20cc"
    assert order.status == "open"
    assert order.customer_ref == "00013"
    assert order.reference == "Order1"
    assert order.updated_at == datetime(2021, 10, 18, 16, 39, 2, 227000, tzinfo=UTC)
    assert order.native == body

    # The sandbox, given the same order at the till, answers the very same document.
    rig.till(dict(body))
    assert rig.adapter.fetch_order(body["gid"].upper()) == order


def test_order_closed_is_final_and_only_reread_inside_the_window(rig: Rig) -> None:
    body = load_fixture("order__closed.json")["body"]
    transport, _ = replay({**LOGIN, ("GET", f"/api/customer/orders/{body['gid']}"): "order__closed.json"})
    order = replay_adapter(transport).fetch_order(body["gid"])
    assert order is not None
    assert (order.status, order.customer_ref) == ("closed", "00014")

    rig.till(dict(body))
    created = order.updated_at
    assert created is not None
    window = timedelta(seconds=rig.adapter.settings.reread_window_s)
    assert [o.external_id for o in rig.adapter.poll_orders(created + window / 2)] == [order.external_id]
    assert list(rig.adapter.poll_orders(created + window * 2)) == []


def test_orders_page_two_is_read_and_paging_goes_on(rig: Rig) -> None:
    recorded = load_fixture("orders_page__two.json")
    transport, _ = replay({**LOGIN, ("GET", "/api/customer/orders"): "orders_page__two.json"})
    page = replay_adapter(transport).api.list_orders(page=2, page_size=2)
    assert page.total_count == 5
    assert [item["gid"] for item in page.items] == [item["gid"] for item in recorded["body"]["items"]]

    for n in range(5):
        rig.till({"reference": f"R{n}", "createdDate": f"2021-10-20T10:0{n}:00"})
    live = rig.adapter.api.list_orders(page=2, page_size=2)
    assert live.total_count == 5
    assert [set(item) for item in live.items] == [set(item) for item in recorded["body"]["items"]]


def test_orders_search_empty_404_means_no_orders(rig: Rig) -> None:
    transport, _ = replay({**LOGIN, ("POST", "/api/customer/orders/search"): "orders_search__empty_404.json"})
    adapter = replay_adapter(transport)
    assert list(adapter.search_orders({"customerID": "99999"})) == []

    rig.till({"customerID": "00013"})
    live = rig.control.post(
        "/api/customer/orders/search",
        params={"page": 1, "pageSize": 10},
        json={"customerID": "99999"},
        headers={"Authorization": f"Bearer {rig.sandbox.issue_token('u', ['CustomerOrder:Read'])}"},
    )
    assert (live.status_code, set(live.json())) == fixture_shape("orders_search__empty_404.json")
    assert list(rig.adapter.search_orders({"customerID": "99999"})) == []


def test_error_unauthorized_renews_once_then_is_an_auth_error(rig: Rig) -> None:
    routes = {**LOGIN, ("GET", "/api/customer/orders"): "error__unauthorized.json"}
    transport, seen = replay(routes)
    adapter = replay_adapter(transport)
    token = load_fixture("authenticate__ok.json")["body"]["token"]
    with pytest.raises(AuthError) as caught:
        list(adapter.poll_orders(None))
    assert caught.value.status == 401
    assert "The signature is invalid" in str(caught.value)
    assert token not in str(caught.value)
    calls = [(r.method, r.url.path) for r in seen]
    assert calls.count(("GET", "/api/customer/orders")) == 2  # the call, then one retry

    forged: dict[str, Any] = {"Authorization": "Bearer " + token[:-4] + "AAAA"}
    live = rig.control.get("/api/customer/orders", headers=forged)
    assert (live.status_code, set(live.json())) == fixture_shape("error__unauthorized.json")
    assert live.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
