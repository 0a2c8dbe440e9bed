"""The sandbox speaks Loyverse: plain HTTP against it, no adapter in between."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

from bridge.adapters.loyverse.client import parse_ts

from .conftest import Env

NEW = {"name": "Grace Hopper", "email": "grace@example.com", "phone_number": "+14155550100", "note": "VIP"}


def _codes(response: object) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]  # type: ignore[attr-defined]


def test_requests_without_a_valid_bearer_token_are_unauthorized(make_env: Callable[..., Env]) -> None:
    env = make_env(tokens=["only-this"])
    response = env.http.get("/customers", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert _codes(response) == ["UNAUTHORIZED"]
    anonymous = env.http.get("/customers", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    allowed = env.http.get("/customers", headers={"Authorization": "Bearer only-this"})
    assert allowed.status_code == 200
    assert allowed.json() == {"customers": [], "cursor": None}


def test_create_returns_the_full_record(env: Env) -> None:
    response = env.http.post("/customers", json=NEW)
    assert response.status_code == 201
    record = response.json()
    assert set(record) == {
        "id", "name", "email", "phone_number", "address", "city", "region", "postal_code",
        "country_code", "customer_code", "note", "first_visit", "last_visit", "total_visits",
        "total_spent", "total_points", "created_at", "updated_at", "deleted_at", "permanent_deletion_at",
    }  # fmt: skip
    assert record["name"] == "Grace Hopper"
    assert record["total_visits"] == 0
    assert record["created_at"] == record["updated_at"]
    assert record["created_at"].endswith("Z")
    assert env.http.get(f"/customers/{record['id']}").json() == record


def test_name_is_required(env: Env) -> None:
    for body in ({"email": "x@example.com"}, {"name": "   "}, {"name": None}):
        response = env.http.post("/customers", json=body)
        assert response.status_code == 400
        assert _codes(response) == ["MISSING_REQUIRED_PARAMETER"]
    assert env.stats()["writes"] == 0


def test_invalid_bodies_are_refused(env: Env) -> None:
    bad_json = env.http.post("/customers", content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert _codes(bad_json) == ["BAD_REQUEST"]
    assert _codes(env.http.post("/customers", json=["x"])) == ["BAD_REQUEST"]
    assert _codes(env.http.post("/customers", json={"name": "A", "email": "not-mail"})) == ["INVALID_VALUE"]
    assert _codes(env.http.post("/customers", json={"name": "A", "note": 5})) == ["INVALID_VALUE"]


def test_update_by_id_clears_every_omitted_field(env: Env) -> None:
    created = env.http.post("/customers", json=NEW).json()
    response = env.http.post("/customers", json={"id": created["id"], "name": "Grace B. Hopper"})
    assert response.status_code == 200
    updated = response.json()
    assert updated["name"] == "Grace B. Hopper"
    assert updated["email"] is None
    assert updated["phone_number"] is None
    assert updated["note"] is None
    assert updated["created_at"] == created["created_at"]
    assert parse_ts(updated["updated_at"]) > parse_ts(created["updated_at"])  # type: ignore[operator]


def test_update_of_an_unknown_id_is_not_found_and_creates_nothing(env: Env) -> None:
    response = env.http.post("/customers", json={"id": "5f1d6c1e-0000-4000-8000-000000000000", "name": "X"})
    assert response.status_code == 404
    assert _codes(response) == ["NOT_FOUND"]
    assert env.control.get("/customers").json()["count"] == 0


def test_get_of_an_unknown_id_is_not_found(env: Env) -> None:
    response = env.http.get("/customers/5f1d6c1e-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert _codes(response) == ["NOT_FOUND"]


def test_delete_is_a_soft_delete(env: Env) -> None:
    created = env.http.post("/customers", json=NEW).json()
    assert env.http.delete(f"/customers/{created['id']}").status_code == 200
    record = env.http.get(f"/customers/{created['id']}").json()
    deleted_at = parse_ts(record["deleted_at"])
    assert deleted_at is not None
    assert parse_ts(record["permanent_deletion_at"]) == deleted_at + timedelta(days=30)
    assert record["updated_at"] == record["deleted_at"]
    listed = env.http.get("/customers").json()["customers"]
    assert [c["deleted_at"] for c in listed] == [record["deleted_at"]]
    assert env.http.delete(f"/customers/{created['id']}").status_code == 404
    assert env.http.post("/customers", json={"id": created["id"], "name": "Back"}).status_code == 404
    [truth] = env.control.get("/customers").json()["customers"]
    assert truth["deleted"] is True


def test_permanently_deleted_customers_are_gone(make_env: Callable[..., Env]) -> None:
    env = make_env(permanent_deletion_after_s=0)
    created = env.http.post("/customers", json=NEW).json()
    env.http.delete(f"/customers/{created['id']}")
    assert env.http.get(f"/customers/{created['id']}").status_code == 404
    assert env.http.get("/customers").json()["customers"] == []


def test_limit_outside_1_to_250_is_invalid(env: Env) -> None:
    for limit in ("0", "251", "ten"):
        response = env.http.get("/customers", params={"limit": limit})
        assert response.status_code == 400
        assert _codes(response) == ["INVALID_VALUE"]
    assert env.http.get("/customers", params={"limit": "250"}).status_code == 200


def test_bad_dates_are_invalid(env: Env) -> None:
    response = env.http.get("/customers", params={"updated_at_min": "yesterday"})
    assert response.status_code == 400
    assert _codes(response) == ["INVALID_VALUE"]


def test_invalid_or_tampered_cursor(env: Env) -> None:
    for i in range(3):
        env.till({"name": f"C{i}"})
    cursor = env.http.get("/customers", params={"limit": 1}).json()["cursor"]
    assert cursor
    for bad in ("garbage", cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")):
        response = env.http.get("/customers", params={"cursor": bad})
        assert response.status_code == 400
        assert _codes(response) == ["INVALID_CURSOR"]


def test_cursor_pages_through_everything_once(env: Env) -> None:
    for i in range(600):
        env.till({"name": f"Customer {i}"})
    seen: list[str] = []
    sizes: list[int] = []
    params: dict[str, object] = {"limit": 250}
    while True:
        page = env.http.get("/customers", params=params).json()
        sizes.append(len(page["customers"]))
        seen.extend(c["name"] for c in page["customers"])
        if not page["cursor"]:
            break
        params = {"limit": 250, "cursor": page["cursor"]}
    assert sizes == [250, 250, 100]
    assert seen == [f"Customer {i}" for i in range(600)]


def test_cursor_keeps_the_filters_of_its_query(env: Env) -> None:
    for i in range(5):
        env.till({"name": f"N{i}", "email": "same@example.com" if i % 2 else f"u{i}@example.com"})
    first = env.http.get("/customers", params={"email": "same@example.com", "limit": 1}).json()
    second = env.http.get("/customers", params={"cursor": first["cursor"], "limit": 1}).json()
    assert [c["name"] for c in first["customers"] + second["customers"]] == ["N1", "N3"]
    assert second["cursor"] is None


def test_rate_limit_defaults_to_300_per_300_s_and_survives_reset(env: Env) -> None:
    faults = env.control.get("/faults").json()
    assert (faults["rate_limit_requests"], faults["rate_limit_window_s"]) == (300, 300.0)
    env.control.post("/faults", json={"rate_limit_requests": 5})
    assert env.control.post("/reset").status_code == 204
    faults = env.control.get("/faults").json()
    assert (faults["rate_limit_requests"], faults["rate_limit_window_s"]) == (300, 300.0)


def test_429_is_per_account_in_loyverse_shape_without_headers(make_env: Callable[..., Env]) -> None:
    env = make_env(rate_limit_requests=3, rate_limit_window_s=60)
    for _ in range(3):
        assert env.http.get("/customers").status_code == 200
    refused = env.http.get("/customers")
    assert refused.status_code == 429
    assert _codes(refused) == ["RATE_LIMITED"]
    assert "retry-after" not in refused.headers
    assert not [h for h in refused.headers if h.startswith("x-ratelimit")]
    other = env.http.get("/customers", headers={"Authorization": "Bearer another-account"})
    assert other.status_code == 200
    assert env.stats()["faults"] == {"429": 1}


def test_rate_limit_window_slides(make_env: Callable[..., Env]) -> None:
    env = make_env(rate_limit_requests=2, rate_limit_window_s=0.3)
    assert [env.http.get("/customers").status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(0.35)
    assert env.http.get("/customers").status_code == 200


def test_changes_within_the_window_go_out_as_one_unsigned_batch(env: Env) -> None:
    a = env.http.post("/customers", json=NEW).json()
    b = env.http.post("/customers", json={"name": "Alan Turing"}).json()
    env.http.post("/customers", json={"id": a["id"], "name": "Grace M. Hopper"})
    env.drain()
    [(headers, body)] = env.receiver.deliveries
    assert "x-loyverse-signature" not in headers
    payload = json.loads(body)
    assert payload["type"] == "customers.update"
    assert payload["merchant_id"]
    # Each customer once, in its latest state.
    assert [(c["id"], c["name"]) for c in payload["customers"]] == [
        (a["id"], "Grace M. Hopper"),
        (b["id"], "Alan Turing"),
    ]


def test_changes_further_apart_than_the_window_are_separate_posts(make_env: Callable[..., Env]) -> None:
    env = make_env(webhook_batch_window_s=0.05)
    env.http.post("/customers", json={"name": "One"})
    time.sleep(0.2)
    env.http.post("/customers", json={"name": "Two"})
    env.drain()
    assert [[c["name"] for c in body["customers"]] for body in env.receiver.bodies()] == [["One"], ["Two"]]


def test_till_edits_and_deletes_send_customers_update(env: Env) -> None:
    created = env.till({"name": "Till Person", "email": "till@example.com"})
    env.drain()
    edited = env.till({"note": "likes jazz"}, customer_id=created["id"])
    assert edited["email"] == "till@example.com"  # a till edit changes only what it touches
    env.drain()
    env.http.delete(f"/customers/{created['id']}")
    env.drain()
    bodies = env.receiver.bodies()
    assert [b["type"] for b in bodies] == ["customers.update"] * 3
    assert bodies[1]["customers"][0]["note"] == "likes jazz"
    assert bodies[2]["customers"][0]["deleted_at"] is not None


def test_till_edit_validation(env: Env) -> None:
    assert env.control.post("/edit", json={"fields": {"email": "x@example.com"}}).status_code == 422
    assert env.control.post("/edit", json={"fields": {"name": "A", "shoe_size": "9"}}).status_code == 422
    missing = env.control.post("/edit", json={"id": "nope", "fields": {"note": "x"}})
    assert missing.status_code == 404
