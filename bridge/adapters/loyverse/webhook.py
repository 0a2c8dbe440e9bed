"""Loyverse webhooks: verify the signature, fan a batch out into inbound events.

Loyverse sends one type for customers, `customers.update`, for creates, updates and
soft deletes alike, with several customers batched into one body:
`{merchant_id, type, created_at, customers: [...]}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from bridge.adapters.base import (
    EventKind,
    ExternalRecord,
    InboundEvent,
    WebhookBatch,
    WebhookRequest,
    load_json_body,
)
from bridge.adapters.errors import PayloadError, SignatureError
from bridge.adapters.loyverse.client import parse_ts

SIGNATURE_HEADER = "x-loyverse-signature"
CUSTOMERS_UPDATE = "customers.update"


def sign(body: bytes, secret: str, encoding: str = "base64") -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def verify_signature(request: WebhookRequest, secret: str) -> None:
    """HMAC-SHA1 of the raw body; reports disagree on base64 vs hex, so accept both."""
    given = (request.headers.get(SIGNATURE_HEADER) or "").strip()
    if not given:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    # Compare every candidate (no early exit) so timing does not tell which form matched.
    matches = [
        hmac.compare_digest(given.encode(), sign(request.body, secret, "base64").encode()),
        hmac.compare_digest(given.lower().encode(), sign(request.body, secret, "hex").encode()),
    ]
    if not any(matches):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")


def event_id(customer: dict[str, Any]) -> str:
    """Deterministic per (customer, change), so a redelivered batch deduplicates."""
    stamp = customer.get("updated_at")
    if not stamp:
        blob = json.dumps(customer, sort_keys=True, separators=(",", ":"), default=str)
        stamp = "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
    return f"loyverse:customer:{customer['id']}:{stamp}"


def record_of(customer: dict[str, Any]) -> ExternalRecord:
    return ExternalRecord(
        external_id=str(customer["id"]),
        native=customer,
        version=None,
        updated_at=parse_ts(customer.get("updated_at")),
        deleted=bool(customer.get("deleted_at")),
    )


def _customers_update(payload: dict[str, Any]) -> list[InboundEvent]:
    customers = payload.get("customers")
    if not isinstance(customers, list):
        raise PayloadError("customers.update without a customers list")
    try:
        sent_at = parse_ts(payload.get("created_at"))
    except ValueError as err:
        raise PayloadError(f"bad created_at ({err})") from err
    events: list[InboundEvent] = []
    for customer in customers:
        if not isinstance(customer, dict) or not customer.get("id"):
            raise PayloadError("customers.update entry without an id")
        if not isinstance(customer["id"], str):
            raise PayloadError("customers.update entry whose id is not a string")
        try:
            record = record_of(customer)
        except ValueError as err:
            raise PayloadError(f"customer {customer['id']}: bad updated_at ({err})") from err
        events.append(
            InboundEvent(
                event_id=event_id(customer),
                kind=EventKind.DELETE if record.deleted else EventKind.UPSERT,
                external_id=record.external_id,
                event_type=CUSTOMERS_UPDATE,
                record=record,
                occurred_at=record.updated_at or sent_at,
            )
        )
    return events


HANDLERS: dict[str, Callable[[dict[str, Any]], list[InboundEvent]]] = {
    CUSTOMERS_UPDATE: _customers_update,
}
# The other webhook types Loyverse offers: valid, but nothing to do with customers.
IGNORED: frozenset[str] = frozenset(
    {"inventory_levels.update", "items.update", "receipts.update", "shifts.create"}
)


def parse(body: bytes) -> WebhookBatch:
    payload = load_json_body(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise PayloadError("webhook body without a type")
    kind = payload["type"]
    batch = WebhookBatch()
    handler = HANDLERS.get(kind)
    if handler is not None:
        batch.events.extend(handler(payload))
    elif kind in IGNORED:
        batch.ignored.append(kind)
    else:
        batch.unknown.append(kind)
    return batch
