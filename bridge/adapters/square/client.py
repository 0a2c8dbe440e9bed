"""Square's Customers API over the official `squareup` SDK, errors translated at this boundary.

The SDK gets the adapter's own `httpx.Client` (so the transport seam works) and every call
passes `max_retries=0`: left alone, the v46 SDK retries 408/409/429/5xx twice by itself,
sleeping inside a Celery task and hiding 409 conflicts. Our retry policy decides alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx
from square import Square
from square.core.api_error import ApiError
from square.core.request_options import RequestOptions

from bridge.adapters.errors import (
    AdapterError,
    AuthError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    parse_retry_after,
)

T = TypeVar("T")

NO_RETRIES: RequestOptions = {"max_retries": 0}
PAGE_LIMIT = 100


class OutcomeUnknownError(RetryableError):
    """The request went out but its answer never came back: it may have been committed.

    Candidate for `bridge.adapters.errors`: the engine must run `find_existing` after a
    create that failed this way, and only this way.
    """


class IdempotencyKeyReusedError(PermanentError):
    """Square saw this idempotency key before, with a different body."""


def error_from_codes(
    status: int | None,
    errors: Iterable[Mapping[str, Any]],
    what: str,
    retry_after: float | None = None,
) -> AdapterError:
    """Square's `{"errors":[...]}` (whole call or one bulk entry) -> our error type."""
    errors = list(errors)
    codes = {str(e.get("code")) for e in errors}
    categories = {str(e.get("category")) for e in errors}
    detail = "; ".join(
        f"{e.get('code')}: {e.get('detail')}" if e.get("detail") else str(e.get("code")) for e in errors
    )
    reason = f"{what}: {detail or f'HTTP {status}'}"
    # A stale version: the sandbox (and, by reports, Square) says 400 CONFLICT; 409 is the
    # other documented possibility.
    if "CONFLICT" in codes or status == 409:
        return ConflictError(reason, status=status)
    if status == 429 or "RATE_LIMITED" in codes or "RATE_LIMIT_ERROR" in categories:
        return RateLimitedError(reason, status=status, retry_after=retry_after)
    if status in (401, 403) or "AUTHENTICATION_ERROR" in categories:
        return AuthError(reason, status=status)
    if "IDEMPOTENCY_KEY_REUSED" in codes:
        return IdempotencyKeyReusedError(reason, status=status)
    if status == 404 or "NOT_FOUND" in codes:
        return NotFoundError(reason, status=status)
    if status is not None and (status == 408 or status >= 500):
        return RetryableError(reason, status=status, retry_after=retry_after)
    if status is None and "API_ERROR" in categories:
        return RetryableError(reason)
    if status is not None and 200 <= status < 300:
        # The SDK raises ApiError for a 2xx whose body is not JSON: a broken answer.
        return RetryableError(f"{what}: unreadable response", status=status)
    return PermanentError(reason, status=status)


def translate(err: ApiError, what: str) -> AdapterError:
    headers = {k.lower(): v for k, v in (err.headers or {}).items()}
    errors = [e.model_dump(exclude_none=True) for e in (err.errors or [])]
    return error_from_codes(err.status_code, errors, what, parse_retry_after(headers.get("retry-after")))


def _dump(model: Any) -> dict[str, Any]:
    """The SDK model back to the JSON Square sent (unset fields left out)."""
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return data


class SquareClient:
    def __init__(
        self, http: httpx.Client, *, base_url: str, token: Callable[[], str], square_version: str
    ) -> None:
        # The token is passed as a callable so the plain secret is not kept on any object.
        self.sdk = Square(
            base_url=base_url.rstrip("/"), token=token, version=square_version, httpx_client=http
        )

    def _call(self, what: str, fn: Callable[..., T], *args: Any, write: bool = True, **kwargs: Any) -> T:
        try:
            return fn(*args, request_options=NO_RETRIES, **kwargs)
        except ApiError as err:
            raise translate(err, what) from err
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise RetryableError(f"{what}: cannot connect: {type(err).__name__}") from err
        except httpx.TransportError as err:
            if not write:
                # Reads (search is a POST) change nothing: a lost answer is just retryable.
                raise RetryableError(f"{what}: no answer: {type(err).__name__}") from err
            raise OutcomeUnknownError(f"{what}: no answer: {type(err).__name__}: {err}") from err

    # -- reads ------------------------------------------------------------------------
    def retrieve(self, customer_id: str) -> dict[str, Any] | None:
        try:
            response = self._call("retrieve customer", self.sdk.customers.get, customer_id, write=False)
        except NotFoundError:
            return None
        return _dump(response.customer) if response.customer is not None else None

    def list_page(self, *, limit: int, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        pager = self._call("list customers", self.sdk.customers.list, limit=limit, cursor=cursor, write=False)
        return [_dump(c) for c in pager.items or []], pager.response.cursor or None

    def search(
        self,
        *,
        filter_: dict[str, Any] | None = None,
        sort: dict[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = PAGE_LIMIT,
    ) -> tuple[list[dict[str, Any]], str | None]:
        query: dict[str, Any] = {}
        if filter_:
            query["filter"] = filter_
        if sort:
            query["sort"] = sort
        kwargs: dict[str, Any] = {"limit": limit}
        if query:
            kwargs["query"] = query
        if cursor:
            kwargs["cursor"] = cursor
        response = self._call("search customers", self.sdk.customers.search, write=False, **kwargs)
        return [_dump(c) for c in response.customers or []], response.cursor or None

    # -- writes -----------------------------------------------------------------------
    def create(self, body: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        response = self._call(
            "create customer", self.sdk.customers.create, idempotency_key=idempotency_key, **body
        )
        if response.customer is None:
            raise RetryableError("create customer: answer without a customer")
        return _dump(response.customer)

    def update(self, customer_id: str, body: Mapping[str, Any], version: int | None) -> dict[str, Any]:
        kwargs = dict(body)
        if version is not None:
            kwargs["version"] = version
        response = self._call("update customer", self.sdk.customers.update, customer_id, **kwargs)
        if response.customer is None:
            raise RetryableError("update customer: answer without a customer")
        return _dump(response.customer)

    def delete(self, customer_id: str, version: int | None) -> None:
        self._call("delete customer", self.sdk.customers.delete, customer_id, version=version)

    def bulk_create(self, entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per idempotency key: `{"customer": {...}}` or `{"errors": [...]}`."""
        response = self._call(
            "bulk create customers",
            self.sdk.customers.batch_create,
            customers={key: dict(body) for key, body in entries.items()},
        )
        return {key: _dump(entry) for key, entry in (response.responses or {}).items()}
