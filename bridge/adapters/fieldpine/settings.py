"""Fieldpine settings (environment prefix `POSBRIDGE_FIELDPINE_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from bridge.adapters.base import AdapterSettings


class FieldpineSettings(AdapterSettings):
    api_key: SecretStr
    # Hosted retailers are reached under `/OpenApi2_<RmSystem>/`; on-premise under `/OpenApi2/`.
    rm_system: str | None = None
    # Fieldpine hooks are opt-in per retailer; when set, `X-Fieldpine-HMAC` must verify.
    hook_secret: SecretStr | None = None
    page_size: int = Field(default=500, ge=1, le=10_000)
