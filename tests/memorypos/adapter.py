"""The memory POS adapter: the smallest complete implementation of the contract."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from bridge import canonical as c
from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    EventKind,
    ExternalRecord,
    InboundEvent,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.errors import (
    NotFoundError,
    PayloadError,
    SignatureError,
    error_for_status,
    parse_retry_after,
)


class MemorySettings(AdapterSettings):
    token: SecretStr
    webhook_secret: SecretStr = SecretStr("memsecret")


def _record(data: Mapping[str, Any]) -> ExternalRecord:
    return ExternalRecord(
        external_id=str(data["id"]),
        native=dict(data),
        version=int(data["version"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        deleted=bool(data.get("deleted")),
    )


class MemoryAdapter(Adapter):
    name = "memory"
    title = "Memory POS"
    capabilities = frozenset(
        {Capability.WEBHOOKS, Capability.POLLING, Capability.CREATE, Capability.UPDATE, Capability.DELETE}
    )
    settings_model = MemorySettings
    fields = frozenset({c.GIVEN_NAME, c.FAMILY_NAME, c.EMAIL, c.PHONE_MOBILE, c.NOTE, c.CUSTOMER_CODE})
    handled_events = frozenset({"customer.created", "customer.updated", "customer.deleted"})
    ignored_events = frozenset({"customer.viewed"})
    sandbox_class = "tests.memorypos.sandbox:MemorySandbox"

    @property
    def conf(self) -> MemorySettings:
        assert isinstance(self.settings, MemorySettings)
        return self.settings

    def default_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.conf.token.get_secret_value()}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http_client().request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                reason = response.json().get("message", response.text)
            except ValueError:
                reason = response.text
            raise error_for_status(
                response.status_code,
                f"{self.name}: {reason}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        return response

    # webhooks
    def verify_webhook(self, request: WebhookRequest) -> None:
        given = request.headers.get("x-memory-signature", "")
        expected = hmac.new(
            self.conf.webhook_secret.get_secret_value().encode(), request.body, hashlib.sha256
        ).hexdigest()
        if not given or not hmac.compare_digest(given, expected):
            raise SignatureError("x-memory-signature does not match")

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        try:
            body = json.loads(request.body)
        except ValueError as err:
            raise PayloadError(f"body is not JSON: {err}") from err
        if not isinstance(body, dict) or "type" not in body or "event_id" not in body:
            raise PayloadError("body must be an object with type and event_id", status=422)
        kind = body["type"]
        if kind in self.ignored_events:
            return WebhookBatch(ignored=[kind])
        if kind not in self.handled_events:
            return WebhookBatch(unknown=[kind])
        customer = body.get("customer")
        if not isinstance(customer, dict) or "id" not in customer:
            raise PayloadError("customer object missing", status=422)
        try:
            record = _record(customer)
        except (KeyError, ValueError, TypeError) as err:
            raise PayloadError(f"customer object malformed: {err}", status=422) from err
        return WebhookBatch(
            events=[
                InboundEvent(
                    event_id=str(body["event_id"]),
                    kind=EventKind.DELETE if kind == "customer.deleted" else EventKind.UPSERT,
                    external_id=record.external_id,
                    event_type=kind,
                    record=record,
                    occurred_at=record.updated_at,
                )
            ]
        )

    # reads
    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        params: dict[str, str | int] = {"updated_since": since.isoformat()} if since else {}
        offset: int | None = 0
        while offset is not None:
            page = self._call("GET", "/customers", params={**params, "offset": offset, "limit": 10}).json()
            for row in page["customers"]:
                yield _record(row)
            offset = page["next_offset"]

    def estimate_total(self) -> int | None:
        return len(self._call("GET", "/customers").json()["customers"])

    def fetch(self, external_id: str) -> ExternalRecord | None:
        try:
            return _record(self._call("GET", f"/customers/{external_id}").json())
        except NotFoundError:
            return None

    def probe(self) -> None:
        self._call("GET", "/customers", params={"updated_since": "9999"})

    # writes
    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        return _record(self._call("POST", "/customers", json=native).json())

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        body = dict(native)
        if version is not None:
            body["version"] = version
        return _record(self._call("PUT", f"/customers/{external_id}", json=body).json())

    def delete(self, external_id: str, version: int | None) -> None:
        self._call("DELETE", f"/customers/{external_id}")

    def find_existing(self, values: c.Values, idempotency_key: str) -> ExternalRecord | None:
        # No idempotency key on this POS: after a lost answer, look for what we sent.
        for row in self._call("GET", "/customers").json()["customers"]:
            record = _record(row)
            if record.deleted:
                continue
            held = c.normalize(self.to_canonical(record.native))
            if all(held.get(k) == v for k, v in values.items()):
                return record
        return None

    # mapping
    def to_canonical(self, native: Mapping[str, Any]) -> c.Values:
        return {
            c.GIVEN_NAME: native.get("first_name"),
            c.FAMILY_NAME: native.get("last_name"),
            c.EMAIL: native.get("email"),
            c.PHONE_MOBILE: native.get("phone"),
            c.NOTE: native.get("note"),
            c.CUSTOMER_CODE: native.get("code"),
        }

    def from_canonical(self, values: c.Values) -> dict[str, Any]:
        return {
            "first_name": values.get(c.GIVEN_NAME),
            "last_name": values.get(c.FAMILY_NAME),
            "email": values.get(c.EMAIL),
            "phone": values.get(c.PHONE_MOBILE),
            "note": values.get(c.NOTE),
            "code": values.get(c.CUSTOMER_CODE),
        }


class MemoryA(MemoryAdapter):
    """Refuses an update based on a stale version, like Square."""

    name = "mema"
    title = "Memory POS A"
    capabilities = MemoryAdapter.capabilities | {Capability.VERSIONED_WRITES}


class MemoryB(MemoryAdapter):
    """Takes any update as the new truth, like Fieldpine, OnSite and Loyverse."""

    name = "memb"
    title = "Memory POS B"

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        return super().update(external_id, native, None)
