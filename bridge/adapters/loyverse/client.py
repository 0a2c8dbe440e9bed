"""The Loyverse customers API over the adapter's httpx client.

Vendor errors become `bridge.adapters.errors` here and nowhere else. Every request
spends a token of the shared budget first (see `ratelimit.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from bridge.adapters.errors import (
    AdapterError,
    NotFoundError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from bridge.adapters.loyverse.ratelimit import SharedRateLimiter

PAGE_LIMIT = 250


def format_ts(at: datetime) -> str:
    """ISO 8601 UTC with milliseconds, truncated so that a `*_min` filter stays inclusive."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    try:
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError as err:  # year 1 with a positive offset: callers expect ValueError
        raise ValueError(f"time stamp {value!r} is out of range") from err


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
    except (ValueError, json.JSONDecodeError):
        errors = None
    if isinstance(errors, list) and errors:
        parts = [
            f"{e.get('code', '?')}: {e.get('details', '')}".rstrip(": ")
            for e in errors
            if isinstance(e, dict)
        ]
        return f"loyverse {response.status_code} " + "; ".join(parts)
    return f"loyverse {response.status_code} {response.text[:200]}".rstrip()


def translate(response: httpx.Response) -> AdapterError:
    # Loyverse sends no Retry-After; honour one should a proxy in between add it.
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_for_status(response.status_code, _reason(response), retry_after=retry_after)


class LoyverseClient:
    def __init__(self, http: httpx.Client, limiter: SharedRateLimiter, account: str) -> None:
        self.http = http
        self.limiter = limiter
        self.account = account

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            with self.limiter.spending(self.account):
                response = self.http.request(method, path, params=params, json=body)
        except httpx.TimeoutException as err:
            raise RetryableError(f"loyverse {method} {path}: timed out") from err
        except httpx.TransportError as err:
            # The request may have been committed (a lost response): callers that create
            # must look for the record before trying again.
            raise RetryableError(f"loyverse {method} {path}: {type(err).__name__}: {err}") from err
        if response.is_success:
            return response
        error = translate(response)
        raise error from httpx.HTTPStatusError(str(error), request=response.request, response=response)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as err:
            raise RetryableError(f"loyverse answered {response.status_code} with invalid JSON") from err
        if not isinstance(data, dict):
            raise RetryableError(f"loyverse answered {response.status_code} with a non-object body")
        return data

    # -- customers --------------------------------------------------------------------
    def list_customers(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(self.request("GET", "/customers", params=params))

    def iter_customers(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every customer matching `params`, page by page (never all pages in memory)."""
        query = {**params, "limit": params.get("limit", PAGE_LIMIT)}
        while True:
            page = self.list_customers(query)
            yield from page.get("customers") or []
            cursor = page.get("cursor")
            if not cursor:
                return
            query = {**query, "cursor": cursor}

    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        try:
            return self._json(self.request("GET", f"/customers/{customer_id}"))
        except NotFoundError:
            return None

    def save_customer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /customers: a create, or an update when `body` carries an `id`."""
        return self._json(self.request("POST", "/customers", body=body))

    def delete_customer(self, customer_id: str) -> None:
        self.request("DELETE", f"/customers/{customer_id}")
