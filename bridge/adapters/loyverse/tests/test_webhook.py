"""Webhook verification and parsing: one test per recorded payload, plus signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bridge.adapters.base import EventKind, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError
from bridge.adapters.loyverse import LoyverseAdapter
from bridge.adapters.loyverse.settings import LoyverseSettings
from bridge.canonical import normalize

from .conftest import Env, fixture_bytes

SECRET = "app-client-secret"


def _adapter(**settings: object) -> LoyverseAdapter:
    return LoyverseAdapter(LoyverseSettings(access_token="t", **settings))  # type: ignore[arg-type]


def _request(
    body: bytes, headers: dict[str, str] | None = None, path_token: str | None = None
) -> WebhookRequest:
    return WebhookRequest(
        url="https://bridge/hooks/loyverse", headers=headers or {}, body=body, path_token=path_token
    )


def _hmac(body: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha1).digest()


# -- fixtures ----------------------------------------------------------------------------


def test_customers_update_single() -> None:
    batch = _adapter().parse_webhook(_request(fixture_bytes("customers_update__single.json")))
    assert batch.unknown == []
    assert batch.ignored == []
    [event] = batch.events
    assert event.kind is EventKind.UPSERT
    assert event.event_type == "customers.update"
    assert event.external_id == "0a0b9a54-8e0b-4f3b-9f3c-2f6a8b1c7d01"
    assert event.record is not None
    assert event.record.version is None
    assert event.record.updated_at == datetime(2026, 3, 2, 10, 15, 30, 987000, tzinfo=UTC)
    assert not event.record.deleted
    assert event.record.native["total_visits"] == 17
    canonical = normalize(_adapter().to_canonical(event.record.native))
    assert canonical["full_name"] == "Mary Anne van der Berg"
    assert canonical["family_name"] == "van der Berg"
    assert canonical["phone_mobile"] == "+31205550142"
    assert canonical["billing_address"]["country"] == "NL"


def test_customers_update_batch_fans_out_one_event_per_customer() -> None:
    batch = _adapter().parse_webhook(_request(fixture_bytes("customers_update__batch.json")))
    assert [e.external_id for e in batch.events] == [
        "1b2c3d4e-0000-4f3b-9f3c-2f6a8b1c7d02",
        "0a0b9a54-8e0b-4f3b-9f3c-2f6a8b1c7d01",
        "2c3d4e5f-1111-4f3b-9f3c-2f6a8b1c7d03",
    ]
    assert {e.kind for e in batch.events} == {EventKind.UPSERT}
    assert len({e.event_id for e in batch.events}) == 3
    adapter = _adapter()
    moved = normalize(adapter.to_canonical(batch.events[1].record.native))  # type: ignore[union-attr]
    assert moved["billing_address"]["line2"] == "Unit 3"
    walkin = normalize(adapter.to_canonical(batch.events[2].record.native))  # type: ignore[union-attr]
    assert walkin["full_name"] is None
    assert walkin["email"] == "walkin@example.com"


def test_customers_update_deleted_is_a_delete_event() -> None:
    [event] = _adapter().parse_webhook(_request(fixture_bytes("customers_update__deleted.json"))).events
    assert event.kind is EventKind.DELETE
    assert event.record is not None
    assert event.record.deleted
    assert event.occurred_at == datetime(2026, 3, 3, 8, 0, 0, 511000, tzinfo=UTC)


def test_redelivered_batch_has_the_same_event_ids() -> None:
    body = fixture_bytes("customers_update__batch.json")
    first = [e.event_id for e in _adapter().parse_webhook(_request(body)).events]
    # A redelivery is re-serialised and stamped anew by Loyverse; the changes are the same.
    payload = json.loads(body)
    payload["created_at"] = "2026-03-02T10:25:00.000Z"
    again = [e.event_id for e in _adapter().parse_webhook(_request(json.dumps(payload).encode())).events]
    assert first == again


def test_a_later_change_of_the_same_customer_is_a_new_event() -> None:
    single = _adapter().parse_webhook(_request(fixture_bytes("customers_update__single.json"))).events[0]
    batch = _adapter().parse_webhook(_request(fixture_bytes("customers_update__batch.json"))).events[1]
    assert single.external_id == batch.external_id
    assert single.event_id != batch.event_id


def test_other_loyverse_types_are_ignored_and_strange_ones_unknown() -> None:
    adapter = _adapter()
    ignored = adapter.parse_webhook(_request(b'{"type":"receipts.update","receipts":[]}'))
    assert ignored.ignored == ["receipts.update"]
    assert not ignored.events
    unknown = adapter.parse_webhook(_request(b'{"type":"loyalty.exploded"}'))
    assert unknown.unknown == ["loyalty.exploded"]
    assert not unknown.events
    assert adapter.handled_events == {"customers.update"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"customers":[]}',
        b'{"type":"customers.update"}',
        b'{"type":"customers.update","customers":[{}]}',
    ],
)
def test_malformed_bodies_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        _adapter().parse_webhook(_request(body))


# -- signatures --------------------------------------------------------------------------


def test_signature_base64_verifies() -> None:
    body = fixture_bytes("customers_update__single.json")
    signature = base64.b64encode(_hmac(body)).decode()
    _adapter(client_secret=SECRET).verify_webhook(_request(body, {"x-loyverse-signature": signature}))


def test_signature_hex_verifies_in_either_case() -> None:
    body = fixture_bytes("customers_update__single.json")
    adapter = _adapter(client_secret=SECRET)
    adapter.verify_webhook(_request(body, {"x-loyverse-signature": _hmac(body).hex()}))
    adapter.verify_webhook(_request(body, {"x-loyverse-signature": _hmac(body).hex().upper()}))


def test_signature_made_with_another_secret_is_refused() -> None:
    body = fixture_bytes("customers_update__single.json")
    wrong = base64.b64encode(_hmac(body, "someone-else")).decode()
    with pytest.raises(SignatureError):
        _adapter(client_secret=SECRET).verify_webhook(_request(body, {"x-loyverse-signature": wrong}))


def test_signature_of_a_tampered_body_is_refused() -> None:
    body = fixture_bytes("customers_update__single.json")
    signature = base64.b64encode(_hmac(body)).decode()
    tampered = body.replace(b"oat milk", b"soy milk")
    with pytest.raises(SignatureError):
        _adapter(client_secret=SECRET).verify_webhook(_request(tampered, {"x-loyverse-signature": signature}))


def test_missing_signature_is_refused_when_a_secret_is_configured() -> None:
    body = fixture_bytes("customers_update__single.json")
    with pytest.raises(SignatureError):
        _adapter(client_secret=SECRET, webhook_path_token="p").verify_webhook(_request(body, path_token="p"))


def test_unsigned_source_falls_back_to_the_path_token() -> None:
    body = fixture_bytes("customers_update__single.json")
    adapter = _adapter(webhook_path_token="s3cret-path")
    adapter.verify_webhook(_request(body, path_token="s3cret-path"))
    with pytest.raises(SignatureError):
        adapter.verify_webhook(_request(body, path_token="guess"))
    with pytest.raises(SignatureError):
        _adapter().verify_webhook(_request(body, path_token="anything"))


@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_sandbox_webhooks_verify_and_parse(make_env: Callable[..., Env], encoding: str) -> None:
    env = make_env(client_secret=SECRET, signature_encoding=encoding)
    adapter = env.adapter(client_secret=SECRET)
    created = adapter.create(adapter.from_canonical({"full_name": "Ada Lovelace"}), "k1")
    env.drain()
    [(headers, body)] = env.receiver.deliveries
    request = _request(body, headers)
    adapter.verify_webhook(request)
    [event] = adapter.parse_webhook(request).events
    assert event.external_id == created.external_id
    assert event.record is not None
    assert event.record.native["name"] == "Ada Lovelace"
