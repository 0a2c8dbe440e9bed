"""The simulator's own contract: till edits, ground truth, reads by id, paging parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bridge.adapters.errors import PermanentError
from bridge.adapters.lsone.sandbox import LSOneSandbox

from .conftest import Rig


def bearer(rig: Rig) -> dict[str, str]:
    return {"Authorization": f"Bearer {rig.sandbox.issue_token('u', ['CustomerOrder:Read'])}"}


@pytest.mark.parametrize(
    "fields",
    [
        {"colour": "red"},
        {"status": 1},  # the vendor's sample shows 1, but it is not a documented status
        {"orderType": 3},
        {"source": "not-a-guid"},
        {"expiryDate": "tomorrow"},
        {"comment": 7},
        {"customerName": "Ada"},  # a name needs a customer account to belong to
    ],
)
def test_till_edits_are_validated(rig: Rig, fields: dict[str, Any]) -> None:
    response = rig.control.post("/_sandbox/edit", json={"fields": fields})
    assert response.status_code == 422
    assert rig.sandbox.ground_truth() == []


def test_till_edit_changes_an_order_but_not_its_identity(rig: Rig) -> None:
    order = rig.till({"reference": "R1", "customerID": "00013"})
    assert order["status"] == 32  # a fresh order is "new"
    changed = rig.till({"status": 64, "comment": "printed at T1"}, gid=order["gid"].upper())
    assert (changed["gid"], changed["status"], changed["comment"]) == (order["gid"], 64, "printed at T1")
    assert changed["createdDate"] == order["createdDate"]
    again = rig.control.post(
        "/_sandbox/edit", json={"id": order["gid"], "fields": {"createdDate": "2020-01-01T00:00:00"}}
    )
    assert again.status_code == 422
    missing = rig.control.post("/_sandbox/edit", json={"id": "7f1c2e90-3b7a-4d55-9a0e-5c2d8e4b6a11"})
    assert missing.status_code == 404
    assert rig.sandbox.stats["writes"] == 2


def test_ground_truth_lists_orders_and_flags_deleted_ones(rig: Rig) -> None:
    kept = rig.till({"reference": "kept"})
    gone = rig.till({"reference": "gone", "status": 512})
    truth = {o["gid"]: o for o in rig.control.get("/_sandbox/customers").json()["customers"]}
    assert truth[kept["gid"]]["deleted"] is False
    assert truth[gone["gid"]]["deleted"] is True
    # Deleted is a status like any other: the listing still shows the order.
    assert rig.adapter.fetch_order(gone["gid"]).status == "deleted"  # type: ignore[union-attr]


def test_get_one_unknown_is_404_and_fetch_gives_none(rig: Rig) -> None:
    assert rig.adapter.fetch_order("7f1c2e90-3b7a-4d55-9a0e-5c2d8e4b6a11") is None
    response = rig.control.get(
        "/api/customer/orders/7f1c2e90-3b7a-4d55-9a0e-5c2d8e4b6a11", headers=bearer(rig)
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "The requested customer order was not found"


def test_get_one_with_a_malformed_gid_is_a_validation_error(rig: Rig) -> None:
    with pytest.raises(PermanentError) as caught:
        rig.adapter.fetch_order("order-1")
    assert caught.value.status == 400


def test_get_all_answers_the_vendors_post_form_too(rig: Rig) -> None:
    rig.till({"reference": "R1"})
    response = rig.control.post("/api/customer/orders?page=1&pageSize=10", json={}, headers=bearer(rig))
    assert response.status_code == 200
    assert response.json()["totalCount"] == 1


@pytest.mark.parametrize(("page", "size"), [(0, 10), (1, 0), ("x", 10), (1, "ten")])
def test_bad_paging_parameters_are_refused(rig: Rig, page: Any, size: Any) -> None:
    response = rig.control.get(
        "/api/customer/orders", params={"page": page, "pageSize": size}, headers=bearer(rig)
    )
    assert response.status_code == 400
    assert response.json()["title"] == "One or more validation errors occurred."


def test_a_page_past_the_end_is_404(rig: Rig) -> None:
    rig.till({"reference": "R1"})
    response = rig.control.get("/api/customer/orders?page=2&pageSize=10", headers=bearer(rig))
    assert response.status_code == 404
    assert rig.adapter.api.list_orders(page=2, page_size=10).items == []


def test_search_without_a_body_is_refused(rig: Rig) -> None:
    response = rig.control.post("/api/customer/orders/search", headers=bearer(rig))
    assert response.status_code == 400


def test_calls_without_a_token_are_401_with_a_bearer_challenge(rig: Rig) -> None:
    response = rig.control.get("/api/customer/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_kit_tokens_restrict_the_accepted_passwords(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(tokens=["only-this"])
    ok = rig.control.post("/api/authorize/authenticate", json={"userName": "a", "password": "only-this"})
    refused = rig.control.post("/api/authorize/authenticate", json={"userName": "a", "password": "other"})
    assert (ok.status_code, refused.status_code) == (200, 401)


def test_orders_and_customer_names_survive_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "lsone.json"
    first = LSOneSandbox(persist_path=path)
    first.store.put(
        "a", {"gid": "a", "customerID": "00013", "status": 4, "createdDate": "2024-01-01T00:00:00"}
    )
    first.customer_names["00013"] = "Ada"
    first.committed()
    second = LSOneSandbox(persist_path=path)
    assert [o["customerID"] for o in second.ground_truth()] == ["00013"]
    assert second.customer_names == {"00013": "Ada"}


def test_reset_forgets_orders_grants_and_names(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(customer_names={"00001": "Seed"})
    rig.till({"reference": "R1", "customerID": "00013", "customerName": "Ada"})
    rig.adapter.probe()
    assert rig.control.post("/_sandbox/reset").status_code == 204
    assert rig.sandbox.ground_truth() == []
    assert rig.auth_stats()["refresh_grants"] == 0
    assert rig.sandbox.customer_names == {"00001": "Seed"}
