"""Native <-> canonical mapping: round trip (property), name rules, projection."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.fieldpine import FieldpineAdapter
from bridge.adapters.fieldpine.mapping import FIELDS, NATIVE_FIELDS, from_canonical, project, to_canonical
from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.canonical import ADDRESS_KEYS, normalize
from bridge.sandbox.transport import SyncASGITransport

from .conftest import make_adapter

text = st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30))
phones = st.one_of(
    text,
    st.from_regex(r"\+6421[0-9]{7}", fullmatch=True),
    st.from_regex(r"\(?[2-9][0-9]{2}\)? [2-9][0-9]{2}-[0-9]{4}", fullmatch=True),
)
emails = st.one_of(text, st.emails())
addresses = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(ADDRESS_KEYS), text, max_size=len(ADDRESS_KEYS))
)

canonical_values = st.fixed_dictionaries(
    {
        "given_name": text,
        "family_name": text,
        "full_name": text,
        "company_name": text,
        "email": emails,
        "phone_mobile": phones,
        "phone_home": phones,
        "billing_address": addresses,
    }
)


@settings(max_examples=300, deadline=None)
@given(canonical_values)
def test_round_trip_is_the_projection(raw: dict[str, Any]) -> None:
    values = normalize(raw)
    native = from_canonical(values)
    assert set(native) == set(NATIVE_FIELDS)
    assert all(isinstance(v, str) for v in native.values())
    back = to_canonical(native)
    assert set(back) == FIELDS
    assert normalize(back) == normalize(project(values))
    # Stable: what the system gives back maps to itself again (echo hashes do not drift).
    assert from_canonical(normalize(back)) == native


@settings(max_examples=100, deadline=None)
@given(canonical_values)
def test_projection_is_idempotent(raw: dict[str, Any]) -> None:
    once = normalize(project(normalize(raw)))
    assert normalize(project(once)) == once


def test_fields_match_the_adapter() -> None:
    assert FieldpineAdapter.fields == FIELDS


def test_name_is_given_plus_family_and_full_name_only_alone() -> None:
    native = from_canonical({"given_name": "Pat", "family_name": "Benatar", "full_name": "Patricia Benatar"})
    assert (native["Name"], native["FirstName"], native["LastName"]) == ("Pat Benatar", "Pat", "Benatar")
    assert from_canonical({"full_name": "Pat Benatar"})["Name"] == "Pat Benatar"
    assert from_canonical({"family_name": "Benatar"})["Name"] == "Benatar"
    assert to_canonical({"Name": "Pat Benatar"})["full_name"] == "Pat Benatar"
    assert to_canonical({"Name": "Pat Benatar", "FirstName": "Pat"})["full_name"] is None


def test_addresses_and_phones_map_to_their_slots() -> None:
    native = {
        "Address1": "123 Riverlands Road",
        "Address2": "Perth",
        "Mobile": "+61 412 345 678",
        "Phone": "",
        "Email": "Pat@Example.com",
        "EUCitizen": True,
    }
    values = to_canonical(native)
    assert values["billing_address"] == {"line1": "123 Riverlands Road", "line2": "Perth"}
    assert values["phone_mobile"] == "+61 412 345 678"
    assert values["phone_home"] is None
    assert normalize(values)["email"] == "pat@example.com"
    assert project({"billing_address": {"city": "Perth", "country": "AU"}})["billing_address"] is None


def test_empty_record_maps_to_all_none() -> None:
    assert to_canonical({"CustomerId": str(uuid.uuid4()).upper()}) == dict.fromkeys(FIELDS)


@settings(max_examples=40, deadline=None)
@given(raw=canonical_values, n=st.integers(0, 10**9))
def test_round_trip_through_the_sandbox(raw: dict[str, Any], n: int) -> None:
    # A fresh sandbox per example: pytest fixtures are not reset between hypothesis examples.
    sb = FieldpineSandbox()
    transport = SyncASGITransport(sb.app)
    try:
        adapter = make_adapter(transport)
        values = normalize(raw)
        record_key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rt-{n}"))
        created = adapter.create(adapter.from_canonical(values), record_key)
        fetched = adapter.fetch(created.external_id)
        assert fetched is not None
        assert normalize(adapter.to_canonical(fetched.native)) == normalize(project(values))
    finally:
        transport.shutdown()
