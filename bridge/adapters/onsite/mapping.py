"""OnSite customer (the native dict of `models.Customer`) <-> canonical values. Pure.

OnSite holds four phone slots, each with a type; posbridge's four phone fields map to
the types home/work/mobile/other. A slot whose type is something else (fax, pager, or
blank with a number) counts as `phone_other` when that is still free. Addresses lose
`line3` (OnSite has two lines) and a birthday without a year cannot be stored: `project`
is exactly what survives a trip through OnSite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.canonical import (
    BILLING_ADDRESS,
    BIRTHDAY,
    COMPANY_NAME,
    CUSTOMER_CODE,
    EMAIL,
    FAMILY_NAME,
    GIVEN_NAME,
    HOMEPAGE,
    NOTE,
    PHONE_HOME,
    PHONE_MOBILE,
    PHONE_OTHER,
    PHONE_WORK,
    SHIPPING_ADDRESS,
    Values,
)

BASE_FIELDS: frozenset[str] = frozenset(
    {
        GIVEN_NAME,
        FAMILY_NAME,
        COMPANY_NAME,
        EMAIL,
        HOMEPAGE,
        PHONE_HOME,
        PHONE_WORK,
        PHONE_MOBILE,
        PHONE_OTHER,
        BILLING_ADDRESS,
        SHIPPING_ADDRESS,
        BIRTHDAY,
        NOTE,
    }
)
# Canonical phone field -> OnSite phone type, in the slot order we write them.
PHONE_TYPES: tuple[tuple[str, str], ...] = (
    (PHONE_HOME, "home"),
    (PHONE_WORK, "work"),
    (PHONE_MOBILE, "mobile"),
    (PHONE_OTHER, "other"),
)
PHONE_SLOTS = 4
# Canonical address key -> OnSite address element.
ADDRESS_MAP: tuple[tuple[str, str], ...] = (
    ("line1", "address1"),
    ("line2", "address2"),
    ("city", "city"),
    ("region", "state"),
    ("country", "country"),
    ("postal_code", "zip"),
)


def fields_for(customer_code_field: str) -> frozenset[str]:
    return BASE_FIELDS | {CUSTOMER_CODE} if customer_code_field else BASE_FIELDS


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _address_to_canonical(native: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not native:
        return None
    out = {key: text for key, element in ADDRESS_MAP if (text := _text(native.get(element)))}
    return out or None


def _address_from_canonical(value: Mapping[str, Any] | None) -> dict[str, str]:
    value = value or {}
    return {element: str(value.get(key) or "") for key, element in ADDRESS_MAP}


def _birthday_to_canonical(value: Any) -> str | None:
    text = _text(value)
    # OnSite may answer a date as a timestamp; the day is what a birthday means.
    return text[:10] if text and len(text) > 10 and text[10] == "T" else text


def to_canonical(native: Mapping[str, Any], customer_code_field: str = "") -> Values:
    name = native.get("name") or {}
    values: Values = {
        GIVEN_NAME: _text(name.get("first")),
        FAMILY_NAME: _text(name.get("last")),
        COMPANY_NAME: _text(native.get("company")),
        EMAIL: _text(native.get("email")),
        HOMEPAGE: _text(native.get("homepage")),
        PHONE_HOME: None,
        PHONE_WORK: None,
        PHONE_MOBILE: None,
        PHONE_OTHER: None,
        BILLING_ADDRESS: _address_to_canonical(native.get("billing")),
        SHIPPING_ADDRESS: _address_to_canonical(native.get("shipping")),
        BIRTHDAY: _birthday_to_canonical(native.get("birthday")),
        NOTE: _text(native.get("notes")),
    }
    by_type = {onsite: field for field, onsite in PHONE_TYPES}
    phones = list(native.get("phone_numbers") or [])
    phones.sort(key=lambda p: (p.get("list_order") or p.get("id") or 0, p.get("id") or 0))
    for phone in phones:
        number = _text(phone.get("number"))
        if not number:
            continue
        field = by_type.get((_text(phone.get("type")) or "").lower(), PHONE_OTHER)
        if values[field] is None:
            values[field] = number
    if customer_code_field:
        values[CUSTOMER_CODE] = _text(native.get(customer_code_field))
    return values


def from_canonical(values: Mapping[str, Any], customer_code_field: str = "") -> dict[str, Any]:
    """The native dict for a create or a (full-projection) update; empty means clear."""
    first = values.get(GIVEN_NAME) or ""
    last = values.get(FAMILY_NAME) or ""
    company = values.get(COMPANY_NAME) or ""
    filled = [(onsite, str(values[field])) for field, onsite in PHONE_TYPES if values.get(field)]
    phones = []
    for slot in range(1, PHONE_SLOTS + 1):
        onsite_type, number = filled[slot - 1] if slot <= len(filled) else ("", "")
        phones.append(
            {
                "id": slot,
                "main": slot == 1 and bool(number),
                "type": onsite_type,
                "list_order": slot,
                "number": number,
            }
        )
    birthday = str(values.get(BIRTHDAY) or "")
    native: dict[str, Any] = {
        "name": {"first": first, "last": last},
        "company": company,
        "email": values.get(EMAIL) or "",
        "homepage": values.get(HOMEPAGE) or "",
        "phone_numbers": phones,
        # A company with no person's name is a company account at the till.
        "is_company": bool(company) and not (first or last),
        "billing": _address_from_canonical(values.get(BILLING_ADDRESS)),
        "shipping": _address_from_canonical(values.get(SHIPPING_ADDRESS)),
        # OnSite stores full dates only; a year-less birthday (`--MM-DD`) is left empty.
        "birthday": "" if birthday.startswith("--") else birthday,
        "notes": values.get(NOTE) or "",
    }
    if customer_code_field:
        native[customer_code_field] = values.get(CUSTOMER_CODE) or ""
    return native


def project(values: Mapping[str, Any], customer_code_field: str = "") -> Values:
    """What of `values` (normalised) OnSite can hold: the round trip's fixed point."""
    out: Values = {field: values.get(field) for field in fields_for(customer_code_field)}
    for field in (BILLING_ADDRESS, SHIPPING_ADDRESS):
        address = out[field]
        if address:
            kept = {key: address[key] for key, _ in ADDRESS_MAP if address.get(key)}
            out[field] = kept or None
    birthday = out[BIRTHDAY]
    if isinstance(birthday, str) and birthday.startswith("--"):
        out[BIRTHDAY] = None
    return out
