"""Fieldpine hooks: verified, then turned into triggers.

Fieldpine's own advice is to treat a hook as a trigger and re-read the record with the
API key, so no hook carries a record here; the engine calls `fetch()`. Event names and
the body are undocumented beyond "record changed" JSON POSTs; we read
`{"Event": "CustomerChanged", "CustomerId": ..., "EventId": ..., "Time": ...}`, alone or
batched in a JSON array (retailers can ask Fieldpine to "batch up" hooks).
`X-Fieldpine-HMAC` is checked as lower- or upper-case hex HMAC-SHA256 of the raw body
(the algorithm is undocumented; this is what our sandbox sends).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from bridge.adapters.base import EventKind, InboundEvent, WebhookBatch, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError

SIGNATURE_HEADER = "x-fieldpine-hmac"
CUSTOMER_CHANGED = "CustomerChanged"


def verify_signature(request: WebhookRequest, secret: SecretStr) -> None:
    given = request.headers.get(SIGNATURE_HEADER, "").strip().lower()
    if not given:
        raise SignatureError("X-Fieldpine-HMAC header missing")
    expected = hmac.new(secret.get_secret_value().encode(), request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("X-Fieldpine-HMAC does not match the body")


def _occurred_at(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
        # Year 1 with a positive offset (or 9999 with a negative one) has no UTC equivalent.
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _customer_changed(event: Mapping[str, Any], raw: bytes) -> InboundEvent:
    try:
        customer_id = str(uuid.UUID(str(event.get("CustomerId")))).upper()
    except ValueError as err:
        raise PayloadError("CustomerChanged without a valid CustomerId", status=422) from err
    # Without an EventId, redeliveries of one body must still deduplicate: use its digest.
    event_id = str(event.get("EventId") or "") or "sha256:" + hashlib.sha256(raw).hexdigest()
    return InboundEvent(
        event_id=f"fieldpine:{event_id}",
        kind=EventKind.TRIGGER,
        external_id=customer_id,
        event_type=CUSTOMER_CHANGED,
        record=None,
        occurred_at=_occurred_at(event.get("Time")),
    )


HANDLERS: dict[str, Callable[[Mapping[str, Any], bytes], InboundEvent]] = {
    CUSTOMER_CHANGED: _customer_changed,
}
# The other hook kinds Fieldpine offers (sale completion, e-mail requested, other records,
# errors, account balances, stock levels): acknowledged, nothing to do for customers.
IGNORED: frozenset[str] = frozenset(
    {
        "SaleCompleted",
        "EmailRequested",
        "ProductChanged",
        "LocationChanged",
        "StaffChanged",
        "ErrorDetected",
        "AccountBalanceChanged",
        "StockLevelChanged",
    }
)
HANDLED: frozenset[str] = frozenset(HANDLERS)


def parse(request: WebhookRequest) -> WebhookBatch:
    body = request.json()
    events = body if isinstance(body, list) else [body]
    batch = WebhookBatch()
    for event in events:
        if not isinstance(event, dict):
            raise PayloadError("hook event is not a JSON object")
        kind = str(event.get("Event") or "")
        handler = HANDLERS.get(kind)
        if handler is not None:
            raw = json.dumps(event, sort_keys=True).encode() if len(events) > 1 else request.body
            batch.events.append(handler(event, raw))
        elif kind in IGNORED:
            batch.ignored.append(kind)
        else:
            batch.unknown.append(kind or "<no Event>")
    return batch
