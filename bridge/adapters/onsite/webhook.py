"""OnSite sends no webhooks: integrations poll it (see `OnSiteAdapter.poll`).

The dispatch table is empty on purpose, so a request that reaches our webhook endpoint
for this system is reported as unknown rather than silently turned into events.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.adapters.base import InboundEvent, WebhookBatch, WebhookRequest

HANDLERS: dict[str, Callable[[WebhookRequest], list[InboundEvent]]] = {}
IGNORED: frozenset[str] = frozenset()


def parse(request: WebhookRequest) -> WebhookBatch:
    event_type = request.headers.get("x-event-type") or "onsite.unsolicited"
    return WebhookBatch(unknown=[event_type])
