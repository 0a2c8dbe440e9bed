"""The Loyverse adapter: customers API v1.0, batched webhooks, a shared request budget."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import phonenumbers

from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    ExternalRecord,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.errors import NotFoundError
from bridge.adapters.loyverse import mapping, webhook
from bridge.adapters.loyverse.client import PAGE_LIMIT, LoyverseClient, format_ts
from bridge.adapters.loyverse.ratelimit import SharedRateLimiter, account_key, store_for_url
from bridge.adapters.loyverse.settings import LoyverseSettings
from bridge.canonical import CUSTOMER_CODE, EMAIL, PHONE_MOBILE, Values, normalize_phone, utcnow

log = logging.getLogger("posbridge.adapters.loyverse")

# find_existing reads at most this many pages of recent customers; past that a match
# is too unlikely to be worth the budget, and the engine creates again.
_MAX_SCAN_PAGES = 20


class LoyverseAdapter(Adapter):
    name = "loyverse"
    title = "Loyverse"
    capabilities = frozenset(
        {Capability.WEBHOOKS, Capability.POLLING, Capability.CREATE, Capability.UPDATE, Capability.DELETE}
    )
    settings_model = LoyverseSettings
    fields = mapping.FIELDS
    handled_events = frozenset(webhook.HANDLERS)
    ignored_events = webhook.IGNORED
    max_bulk = 1
    sandbox_class = "bridge.adapters.loyverse.sandbox:LoyverseSandbox"

    settings: LoyverseSettings

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(settings, LoyverseSettings):
            raise TypeError("LoyverseAdapter needs LoyverseSettings")
        super().__init__(settings, transport)
        self._api: LoyverseClient | None = None

    # -- plumbing ---------------------------------------------------------------------
    def default_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.settings.access_token.get_secret_value()}",
            "Accept": "application/json",
        }

    def rate_limiter(self) -> SharedRateLimiter:
        s = self.settings
        return SharedRateLimiter(
            store_for_url(s.rate_limit_url.get_secret_value()),
            limit=s.rate_limit_requests,
            window_s=s.rate_limit_window_s,
            max_wait_s=s.rate_limit_max_wait_s,
        )

    @property
    def api(self) -> LoyverseClient:
        if self._api is None:
            account = account_key(self.settings.access_token.get_secret_value())
            self._api = LoyverseClient(self.http_client(), self.rate_limiter(), account)
        return self._api

    def close(self) -> None:
        super().close()
        self._api = None

    # -- webhooks ---------------------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        secret = self.settings.client_secret
        if secret is not None and secret.get_secret_value():
            webhook.verify_signature(request, secret.get_secret_value())
            return
        super().verify_webhook(request)

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        return webhook.parse(request.body)

    # -- reads ------------------------------------------------------------------------
    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if since is not None:
            params["updated_at_min"] = format_ts(since)
        for customer in self.api.iter_customers(params):
            yield webhook.record_of(customer)

    def fetch(self, external_id: str) -> ExternalRecord | None:
        customer = self.api.get_customer(external_id)
        return webhook.record_of(customer) if customer is not None else None

    def probe(self) -> None:
        self.api.list_customers({"limit": 1})

    # -- writes -----------------------------------------------------------------------
    @staticmethod
    def _full_body(native: Mapping[str, Any]) -> dict[str, Any]:
        # Loyverse may clear what a POST omits (the sandbox does): always send every field.
        return {key: native.get(key) for key in mapping.WRITABLE}

    def create(self, native: dict[str, Any], idempotency_key: str) -> ExternalRecord:
        # Loyverse has no idempotency key; after a lost response the engine asks
        # find_existing before creating again.
        return webhook.record_of(self.api.save_customer(self._full_body(native)))

    def update(self, external_id: str, native: dict[str, Any], version: int | None) -> ExternalRecord:
        body = {"id": external_id, **self._full_body(native)}
        return webhook.record_of(self.api.save_customer(body))

    def delete(self, external_id: str, version: int | None) -> None:
        try:
            self.api.delete_customer(external_id)
        except NotFoundError:
            # Already gone (deleted at the till, or our earlier delete lost its answer).
            return

    def find_existing(self, values: Values, idempotency_key: str) -> ExternalRecord | None:
        email = values.get(EMAIL)
        if email:
            for customer in self.api.iter_customers({"email": email, "limit": PAGE_LIMIT}):
                if not customer.get("deleted_at") and str(customer.get("email") or "").lower() == email:
                    return webhook.record_of(customer)
        code = str(values.get(CUSTOMER_CODE) or "").casefold() or None
        phone = values.get(PHONE_MOBILE) or None
        if code is None and phone is None:
            return None
        since = utcnow() - timedelta(seconds=self.settings.find_existing_lookback_s)
        params = {"created_at_min": format_ts(since), "limit": PAGE_LIMIT}
        region = _region_of(phone)
        for seen, customer in enumerate(self.api.iter_customers(params)):
            if seen >= _MAX_SCAN_PAGES * PAGE_LIMIT:
                log.warning("find_existing: gave up after %d recent customers", seen)
                return None
            if customer.get("deleted_at"):
                continue
            if code is not None and str(customer.get("customer_code") or "").casefold() == code:
                return webhook.record_of(customer)
            if phone is not None and _same_phone(customer.get("phone_number"), phone, region):
                return webhook.record_of(customer)
        return None

    # -- mapping ----------------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        return mapping.to_canonical(native)

    def from_canonical(self, values: Values) -> dict[str, Any]:
        return mapping.from_canonical(values)


def _region_of(phone: str | None) -> str:
    """The region to read a stored number in: that of the (E.164) number we look for."""
    if phone:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None))
        except phonenumbers.NumberParseException:
            region = None
        if region:
            return str(region)
    return "US"


def _same_phone(stored: Any, wanted: str, region: str) -> bool:
    if not stored:
        return False
    if str(stored).strip() == wanted:
        return True
    normalized = normalize_phone(stored, region)
    if normalized == wanted:
        return True
    # Junk that no parser accepts still matches when its digits are the same.
    return bool(re.sub(r"\D", "", str(stored))) and re.sub(r"\D", "", str(stored)) == re.sub(
        r"\D", "", wanted
    )
