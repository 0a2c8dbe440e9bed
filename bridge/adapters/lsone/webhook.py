"""LS One sends no webhooks: the API documents none, so it is polled.

The tables exist (same shape as every integration) and are empty on purpose: any
request claiming to be an LS One webhook is refused rather than half-trusted.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.adapters.base import InboundEvent, WebhookBatch, WebhookRequest
from bridge.adapters.errors import PayloadError, SignatureError

HANDLERS: dict[str, Callable[[dict[str, object]], InboundEvent]] = {}
IGNORED: frozenset[str] = frozenset()


def verify(request: WebhookRequest) -> None:
    raise SignatureError("LS One sends no webhooks; nothing can prove this request came from it")


def parse(request: WebhookRequest) -> WebhookBatch:
    raise PayloadError("LS One sends no webhooks", status=404)
