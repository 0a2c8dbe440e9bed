"""Every recorded response parses into the typed models the adapter uses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bridge.adapters.errors import (
    AuthError,
    LockContentionError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from bridge.adapters.onsite import OnSiteAdapter
from bridge.adapters.onsite.client import OnSiteClient
from bridge.adapters.onsite.models import (
    Customer,
    CustomerList,
    ErrorDocument,
    SearchResults,
    load,
    parse_xml,
)
from bridge.canonical import normalize

from .conftest import make_settings

FIXTURES = Path(__file__).parent.parent / "fixtures"


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def canonical(native: dict[str, object], code_field: str = "") -> dict[str, object]:
    adapter = OnSiteAdapter(make_settings(customer_code_field=code_field))
    return normalize(adapter.to_canonical(native))


def test_every_fixture_is_covered() -> None:
    covered = {name for name in globals() if name.startswith("test_")}
    for path in FIXTURES.glob("*.xml"):
        stem = path.stem.replace("__", "_")
        assert any(stem in test for test in covered) or path.name.startswith("error__"), path.name


def test_customer_full() -> None:
    customer = load(Customer, read("customer__full.xml"))
    assert customer.id == 15
    assert customer.customer_id == "C-15"
    values = canonical(customer.native())
    assert values["given_name"] == "Jane"
    assert values["family_name"] == "Smith"
    assert values["phone_home"] == "+16135555555"
    assert values["email"] is None
    assert values["billing_address"] is None
    adapter = OnSiteAdapter(make_settings())
    record = adapter._record(customer)
    assert record.updated_at == datetime(2017, 7, 20, 12, 9, 11, 367859, tzinfo=UTC)


def test_customer_created() -> None:
    customer = load(Customer, read("customer__created.xml"))
    assert customer.id == 15
    assert customer.customer_id == "C-15"
    assert customer.modified is None  # the create response in the docs carries no times
    assert customer.phone_numbers is not None
    assert customer.phone_numbers[0].main is True


def test_customer_updated() -> None:
    customer = load(Customer, read("customer__updated.xml"))
    assert customer.homepage == "www.example.com"
    assert customer.modified == "2017-07-20T13:46:22.552965"
    assert canonical(customer.native())["homepage"] == "www.example.com"


def test_customer_photo() -> None:
    customer = load(Customer, read("customer__photo.xml"))
    assert customer.notes is None
    assert canonical(customer.native())["note"] is None


def test_customer_company() -> None:
    customer = load(Customer, read("customer__company.xml"))
    assert customer.is_company is True
    values = canonical(customer.native(), "import_id")
    assert values["company_name"] == "Modeling Agency Ltd."
    assert values["given_name"] is None
    assert values["phone_work"] == "+11234567890"
    assert values["phone_other"] == "+11234567899"  # the fax slot
    assert values["billing_address"] == {
        "line1": "100 Queen St",
        "line2": "Suite 400",
        "city": "Ottawa",
        "region": "ON",
        "country": "CA",
        "postal_code": "K1P 1J9",
    }
    assert values["customer_code"] == "AG-1"
    assert values["note"] == "net 30"


def test_customers_list_page() -> None:
    page = load(CustomerList, read("customers_list__page.xml"))
    assert page.total_count == 2
    assert [c.id for c in page.customers] == [15, 3]
    trudel = canonical(page.customers[1].native())
    assert trudel["phone_work"] == "+11234567890"
    assert trudel["phone_mobile"] == "+10987654321"
    assert trudel["company_name"] == "Modeling Agency Ltd."


def test_search_results_by_name() -> None:
    results = load(SearchResults, read("search_results__by_name.xml"))
    assert results.total_count == 1
    assert [row.customer_id for row in results.rows] == [15]
    assert [cell.value for cell in results.rows[0].cells] == ["C-15", "Jane Smith", "613-555-5555", None]


def test_search_results_modified() -> None:
    results = load(SearchResults, read("search_results__modified.xml"))
    assert results.total_count == 2
    assert [row.customer_id for row in results.rows] == [1, 2]


def test_search_criteria_all() -> None:
    root = parse_xml(read("search_criteria__all.xml"))
    filters = {f.get("id"): f.findtext("type") for f in root.iter("filter")}
    assert filters["lsserver.search.filters.modified_date"] == "DATE"
    assert filters["lsserver.search.filters.email"] == "STRING"
    assert "lsserver.search.column.id" in {c.get("id") for c in root.iter("column")}


@pytest.mark.parametrize(
    ("name", "status", "error_type", "kind"),
    [
        ("error__locked.xml", 403, LockContentionError, "lock"),
        ("error__not_locked.xml", 403, RetryableError, "not_locked"),
        ("error__not_found.xml", 404, NotFoundError, "http"),
        ("error__invalid_value.xml", 400, PermanentError, "http"),
        ("error__no_seats.xml", 403, RetryableError, "seats"),
        ("error__authentication.xml", 401, AuthError, "http"),
        ("error__session_expired.xml", 401, AuthError, "session"),
    ],
)
def test_error_documents(name: str, status: int, error_type: type[Exception], kind: str) -> None:
    document = load(ErrorDocument, read(name))
    assert document.class_
    assert document.type
    assert document.text
    response = httpx.Response(status, content=read(name))
    error, found_kind = OnSiteClient(httpx.Client()).error("GET", "/api/customers/1/", response)
    assert type(error) is error_type
    assert found_kind == kind
    assert document.text in str(error)
