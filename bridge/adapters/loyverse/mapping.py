"""Loyverse customer <-> canonical values. Pure functions, no I/O.

Names: Loyverse holds one `name`. Canonical values carry `full_name` plus a best-effort
`given_name`/`family_name` split. Reading puts the name verbatim into `full_name` and
splits it; writing sends `full_name` while it still agrees with given/family (its split
gives exactly them), otherwise builds the name from given + family, because then
given/family were edited elsewhere after the full name was last set and the newer edit
must win. So "Mary Anne van der Berg" survives any number of round trips unchanged.

A customer without any name: Loyverse requires `name`, so we send the first of e-mail,
phone, customer code (or a fixed placeholder) and read a name equal to one of those back
as "no name". The placeholder is only used when nothing else identifies the customer.

Addresses: Loyverse has one `address` line; canonical line1..line3 travel joined by
newlines (canonical text never contains one, so the split is exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.canonical import (
    BILLING_ADDRESS,
    CUSTOMER_CODE,
    EMAIL,
    FAMILY_NAME,
    FULL_NAME,
    GIVEN_NAME,
    NOTE,
    PHONE_MOBILE,
    Values,
    normalize_address,
    normalize_field,
)

FIELDS: frozenset[str] = frozenset(
    {GIVEN_NAME, FAMILY_NAME, FULL_NAME, EMAIL, PHONE_MOBILE, BILLING_ADDRESS, NOTE, CUSTOMER_CODE}
)

# Every field a POST may set. An update sends all of them: Loyverse does not document
# whether omitted fields are cleared, and the sandbox clears them.
WRITABLE: tuple[str, ...] = (
    "name",
    "email",
    "phone_number",
    "address",
    "city",
    "region",
    "postal_code",
    "country_code",
    "customer_code",
    "note",
)

NAMELESS_PLACEHOLDER = "Customer without name"

# Family-name particles: a name part starting with one of these (after the first word)
# begins the family name, so "Mary Anne van der Berg" splits as Mary Anne / van der Berg.
_PARTICLES = frozenset(
    {
        "van",
        "von",
        "der",
        "den",
        "de",
        "del",
        "della",
        "di",
        "da",
        "dos",
        "das",
        "du",
        "la",
        "le",
        "ter",
        "ten",
        "bin",
        "ibn",
        "al",
        "st",
        "st.",
        "mac",
        "ó",
    }
)

_ADDRESS_LINES = ("line1", "line2", "line3")


def _text(value: Any) -> str | None:
    result = normalize_field(NOTE, value)
    return str(result) if result is not None else None


def split_name(full: str | None) -> tuple[str | None, str | None]:
    """Best-effort (given, family) of a whitespace-normalised full name."""
    text = _text(full)
    if not text:
        return None, None
    words = text.split(" ")
    if len(words) == 1:
        return words[0], None
    start = len(words) - 1
    for index in range(1, len(words) - 1):
        if words[index].casefold() in _PARTICLES:
            start = index
            break
    return " ".join(words[:start]), " ".join(words[start:])


def join_name(given: str | None, family: str | None) -> str | None:
    return _text(" ".join(part for part in (given, family) if part))


def compose_name(values: Mapping[str, Any]) -> str | None:
    """The one name Loyverse should hold for these canonical values (None: no name)."""
    full = _text(values.get(FULL_NAME))
    given = _text(values.get(GIVEN_NAME))
    family = _text(values.get(FAMILY_NAME))
    if full and (split_name(full) == (given, family) or (given is None and family is None)):
        return full
    return join_name(given, family) or full


def _nameless_stand_in(values: Mapping[str, Any]) -> str:
    for field in (EMAIL, PHONE_MOBILE, CUSTOMER_CODE):
        text = _text(values.get(field))
        if text:
            return text
    return NAMELESS_PLACEHOLDER


def to_canonical(native: Mapping[str, Any]) -> Values:
    name = _text(native.get("name"))
    stand_ins = {_text(native.get(key)) for key in ("email", "phone_number", "customer_code")}
    if name is not None and (name == NAMELESS_PLACEHOLDER or name in stand_ins):
        name = None
    given, family = split_name(name)
    raw_lines = str(native.get("address") or "").split("\n")
    # More than three lines (typed at the till) fold into line3 rather than get lost.
    lines = [*raw_lines[:2], *([""] * (2 - len(raw_lines[:2]))), " ".join(raw_lines[2:])]
    address = normalize_address(
        {
            **dict(zip(_ADDRESS_LINES, lines, strict=True)),
            "city": native.get("city"),
            "region": native.get("region"),
            "postal_code": native.get("postal_code"),
            "country": native.get("country_code"),
        }
    )
    return {
        FULL_NAME: name,
        GIVEN_NAME: given,
        FAMILY_NAME: family,
        EMAIL: normalize_field(EMAIL, native.get("email")),
        # Raw (only trimmed): E.164 needs the deployment's default region, which the
        # engine applies when it normalises.
        PHONE_MOBILE: _text(native.get("phone_number")),
        BILLING_ADDRESS: dict(address) if address else None,
        NOTE: _text(native.get("note")),
        CUSTOMER_CODE: _text(native.get("customer_code")),
    }


def from_canonical(values: Values) -> dict[str, Any]:
    address = normalize_address(values.get(BILLING_ADDRESS)) or {}
    lines: list[str] = [str(address.get(key) or "") for key in _ADDRESS_LINES]
    while lines and not lines[-1]:
        lines.pop()
    return {
        "name": compose_name(values) or _nameless_stand_in(values),
        "email": values.get(EMAIL) or None,
        "phone_number": values.get(PHONE_MOBILE) or None,
        "address": "\n".join(lines) or None,
        "city": address.get("city"),
        "region": address.get("region"),
        "postal_code": address.get("postal_code"),
        "country_code": address.get("country"),
        "customer_code": values.get(CUSTOMER_CODE) or None,
        "note": values.get(NOTE) or None,
    }
