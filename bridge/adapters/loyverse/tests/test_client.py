"""Recorded Loyverse responses: one test per response fixture."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from bridge.adapters.errors import AuthError, NotFoundError, PermanentError, RateLimitedError, RetryableError
from bridge.adapters.loyverse.client import format_ts, parse_ts, translate
from bridge.adapters.loyverse.webhook import record_of
from bridge.canonical import normalize

from .conftest import fixture_bytes, fixture_json


def _response(status: int, fixture: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=fixture_bytes(fixture), headers=headers or {})


def test_get_customers_page() -> None:
    page = fixture_json("get_customers__page.json")
    records = [record_of(c) for c in page["customers"]]
    assert [r.deleted for r in records] == [False, True]
    assert records[0].updated_at == datetime(2026, 3, 2, 10, 15, 30, 987000, tzinfo=UTC)
    assert page["cursor"]
    from bridge.adapters.loyverse.mapping import to_canonical

    second = normalize(to_canonical(records[1].native))
    assert (second["given_name"], second["family_name"]) == ("Ana Lucia", "de la Cruz")
    assert second["phone_mobile"] == "+14155550199"


def test_error_rate_limited() -> None:
    error = translate(_response(429, "error__rate_limited.json"))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after is None  # Loyverse sends no Retry-After
    assert "RATE_LIMITED" in str(error)
    honoured = translate(_response(429, "error__rate_limited.json", {"Retry-After": "7"}))
    assert isinstance(honoured, RateLimitedError)
    assert honoured.retry_after == 7.0


def test_error_missing_name() -> None:
    error = translate(_response(400, "error__missing_name.json"))
    assert type(error) is PermanentError
    assert str(error) == "loyverse 400 MISSING_REQUIRED_PARAMETER: name is required"


def test_error_unauthorized() -> None:
    assert isinstance(translate(_response(401, "error__unauthorized.json")), AuthError)


def test_error_not_found() -> None:
    assert isinstance(translate(_response(404, "error__not_found.json")), NotFoundError)


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_side_statuses_are_retryable(status: int) -> None:
    error = translate(httpx.Response(status, text="<html>bad gateway</html>"))
    assert isinstance(error, RetryableError)
    assert error.status == status


def test_timestamps() -> None:
    at = datetime(2026, 3, 2, 10, 15, 30, 987654, tzinfo=UTC)
    assert format_ts(at) == "2026-03-02T10:15:30.987Z"
    assert parse_ts("2026-03-02T10:15:30.987Z") == at.replace(microsecond=987000)
    assert parse_ts(None) is None
    with pytest.raises(ValueError, match="timezone"):
        format_ts(datetime(2026, 1, 1))
