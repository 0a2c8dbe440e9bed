"""The official `squareup` SDK (v46) drives the sandbox: our simulator speaks its protocol."""

from __future__ import annotations

import httpx
import pytest
from square import Square
from square.core.api_error import ApiError

from .conftest import World

NO_RETRIES = {"max_retries": 0}


@pytest.fixture
def sdk(world: World) -> Square:
    http = httpx.Client(transport=world.transport, base_url="http://sandbox")
    return Square(token="sdk-token", base_url="http://sandbox", httpx_client=http)


def test_sdk_round_trip(sdk: Square, world: World) -> None:
    created = sdk.customers.create(
        idempotency_key="sdk-1",
        given_name="Amelia",
        family_name="Earhart",
        email_address="amelia@example.com",
    ).customer
    assert created is not None
    assert created.id
    assert created.version == 0
    got = sdk.customers.get(created.id).customer
    assert got is not None
    assert got.email_address == "amelia@example.com"

    updated = sdk.customers.update(created.id, nickname="Meelie", version=0).customer
    assert updated is not None
    assert updated.version == 1
    with pytest.raises(ApiError) as info:
        sdk.customers.update(created.id, nickname="stale", version=0, request_options=NO_RETRIES)
    assert info.value.status_code == 400
    assert info.value.errors[0].code == "CONFLICT"

    found = sdk.customers.search(query={"filter": {"email_address": {"exact": "amelia@example.com"}}})
    assert [c.id for c in found.customers or []] == [created.id]

    bulk = sdk.customers.batch_create(
        customers={f"b{i}": {"given_name": f"Bulk {i:02d}"} for i in range(12)}
    ).responses
    assert bulk is not None
    assert all(r.customer is not None for r in bulk.values())

    names = [c.given_name for c in sdk.customers.list(limit=5)]
    assert len(names) == 13
    assert sdk.customers.list(limit=5).has_next

    sdk.customers.delete(created.id, version=1)
    with pytest.raises(ApiError) as gone:
        sdk.customers.get(created.id, request_options=NO_RETRIES)
    assert gone.value.status_code == 404
    assert len(world.live()) == 12
