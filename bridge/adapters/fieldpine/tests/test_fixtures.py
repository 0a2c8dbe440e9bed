"""Recorded responses: the adapter reads each one right, and the sandbox still answers in its shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from bridge.adapters.errors import AuthError, PermanentError, RateLimitedError, RetryableError
from bridge.adapters.fieldpine import FieldpineAdapter
from bridge.adapters.fieldpine.client import (
    FieldpineClient,
    StreamFormatError,
    error_from_response,
    iter_data,
)
from bridge.canonical import normalize

from .conftest import fixture_bytes, fixture_json, make_adapter


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def replay(name: str, status: int = 200, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    """Vendor replay: every request gets the recorded body (the vendor, not our code, is faked)."""
    body = fixture_bytes(name)
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body, headers=headers or {}))


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def test_customers_page(http: httpx.Client) -> None:
    adapter = make_adapter(replay("customers__page.json"))
    records = list(adapter.poll(None))
    assert [r.external_id for r in records] == [
        "16D33318-1AB4-4728-806D-928DD3C07F01",
        "0B6A4C1E-2F0D-4A5B-9C3E-7D8F9A0B1C2D",
    ]
    pat, cafe = (normalize(adapter.to_canonical(r.native)) for r in records)
    assert pat["full_name"] is None
    assert pat["given_name"] == "Pat"
    assert pat["email"] == "pat.benatar@example.com"
    assert pat["phone_mobile"] == "+61412345678"
    assert pat["billing_address"] == {"line1": "123 Riverlands Road", "line2": "Perth"}
    assert cafe["full_name"] == "Riverlands Cafe"
    assert cafe["company_name"] == "Riverlands Cafe"
    assert records[1].updated_at is not None
    assert records[1].updated_at.isoformat() == "2026-11-19T22:03:07.500000+00:00"
    # The sandbox still answers in the recorded shape.
    http.post("/_sandbox/edit", json={"fields": {"Name": "x", "AccountId": 5}})
    http.post("/_sandbox/edit", json={"fields": {"Name": "y"}})
    live = http.get("/OpenApi2/Customers", params={"filter": "account"}).json()
    recorded = fixture_json("customers__page.json")
    assert set(live) == set(recorded)
    assert [set(row) for row in live["Data"]] == [set(row) for row in recorded["Data"][:1]]
    assert shape(live["Data"][0]["LastEditDt"]) == "str"


def test_customers_empty(http: httpx.Client) -> None:
    adapter = make_adapter(replay("customers__empty.json"))
    assert list(adapter.poll(None)) == []
    assert adapter.fetch(str(uuid.uuid4())) is None
    assert http.get("/OpenApi2/Customers").json() == fixture_json("customers__empty.json")


def test_customers_created(http: httpx.Client) -> None:
    adapter = make_adapter(replay("customers__created.json"))
    created = adapter.create({"Name": "Aroha Ngata"}, "A58739DC-9E4E-5087-981F-C0EDF6E76F38")
    assert created.external_id == "A58739DC-9E4E-5087-981F-C0EDF6E76F38"
    assert created.native == fixture_json("customers__created.json")["Data"][0]
    live = http.post("/OpenApi2/Customers", json={"Name": "Aroha Ngata"}).json()
    assert shape(live) == shape(fixture_json("customers__created.json"))


def test_post_answer_without_record_is_read_back() -> None:
    # The POST answer is undocumented: one without the record makes the adapter fetch it.
    page = fixture_json("customers__page.json")

    def vendor(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"Result": "OK"})
        return httpx.Response(200, json={"RecordCount": 1, "Data": page["Data"][:1]})

    adapter = make_adapter(httpx.MockTransport(vendor))
    created = adapter.create({"Name": "Pat Benatar"}, "16d33318-1ab4-4728-806d-928dd3c07f01")
    assert created.external_id == "16D33318-1AB4-4728-806D-928DD3C07F01"


def test_error_bad_customer_id(http: httpx.Client) -> None:
    adapter = make_adapter(replay("error__bad_customer_id.json", status=400))
    with pytest.raises(PermanentError) as err:
        adapter.update(str(uuid.uuid4()), {"Name": "x"}, None)
    assert str(err.value) == "Fieldpine error 2003: CustomerId 'cust-42' is not a valid UUID"
    live = http.post("/OpenApi2/Customers", json={"CustomerId": "cust-42"})
    assert live.status_code == 400
    assert live.json() == fixture_json("error__bad_customer_id.json")


def test_error_unauthorized(transport: httpx.BaseTransport) -> None:
    adapter = make_adapter(replay("error__unauthorized.json", status=401))
    with pytest.raises(AuthError):
        adapter.probe()
    with httpx.Client(transport=transport, base_url="http://sandbox") as anon:
        live = anon.get("/OpenApi2/Customers")
    assert live.status_code == 401
    assert live.json() == fixture_json("error__unauthorized.json")


def test_error_rate_limited(http: httpx.Client) -> None:
    adapter = make_adapter(replay("error__rate_limited.json", status=429, headers={"Retry-After": "120"}))
    with pytest.raises(RateLimitedError) as err:
        list(adapter.poll(None))
    assert err.value.retry_after == 120
    http.post("/_sandbox/faults", json={"rate_limit_rate": 1.0})
    live = http.get("/OpenApi2/Customers")
    assert live.status_code == 429
    assert live.json() == fixture_json("error__rate_limited.json")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_iter_data_is_independent_of_chunking(size: int) -> None:
    body = fixture_bytes("customers__page.json")
    expected = json.loads(body)["Data"]
    assert list(iter_data(chunked(body, size))) == expected
    # Multi-byte characters split across chunks, numbers split across chunks, other keys after Data.
    tricky = json.dumps(
        {"Data": [{"Name": "Zoë Ōtaki ✓", "AccountId": 1234567890}, 12345, "x"], "RecordCount": 3},
        ensure_ascii=False,
    ).encode()
    assert list(iter_data(chunked(tricky, size))) == [
        {"Name": "Zoë Ōtaki ✓", "AccountId": 1234567890},
        12345,
        "x",
    ]


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"Data": [{"a": 1}', b'{"Data": [1 2]}', b'{"Data": [1], "RecordCount": }'],
    ids=["empty", "not-object", "truncated", "missing-comma", "bad-value"],
)
def test_iter_data_rejects_malformed_bodies(body: bytes) -> None:
    with pytest.raises(StreamFormatError):
        list(iter_data(chunked(body, 4) or [b""]))


def test_iter_data_null_or_missing_data() -> None:
    assert list(iter_data([b'{"RecordCount": 0, "Data": null}'])) == []
    assert list(iter_data([b'{"RecordCount": 0}'])) == []
    assert list(iter_data([b"{}"])) == []


def test_truncated_listing_is_retryable() -> None:
    body = fixture_bytes("customers__page.json")[:-40]
    vendor = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    client = FieldpineClient(httpx.Client(transport=vendor, base_url="http://x"), None)
    with pytest.raises(RetryableError):
        list(client.iter_customers({"limit": 500}))


def test_error_from_non_json_body() -> None:
    response = httpx.Response(502, text="<html>Bad Gateway</html>")
    err = error_from_response(response)
    assert err.status == 502
    assert "Bad Gateway" in str(err)


def test_adapter_exports() -> None:
    assert FieldpineAdapter.__module__ == "bridge.adapters.fieldpine.adapter"
