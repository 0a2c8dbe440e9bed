"""Square webhooks: signature check and parsing into inbox events (Zulip style)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.adapters.base import EventKind, ExternalRecord, InboundEvent, WebhookBatch, load_json_body
from bridge.adapters.errors import PayloadError, SignatureError

SIGNATURE_HEADER = "x-square-hmacsha256-signature"

# Events about customers that carry nothing the canonical customer holds.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {
        "customer.custom_attribute.owned.updated",
        "customer.custom_attribute.owned.deleted",
        "customer.custom_attribute.visible.updated",
        "customer.custom_attribute.visible.deleted",
        "customer.custom_attribute_definition.owned.created",
        "customer.custom_attribute_definition.owned.updated",
        "customer.custom_attribute_definition.owned.deleted",
        "customer.custom_attribute_definition.visible.created",
        "customer.custom_attribute_definition.visible.updated",
        "customer.custom_attribute_definition.visible.deleted",
    }
)


def sign(signature_key: str, notification_url: str, body: bytes) -> str:
    digest = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(signature_key: str, notification_url: str, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(SIGNATURE_HEADER)
    if not given:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    expected = sign(signature_key, notification_url, body)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise SignatureError("Square signature does not match")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # Year 1 with a positive offset (or 9999 with a negative one) has no UTC equivalent.
        return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def record_of(customer: Mapping[str, Any], *, deleted: bool = False) -> ExternalRecord:
    version = customer.get("version")
    return ExternalRecord(
        external_id=str(customer["id"]),
        native=dict(customer),
        version=int(version) if isinstance(version, int) else None,
        updated_at=parse_time(customer.get("updated_at")),
        deleted=deleted,
    )


class _Envelope:
    """The parts of Square's event envelope every handler needs, checked once."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.type = payload.get("type")
        self.event_id = payload.get("event_id")
        data = payload.get("data")
        if not isinstance(self.type, str) or not self.type:
            raise PayloadError("event has no type", status=422)
        if not isinstance(self.event_id, str) or not self.event_id:
            raise PayloadError("event has no event_id", status=422)
        if not isinstance(data, Mapping):
            raise PayloadError("event has no data object", status=422)
        self.data = data
        obj = data.get("object")
        self.object: Mapping[str, Any] = obj if isinstance(obj, Mapping) else {}
        customer = self.object.get("customer")
        self.customer: Mapping[str, Any] | None = customer if isinstance(customer, Mapping) else None
        if self.customer is not None and not isinstance(self.customer.get("id"), str):
            raise PayloadError("data.object.customer has no id", status=422)
        data_id = data.get("id")
        self.customer_id = data_id if isinstance(data_id, str) and data_id else None
        if self.customer_id is None and self.customer is not None:
            self.customer_id = str(self.customer["id"])
        if self.customer_id is None:
            raise PayloadError("event names no customer (data.id)", status=422)
        self.occurred_at = parse_time(payload.get("created_at"))

    def merge(self) -> Mapping[str, Any] | None:
        context = self.object.get("event_context")
        merge = context.get("merge") if isinstance(context, Mapping) else None
        return merge if isinstance(merge, Mapping) else None

    def require_customer(self) -> Mapping[str, Any]:
        if self.customer is None:
            raise PayloadError(f"{self.type} without data.object.customer", status=422)
        return self.customer


def _created(env: _Envelope) -> InboundEvent:
    customer = env.require_customer()
    merge = env.merge()
    if merge is not None:
        sources = merge.get("from_customer_ids")
        target = merge.get("to_customer_id") or customer["id"]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise PayloadError("merge context without from_customer_ids", status=422)
        return InboundEvent(
            event_id=str(env.event_id),
            kind=EventKind.MERGE,
            external_id=str(target),
            event_type=str(env.type),
            record=record_of(customer),
            occurred_at=env.occurred_at,
            merged_from=tuple(sources),
        )
    return _upsert(env)


def _upsert(env: _Envelope) -> InboundEvent:
    customer = env.require_customer()
    return InboundEvent(
        event_id=str(env.event_id),
        kind=EventKind.UPSERT,
        external_id=str(customer["id"]),
        event_type=str(env.type),
        record=record_of(customer),
        occurred_at=env.occurred_at,
    )


def _deleted(env: _Envelope) -> InboundEvent:
    merge = env.merge()
    if merge is not None and merge.get("to_customer_id"):
        # A profile deleted because it was merged: the same merge as the new profile's
        # `customer.created`, which may arrive later or not at all. The engine re-reads
        # the surviving profile, so either event alone re-points the links.
        sources = merge.get("from_customer_ids")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise PayloadError("merge context without from_customer_ids", status=422)
        return InboundEvent(
            event_id=str(env.event_id),
            kind=EventKind.MERGE,
            external_id=str(merge["to_customer_id"]),
            event_type=str(env.type),
            record=None,
            occurred_at=env.occurred_at,
            merged_from=tuple(sources),
        )
    # The customer snapshot is optional on deletes; the id in data.id is what counts.
    return InboundEvent(
        event_id=str(env.event_id),
        kind=EventKind.DELETE,
        external_id=str(env.customer_id),
        event_type=str(env.type),
        record=record_of(env.customer, deleted=True) if env.customer is not None else None,
        occurred_at=env.occurred_at,
    )


HANDLERS: dict[str, Callable[[_Envelope], InboundEvent]] = {
    "customer.created": _created,
    "customer.updated": _upsert,
    "customer.deleted": _deleted,
}


def parse(body: bytes) -> WebhookBatch:
    payload = load_json_body(body)
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object", status=422)
    event_type = payload.get("type")
    batch = WebhookBatch()
    if isinstance(event_type, str) and event_type in IGNORED_EVENTS:
        batch.ignored.append(event_type)
        return batch
    if isinstance(event_type, str) and event_type and event_type not in HANDLERS:
        batch.unknown.append(event_type)
        return batch
    envelope = _Envelope(payload)
    batch.events.append(HANDLERS[str(envelope.type)](envelope))
    return batch
