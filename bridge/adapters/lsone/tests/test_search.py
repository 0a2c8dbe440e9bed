"""Every documented search filter of POST /api/customer/orders/search, through the client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.adapters.errors import PermanentError
from bridge.adapters.lsone.mapping import format_datetime

from .conftest import Rig

GID_A = "2cd5ace7-24cb-4023-8fb6-d4f799bb20cc"
DELIVERY_A = "0a6f6a4b-d5c3-4243-9bd2-52020a60bfc7"
DELIVERY_B = "5b1d7c2e-0f4a-4e8b-9c3d-6a7e8f9a0b1c"
SOURCE_A = "dd8a8e29-4256-4816-a3f6-effc905bfc3f"
SOURCE_B = "e4c2b1a0-9f8e-4d7c-8b6a-5f4e3d2c1b0a"


@pytest.fixture
def shop(rig: Rig) -> Rig:
    rig.till(
        {
            "gid": GID_A,
            "reference": "Order1",
            "customerID": "00013",
            "customerName": "Ada Lovelace",
            "delivery": DELIVERY_A,
            "source": SOURCE_A,
            "deliveryLocation": "0001",
            "comment": "Call before delivery",
            "status": 4,
            "expiryDate": "2022-10-18T16:39:02.227",
            "orderType": 1,
            "orderXml": "<CustomerOrder/>",
        }
    )
    rig.till(
        {
            "reference": "Quote7",
            "customerID": "00014",
            "customerName": "Grace Hopper",
            "delivery": DELIVERY_B,
            "source": SOURCE_B,
            "deliveryLocation": "0002",
            "comment": "gift wrap",
            "status": 8,
            "expiryDate": "2099-01-01T00:00:00",
            "orderType": 2,
        }
    )
    rig.till({"reference": "ORDER-22", "customerID": "00013", "deliveryLocation": "0001", "status": 128})
    return rig


def found(rig: Rig, filters: dict[str, Any]) -> set[str]:
    return {order.reference or "" for order in rig.adapter.search_orders(filters)}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"gid": GID_A.upper()}, {"Order1"}),
        ({"reference": "order"}, {"Order1", "ORDER-22"}),  # substring, like the vendor's example
        ({"customerID": "00013"}, {"Order1", "ORDER-22"}),
        ({"customerID": "0001"}, set()),  # ids match exactly
        ({"customerName": "hopper"}, {"Quote7"}),
        ({"delivery": DELIVERY_A}, {"Order1"}),
        ({"source": SOURCE_B.upper()}, {"Quote7"}),
        ({"deliveryLocation": "0001"}, {"Order1", "ORDER-22"}),
        ({"comment": "GIFT"}, {"Quote7"}),
        ({"status": 128}, {"ORDER-22"}),
        ({"status": 16}, set()),
        ({"expired": True}, {"Order1"}),
        ({"expired": False}, {"Quote7", "ORDER-22"}),
        ({"orderType": 2}, {"Quote7"}),
        ({"orderType": 0}, set()),
        ({"customerID": "00013", "status": 4}, {"Order1"}),  # filters AND together
        ({"CUSTOMERID": "00014"}, {"Quote7"}),  # property names bind case-insensitively
        ({"status": None}, {"Order1", "Quote7", "ORDER-22"}),  # null filters nothing
        ({}, {"Order1", "Quote7", "ORDER-22"}),
        ({"unknownFilter": 1}, {"Order1", "Quote7", "ORDER-22"}),
    ],
)
def test_each_filter(shop: Rig, filters: dict[str, Any], expected: set[str]) -> None:
    assert found(shop, filters) == expected


def test_order_xml_only_when_asked_for(shop: Rig) -> None:
    [plain] = list(shop.adapter.search_orders({"gid": GID_A}))
    assert plain.native["orderXML"] == ""
    [full] = list(shop.adapter.search_orders({"gid": GID_A, "retrieveOrderXML": True}))
    assert full.native["orderXML"] == "<CustomerOrder/>"
    assert shop.adapter.fetch_order(GID_A).native["orderXML"] == "<CustomerOrder/>"  # type: ignore[union-attr]


def test_search_pages_through_all_matches(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(settings={"page_size": 2})
    for n in range(5):
        created = format_datetime(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
        rig.till({"reference": f"R{n}", "customerID": "00013", "createdDate": created})
    rig.till({"reference": "other", "customerID": "00099"})
    refs = [o.reference for o in rig.adapter.search_orders({"customerID": "00013"})]
    assert refs == [f"R{n}" for n in range(5)]
    assert rig.requests("POST /api/customer/orders/search") == 3


def test_a_search_matching_nothing_is_404_and_no_orders(shop: Rig) -> None:
    assert found(shop, {"reference": "no such order"}) == set()
    page = shop.adapter.api.search_orders({"reference": "no such order"}, page=1, page_size=10)
    assert (page.items, page.total_count) == ([], 0)


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"status": "4"}, "status"),
        ({"expired": "yes"}, "expired"),
        ({"gid": "not-a-guid"}, "gid"),
        ({"orderType": 1.5}, "orderType"),
        ({"retrieveOrderXML": 1}, "retrieveOrderXML"),
    ],
)
def test_badly_typed_filters_are_refused_with_the_reason(
    shop: Rig, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        list(shop.adapter.search_orders(filters))
    assert caught.value.status == 400
    assert field in str(caught.value)
