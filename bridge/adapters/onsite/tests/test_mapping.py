from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.onsite.mapping import BASE_FIELDS, fields_for, from_canonical, project, to_canonical
from bridge.adapters.onsite.models import Customer, load
from bridge.canonical import CUSTOMER_CODE, normalize

# Printable text without XML-hostile control characters; normalize() collapses spaces.
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,'&-é@/#", min_size=0, max_size=20)
MAYBE_TEXT = st.one_of(st.none(), TEXT)
PHONE = st.one_of(
    st.none(),
    st.from_regex(r"\+1613555\d{4}", fullmatch=True),
    st.from_regex(r"\+4420\d{8}", fullmatch=True),
    st.just("ext. 12"),  # junk a till may hold: kept as text
)
ADDRESS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "line1": TEXT,
            "line2": TEXT,
            "line3": TEXT,
            "city": TEXT,
            "region": TEXT,
            "postal_code": TEXT,
            "country": st.sampled_from(["ca", "US", "gb"]),
        },
    ),
)
BIRTHDAY = st.one_of(
    st.none(),
    st.dates().filter(lambda d: d.year >= 1000).map(lambda d: d.isoformat()),
    st.sampled_from(["--02-29", "--12-31"]),
)


def canonical(code: bool) -> st.SearchStrategy[dict[str, object]]:
    fields = {
        "given_name": MAYBE_TEXT,
        "family_name": MAYBE_TEXT,
        "company_name": MAYBE_TEXT,
        "email": st.one_of(st.none(), st.emails()),
        "homepage": MAYBE_TEXT,
        "phone_home": PHONE,
        "phone_work": PHONE,
        "phone_mobile": PHONE,
        "phone_other": PHONE,
        "billing_address": ADDRESS,
        "shipping_address": ADDRESS,
        "birthday": BIRTHDAY,
        "note": MAYBE_TEXT,
    }
    if code:
        fields["customer_code"] = MAYBE_TEXT
    return st.fixed_dictionaries(fields)


@settings(max_examples=300, deadline=None)
@given(values=canonical(code=False))
def test_round_trip_without_customer_code(values: dict[str, object]) -> None:
    v = normalize(values)
    native = from_canonical(v)
    back = to_canonical(native)
    assert set(back) == BASE_FIELDS
    assert normalize(back) == normalize(project(v))
    # and through the wire format: the XML body we send, read back as OnSite answers
    wire = load(Customer, Customer.from_native(native).body()).native()
    assert normalize(to_canonical(wire)) == normalize(project(v))


@settings(max_examples=200, deadline=None)
@given(values=canonical(code=True), field=st.sampled_from(["import_id", "customer_id"]))
def test_round_trip_with_customer_code(values: dict[str, object], field: str) -> None:
    v = normalize(values)
    native = from_canonical(v, field)
    back = to_canonical(native, field)
    assert set(back) == fields_for(field) == BASE_FIELDS | {CUSTOMER_CODE}
    assert normalize(back) == normalize(project(v, field))
    assert native[field] == (v["customer_code"] or "")


def test_phone_types_slots_and_main_flag() -> None:
    native = from_canonical({"phone_mobile": "+16135550100", "phone_other": "+16135550199"})
    phones = native["phone_numbers"]
    assert [(p["id"], p["type"], p["main"], p["list_order"]) for p in phones] == [
        (1, "mobile", True, 1),
        (2, "other", False, 2),
        (3, "", False, 3),
        (4, "", False, 4),
    ]


def test_unknown_phone_types_fill_phone_other_in_list_order() -> None:
    native = {
        "phone_numbers": [
            {"id": 1, "type": "fax", "list_order": 2, "number": "613-555-0001"},
            {"id": 2, "type": "Home", "list_order": 1, "number": "613-555-0002"},
            {"id": 3, "type": "", "list_order": 3, "number": "613-555-0003"},
            {"id": 4, "type": "work", "list_order": 4, "number": ""},
        ]
    }
    values = to_canonical(native)
    assert values["phone_home"] == "613-555-0002"
    assert values["phone_other"] == "613-555-0001"
    assert values["phone_work"] is None


def test_company_only_sets_is_company_and_people_do_not() -> None:
    assert from_canonical({"company_name": "Acme"})["is_company"] is True
    assert from_canonical({"company_name": "Acme", "given_name": "Bo"})["is_company"] is False
    assert from_canonical({"given_name": "Bo"})["is_company"] is False


def test_addresses_map_element_by_element() -> None:
    address = {
        "line1": "1 Main",
        "line2": "Unit 2",
        "city": "Ottawa",
        "region": "ON",
        "postal_code": "K1A",
        "country": "CA",
    }
    native = from_canonical({"billing_address": address})
    assert native["billing"] == {
        "address1": "1 Main",
        "address2": "Unit 2",
        "city": "Ottawa",
        "state": "ON",
        "country": "CA",
        "zip": "K1A",
    }
    assert native["shipping"] == dict.fromkeys(
        ["address1", "address2", "city", "state", "country", "zip"], ""
    )
    assert to_canonical(native)["billing_address"] == address
    assert to_canonical(native)["shipping_address"] is None


def test_birthday_timestamp_and_year_less() -> None:
    assert to_canonical({"birthday": "1990-04-01T00:00:00"})["birthday"] == "1990-04-01"
    assert from_canonical({"birthday": "--04-01"})["birthday"] == ""


def test_empty_values_clear_and_come_back_as_none() -> None:
    native = from_canonical({})
    assert native["email"] == ""
    assert native["notes"] == ""
    assert native["name"] == {"first": "", "last": ""}
    assert set(to_canonical(native).values()) == {None}
