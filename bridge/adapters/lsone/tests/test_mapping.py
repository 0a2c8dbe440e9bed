"""The pure mapping: an empty canonical projection, status names, LS One time stamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.errors import PermanentError
from bridge.adapters.lsone import LSOneAdapter
from bridge.adapters.lsone.mapping import (
    STATUS_NAMES,
    from_canonical,
    parse_datetime,
    status_name,
    to_canonical,
    to_external_order,
)
from bridge.canonical import ALL_FIELDS, normalize

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
orders = st.fixed_dictionaries(
    {"gid": st.uuids().map(str)},
    optional={
        "customerID": st.text(max_size=10),
        "status": st.sampled_from([*STATUS_NAMES, 1, 0]),
        "reference": st.text(max_size=10),
        "comment": json_scalars,
        "orderXML": st.text(max_size=30),
    },
)
canonical_values = st.dictionaries(st.sampled_from(sorted(ALL_FIELDS)), st.text(max_size=10), max_size=5)


@given(orders)
def test_the_canonical_projection_is_exactly_the_declared_fields(native: dict[str, Any]) -> None:
    values = to_canonical(native)
    assert set(values) == set(LSOneAdapter.fields) == set()
    # The round trip over the (empty) projection: nothing LS One holds can drift.
    assert normalize(values) == normalize({k: v for k, v in values.items() if k in LSOneAdapter.fields})


@given(canonical_values)
def test_nothing_can_be_written_back(values: dict[str, Any]) -> None:
    with pytest.raises(PermanentError, match="read-only"):
        from_canonical(values)


@given(orders)
def test_every_order_maps_deterministically(native: dict[str, Any]) -> None:
    first, second = to_external_order(native), to_external_order(dict(native))
    assert first == second
    assert first.external_id == native["gid"].lower()
    assert not first.status.isdigit()


def test_status_names_cover_the_documented_codes() -> None:
    assert [status_name(code) for code in (4, 8, 16, 32, 64, 128, 256, 512)] == [
        "open", "closed", "cancelled", "new", "printed", "ready", "delivered", "deleted"
    ]  # fmt: skip
    assert status_name(1) == "unknown:1"  # the vendor's own sample carries status 1
    assert status_name(None) == "unknown"
    assert to_external_order({"gid": "A", "status": "8"}).status == "closed"


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2021-10-18T16:39:02.227", UTC, datetime(2021, 10, 18, 16, 39, 2, 227000, tzinfo=UTC)),
        ("2021-10-18T16:39:02.2270000", UTC, datetime(2021, 10, 18, 16, 39, 2, 227000, tzinfo=UTC)),
        ("2021-10-18T16:39:02Z", ZoneInfo("Europe/Oslo"), datetime(2021, 10, 18, 16, 39, 2, tzinfo=UTC)),
        ("2021-10-18T16:39:02", ZoneInfo("Europe/Oslo"), datetime(2021, 10, 18, 14, 39, 2, tzinfo=UTC)),
        ("2021-10-18T16:39:02+01:00", UTC, datetime(2021, 10, 18, 15, 39, 2, tzinfo=UTC)),
        ("", UTC, None),
        ("yesterday", UTC, None),
        (None, UTC, None),
    ],
)
def test_time_stamps(text: Any, zone: Any, expected: datetime | None) -> None:
    assert parse_datetime(text, zone) == expected


def test_an_order_without_gid_is_refused() -> None:
    with pytest.raises(PermanentError):
        to_external_order({"reference": "R1"})


def test_blank_customer_and_reference_become_none() -> None:
    order = to_external_order({"gid": "a", "customerID": " ", "reference": "", "createdDate": None})
    assert (order.customer_ref, order.reference, order.updated_at) == (None, None, None)
