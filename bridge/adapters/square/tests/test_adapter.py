"""The adapter against the sandbox over real HTTP (SDK inside, our error types outside)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from bridge.adapters.errors import (
    AuthError,
    ConflictError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from bridge.adapters.square import SquareAdapter
from bridge.adapters.square.client import OutcomeUnknownError
from bridge.canonical import normalize

from .conftest import World, make_settings

ADA = {
    "given_name": "Ada",
    "family_name": "Lovelace",
    "company_name": None,
    "nickname": None,
    "email": "ada@example.com",
    "phone_mobile": "+12125554240",
    "billing_address": {
        "line1": "12 St James's Sq",
        "city": "London",
        "postal_code": "SW1Y 4JH",
        "country": "GB",
    },
    "birthday": "--12-10",
    "note": None,
    "customer_code": "C-1",
}


def values(**changes: object) -> dict:  # type: ignore[type-arg]
    return normalize({**ADA, **changes})


def test_class_attributes() -> None:
    assert SquareAdapter.name == "square"
    assert SquareAdapter.max_bulk == 100
    assert SquareAdapter.handled_events == {"customer.created", "customer.updated", "customer.deleted"}
    assert SquareAdapter.sandbox_class == "bridge.adapters.square.sandbox:SquareSandbox"


def test_create_fetch_round_trip(world: World) -> None:
    a = world.adapter
    record = a.create(a.from_canonical(values()), "key-1")
    assert record.version == 0
    assert record.updated_at is not None
    assert normalize(a.to_canonical(record.native)) == values()
    fetched = a.fetch(record.external_id)
    assert fetched is not None
    assert fetched.native == record.native
    assert a.fetch("NO_SUCH_CUSTOMER") is None


def test_update_clears_emptied_fields_and_checks_version(world: World) -> None:
    a = world.adapter
    record = a.create(a.from_canonical(values()), "key-1")
    new = values(family_name=None, billing_address={"line1": "1 New St", "country": "GB"}, note="hi")
    updated = a.update(record.external_id, a.from_canonical(new), record.version)
    assert updated.version == 1
    assert normalize(a.to_canonical(updated.native)) == new
    with pytest.raises(ConflictError):
        a.update(record.external_id, a.from_canonical(values()), record.version)


def test_delete_with_version(world: World) -> None:
    a = world.adapter
    record = a.create(a.from_canonical(values()), "key-1")
    with pytest.raises(ConflictError):
        a.delete(record.external_id, 5)
    a.delete(record.external_id, record.version)
    a.delete(record.external_id, record.version)  # already gone: nothing to do
    assert a.fetch(record.external_id) is None


def test_validation_error_is_permanent_with_square_detail(world: World) -> None:
    a = world.adapter
    with pytest.raises(PermanentError, match="INVALID_EMAIL_ADDRESS"):
        a.create(a.from_canonical(values(email="not-an-email")), "key-1")


def test_auth_error_from_probe(world: World) -> None:
    world.sandbox.tokens = frozenset({"right"})
    with pytest.raises(AuthError):
        world.adapter.probe()
    SquareAdapter(make_settings(access_token="right"), transport=world.transport).probe()


def test_rate_limit_is_not_retried_by_the_sdk(world: World) -> None:
    world.sandbox.set_faults({"rate_limit_rate": 1.0})
    with pytest.raises(RateLimitedError):
        world.adapter.probe()
    assert world.sandbox.stats["requests"]["GET /v2/customers"] == 1


def test_server_error_is_retryable(world: World) -> None:
    world.sandbox.set_faults({"error_rate": 1.0})
    with pytest.raises(RetryableError) as info:
        world.adapter.fetch("X")
    assert info.value.status == 500


def test_poll_since_pages_through_everything_changed(world: World) -> None:
    a = world.adapter
    old = [
        a.create(a.from_canonical(values(email=f"old{i}@example.com", customer_code=None)), f"o{i}")
        for i in range(3)
    ]
    time.sleep(0.005)  # timestamps have millisecond precision: keep `old` strictly before
    since = datetime.now(UTC)
    time.sleep(0.005)
    fresh = [
        a.create(a.from_canonical(values(email=f"new{i}@example.com", customer_code=None)), f"n{i}")
        for i in range(205)
    ]
    a.update(old[0].external_id, a.from_canonical(values(email="old0@example.com", note="touched")), 0)
    polled = {r.external_id for r in a.poll(since)}
    assert polled == {r.external_id for r in fresh} | {old[0].external_id}
    assert len({r.external_id for r in a.poll(None)}) == 208
    assert world.sandbox.stats["requests"]["POST /v2/customers/search"] >= 3 + 3


def test_find_existing_after_lost_response(world: World) -> None:
    a = world.adapter
    world.sandbox.set_faults({"lose_response_after_commit_rate": 1.0})
    with pytest.raises(OutcomeUnknownError):
        a.create(a.from_canonical(values()), "key-1")
    world.sandbox.set_faults({"lose_response_after_commit_rate": 0.0})
    found = a.find_existing(values(), "key-1")
    assert found is not None
    assert found.native["creation_source"] == "THIRD_PARTY"
    assert (
        a.find_existing(values(email="other@example.com", customer_code="C-2", phone_mobile=None), "k")
        is None
    )


def test_find_existing_ignores_profiles_made_at_the_till(world: World) -> None:
    a = world.adapter
    world.transport.run(world.sandbox.till_edit({"fields": a.from_canonical(values())}))
    assert a.find_existing(values(), "key-1") is None


def test_reused_key_with_changed_body_updates_the_profile_it_made(world: World) -> None:
    a = world.adapter
    first = a.create(a.from_canonical(values()), "key-1")
    second = a.create(a.from_canonical(values(note="changed meanwhile")), "key-1")
    assert second.external_id == first.external_id
    assert second.native["note"] == "changed meanwhile"
    assert len(world.live()) == 1


def test_reused_key_not_findable_yet_is_retryable(world: World) -> None:
    a = world.adapter
    world.sandbox.set_faults({"consistency_lag_ms": 60_000})
    a.create(a.from_canonical(values()), "key-1")
    with pytest.raises(RetryableError):
        a.create(a.from_canonical(values(note="changed")), "key-1")
    assert len(world.live()) == 1


def test_create_many_keeps_input_order_with_partial_failure(world: World) -> None:
    a = world.adapter
    items = [(f"k{i}", a.from_canonical(values(email=f"p{i}@example.com"))) for i in range(150)]
    items[3] = ("k3", a.from_canonical(values(email="broken")))
    results = a.create_many(items)
    assert len(results) == 150
    assert isinstance(results[3], PermanentError)
    assert "INVALID_EMAIL_ADDRESS" in str(results[3])
    for i, result in enumerate(results):
        if i != 3:
            assert not isinstance(result, Exception)
            assert result.native["email_address"] == f"p{i}@example.com"
    assert world.sandbox.stats["requests"]["POST /v2/customers/bulk-create"] == 2
    retry = a.create_many([items[0], items[1]])
    assert [r.external_id for r in retry] == [results[0].external_id, results[1].external_id]  # type: ignore[union-attr]


def test_lost_responses_never_make_two_profiles(world: World) -> None:
    a = world.adapter
    world.sandbox.set_faults({"lose_response_after_commit_rate": 0.3, "seed": 11})
    lost = 0
    for i in range(200):
        wanted = values(email=f"person{i}@example.com", customer_code=f"C-{i}")
        native = a.from_canonical(wanted)
        key = f"00000000-0000-4000-8000-{i:012d}"
        for _attempt in range(20):
            try:
                a.create(native, key)
                break
            except OutcomeUnknownError:
                lost += 1
                try:
                    if a.find_existing(wanted, key) is not None:
                        break
                except RetryableError:
                    continue  # the search answer was lost too: create again with the same key
    assert lost > 20
    assert len(world.live()) == 200
