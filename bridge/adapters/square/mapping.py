"""Square customer JSON <-> canonical values. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge import canonical as c
from bridge.canonical import Values

FIELDS: frozenset[str] = frozenset(
    {
        c.GIVEN_NAME,
        c.FAMILY_NAME,
        c.COMPANY_NAME,
        c.NICKNAME,
        c.EMAIL,
        c.PHONE_MOBILE,
        c.BILLING_ADDRESS,
        c.BIRTHDAY,
        c.NOTE,
        c.CUSTOMER_CODE,
    }
)

# canonical text field -> Square attribute, for the fields that map one to one.
_TEXT: dict[str, str] = {
    c.GIVEN_NAME: "given_name",
    c.FAMILY_NAME: "family_name",
    c.COMPANY_NAME: "company_name",
    c.NICKNAME: "nickname",
    c.EMAIL: "email_address",
    # Square has a single phone: it is the mobile slot, and only that slot, so the mapping
    # stays deterministic whatever the other systems hold in their other phone slots.
    c.PHONE_MOBILE: "phone_number",
    c.NOTE: "note",
    c.CUSTOMER_CODE: "reference_id",
}

# canonical address key -> Square Address attribute.
_ADDRESS: dict[str, str] = {
    "line1": "address_line_1",
    "line2": "address_line_2",
    "line3": "address_line_3",
    "city": "locality",
    "region": "administrative_district_level_1",
    "postal_code": "postal_code",
    "country": "country",
}

# Every attribute from_canonical writes; update() sends all of them (null clears).
NATIVE_KEYS: tuple[str, ...] = (*_TEXT.values(), "address", "birthday")

_UNKNOWN_YEAR = re.compile(r"^(?:0000-)?(\d{2})-(\d{2})$")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def address_to_canonical(address: Any) -> c.Address | None:
    if not isinstance(address, Mapping):
        return None
    out: dict[str, str] = {}
    for key, native_key in _ADDRESS.items():
        text = _text(address.get(native_key))
        if text:
            out[key] = text
    return c.Address(**out) if out else None  # type: ignore[typeddict-item]


def address_from_canonical(address: Any) -> dict[str, str] | None:
    if not isinstance(address, Mapping):
        return None
    out = {native_key: str(address[key]) for key, native_key in _ADDRESS.items() if address.get(key)}
    return out or None


def birthday_to_canonical(value: Any) -> str | None:
    """Square answers `YYYY-MM-DD` with year `0000` when unknown (and accepts `MM-DD`)."""
    text = _text(value)
    if text is None:
        return None
    match = _UNKNOWN_YEAR.match(text)
    if match:
        return f"--{match.group(1)}-{match.group(2)}"
    return text


def birthday_from_canonical(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    if text.startswith("--"):
        # `MM-DD` is the documented input for "year unknown"; Square stores it as 0000-MM-DD.
        return text[2:]
    return text


def to_canonical(native: Mapping[str, Any]) -> Values:
    values: Values = {field: _text(native.get(attr)) for field, attr in _TEXT.items()}
    values[c.BILLING_ADDRESS] = address_to_canonical(native.get("address"))
    values[c.BIRTHDAY] = birthday_to_canonical(native.get("birthday"))
    return values


def from_canonical(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Square body for these values; every key present, None where the value is empty."""
    native: dict[str, Any] = {attr: _text(values.get(field)) for field, attr in _TEXT.items()}
    native["address"] = address_from_canonical(values.get(c.BILLING_ADDRESS))
    native["birthday"] = birthday_from_canonical(values.get(c.BIRTHDAY))
    return native
