from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.square import SquareAdapter
from bridge.adapters.square.mapping import from_canonical, to_canonical
from bridge.canonical import ADDRESS_KEYS, normalize

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_phones = st.sampled_from(["+12125554240", "+447911123456", "+61412345678", "+4915112345678", "0211234567"])
_emails = st.from_regex(r"[a-zA-Z0-9._%+-]{1,12}@[a-zA-Z0-9-]{1,10}\.[a-z]{2,4}", fullmatch=True)
_birthdays = st.one_of(
    st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    st.tuples(st.integers(1, 12), st.integers(1, 28)).map(lambda md: f"--{md[0]:02d}-{md[1]:02d}"),
)
_addresses = st.dictionaries(st.sampled_from(ADDRESS_KEYS), _text, max_size=len(ADDRESS_KEYS))


_optional = st.none() | _text
_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "given_name": _optional,
    "family_name": _optional,
    "company_name": _optional,
    "nickname": _optional,
    "note": _optional,
    "customer_code": _optional,
    "email": st.none() | _emails,
    "phone_mobile": st.none() | _phones,
    "billing_address": st.none() | _addresses,
    "birthday": st.none() | _birthdays,
}


def test_fields_are_the_mapped_ones() -> None:
    assert set(_FIELD_STRATEGIES) == SquareAdapter.fields


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries(_FIELD_STRATEGIES))
def test_round_trip(values: dict[str, Any]) -> None:
    canonical = normalize(values)
    native = from_canonical(canonical)
    back = to_canonical(native)
    assert set(back) == SquareAdapter.fields
    assert normalize(back) == canonical


def test_unknown_birth_year_is_0000_both_ways() -> None:
    assert from_canonical({"birthday": "--07-24"})["birthday"] == "07-24"
    assert to_canonical({"birthday": "0000-07-24"})["birthday"] == "--07-24"
    assert to_canonical({"birthday": "1897-07-24"})["birthday"] == "1897-07-24"


def test_address_and_reference_id_map_to_canonical_names() -> None:
    native = {
        "reference_id": "C-17",
        "phone_number": "+1-212-555-4240",
        "address": {
            "address_line_1": "500 Electric Ave",
            "locality": "New York",
            "administrative_district_level_1": "NY",
            "postal_code": "10003",
            "country": "US",
            "sublocality": "not held canonically",
        },
    }
    values = normalize(to_canonical(native))
    assert values["customer_code"] == "C-17"
    assert values["phone_mobile"] == "+12125554240"
    assert values["billing_address"] == {
        "line1": "500 Electric Ave",
        "city": "New York",
        "region": "NY",
        "postal_code": "10003",
        "country": "US",
    }


def test_empty_values_become_none_and_every_native_key_is_present() -> None:
    native = from_canonical(dict.fromkeys(SquareAdapter.fields))
    assert all(v is None for v in native.values())
    assert to_canonical({"given_name": "  ", "address": {}}) == dict.fromkeys(SquareAdapter.fields)
