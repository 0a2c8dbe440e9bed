"""Settings of the Loyverse adapter (environment prefix `POSBRIDGE_LOYVERSE_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from bridge.adapters.base import AdapterSettings


class LoyverseSettings(AdapterSettings):
    base_url: str = "https://api.loyverse.com/v1.0"
    access_token: SecretStr
    # Set for webhooks registered through an OAuth app, which signs them; webhooks made
    # with a personal token are unsigned and fall back to the secret path token.
    client_secret: SecretStr | None = None
    # Loyverse allows 300 requests per 300 s per account and sends no rate-limit headers,
    # so every worker spends from one shared budget instead of learning it from 429s.
    rate_limit_requests: int = Field(default=300, ge=1)
    rate_limit_window_s: float = Field(default=300.0, gt=0)
    # redis://... or a database URL (sqlite:///..., postgresql://...); empty means a
    # limiter shared only by the adapters of this process. May carry a password.
    rate_limit_url: SecretStr = SecretStr("")
    # Longer waits are handed back to the engine (RateLimitedError) so a worker is not
    # held asleep; the retry policy persists the wait.
    rate_limit_max_wait_s: float = Field(default=30.0, ge=0)
    # How far back find_existing scans recent customers for a code or phone match.
    find_existing_lookback_s: float = Field(default=3600.0, gt=0)
