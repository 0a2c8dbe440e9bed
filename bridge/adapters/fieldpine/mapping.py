"""Fieldpine customer <-> canonical values. Pure functions, no I/O.

Names: Fieldpine keeps `Name` (full name) next to `FirstName`/`LastName` and builds Name
from the two parts when it is absent. We always send all three so the record is the same
whoever wrote it: Name = given + " " + family, or the canonical full_name when both parts
are empty. Reading back, full_name is only reported for such name-only records; otherwise
Name is derived data and reporting it would make every name edit elsewhere look like a
second, conflicting change.

Address: Fieldpine has two free-form lines. They carry billing_address line1 and line2
(the seed's example puts the town in Address2; we still treat it as a free-form second
line, so city/region/postal code/country are not held by Fieldpine).

Phones: `Mobile` <-> phone_mobile, `Phone` <-> phone_home.
`EUCitizen` has no canonical field and is never sent, so updates leave it as the till set it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.canonical import (
    BILLING_ADDRESS,
    COMPANY_NAME,
    EMAIL,
    FAMILY_NAME,
    FULL_NAME,
    GIVEN_NAME,
    PHONE_HOME,
    PHONE_MOBILE,
    Values,
)

FIELDS: frozenset[str] = frozenset(
    {GIVEN_NAME, FAMILY_NAME, FULL_NAME, COMPANY_NAME, EMAIL, PHONE_MOBILE, PHONE_HOME, BILLING_ADDRESS}
)

# Native field <-> canonical field, for the one-to-one text fields.
_DIRECT: tuple[tuple[str, str], ...] = (
    ("FirstName", GIVEN_NAME),
    ("LastName", FAMILY_NAME),
    ("CompanyName", COMPANY_NAME),
    ("Email", EMAIL),
    ("Mobile", PHONE_MOBILE),
    ("Phone", PHONE_HOME),
)
_ADDRESS: tuple[tuple[str, str], ...] = (("Address1", "line1"), ("Address2", "line2"))

# Every field we write; the rest of a Fieldpine record is left alone.
NATIVE_FIELDS: tuple[str, ...] = ("Name", *(n for n, _ in _DIRECT), *(n for n, _ in _ADDRESS))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def from_canonical(values: Values) -> dict[str, Any]:
    """The body of a POST /Customers (without CustomerId). Empty fields are sent as ""
    so that clearing a value elsewhere clears it here too."""
    native: dict[str, Any] = {}
    for name, field in _DIRECT:
        native[name] = _text(values.get(field)) or ""
    parts = (native["FirstName"], native["LastName"])
    native["Name"] = " ".join(p for p in parts if p) or _text(values.get(FULL_NAME)) or ""
    address = values.get(BILLING_ADDRESS) or {}
    for name, key in _ADDRESS:
        native[name] = _text(address.get(key)) or ""
    return {key: native[key] for key in NATIVE_FIELDS}


def to_canonical(native: Mapping[str, Any]) -> Values:
    values: Values = {field: _text(native.get(name)) for name, field in _DIRECT}
    has_parts = values[GIVEN_NAME] is not None or values[FAMILY_NAME] is not None
    values[FULL_NAME] = None if has_parts else _text(native.get("Name"))
    address = {key: text for name, key in _ADDRESS if (text := _text(native.get(name)))}
    values[BILLING_ADDRESS] = address or None
    return values


def project(values: Values) -> Values:
    """What of `values` (keys of FIELDS) Fieldpine can really hold and give back."""
    out = {field: values.get(field) for field in FIELDS}
    if out[GIVEN_NAME] or out[FAMILY_NAME]:
        out[FULL_NAME] = None
    address = out[BILLING_ADDRESS]
    if address:
        kept = {key: address[key] for _, key in _ADDRESS if address.get(key)}
        out[BILLING_ADDRESS] = kept or None
    return out
