"""Settings of the LS One adapter (environment prefix `POSBRIDGE_LSONE_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from bridge.adapters.base import AdapterSettings


class LSOneSettings(AdapterSettings):
    # Every LS One API install has its own host; there is no shared default to fall back on.
    base_url: str
    username: str
    password: SecretStr
    page_size: int = Field(default=100, ge=1, le=1000)
    # Which system's field carries the customer code that LS One's `customerID` holds.
    # "" means the canonical `customer_code` field; the engine matches an order's
    # `customer_ref` against it.
    customer_code_system: str = ""
    # LS One writes time stamps without an offset, in the server's local time.
    server_timezone: str = "UTC"
    # Refresh the JWT this long before its `exp` (capped at a tenth of its lifetime, so
    # that short-lived tokens are not refreshed on every call).
    token_refresh_margin_s: float = Field(default=60.0, ge=0)
    # Orders have no modification time, so a status change is only visible by reading
    # the order again. Open orders are always re-read; orders in a final state are
    # re-read while they were created no longer than this before `since` (orders are
    # usually settled within days). 0 turns that off.
    reread_window_s: float = Field(default=7 * 24 * 3600.0, ge=0)
