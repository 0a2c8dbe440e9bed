"""LS One: a polled, read-only source of customer orders.

The LS One API documents customer-order reads and nothing else (no customer create or
update, no webhooks), so this adapter says exactly that through its capabilities and
produces `ExternalOrder`s whose `customer_ref` is LS One's customer account
(`customerID`), which the engine matches against the shared customer code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx

from bridge.adapters.base import (
    Adapter,
    AdapterSettings,
    Capability,
    ExternalOrder,
    ExternalRecord,
    WebhookBatch,
    WebhookRequest,
)
from bridge.adapters.lsone import mapping, webhook
from bridge.adapters.lsone.client import LSOneClient
from bridge.adapters.lsone.settings import LSOneSettings
from bridge.canonical import Values


class LSOneAdapter(Adapter):
    name = "lsone"
    title = "LS One"
    # POLLING here means order polling: the engine calls poll_orders because of ORDERS.
    capabilities = frozenset({Capability.POLLING, Capability.ORDERS, Capability.READ_ONLY})
    settings_model: ClassVar[type[AdapterSettings]] = LSOneSettings
    fields = frozenset()
    handled_events = frozenset(webhook.HANDLERS)
    ignored_events = webhook.IGNORED
    max_bulk = 1
    sandbox_class = "bridge.adapters.lsone.sandbox:LSOneSandbox"

    settings: LSOneSettings

    def __init__(self, settings: AdapterSettings, transport: httpx.BaseTransport | None = None) -> None:
        if not isinstance(settings, LSOneSettings):
            raise TypeError("LSOneAdapter needs LSOneSettings")
        super().__init__(settings, transport)
        self._api: LSOneClient | None = None
        self._server_tz: tzinfo = ZoneInfo(settings.server_timezone)

    def default_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    @property
    def api(self) -> LSOneClient:
        if self._api is None:
            self._api = LSOneClient(
                self.http_client(),
                self.settings.username,
                self.settings.password,
                refresh_margin_s=self.settings.token_refresh_margin_s,
            )
        return self._api

    def close(self) -> None:
        super().close()
        self._api = None

    # -- webhooks: none exist ---------------------------------------------------------
    def verify_webhook(self, request: WebhookRequest) -> None:
        webhook.verify(request)

    def parse_webhook(self, request: WebhookRequest) -> WebhookBatch:
        return webhook.parse(request)

    # -- reads ------------------------------------------------------------------------
    def probe(self) -> None:
        """Log in, then read one order: a user lacking `CustomerOrder:Read` logs in fine
        but is refused every read, and that must pause the target too."""
        self.api.authenticate()
        self.api.list_orders(page=1, page_size=1)

    def poll(self, since: datetime | None) -> Iterator[ExternalRecord]:
        """LS One exposes no customer records, so there is never one to report.

        Declared POLLING is about orders; answering with nothing (rather than raising)
        keeps a generic poll loop that calls every POLLING adapter safe.
        """
        return iter(())

    def poll_orders(self, since: datetime | None) -> Iterator[ExternalOrder]:
        """New and possibly changed orders since `since`, page by page.

        The API can neither filter nor sort by time and orders carry no modification
        time, only `createdDate`. So every poll walks the whole listing (streaming) and
        reports: orders created at/after `since`; every order not yet in a final state
        (its status may have moved: we cannot tell, so it is re-read); and final orders
        created within `reread_window_s` before `since`, so that an order closing a few
        days after it was made is still reported once closed. The engine deduplicates by
        content; `updated_at` stays `createdDate` because that is all the record says.
        """
        floor = since - timedelta(seconds=self.settings.reread_window_s) if since else None
        seen: set[str] = set()  # ids only: listings shift while we page through them
        for native in self.api.iter_orders(self.settings.page_size):
            order = mapping.to_external_order(native, self._server_tz)
            if order.external_id in seen:
                continue
            seen.add(order.external_id)
            if self._due(order, native, since, floor):
                yield order

    @staticmethod
    def _due(
        order: ExternalOrder, native: Mapping[str, Any], since: datetime | None, floor: datetime | None
    ) -> bool:
        if since is None or order.updated_at is None:
            return True
        if order.updated_at >= since or not mapping.is_final(native):
            return True
        return floor is not None and order.updated_at >= floor

    def fetch_order(self, external_id: str) -> ExternalOrder | None:
        native = self.api.get_order(external_id)
        return mapping.to_external_order(native, self._server_tz) if native is not None else None

    def search_orders(self, filters: Mapping[str, Any]) -> Iterator[ExternalOrder]:
        """Orders matching LS One's search filters (e.g. `{"customerID": "00013"}`)."""
        for native in self.api.iter_search(filters, self.settings.page_size):
            yield mapping.to_external_order(native, self._server_tz)

    # -- mapping (read-only) ------------------------------------------------------------
    def to_canonical(self, native: Mapping[str, Any]) -> Values:
        return mapping.to_canonical(native)

    def from_canonical(self, values: Values) -> dict[str, Any]:
        return mapping.from_canonical(values)
