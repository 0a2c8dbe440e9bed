"""Loyverse's single `name` against canonical given/family/full names, and the round trip."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.adapters.loyverse import LoyverseAdapter
from bridge.adapters.loyverse.mapping import NAMELESS_PLACEHOLDER, from_canonical, split_name, to_canonical
from bridge.canonical import normalize

FIELDS = LoyverseAdapter.fields

_particle = st.sampled_from(["van", "der", "de", "la", "von", "di", "da", "du", "le", "bin", "al"])
_capitalised = st.from_regex(r"[A-Z][a-z]{1,9}", fullmatch=True)
_letters = st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=8)
_word = st.one_of(_capitalised, _capitalised, _particle, _letters)
full_names = st.lists(_word, min_size=1, max_size=5).map(" ".join)
optional_names = st.one_of(st.none(), full_names)

_text = st.one_of(st.none(), st.text(max_size=30))
emails = st.one_of(st.none(), st.from_regex(r"[a-z0-9._]{1,12}@[a-z0-9]{1,10}\.(com|org|nl)", fullmatch=True))
phones = st.one_of(st.none(), st.integers(0, 9999).map(lambda n: f"+1415555{n:04d}"))
codes = st.one_of(st.none(), st.from_regex(r"[A-Z]{1,3}-[0-9]{1,6}", fullmatch=True))
addresses = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "line1": st.text(max_size=30),
            "line2": st.text(max_size=20),
            "line3": st.text(max_size=20),
            "city": st.text(max_size=20),
            "region": st.text(max_size=20),
            "postal_code": st.text(max_size=10),
            "country": st.sampled_from(["NL", "us", "GB", "de"]),
        },
    ),
)


def _canonical(**values: Any) -> dict[str, Any]:
    return normalize({field: values.get(field) for field in FIELDS})


canonical_values = st.builds(
    _canonical,
    given_name=optional_names,
    family_name=optional_names,
    full_name=optional_names,
    email=emails,
    phone_mobile=phones,
    billing_address=addresses,
    note=_text,
    customer_code=codes,
)


def expected_projection(values: dict[str, Any]) -> dict[str, Any]:
    """What Loyverse can hold, stated independently of the mapping's code path."""
    full, given_, family = values["full_name"], values["given_name"], values["family_name"]
    if full and (split_name(full) == (given_, family) or (given_ is None and family is None)):
        name = full
    else:
        name = " ".join(part for part in (given_, family) if part) or full
    out = dict(values)
    out["full_name"] = name
    out["given_name"], out["family_name"] = split_name(name) if name else (None, None)
    return normalize(out)


# -- names (the acceptance) ------------------------------------------------------


@given(full_names)
def test_a_full_name_read_from_loyverse_is_written_back_verbatim(name: str) -> None:
    assume(name != NAMELESS_PLACEHOLDER)
    canonical = normalize(to_canonical({"name": name}))
    assert canonical["full_name"] == name
    assert from_canonical(canonical)["name"] == name
    # And again: a second trip through the bridge changes nothing.
    assert normalize(to_canonical(from_canonical(canonical))) == canonical


@given(full_names, _capitalised)
def test_an_edit_of_given_name_elsewhere_wins_over_the_stale_full_name(name: str, new_given: str) -> None:
    canonical = normalize(to_canonical({"name": name}))
    assume(new_given != canonical["given_name"])
    edited = {**canonical, "given_name": new_given}
    expected = " ".join(part for part in (new_given, canonical["family_name"]) if part)
    assert from_canonical(edited)["name"] == expected


@given(full_names, _capitalised)
def test_an_edit_of_family_name_elsewhere_wins_too(name: str, new_family: str) -> None:
    canonical = normalize(to_canonical({"name": name}))
    assume(new_family != canonical["family_name"])
    edited = {**canonical, "family_name": new_family}
    expected = " ".join(part for part in (canonical["given_name"], new_family) if part)
    assert from_canonical(edited)["name"] == expected


@given(full_names)
def test_the_split_rebuilds_the_name(name: str) -> None:
    given_, family = split_name(name)
    assert given_
    assert " ".join(part for part in (given_, family) if part) == name


def test_mary_anne_van_der_berg_stays_herself() -> None:
    canonical = normalize(to_canonical({"name": "Mary Anne van der Berg"}))
    assert canonical["given_name"] == "Mary Anne"
    assert canonical["family_name"] == "van der Berg"
    assert from_canonical(canonical)["name"] == "Mary Anne van der Berg"


def test_name_from_a_system_with_given_and_family_only() -> None:
    values = _canonical(given_name="Jean-Luc", family_name="Picard")
    native = from_canonical(values)
    assert native["name"] == "Jean-Luc Picard"
    assert normalize(to_canonical(native))["full_name"] == "Jean-Luc Picard"


# -- nameless customers ------------------------------------------------------------------


def test_a_nameless_customer_is_sent_under_its_email_and_read_back_nameless() -> None:
    values = _canonical(email="walkin@example.com")
    native = from_canonical(values)
    assert native["name"] == "walkin@example.com"
    assert normalize(to_canonical(native)) == values


def test_a_customer_with_nothing_but_a_note_gets_the_placeholder() -> None:
    values = _canonical(note="paid cash")
    native = from_canonical(values)
    assert native["name"] == NAMELESS_PLACEHOLDER
    assert normalize(to_canonical(native)) == values


# -- everything else ---------------------------------------------------------------------


def test_address_lines_travel_in_the_one_address_field() -> None:
    values = _canonical(
        full_name="A B",
        billing_address={
            "line1": "Keizersgracht 1",
            "line3": "c/o Smit",
            "city": "Amsterdam",
            "country": "nl",
        },
    )
    native = from_canonical(values)
    assert native["address"] == "Keizersgracht 1\n\nc/o Smit"
    assert native["country_code"] == "NL"
    assert normalize(to_canonical(native))["billing_address"] == values["billing_address"]


def test_more_than_three_address_lines_typed_at_the_till_fold_into_line3() -> None:
    canonical = to_canonical({"name": "X", "address": "a\nb\nc\nd"})
    assert canonical["billing_address"] == {"line1": "a", "line2": "b", "line3": "c d"}


def test_update_payload_names_every_writable_field() -> None:
    native = from_canonical(_canonical(full_name="Solo"))
    assert set(native) == {
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
    }
    assert native["email"] is None


@settings(max_examples=300)
@given(canonical_values)
def test_round_trip_equals_the_projection_loyverse_can_hold(values: dict[str, Any]) -> None:
    assume(NAMELESS_PLACEHOLDER not in (values["full_name"], values["given_name"]))
    assert normalize(to_canonical(from_canonical(values))) == expected_projection(values)


@given(canonical_values)
def test_the_projection_is_a_fixed_point(values: dict[str, Any]) -> None:
    once = normalize(to_canonical(from_canonical(values)))
    assert normalize(to_canonical(from_canonical(once))) == once


@given(
    st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(st.none(), st.text(max_size=15), st.just("  "))
            for key in (
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
        },
    )
)
def test_to_canonical_gives_exactly_the_declared_fields(native: dict[str, Any]) -> None:
    canonical = to_canonical(native)
    assert set(canonical) == FIELDS
    for value in canonical.values():
        assert value is None or value != ""
    # Deterministic: the engine hashes this to recognise its own echoes.
    assert to_canonical(dict(native)) == canonical
