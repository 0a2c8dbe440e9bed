"""Pure functions between LS One customer orders and what the engine consumes.

LS One holds no customer records we can read or write (the API documents customer
orders only), so the canonical projection is empty: `to_canonical` gives `{}` and
`from_canonical` refuses. What LS One contributes is orders that name a customer
account (`customerID`), turned into `ExternalOrder`s here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from bridge.adapters.base import ExternalOrder
from bridge.adapters.errors import PermanentError
from bridge.canonical import Values

# The documented status codes (a bit set in LS One's data model, one bit per state).
STATUS_NAMES: dict[int, str] = {
    4: "open",
    8: "closed",
    16: "cancelled",
    32: "new",
    64: "printed",
    128: "ready",
    256: "delivered",
    512: "deleted",
}
STATUS_CODES: dict[str, int] = {name: code for code, name in STATUS_NAMES.items()}
# States an order does not leave again; every other state can still move on.
FINAL_STATUSES: frozenset[int] = frozenset({8, 16, 256, 512})

ORDER_TYPES: dict[int, str] = {0: "none", 1: "customer_order", 2: "quote"}

# The property table spells the field `orderXml`, the JSON examples `orderXML`.
ORDER_XML_KEYS: tuple[str, ...] = ("orderXML", "orderXml")

_FRACTION = re.compile(r"\.(\d+)")


def status_code(native: Mapping[str, Any]) -> int | None:
    value = native.get("status")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def status_name(code: int | None) -> str:
    """The name of a status code; undocumented codes stay visible instead of guessed.

    The vendor's own examples show `"status": 1`, which is not in the documented list.
    """
    if code is None:
        return "unknown"
    return STATUS_NAMES.get(code, f"unknown:{code}")


def is_final(native: Mapping[str, Any]) -> bool:
    return status_code(native) in FINAL_STATUSES


def parse_datetime(value: Any, server_tz: tzinfo = UTC) -> datetime | None:
    """LS One writes `2021-10-18T16:39:02.227`: no offset, so the server's zone applies.

    .NET may also send 7 fractional digits, which Python 3.11 cannot parse; they are cut
    to microseconds.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=server_tz)
    return parsed.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """The vendor's wire format (naive, milliseconds), for a UTC instant."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def order_gid(native: Mapping[str, Any]) -> str:
    # GUIDs are case-insensitive and LS One echoes them lower-case in responses.
    return str(native.get("gid") or "").strip().lower()


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def to_external_order(native: Mapping[str, Any], server_tz: tzinfo = UTC) -> ExternalOrder:
    """One order as the engine sees it.

    LS One orders carry no modification time, only `createdDate`, so that is the only
    honest `updated_at`: a re-read order with a new status keeps its old time stamp,
    and consumers must compare content, not time, to see the change.
    """
    gid = order_gid(native)
    if not gid:
        raise PermanentError("LS One order without a gid")
    return ExternalOrder(
        external_id=gid,
        customer_ref=_text_or_none(native.get("customerID")),
        status=status_name(status_code(native)),
        updated_at=parse_datetime(native.get("createdDate"), server_tz),
        native=dict(native),
        reference=_text_or_none(native.get("reference")),
    )


def to_canonical(native: Mapping[str, Any]) -> Values:
    """Orders hold no customer fields: the projection is empty, for every input."""
    return {}


def from_canonical(values: Values) -> dict[str, Any]:
    raise PermanentError("LS One is a read-only source: the API has no customer writes")
