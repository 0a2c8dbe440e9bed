"""Hooks: one test per fixture and condition, plus the sandbox's own hooks end to end."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import httpx
import pytest

from bridge.adapters.base import EventKind, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError
from bridge.adapters.fieldpine import FieldpineAdapter
from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.sandbox.transport import SyncASGITransport

from .conftest import HOOK_SECRET, Receiver, fixture_bytes, make_adapter

URL = "https://bridge.example/hooks/fieldpine"


def signed(body: bytes, secret: str = HOOK_SECRET, upper: bool = False) -> WebhookRequest:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return WebhookRequest(
        url=URL,
        headers={
            "content-type": "application/json",
            "x-fieldpine-hmac": signature.upper() if upper else signature,
        },
        body=body,
    )


@pytest.fixture
def hooked(transport: SyncASGITransport) -> FieldpineAdapter:
    return make_adapter(transport, hook_secret=HOOK_SECRET)


def test_customer_changed_basic(hooked: FieldpineAdapter) -> None:
    request = signed(fixture_bytes("hook_customer_changed__basic.json"))
    hooked.verify_webhook(request)
    batch = hooked.parse_webhook(request)
    assert batch.ignored == []
    assert batch.unknown == []
    [event] = batch.events
    assert event.kind is EventKind.TRIGGER
    assert event.record is None  # a trigger: the engine re-reads through fetch()
    assert event.external_id == "16D33318-1AB4-4728-806D-928DD3C07F01"
    assert event.event_type == "CustomerChanged"
    assert event.event_id == "fieldpine:7C1E2D3F-4A5B-4C6D-8E9F-0A1B2C3D4E5F"
    assert event.occurred_at == datetime(2026, 11, 20, 9, 15, 42, 118000, tzinfo=UTC)


def test_customer_changed_bad_signature(hooked: FieldpineAdapter) -> None:
    body = fixture_bytes("hook_customer_changed__basic.json")
    with pytest.raises(SignatureError):
        hooked.verify_webhook(signed(body, secret="some-other-secret"))
    tampered = signed(body)
    with pytest.raises(SignatureError):
        hooked.verify_webhook(
            WebhookRequest(url=URL, headers=tampered.headers, body=body.replace(b"16D3", b"26D3"))
        )


def test_customer_changed_missing_signature(hooked: FieldpineAdapter) -> None:
    body = fixture_bytes("hook_customer_changed__basic.json")
    with pytest.raises(SignatureError):
        hooked.verify_webhook(WebhookRequest(url=URL, headers={}, body=body))


def test_customer_changed_upper_case_hex_signature(hooked: FieldpineAdapter) -> None:
    hooked.verify_webhook(signed(fixture_bytes("hook_customer_changed__basic.json"), upper=True))


def test_without_hook_secret_the_path_token_is_required(transport: SyncASGITransport) -> None:
    body = fixture_bytes("hook_customer_changed__basic.json")
    unconfigured = make_adapter(transport)
    with pytest.raises(SignatureError):
        unconfigured.verify_webhook(signed(body))  # a signature alone proves nothing here
    tokened = make_adapter(transport, webhook_path_token="s3cret-path")
    tokened.verify_webhook(WebhookRequest(url=URL, headers={}, body=body, path_token="s3cret-path"))
    with pytest.raises(SignatureError):
        tokened.verify_webhook(WebhookRequest(url=URL, headers={}, body=body, path_token="guess"))


def test_customer_changed_batched(hooked: FieldpineAdapter) -> None:
    request = signed(fixture_bytes("hook_customer_changed__batched.json"))
    hooked.verify_webhook(request)
    batch = hooked.parse_webhook(request)
    assert [e.external_id for e in batch.events] == [
        "16D33318-1AB4-4728-806D-928DD3C07F01",
        "0B6A4C1E-2F0D-4A5B-9C3E-7D8F9A0B1C2D",  # sent in lower case, ids are upper case
    ]
    assert [e.event_id for e in batch.events] == [
        "fieldpine:1F0E0B6A-0C55-4F3A-9D2B-6E0D3B8C1A01",
        "fieldpine:1F0E0B6A-0C55-4F3A-9D2B-6E0D3B8C1A03",
    ]
    assert batch.ignored == ["SaleCompleted"]


def test_customer_changed_no_event_id_deduplicates_on_the_body(hooked: FieldpineAdapter) -> None:
    body = fixture_bytes("hook_customer_changed__no_event_id.json")
    first = hooked.parse_webhook(signed(body)).events[0]
    again = hooked.parse_webhook(signed(body)).events[0]
    assert first.event_id == again.event_id
    assert first.event_id.startswith("fieldpine:sha256:")
    other = hooked.parse_webhook(signed(fixture_bytes("hook_customer_changed__basic.json"))).events[0]
    assert other.event_id != first.event_id


def test_stock_level_changed_ignored(hooked: FieldpineAdapter) -> None:
    batch = hooked.parse_webhook(signed(fixture_bytes("hook_stock_level_changed__ignored.json")))
    assert batch.events == []
    assert batch.unknown == []
    assert batch.ignored == ["StockLevelChanged"]
    assert "StockLevelChanged" in FieldpineAdapter.ignored_events


def test_voucher_issued_unknown(hooked: FieldpineAdapter) -> None:
    batch = hooked.parse_webhook(signed(fixture_bytes("hook_voucher_issued__unknown.json")))
    assert batch.events == []
    assert batch.ignored == []
    assert batch.unknown == ["VoucherIssued"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"Event": "CustomerChanged", "CustomerId": "cust-42"}',
        b'{"Event":"CustomerChanged"}',
    ],
    ids=["not-json", "not-objects", "bad-customer-id", "no-customer-id"],
)
def test_malformed_hooks_are_payload_errors(hooked: FieldpineAdapter, body: bytes) -> None:
    with pytest.raises(PayloadError):
        hooked.parse_webhook(signed(body))


def test_sandbox_hooks_verify_and_parse_end_to_end(
    hooked: FieldpineAdapter,
    http: httpx.Client,
    receiver: Receiver,
    transport: SyncASGITransport,
    sandbox: FieldpineSandbox,
) -> None:
    created = hooked.create(hooked.from_canonical({"given_name": "Pat", "email": "pat@example.com"}), "k-1")
    http.post("/_sandbox/edit", json={"id": created.external_id, "fields": {"Mobile": "+64 21 555 0100"}})
    assert transport.run(sandbox.webhooks.drain(10))
    events = []
    for headers, body in receiver.requests:
        request = WebhookRequest(url=URL, headers=headers, body=body)
        hooked.verify_webhook(request)
        events += hooked.parse_webhook(request).events
    assert [e.external_id for e in events] == [created.external_id] * 2
    assert len({e.event_id for e in events}) == 2
    # The trigger leads to a re-read that shows the till's edit.
    fetched = hooked.fetch(events[-1].external_id)
    assert fetched is not None
    assert fetched.native["Mobile"] == "+64 21 555 0100"


def test_sandbox_duplicate_hooks_share_an_event_id(
    hooked: FieldpineAdapter,
    http: httpx.Client,
    receiver: Receiver,
    transport: SyncASGITransport,
    sandbox: FieldpineSandbox,
) -> None:
    http.post("/_sandbox/faults", json={"webhook_duplicate_rate": 1.0})
    hooked.create({"Name": "Dup"}, "k-dup")
    assert transport.run(sandbox.webhooks.drain(10))
    assert len(receiver.requests) == 2
    ids = {hooked.parse_webhook(WebhookRequest(URL, h, b)).events[0].event_id for h, b in receiver.requests}
    assert len(ids) == 1
