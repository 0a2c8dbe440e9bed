"""The Fieldpine adapter: caller-chosen CustomerIds, hooks as triggers, streamed change scans."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    ExternalRecord,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.errors import PermanentError, RetryableError
from bridge.adapters.fieldpine import mapping, webhook
from bridge.adapters.fieldpine.client import FieldpineClient
from bridge.adapters.fieldpine.settings import FieldpineSettings
from bridge.canonical import Values

# Keys that are not UUIDs (the engine's are) still get a stable id of their own.
_KEY_NAMESPACE = uuid.UUID("5c0f3c1e-8f7a-5a52-9b0e-6d1f6a2f4b11")


def _updated_at(record: Mapping[str, Any]) -> datetime | None:
    value = record.get("LastEditDt")
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _canonical_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip())).upper()
    except ValueError:
        return None


class FieldpineAdapter(Adapter):
    name = "fieldpine"
    title = "Fieldpine"
    capabilities = frozenset({Capability.WEBHOOKS, Capability.POLLING, Capability.CREATE, Capability.UPDATE})
    settings_model = FieldpineSettings
    fields = mapping.FIELDS
    handled_events = webhook.HANDLED
    ignored_events = webhook.IGNORED
    max_bulk = 1
    sandbox_class = "bridge.adapters.fieldpine.sandbox:FieldpineSandbox"

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(settings, FieldpineSettings):
            raise TypeError("FieldpineAdapter needs FieldpineSettings")
        super().__init__(settings, transport)
        self.config = settings
        self._api: FieldpineClient | None = None

    def default_headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.config.api_key.get_secret_value(), "Accept": "application/json"}

    @property
    def api(self) -> FieldpineClient:
        if self._api is None or self._api.http is not self.http_client():
            self._api = FieldpineClient(self.http_client(), self.config.rm_system)
        return self._api

    def _record(self, native: dict[str, Any]) -> ExternalRecord:
        return ExternalRecord(
            external_id=_canonical_id(str(native.get("CustomerId"))) or str(native.get("CustomerId")),
            native=native,
            version=None,
            updated_at=_updated_at(native),
        )

    # -- webhooks ---------------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        if self.config.hook_secret is not None:
            webhook.verify_signature(request, self.config.hook_secret)
            return
        super().verify_webhook(request)

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        return webhook.parse(request)

    # -- reads ------------------------------------------------------------------------
    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        """Pages of `page_size`, newest edit first (Fieldpine's default order).

        A record edited while we page moves to page 1 and may be skipped here; its new edit
        date is after `since`, so the next scan (which starts at or before this one's
        start) picks it up. Rows that shift down may come twice; the engine's hash check
        makes that harmless.
        """
        params: dict[str, str | int] = {"limit": self.config.page_size}
        if since is not None:
            # Whole seconds and one second earlier: correct whether Fieldpine reads "after"
            # as inclusive or strict, and at second or finer precision.
            start = since.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=1)
            params["englishquery"] = f"editdtu after {start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        page = 1
        while True:
            rows = 0
            for native in self.api.iter_customers({**params, "page": page}):
                rows += 1
                yield self._record(native)
            if rows < self.config.page_size:
                return
            page += 1

    def fetch(self, external_id: str) -> ExternalRecord | None:
        customer_id = _canonical_id(external_id)
        if customer_id is None:
            return None  # Fieldpine ids are UUIDs; anything else cannot exist there
        # Fieldpine documents no get-by-id; `customerid <uuid>` is our sandbox's reading
        # of englishquery. Matching the id again here keeps a looser server honest.
        query: dict[str, str | int] = {"englishquery": f"customerid {customer_id}", "limit": 1}
        for native in self.api.iter_customers(query):
            if _canonical_id(str(native.get("CustomerId"))) == customer_id:
                return self._record(native)
        return None

    def probe(self) -> None:
        for _ in self.api.iter_customers({"limit": 1}):
            break

    # -- writes -----------------------------------------------------------------------
    def preassigned_id(self, idempotency_key: str) -> str:
        """The CustomerId we create with: the key itself (a UUID), in Fieldpine's upper case."""
        return _canonical_id(idempotency_key) or str(uuid.uuid5(_KEY_NAMESPACE, idempotency_key)).upper()

    def _post(self, customer_id: str, native: dict[str, Any]) -> ExternalRecord:
        body = {**native, "CustomerId": customer_id}
        stored = self.api.post_customer(body)
        if stored is None:
            # The answer's shape is undocumented; the id is ours, so read the record back.
            found = self.fetch(customer_id)
            if found is None:
                raise RetryableError(f"Fieldpine accepted customer {customer_id} but does not list it yet")
            return found
        return self._record(stored)

    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        # Same key -> same CustomerId -> a resend is the same customer, never a second one.
        customer_id = self.preassigned_id(idempotency_key)
        return self._post(customer_id, native)

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        customer_id = _canonical_id(external_id)
        if customer_id is None:
            raise PermanentError(f"{external_id!r} is not a Fieldpine CustomerId")
        return self._post(customer_id, native)

    def find_existing(self, values: Values, idempotency_key: str) -> ExternalRecord | None:
        customer_id = self.preassigned_id(idempotency_key)
        return self.fetch(customer_id)

    # -- mapping ----------------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        return mapping.to_canonical(native)

    def from_canonical(self, values: Values) -> dict[str, Any]:
        return mapping.from_canonical(values)
