"""Every query the Python wrapper (loyverse.endpoints.customers.Customers) documents.

Written as plain httpx calls with the wrapper's parameters, so the sandbox answers what
code built on the wrapper would ask; datetimes carry their time zone, as the wrapper's do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from .conftest import Env


def get_by_query(
    http: httpx.Client,
    customer_ids: list[str] | None = None,
    email: str | None = None,
    created_at_min: datetime | None = None,
    created_at_max: datetime | None = None,
    updated_at_min: datetime | None = None,
    updated_at_max: datetime | None = None,
    limit: int = 250,
    cursor: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if customer_ids:
        params["customer_ids"] = ",".join(customer_ids)
    if email:
        params["email"] = email
    for key, value in (
        ("created_at_min", created_at_min),
        ("created_at_max", created_at_max),
        ("updated_at_min", updated_at_min),
        ("updated_at_max", updated_at_max),
    ):
        if value is not None:
            params[key] = value.isoformat()
    if cursor:
        params["cursor"] = cursor
    response = http.get("/customers", params=params)
    response.raise_for_status()
    return dict(response.json())


def get_by_id(http: httpx.Client, customer_id: str) -> dict[str, Any]:
    response = http.get(f"/customers/{customer_id}")
    response.raise_for_status()
    return dict(response.json())


def get_by_email(http: httpx.Client, email: str) -> dict[str, Any]:
    return get_by_query(http, email=email)


def get_by_creation_date(http: httpx.Client, date: datetime) -> dict[str, Any]:
    start = date.replace(hour=0, minute=0, second=0, microsecond=0)
    end = date.replace(hour=23, minute=59, second=59, microsecond=999999)
    return get_by_query(http, created_at_min=start, created_at_max=end)


def get_by_creation_dates(
    http: httpx.Client, start_date: datetime, end_date: datetime | None = None
) -> dict[str, Any]:
    return get_by_query(http, created_at_min=start_date, created_at_max=end_date or datetime.now(UTC))


def _names(result: dict[str, Any]) -> list[str]:
    return [c["name"] for c in result["customers"]]


@pytest.fixture
def seeded(env: Env) -> dict[str, dict[str, Any]]:
    """Four customers created on four days (back-dated in the store, as history would be)."""
    out: dict[str, dict[str, Any]] = {}
    for day, name in zip((10, 11, 12, 13), ("Ann", "Bob", "Cyd", "Dee"), strict=True):
        record = env.http.post(
            "/customers", json={"name": name, "email": f"{name.lower()}@example.com"}
        ).json()
        stamp = f"2026-01-{day:02d}T12:00:00.000Z"
        record.update(created_at=stamp, updated_at=f"2026-02-{day:02d}T12:00:00.000Z")
        env.sandbox.store.put(record["id"], record)
        out[name] = record
    return out


def test_get_by_query_with_every_parameter(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    ids = [seeded[n]["id"] for n in ("Ann", "Bob", "Cyd")]
    first = get_by_query(
        env.http,
        customer_ids=ids,
        email=None,
        created_at_min=datetime(2026, 1, 10, tzinfo=UTC),
        created_at_max=datetime(2026, 1, 12, 23, 0, tzinfo=UTC),
        updated_at_min=datetime(2026, 2, 11, tzinfo=UTC),
        updated_at_max=datetime(2026, 2, 28, tzinfo=UTC),
        limit=1,
    )
    assert _names(first) == ["Bob"]
    assert first["cursor"]
    second = get_by_query(env.http, limit=1, cursor=first["cursor"])
    assert _names(second) == ["Cyd"]
    assert second["cursor"] is None
    with_email = get_by_query(env.http, customer_ids=ids, email="ann@example.com")
    assert _names(with_email) == ["Ann"]


def test_get_by_query_accepts_offsets_other_than_utc(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    # 2026-01-12T14:00+02:00 is 12:00Z: Cyd's creation, inclusive at both ends.
    cest = timezone(timedelta(hours=2))
    moment = datetime(2026, 1, 12, 14, 0, tzinfo=cest)
    assert _names(get_by_query(env.http, created_at_min=moment, created_at_max=moment)) == ["Cyd"]


def test_get_by_id(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    assert get_by_id(env.http, seeded["Dee"]["id"])["email"] == "dee@example.com"
    with pytest.raises(httpx.HTTPStatusError):
        get_by_id(env.http, "00000000-0000-4000-8000-000000000000")


def test_get_by_email(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    assert _names(get_by_email(env.http, "bob@example.com")) == ["Bob"]
    assert _names(get_by_email(env.http, "BOB@example.com")) == ["Bob"]
    assert _names(get_by_email(env.http, "nobody@example.com")) == []


def test_get_by_creation_date(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    assert _names(get_by_creation_date(env.http, datetime(2026, 1, 11, 8, 30, tzinfo=UTC))) == ["Bob"]
    assert _names(get_by_creation_date(env.http, datetime(2026, 1, 9, tzinfo=UTC))) == []


def test_get_by_creation_dates(env: Env, seeded: dict[str, dict[str, Any]]) -> None:
    between = get_by_creation_dates(
        env.http, datetime(2026, 1, 11, tzinfo=UTC), datetime(2026, 1, 12, 23, tzinfo=UTC)
    )
    assert _names(between) == ["Bob", "Cyd"]
    until_now = get_by_creation_dates(env.http, datetime(2026, 1, 12, tzinfo=UTC))
    assert _names(until_now) == ["Cyd", "Dee"]
