"""Parsing of recorded Square webhook bodies, and the signature check."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from bridge.adapters.base import EventKind, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError
from bridge.adapters.square import SquareAdapter

from .conftest import HOOK_URL, SIGNATURE_KEY, make_settings

FIXTURES = Path(__file__).parent.parent / "fixtures"


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def signed(raw: bytes, *, url: str = HOOK_URL, key: str = SIGNATURE_KEY) -> WebhookRequest:
    digest = hmac.new(key.encode(), url.encode() + raw, hashlib.sha256).digest()
    header = base64.b64encode(digest).decode()
    return WebhookRequest(url=url, headers={"x-square-hmacsha256-signature": header}, body=raw)


@pytest.fixture
def adapter() -> SquareAdapter:
    return SquareAdapter(make_settings())


def parse_one(adapter: SquareAdapter, name: str):  # type: ignore[no-untyped-def]
    batch = adapter.parse_webhook(signed(body(name)))
    assert not batch.unknown
    assert not batch.ignored
    assert len(batch.events) == 1
    return batch.events[0]


def test_created_basic(adapter: SquareAdapter) -> None:
    event = parse_one(adapter, "customer_created__basic")
    assert event.kind is EventKind.UPSERT
    assert event.event_type == "customer.created"
    assert event.event_id == "536c1ef3-01f5-44d4-9d53-e89634ab8599"
    assert event.record is not None
    assert event.record.version == 0
    assert event.external_id == event.record.external_id == event.record.native["id"]
    assert event.record.updated_at is not None
    assert event.record.updated_at.tzinfo is not None
    values = adapter.to_canonical(event.record.native)
    assert values["email"] == "Amelia.Earhart@example.com"
    assert values["customer_code"] == "YOUR_REFERENCE_ID"
    assert values["billing_address"]["line2"] == "Suite 600"


def test_created_merge(adapter: SquareAdapter) -> None:
    event = parse_one(adapter, "customer_created__merge")
    assert event.kind is EventKind.MERGE
    assert event.record is not None
    assert event.external_id == event.record.external_id
    assert len(event.merged_from) == 2
    assert event.external_id not in event.merged_from
    assert event.record.native["creation_source"] == "MERGE"


def test_updated_email_only(adapter: SquareAdapter) -> None:
    event = parse_one(adapter, "customer_updated__email_only")
    assert event.kind is EventKind.UPSERT
    assert event.record is not None
    assert event.record.version == 1
    assert adapter.to_canonical(event.record.native)["email"] == "new.amelia@example.com"


def test_updated_address(adapter: SquareAdapter) -> None:
    event = parse_one(adapter, "customer_updated__address")
    assert event.record is not None
    assert event.record.version == 2
    address = adapter.to_canonical(event.record.native)["billing_address"]
    assert address["city"] == "Brooklyn"
    assert "line2" not in address


def test_deleted_basic(adapter: SquareAdapter) -> None:
    event = parse_one(adapter, "customer_deleted__basic")
    assert event.kind is EventKind.DELETE
    assert event.record is not None
    assert event.record.deleted
    assert event.external_id == event.record.external_id


def test_deleted_merged(adapter: SquareAdapter) -> None:
    # A profile deleted by a merge is the same merge as the new profile's created event:
    # either one alone must re-point the links, whichever arrives first.
    event = parse_one(adapter, "customer_deleted__merged")
    merged = parse_one(adapter, "customer_created__merge")
    assert event.kind is EventKind.MERGE
    assert event.external_id == merged.external_id
    assert event.merged_from == merged.merged_from
    assert event.record is None  # the engine re-reads the surviving profile


def test_deleted_without_customer_snapshot(adapter: SquareAdapter) -> None:
    raw = b'{"type":"customer.deleted","event_id":"e1","data":{"type":"customer","id":"C1","deleted":true}}'
    [event] = adapter.parse_webhook(signed(raw)).events
    assert event.kind is EventKind.DELETE
    assert event.external_id == "C1"
    assert event.record is None


def test_unknown_type_is_reported_not_parsed(adapter: SquareAdapter) -> None:
    batch = adapter.parse_webhook(signed(body("loyalty_account_created__unknown")))
    assert batch.unknown == ["loyalty.account.created"]
    assert not batch.events


def test_ignored_type(adapter: SquareAdapter) -> None:
    batch = adapter.parse_webhook(signed(body("customer_custom_attribute_visible_updated__ignored")))
    assert batch.ignored == ["customer.custom_attribute.visible.updated"]
    assert not batch.events
    assert "customer.custom_attribute.visible.updated" in SquareAdapter.ignored_events


def test_not_json_is_400(adapter: SquareAdapter) -> None:
    with pytest.raises(PayloadError) as info:
        adapter.parse_webhook(signed(b"<xml/>"))
    assert info.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'{"type":"customer.updated","data":{"id":"C1","object":{"customer":{"id":"C1"}}}}',
        b'{"type":"customer.updated","event_id":"e1"}',
        b'{"type":"customer.updated","event_id":"e1","data":{"id":"C1","object":{}}}',
        b'{"type":"customer.created","event_id":"e1","data":{"id":"C1","object":{"customer":{"id":"C1"},'
        b'"event_context":{"merge":{"to_customer_id":"C1"}}}}}',
    ],
    ids=["array", "no-event-id", "no-data", "no-customer", "merge-without-sources"],
)
def test_wrong_shape_is_422(adapter: SquareAdapter, raw: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        adapter.parse_webhook(signed(raw))
    assert info.value.status == 422
    assert info.value.reason


def test_signature_valid(adapter: SquareAdapter) -> None:
    adapter.verify_webhook(signed(body("customer_created__basic")))


def test_signature_invalid(adapter: SquareAdapter) -> None:
    with pytest.raises(SignatureError):
        adapter.verify_webhook(signed(body("customer_created__basic"), key="another-key"))


def test_signature_header_missing(adapter: SquareAdapter) -> None:
    with pytest.raises(SignatureError):
        adapter.verify_webhook(WebhookRequest(url=HOOK_URL, headers={}, body=body("customer_created__basic")))


def test_body_altered_by_one_byte(adapter: SquareAdapter) -> None:
    request = signed(body("customer_created__basic"))
    altered = bytearray(request.body)
    altered[10] ^= 0x01
    with pytest.raises(SignatureError):
        adapter.verify_webhook(WebhookRequest(url=request.url, headers=request.headers, body=bytes(altered)))


def test_wrong_notification_url(adapter: SquareAdapter) -> None:
    with pytest.raises(SignatureError):
        adapter.verify_webhook(signed(body("customer_created__basic"), url=HOOK_URL + "/other"))


def test_no_signature_key_configured_refuses() -> None:
    adapter = SquareAdapter(make_settings(webhook_signature_key=None))
    with pytest.raises(SignatureError):
        adapter.verify_webhook(signed(body("customer_created__basic")))


def test_request_url_used_when_notification_url_unset() -> None:
    adapter = SquareAdapter(make_settings(notification_url=None))
    adapter.verify_webhook(signed(body("customer_created__basic"), url="https://elsewhere.test/h"))
