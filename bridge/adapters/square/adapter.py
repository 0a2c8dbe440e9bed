"""The Square adapter: class attributes plus the hooks the engine calls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    ExternalRecord,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.errors import (
    AdapterError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SignatureError,
)
from bridge.adapters.square import mapping, webhook
from bridge.adapters.square.client import (
    PAGE_LIMIT,
    IdempotencyKeyReusedError,
    SquareClient,
    error_from_codes,
)
from bridge.adapters.square.settings import SquareSettings
from bridge.canonical import CUSTOMER_CODE, EMAIL, PHONE_MOBILE, Values, is_e164, normalize

BULK_LIMIT = 100
_ADDRESS_KEYS = (
    "address_line_1",
    "address_line_2",
    "address_line_3",
    "locality",
    "administrative_district_level_1",
    "postal_code",
    "country",
)
# Square matches by one exact filter at a time (filters AND together, there is no OR).
_MATCH_FILTERS: tuple[tuple[str, str], ...] = (
    (CUSTOMER_CODE, "reference_id"),
    (EMAIL, "email_address"),
    (PHONE_MOBILE, "phone_number"),
)
# Creation time is the only stable order Square offers; new profiles land after the cursor.
_STABLE_SORT = {"field": "CREATED_AT", "order": "ASC"}
_OURS = {"values": ["THIRD_PARTY"], "rule": "INCLUDE"}


def _rfc3339(at: datetime) -> str:
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    # Truncating to milliseconds only moves the start earlier: still "at or after since".
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _create_body(native: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in native.items() if k in mapping.NATIVE_KEYS and v is not None}


class SquareAdapter(Adapter):
    name: ClassVar[str] = "square"
    title: ClassVar[str] = "Square"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.WEBHOOKS,
            Capability.POLLING,
            Capability.CREATE,
            Capability.UPDATE,
            Capability.DELETE,
            Capability.BULK,
            Capability.VERSIONED_WRITES,
        }
    )
    settings_model: ClassVar[type[AdapterSettings]] = SquareSettings
    fields: ClassVar[frozenset[str]] = mapping.FIELDS
    handled_events: ClassVar[frozenset[str]] = frozenset(webhook.HANDLERS)
    ignored_events: ClassVar[frozenset[str]] = webhook.IGNORED_EVENTS
    max_bulk: ClassVar[int] = BULK_LIMIT
    sandbox_class: ClassVar[str | None] = "bridge.adapters.square.sandbox:SquareSandbox"

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(settings, SquareSettings):
            raise TypeError("SquareAdapter needs SquareSettings")
        super().__init__(settings, transport)
        self.square_settings = settings
        self._square: SquareClient | None = None

    @property
    def client(self) -> SquareClient:
        if self._square is None:
            s = self.square_settings
            self._square = SquareClient(
                self.http_client(),
                base_url=s.base_url,
                token=s.access_token.get_secret_value,
                square_version=s.square_version,
            )
        return self._square

    def close(self) -> None:
        self._square = None
        super().close()

    # -- webhooks ---------------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        key = self.square_settings.webhook_signature_key
        if key is None:
            raise SignatureError("square: webhook_signature_key is not configured")
        url = self.square_settings.notification_url or request.url
        webhook.verify(key.get_secret_value(), url, request.headers, request.body)

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        return webhook.parse(request.body)

    # -- reads ------------------------------------------------------------------------
    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        # Search cannot sort by updated_at, so every page of the window is read.
        filter_ = {"updated_at": {"start_at": _rfc3339(since)}} if since is not None else None
        cursor: str | None = None
        while True:
            customers, cursor = self.client.search(
                filter_=filter_, sort=_STABLE_SORT, cursor=cursor, limit=PAGE_LIMIT
            )
            for customer in customers:
                yield webhook.record_of(customer)
            if not cursor:
                return

    def fetch(self, external_id: str) -> ExternalRecord | None:
        customer = self.client.retrieve(external_id)
        return webhook.record_of(customer) if customer is not None else None

    def probe(self) -> None:
        self.client.list_page(limit=1)

    # -- writes -----------------------------------------------------------------------
    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        try:
            customer = self.client.create(_create_body(native), idempotency_key)
        except IdempotencyKeyReusedError as err:
            return self._recover_reused_key(native, err)
        return webhook.record_of(customer)

    def _recover_reused_key(self, native: dict[str, Any], err: IdempotencyKeyReusedError) -> ExternalRecord:
        # Square refuses a known key with a different body. Our key is fixed per (customer,
        # system), so this means an earlier attempt whose answer was lost did create the
        # profile, and the canonical values changed since. A fresh key would make a
        # duplicate; instead find that profile (by any one match key) and bring it to the
        # new body. Search lags writes by up to about a minute, so "not found" is retryable.
        found = self._find(mapping.to_canonical(native), exact=False)
        if found is None:
            raise RetryableError(
                "square: idempotency key already used with another body and the profile it "
                "created is not findable yet"
            ) from err
        return self.update(found.external_id, native, found.version)

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        # Sparse update: keys present with None are sent as null, which clears them.
        body = {k: v for k, v in native.items() if k in mapping.NATIVE_KEYS}
        address = body.get("address")
        if isinstance(address, Mapping):
            # Square merges address sub-fields too; name every one so stale lines go away.
            body["address"] = {key: address.get(key) for key in _ADDRESS_KEYS}
        return webhook.record_of(self.client.update(external_id, body, version))

    def delete(self, external_id: str, version: int | None) -> None:
        try:
            self.client.delete(external_id, version)
        except NotFoundError:
            # Already gone (e.g. our earlier delete whose answer was lost): the goal is met.
            return

    def find_existing(self, values: Values, idempotency_key: str) -> ExternalRecord | None:
        # Square replays a key only for the identical body and cannot be asked "what did
        # this key create?", so look for a profile we created (THIRD_PARTY) with exactly
        # these values. Search lags writes: None here is safe, because a create retried with
        # the same key and body is answered with the first result, not a second profile.
        return self._find(values, exact=True)

    def _find(self, values: Values, *, exact: bool) -> ExternalRecord | None:
        target = normalize({f: values.get(f) for f in self.fields})
        for field, attribute in _MATCH_FILTERS:
            wanted = target.get(field)
            if not wanted or (field == PHONE_MOBILE and not is_e164(wanted)):
                continue
            filter_ = {attribute: {"exact": wanted}, "creation_source": _OURS}
            cursor: str | None = None
            while True:
                customers, cursor = self.client.search(filter_=filter_, sort=_STABLE_SORT, cursor=cursor)
                for customer in customers:
                    got = normalize(mapping.to_canonical(customer))
                    if (got == target) if exact else (got.get(field) == wanted):
                        return webhook.record_of(customer)
                if not cursor:
                    break
        return None

    def create_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[ExternalRecord | Exception]:
        results: list[ExternalRecord | Exception | None] = [None] * len(items)
        stop: AdapterError | None = None
        for start in range(0, len(items), BULK_LIMIT):
            positions: dict[str, int] = {}
            entries: dict[str, dict[str, Any]] = {}
            for offset, (key, native) in enumerate(items[start : start + BULK_LIMIT]):
                if key in positions:
                    results[start + offset] = PermanentError(f"idempotency key {key} twice in one batch")
                    continue
                positions[key] = start + offset
                entries[key] = _create_body(native)
            if stop is not None:
                for position in positions.values():
                    results[position] = stop
                continue
            try:
                responses = self.client.bulk_create(entries)
            except AdapterError as err:
                for position in positions.values():
                    results[position] = err
                # Later chunks would only be refused the same way.
                if isinstance(err, AuthError | RateLimitedError):
                    stop = err
                continue
            for key, position in positions.items():
                entry = responses.get(key) or {}
                customer = entry.get("customer")
                if isinstance(customer, dict) and customer.get("id"):
                    results[position] = webhook.record_of(customer)
                elif entry.get("errors"):
                    results[position] = error_from_codes(None, entry["errors"], "bulk create customer")
                else:
                    results[position] = RetryableError("bulk create customer: no answer for this entry")
        return [r if r is not None else RetryableError("bulk create: not attempted") for r in results]

    # -- mapping ----------------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        return mapping.to_canonical(native)

    def from_canonical(self, values: Values) -> dict[str, Any]:
        return mapping.from_canonical(values)
