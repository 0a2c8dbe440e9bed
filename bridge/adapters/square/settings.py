"""Settings of the Square adapter (environment prefix `POSBRIDGE_SQUARE_`)."""

from __future__ import annotations

from pydantic import SecretStr

from bridge.adapters.base import AdapterSettings


class SquareSettings(AdapterSettings):
    base_url: str = "https://connect.squareup.com"
    access_token: SecretStr
    # Pinned so that a Square release cannot change response shapes under us unannounced.
    square_version: str = "2025-08-20"
    webhook_signature_key: SecretStr | None = None
    # The URL exactly as registered in the webhook subscription: Square signs it, and the
    # URL we see behind a proxy is often not the same string.
    notification_url: str | None = None
    merchant_id: str | None = None
