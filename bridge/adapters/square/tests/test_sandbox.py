"""The sandbox over real HTTP: Square's rules, errors, paging, bulk, merges and webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from .conftest import HOOK_URL, SIGNATURE_KEY, World


def create(world: World, **body: object) -> dict:  # type: ignore[type-arg]
    response = world.http().post("/v2/customers", json=body)
    assert response.status_code == 200, response.text
    return response.json()["customer"]


def error_of(response) -> dict:  # type: ignore[no-untyped-def,type-arg]
    [error] = response.json()["errors"]
    return error


def test_401_without_token(world: World) -> None:
    response = world.http(token=None).get("/v2/customers")
    assert response.status_code == 401
    assert error_of(response)["category"] == "AUTHENTICATION_ERROR"


def test_restricted_tokens(world: World) -> None:
    world.sandbox.tokens = frozenset({"good"})
    assert world.http(token="bad").get("/v2/customers").status_code == 401
    assert world.http(token="good").get("/v2/customers").status_code == 200


@pytest.mark.parametrize(("limit", "code"), [(0, "VALUE_TOO_LOW"), (101, "VALUE_TOO_HIGH")])
def test_list_limit_bounds(world: World, limit: int, code: str) -> None:
    response = world.http().get("/v2/customers", params={"limit": limit})
    assert response.status_code == 400
    assert error_of(response)["code"] == code


def test_create_needs_one_identifying_field(world: World) -> None:
    response = world.http().post("/v2/customers", json={"note": "only a note"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "MISSING_REQUIRED_PARAMETER"


@pytest.mark.parametrize("phone", ["12345678", "+1234567890123456789", "call me"])
def test_invalid_phone(world: World, phone: str) -> None:
    response = world.http().post("/v2/customers", json={"phone_number": phone})
    assert error_of(response)["code"] == "INVALID_PHONE_NUMBER"


def test_invalid_email(world: World) -> None:
    response = world.http().post("/v2/customers", json={"email_address": "not-an-email"})
    assert error_of(response)["code"] == "INVALID_EMAIL_ADDRESS"


def test_create_defaults(world: World) -> None:
    customer = create(world, given_name="Ada", phone_number="+44 7911 123456", birthday="12-10")
    assert customer["version"] == 0
    assert customer["creation_source"] == "THIRD_PARTY"
    assert customer["birthday"] == "0000-12-10"
    assert customer["created_at"] == customer["updated_at"]


def test_idempotency_replay_and_reuse(world: World) -> None:
    first = create(world, idempotency_key="k", given_name="Ada")
    again = create(world, idempotency_key="k", given_name="Ada")
    assert again == first
    assert len(world.live()) == 1
    response = world.http().post("/v2/customers", json={"idempotency_key": "k", "given_name": "Bob"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "IDEMPOTENCY_KEY_REUSED"
    create(world, given_name="Ada")
    assert len(world.live()) == 2, "without a key Square never deduplicates"


def test_sparse_update_null_clears_and_version_checked(world: World) -> None:
    customer = create(world, given_name="Ada", family_name="Lovelace", address={"locality": "London"})
    http = world.http()
    response = http.put(f"/v2/customers/{customer['id']}", json={"family_name": None, "version": 0})
    updated = response.json()["customer"]
    assert "family_name" not in updated
    assert updated["given_name"] == "Ada"
    assert updated["version"] == 1
    assert updated["address"] == {"locality": "London"}
    stale = http.put(f"/v2/customers/{customer['id']}", json={"given_name": "X", "version": 0})
    error = error_of(stale)
    assert stale.status_code == 400
    assert (error["category"], error["code"]) == ("INVALID_REQUEST_ERROR", "CONFLICT")
    assert "version" in error["detail"]


def test_delete_with_version(world: World) -> None:
    customer = create(world, given_name="Ada")
    http = world.http()
    assert (
        error_of(http.delete(f"/v2/customers/{customer['id']}", params={"version": 3}))["code"] == "CONFLICT"
    )
    assert http.delete(f"/v2/customers/{customer['id']}", params={"version": 0}).json() == {}
    assert http.get(f"/v2/customers/{customer['id']}").status_code == 404
    assert [c["deleted"] for c in world.sandbox.ground_truth()] == [True]


def test_list_pages_with_cursor_and_count(world: World) -> None:
    for i in range(7):
        create(world, given_name=f"Name {i:02d}")
    http = world.http()
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "count": "true", **({"cursor": cursor} if cursor else {})}
        body = http.get("/v2/customers", params=params).json()
        assert body["count"] == 7
        seen += [c["given_name"] for c in body["customers"]]
        cursor = body.get("cursor")
        if not cursor:
            break
    assert seen == sorted(seen)
    assert len(set(seen)) == 7
    desc = http.get("/v2/customers", params={"sort_field": "CREATED_AT", "sort_order": "DESC"}).json()
    created = [c["created_at"] for c in desc["customers"]]
    assert len(created) == 7
    assert created == sorted(created, reverse=True)
    assert error_of(http.get("/v2/customers", params={"cursor": "garbage"}))["code"] == "INVALID_CURSOR"


def test_search_filters_and_together(world: World) -> None:
    a = create(
        world,
        given_name="Ada",
        email_address="Ada@Example.com",
        reference_id="R1",
        phone_number="+12125554240",
    )
    create(world, given_name="Bob", email_address="bob@example.com", reference_id="R2")
    world.transport.run(world.sandbox.till_edit({"fields": {"given_name": "Till", "reference_id": "R1"}}))
    http = world.http()

    def ids(filter_: dict) -> list[str]:  # type: ignore[type-arg]
        body = http.post("/v2/customers/search", json={"query": {"filter": filter_}}).json()
        return sorted(c["given_name"] for c in body.get("customers", []))

    assert ids({"email_address": {"exact": "ada@example.com"}}) == ["Ada"]
    assert ids({"email_address": {"fuzzy": "example.com"}}) == ["Ada", "Bob"]
    assert ids({"reference_id": {"exact": "R1"}}) == ["Ada", "Till"]
    assert ids({"reference_id": {"exact": "R1"}, "creation_source": {"values": ["THIRD_PARTY"]}}) == ["Ada"]
    assert ids({"creation_source": {"values": ["THIRD_PARTY"], "rule": "EXCLUDE"}}) == ["Till"]
    assert ids({"phone_number": {"exact": "+12125554240"}}) == ["Ada"]
    assert ids({"phone_number": {"fuzzy": "5554"}}) == ["Ada"]
    assert ids({"updated_at": {"start_at": a["updated_at"]}}) == ["Ada", "Bob", "Till"]
    assert ids({"created_at": {"end_at": "2000-01-01T00:00:00Z"}}) == []
    bad = http.post("/v2/customers/search", json={"query": {"filter": {"phone_number": {"exact": "555"}}}})
    assert bad.status_code == 400
    assert http.post("/v2/customers/search", json={"limit": 101}).status_code == 400


def test_list_and_search_lag_behind_writes(world: World) -> None:
    world.sandbox.set_faults({"consistency_lag_ms": 300})
    customer = create(world, given_name="Ada")
    http = world.http()
    assert http.get("/v2/customers").json() == {}
    assert http.get(f"/v2/customers/{customer['id']}").status_code == 200
    time.sleep(0.35)
    assert len(http.get("/v2/customers").json()["customers"]) == 1


def test_rate_limited(world: World) -> None:
    world.sandbox.set_faults({"rate_limit_rate": 1.0})
    error = error_of(world.http().get("/v2/customers"))
    assert (error["category"], error["code"]) == ("RATE_LIMIT_ERROR", "RATE_LIMITED")


def test_bulk_create_partial_failure_and_bulk_others(world: World) -> None:
    http = world.http()
    body = {"customers": {"k1": {"given_name": "Ada"}, "k2": {"email_address": "nope"}, "k3": {"note": "x"}}}
    responses = http.post("/v2/customers/bulk-create", json=body).json()["responses"]
    assert "customer" in responses["k1"]
    assert responses["k2"]["errors"][0]["code"] == "INVALID_EMAIL_ADDRESS"
    assert responses["k3"]["errors"][0]["code"] == "MISSING_REQUIRED_PARAMETER"
    ada = responses["k1"]["customer"]
    replay = http.post("/v2/customers/bulk-create", json={"customers": {"k1": {"given_name": "Ada"}}}).json()
    assert replay["responses"]["k1"]["customer"]["id"] == ada["id"]
    too_many = {"customers": {f"k{i}": {"given_name": "x"} for i in range(101)}}
    assert http.post("/v2/customers/bulk-create", json=too_many).status_code == 400
    updated = http.post(
        "/v2/customers/bulk-update",
        json={"customers": {ada["id"]: {"nickname": "A", "version": 0}, "NOPE": {"nickname": "B"}}},
    ).json()["responses"]
    assert updated[ada["id"]]["customer"]["nickname"] == "A"
    assert updated["NOPE"]["errors"][0]["code"] == "NOT_FOUND"
    got = http.post("/v2/customers/bulk-retrieve", json={"customer_ids": [ada["id"], "NOPE"]}).json()
    assert got["responses"][ada["id"]]["customer"]["version"] == 1
    assert "errors" in got["responses"]["NOPE"]
    gone = http.post("/v2/customers/bulk-delete", json={"customer_ids": [ada["id"], "NOPE"]}).json()
    assert gone["responses"][ada["id"]] == {}
    assert "errors" in gone["responses"]["NOPE"]
    assert world.live() == []


def test_api_writes_emit_signed_webhooks(world: World) -> None:
    customer = create(world, given_name="Ada")
    http = world.http()
    http.put(f"/v2/customers/{customer['id']}", json={"nickname": "A"})
    http.delete(f"/v2/customers/{customer['id']}")
    world.drain()
    assert sorted(e["type"] for e in world.receiver.events()) == [
        "customer.created",
        "customer.deleted",
        "customer.updated",
    ]
    for headers, raw in world.receiver.deliveries:
        digest = hmac.new(SIGNATURE_KEY.encode(), HOOK_URL.encode() + raw, hashlib.sha256).digest()
        assert headers["x-square-hmacsha256-signature"] == base64.b64encode(digest).decode()
    deleted = next(e for e in world.receiver.events() if e["type"] == "customer.deleted")
    assert deleted["data"]["deleted"] is True
    assert deleted["data"]["id"] == customer["id"]


def test_merge_creates_new_profile_and_deletes_the_old(world: World) -> None:
    a = create(world, given_name="Ada", email_address="ada@example.com")
    b = create(world, given_name="Ada", family_name="Lovelace")
    response = world.http().post("/_sandbox/merge", json={"customer_ids": [a["id"], b["id"]]})
    merged = response.json()["customer"]
    assert merged["family_name"] == "Lovelace"
    assert merged["email_address"] == "ada@example.com"
    assert [c["id"] for c in world.live()] == [merged["id"]]
    world.drain()
    events = [e for e in world.receiver.events() if e["data"]["object"].get("event_context")]
    created = [e for e in events if e["type"] == "customer.created"]
    assert len(created) == 1
    assert created[0]["data"]["object"]["event_context"]["merge"] == {
        "from_customer_ids": [a["id"], b["id"]],
        "to_customer_id": merged["id"],
    }
    assert sorted(e["data"]["id"] for e in events if e["type"] == "customer.deleted") == sorted(
        [a["id"], b["id"]]
    )


def test_till_edit_updates_and_notifies(world: World) -> None:
    customer = create(world, given_name="Ada")
    record = world.transport.run(world.sandbox.till_edit({"id": customer["id"], "fields": {"note": "VIP"}}))
    assert record["note"] == "VIP"
    assert record["version"] == 1
    world.drain()
    assert [e["type"] for e in world.receiver.events()].count("customer.updated") == 1
