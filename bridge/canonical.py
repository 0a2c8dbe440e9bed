"""The canonical customer: the vendor-neutral shape every adapter maps to and from.

A customer is a flat map of *fields*. Each field carries its value and its provenance
(which system last set it, and that system's own timestamp for the change), so that
merges can be decided per field, last writer wins, without losing a concurrent edit of
another field made elsewhere.

Everything here is pure: no I/O, no database, no vendor knowledge.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

import phonenumbers

# Field names, the same in the database, the mapping functions and the ops views.
GIVEN_NAME = "given_name"
FAMILY_NAME = "family_name"
FULL_NAME = "full_name"
COMPANY_NAME = "company_name"
NICKNAME = "nickname"
EMAIL = "email"
PHONE_MOBILE = "phone_mobile"
PHONE_HOME = "phone_home"
PHONE_WORK = "phone_work"
PHONE_OTHER = "phone_other"
BILLING_ADDRESS = "billing_address"
SHIPPING_ADDRESS = "shipping_address"
BIRTHDAY = "birthday"
NOTE = "note"
CUSTOMER_CODE = "customer_code"
HOMEPAGE = "homepage"

PHONE_FIELDS: tuple[str, ...] = (PHONE_MOBILE, PHONE_HOME, PHONE_WORK, PHONE_OTHER)
ADDRESS_FIELDS: tuple[str, ...] = (BILLING_ADDRESS, SHIPPING_ADDRESS)
TEXT_FIELDS: tuple[str, ...] = (
    GIVEN_NAME,
    FAMILY_NAME,
    FULL_NAME,
    COMPANY_NAME,
    NICKNAME,
    NOTE,
    CUSTOMER_CODE,
    HOMEPAGE,
)
ALL_FIELDS: frozenset[str] = frozenset((*TEXT_FIELDS, EMAIL, *PHONE_FIELDS, *ADDRESS_FIELDS, BIRTHDAY))

ADDRESS_KEYS: tuple[str, ...] = ("line1", "line2", "line3", "city", "region", "postal_code", "country")


class Address(TypedDict, total=False):
    line1: str
    line2: str
    line3: str
    city: str
    region: str
    postal_code: str
    country: str


# A mapping of canonical field name to value (None = empty). Adapters produce and consume
# these; only the fields an adapter declares are ever present.
Values = dict[str, Any]


class NormalizationError(ValueError):
    """A value that cannot be represented canonically (e.g. an unparseable phone number)."""


_WS = re.compile(r"\s+")
_BIRTHDAY = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$|^--(\d{2})-(\d{2})$")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = _WS.sub(" ", str(value)).strip()
    return text or None


def normalize_email(value: Any) -> str | None:
    text = _text(value)
    return text.lower() if text else None


def normalize_phone(value: Any, default_region: str = "US") -> str | None:
    """E.164, or the digits as given when the number cannot be parsed at all.

    A POS may hold junk in a phone field; we keep it rather than lose it, but only a
    parseable number takes part in matching.
    """
    text = _text(value)
    if not text:
        return None
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(parsed):
        return text
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def is_e164(value: str | None) -> bool:
    return bool(value) and bool(re.fullmatch(r"\+[1-9]\d{6,14}", value or ""))


def normalize_birthday(value: Any) -> str | None:
    """`YYYY-MM-DD`, or `--MM-DD` when the year is unknown (Square's `0000`)."""
    text = _text(value)
    if not text:
        return None
    text = text[:10] if re.match(r"^\d{4}-\d{2}-\d{2}T", text) else text
    match = _BIRTHDAY.match(text)
    if not match:
        raise NormalizationError(f"birthday {text!r} is not YYYY-MM-DD or MM-DD")
    year, month, day = (match.group(1), match.group(2), match.group(3))
    if month is None:
        month, day = match.group(4), match.group(5)
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        raise NormalizationError(f"birthday {text!r} is not a date")
    if year is None or year == "0000":
        return f"--{month}-{day}"
    return f"{year}-{month}-{day}"


def normalize_address(value: Any) -> Address | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise NormalizationError("an address must be a mapping")
    out: dict[str, str] = {}
    for key in ADDRESS_KEYS:
        text = _text(value.get(key))
        if text:
            out[key] = text.upper() if key == "country" else text
    return Address(**out) if out else None  # type: ignore[typeddict-item]


def normalize_field(field: str, value: Any, default_region: str = "US") -> Any:
    if field == EMAIL:
        return normalize_email(value)
    if field in PHONE_FIELDS:
        return normalize_phone(value, default_region)
    if field in ADDRESS_FIELDS:
        return normalize_address(value)
    if field == BIRTHDAY:
        return normalize_birthday(value)
    if field in ALL_FIELDS:
        return _text(value)
    raise KeyError(f"unknown canonical field {field!r}")


def normalize(values: Mapping[str, Any], default_region: str = "US") -> Values:
    return {field: normalize_field(field, value, default_region) for field, value in values.items()}


def projection_hash(values: Mapping[str, Any]) -> str:
    """A stable digest of a projection; equal digests mean nothing to write."""
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def match_keys(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The keys a customer can be matched on: e-mail, E.164 phones, customer code."""
    keys: list[tuple[str, str]] = []
    if values.get(EMAIL):
        keys.append(("email", str(values[EMAIL])))
    for field in PHONE_FIELDS:
        phone = values.get(field)
        if phone and is_e164(phone):
            keys.append(("phone", str(phone)))
    if values.get(CUSTOMER_CODE):
        keys.append(("customer_code", str(values[CUSTOMER_CODE]).casefold()))
    return sorted(set(keys))


@dataclass(frozen=True)
class FieldState:
    value: Any
    source: str
    at: datetime
    # The value this one replaced. A system with one change time per record can give a
    # value a later time than it was typed at (another field changed after it); when a
    # later event shows it older than what it replaced, that one comes back (`redate`).
    replaced: FieldState | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": self.value, "s": self.source, "t": self.at.isoformat()}
        if self.replaced is not None:
            data["p"] = self.replaced.bare().to_json()
        return data

    def bare(self) -> FieldState:
        return FieldState(value=self.value, source=self.source, at=self.at)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldState:
        at = datetime.fromisoformat(data["t"])
        replaced = cls.from_json(data["p"]) if data.get("p") else None
        return cls(
            value=data.get("v"),
            source=str(data["s"]),
            at=at if at.tzinfo else at.replace(tzinfo=UTC),
            replaced=replaced,
        )


@dataclass
class MergeOutcome:
    changed: list[str]
    rejected: list[str]


def merge_fields(
    state: dict[str, FieldState],
    incoming: Mapping[str, Any],
    source: str,
    at: datetime,
    priority: Iterable[str] = (),
) -> MergeOutcome:
    """Last writer wins, per field, by the source's own timestamp.

    Ties go to the system earlier in `priority`. A value equal to the current one never
    moves the provenance, so an echo can never "win" a later tie.
    """
    order = {name: rank for rank, name in enumerate(priority)}
    changed: list[str] = []
    rejected: list[str] = []
    for field, value in incoming.items():
        current = state.get(field)
        if current is not None and current.value == value:
            continue
        if current is None:
            if value is None:
                continue
        elif at < current.at or (
            at == current.at
            and current.source != source
            and order.get(source, len(order)) >= order.get(current.source, len(order))
        ):
            rejected.append(field)
            continue
        replaced = current.bare() if current is not None and current.value is not None else None
        state[field] = FieldState(value=value, source=source, at=at, replaced=replaced)
        changed.append(field)
    return MergeOutcome(changed=changed, rejected=rejected)


def redate(
    state: dict[str, FieldState], seen: Mapping[str, Any], source: str, at: datetime
) -> tuple[list[str], list[str]]:
    """`source` showed `seen` as its state at `at`, earlier than the times we hold for it.

    Where a value we hold from `source` was already there at `at`, it is at least that old:
    its time moves back. A value from elsewhere that it replaced and that is newer than
    that was beaten only by the record's later time: it is given back. Returns the fields
    whose time moved and those whose value came back.
    """
    moved: list[str] = []
    restored: list[str] = []
    for field, value in seen.items():
        current = state.get(field)
        if current is None or current.source != source or current.value != value or at >= current.at:
            continue
        earlier = FieldState(value=value, source=source, at=at, replaced=current.replaced)
        previous = current.replaced
        if previous is not None and previous.source != source and previous.at > at:
            state[field] = FieldState(
                value=previous.value, source=previous.source, at=previous.at, replaced=earlier.bare()
            )
            restored.append(field)
        else:
            state[field] = earlier
            moved.append(field)
    return moved, restored


def values_of(state: Mapping[str, FieldState], fields: Iterable[str]) -> Values:
    return {field: (state[field].value if field in state else None) for field in sorted(fields)}


def utcnow() -> datetime:
    return datetime.now(UTC)


def display_name(values: Mapping[str, Any]) -> str:
    if values.get(FULL_NAME):
        return str(values[FULL_NAME])
    parts = [values.get(GIVEN_NAME), values.get(FAMILY_NAME)]
    name = " ".join(p for p in parts if p)
    return name or str(values.get(COMPANY_NAME) or values.get(EMAIL) or "")
