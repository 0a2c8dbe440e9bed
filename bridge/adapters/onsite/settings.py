"""Settings of the Lightspeed OnSite integration (environment prefix POSBRIDGE_ONSITE_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from bridge.adapters.base import AdapterSettings


class OnSiteSettings(AdapterSettings):
    # OnSite servers listen on 9630 with a self-signed certificate by default; point
    # `verify_tls` at False only for such an install, never for a server on the internet.
    base_url: str = "https://localhost:9630"
    username: str
    password: SecretStr
    # The public app id goes into the User-Agent (`<app_id>/<app_version>`); the private
    # one is the `X-PAPPID` header. Both are issued by Lightspeed per integration.
    app_id: str
    app_version: str = "1.0"
    private_app_id: SecretStr
    verify_tls: bool = True
    # Which OnSite element holds the retailer's customer code: "import_id", the
    # "customer_id" shown at the till (C-15 unless someone typed one), or "" for none.
    customer_code_field: Literal["", "import_id", "customer_id"] = ""
    # OnSite reports `created`/`modified` in the server's local time, without an offset.
    server_timezone: str = "UTC"
    page_size: int = Field(default=100, ge=1, le=1000)
