"""The LS One API protocol: JWT login, token refresh, customer-order reads.

Vendor failures become `bridge.adapters.errors` here and nowhere else. Tokens and the
password never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httpx
from pydantic import SecretStr

from bridge.adapters.errors import (
    AdapterError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)

log = logging.getLogger("posbridge.adapters.lsone")

AUTHENTICATE_PATH = "/api/authorize/authenticate"
# POS-APIS.md only says the refresh token comes as a cookie (valid 24 h); the endpoint
# that takes it is our reading (the sandbox serves it). Any failure there falls back to
# a fresh login, so a server without it costs one extra authenticate, nothing more.
REFRESH_PATH = "/api/authorize/refresh"
REFRESH_COOKIE = "refreshToken"
ORDERS_PATH = "/api/customer/orders"
SEARCH_PATH = "/api/customer/orders/search"

# The sandbox answers `{"token": ...}`; the login body is not documented, so take the
# usual spellings of the field too.
_TOKEN_KEYS: tuple[str, ...] = ("token", "accessToken", "access_token", "jwtToken", "jwt")


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: we only read `exp`/`iat` to plan a refresh.

    The signature is the server's business (we do not hold its key); an opaque or
    malformed token yields no claims and we then rely on the 401 alone.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(_b64url(parts[1]))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass
class _Token:
    value: str
    # Epoch seconds; None when the token does not say (then only a 401 renews it).
    expires_at: float | None
    lifetime_s: float | None

    def refresh_due(self, now: float, margin_s: float) -> bool:
        if self.expires_at is None:
            return False
        margin = margin_s if self.lifetime_s is None else min(margin_s, self.lifetime_s / 10)
        return now >= self.expires_at - margin


def _problem_reason(response: httpx.Response) -> str:
    """The vendor's own words: ProblemDetails `detail`/`title`, validation `errors`, or text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("title", "detail") if body.get(key)]
        errors = body.get("errors")
        if isinstance(errors, dict):
            for name, messages in errors.items():
                listed = messages if isinstance(messages, list) else [messages]
                parts.append(f"{name}: {'; '.join(str(m) for m in listed)}")
        if parts:
            return " - ".join(parts)
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase or f"HTTP {response.status_code}"


def _challenge(response: httpx.Response) -> str:
    """What a 401's `WWW-Authenticate: Bearer error=..., error_description=...` says."""
    header = response.headers.get("www-authenticate", "")
    return header.partition(" ")[2].strip() if header.lower().startswith("bearer") else ""


def error_from_response(response: httpx.Response, action: str) -> AdapterError:
    status = response.status_code
    reason = f"LS One {action}: HTTP {status}: {_problem_reason(response)}"
    if status == 401 and (challenge := _challenge(response)):
        reason = f"{reason} ({challenge})"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_for_status(status, reason, retry_after=retry_after)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total_count: int | None


def parse_page(body: Any) -> Page:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise PermanentError("LS One: a page without an `items` list")
    items = [item for item in body["items"] if isinstance(item, dict)]
    total = body.get("totalCount")
    return Page(items=items, total_count=total if isinstance(total, int) else None)


class LSOneClient:
    """Customer-order reads with a self-renewing bearer token."""

    def __init__(
        self,
        http: httpx.Client,
        username: str,
        password: SecretStr,
        *,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._username = username
        self._password = password
        self._refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._token: _Token | None = None
        self._refresh_token: str | None = None
        # Celery may run a worker's tasks on threads sharing this client: one login at a time.
        self._lock = threading.Lock()

    # -- tokens -----------------------------------------------------------------------
    def authenticate(self) -> None:
        """Log in with user name and password (POST /api/authorize/authenticate)."""
        with self._lock:
            self._login()

    def _login(self) -> None:
        body = {"userName": self._username, "password": self._password.get_secret_value()}
        response = self._send("POST", AUTHENTICATE_PATH, json=body, action="authenticate")
        if response.status_code != 200:
            raise error_from_response(response, "authenticate")
        self._take_tokens(response, "authenticate")
        log.info("LS One: authenticated as %s", self._username)

    def _refresh(self) -> bool:
        """Trade the refresh cookie for a new JWT; False when that is not possible."""
        if not self._refresh_token:
            return False
        cookie = f"{REFRESH_COOKIE}={self._refresh_token}"
        response = self._send("POST", REFRESH_PATH, headers={"Cookie": cookie}, action="refresh")
        if response.status_code in (400, 401, 403, 404, 405):
            # Expired, revoked or unknown: a fresh login is the way forward.
            self._refresh_token = None
            log.info("LS One: token refresh refused (HTTP %s), logging in again", response.status_code)
            return False
        if response.status_code != 200:
            raise error_from_response(response, "refresh")
        self._take_tokens(response, "refresh")
        log.info("LS One: token refreshed for %s", self._username)
        return True

    def _take_tokens(self, response: httpx.Response, action: str) -> None:
        token = self._token_from_body(response, action)
        claims = jwt_claims(token)
        exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
        lifetime = exp - iat if exp is not None and iat is not None and exp > iat else None
        self._token = _Token(value=token, expires_at=exp, lifetime_s=lifetime)
        refresh = self._refresh_cookie(response)
        if refresh:
            self._refresh_token = refresh
        # We carry the refresh token ourselves; a jar would also send it on every call.
        self._http.cookies.clear()

    @staticmethod
    def _token_from_body(response: httpx.Response, action: str) -> str:
        try:
            body = response.json()
        except ValueError as err:
            raise PermanentError(f"LS One {action}: the answer is not JSON") from err
        if isinstance(body, str) and body:
            return body
        if isinstance(body, dict):
            for key in _TOKEN_KEYS:
                value = body.get(key)
                if isinstance(value, str) and value:
                    return value
        raise PermanentError(f"LS One {action}: no token in the answer")

    @staticmethod
    def _refresh_cookie(response: httpx.Response) -> str | None:
        # Parsed from the header ourselves: a cookie jar drops Secure cookies on plain
        # HTTP and host names without a dot, both normal for an on-premises install.
        for header in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            morsel = jar.get(REFRESH_COOKIE)
            if morsel is not None and morsel.value:
                return morsel.value
        return None

    def _bearer(self) -> str:
        with self._lock:
            token = self._token
            if token is None or token.refresh_due(self._clock(), self._refresh_margin_s):
                self._renew()
            assert self._token is not None
            return self._token.value

    def _renew(self) -> None:
        if not self._refresh():
            self._login()

    def _renew_after_401(self, rejected: str) -> None:
        with self._lock:
            # Another thread may already have renewed the token that was refused.
            if self._token is None or self._token.value == rejected:
                self._token = None
                self._renew()

    # -- transport --------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, params=params, json=json, headers=headers)
        except httpx.TimeoutException as err:
            raise RetryableError(f"LS One {action}: timed out") from err
        except httpx.TransportError as err:
            raise RetryableError(f"LS One {action}: {type(err).__name__}") from err

    def _call(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """An authorised call; a 401 renews the token once, then it is the answer."""
        token = self._bearer()
        auth = {"Authorization": f"Bearer {token}"}
        response = self._send(method, path, action=action, params=params, json=json, headers=auth)
        if response.status_code == 401:
            # Expired early (clock skew, server restart, rotated key): not a failure yet.
            log.info("LS One %s: token refused, renewing once", action)
            self._renew_after_401(token)
            auth = {"Authorization": f"Bearer {self._bearer()}"}
            response = self._send(method, path, action=action, params=params, json=json, headers=auth)
        return response

    # -- customer orders --------------------------------------------------------------
    def get_order(self, gid: str) -> dict[str, Any] | None:
        action = "get customer order"
        response = self._call("GET", f"{ORDERS_PATH}/{gid}", action=action)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_from_response(response, action)
        body = response.json()
        if not isinstance(body, dict):
            raise PermanentError(f"LS One {action}: the answer is not an order")
        return body

    def list_orders(self, page: int, page_size: int) -> Page:
        """One page of GET /api/customer/orders; 404 ("no customer orders found") is empty."""
        action = "list customer orders"
        params = {"page": page, "pageSize": page_size}
        response = self._call("GET", ORDERS_PATH, action=action, params=params)
        return self._page(response, action)

    def search_orders(self, filters: Mapping[str, Any], page: int, page_size: int) -> Page:
        """One page of POST /api/customer/orders/search; 404 means nothing matched."""
        action = "search customer orders"
        params = {"page": page, "pageSize": page_size}
        response = self._call("POST", SEARCH_PATH, action=action, params=params, json=dict(filters))
        return self._page(response, action)

    @staticmethod
    def _page(response: httpx.Response, action: str) -> Page:
        if response.status_code == 404:
            return Page(items=[], total_count=0)
        if response.status_code != 200:
            raise error_from_response(response, action)
        try:
            body = response.json()
        except ValueError as err:
            raise PermanentError(f"LS One {action}: the answer is not JSON") from err
        return parse_page(body)

    def iter_orders(self, page_size: int) -> Iterator[dict[str, Any]]:
        yield from self._pages(lambda page: self.list_orders(page, page_size), page_size)

    def iter_search(self, filters: Mapping[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        yield from self._pages(lambda page: self.search_orders(filters, page, page_size), page_size)

    @staticmethod
    def _pages(fetch: Callable[[int], Page], page_size: int) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            result = fetch(page)
            yield from result.items
            if len(result.items) < page_size:
                return
            # totalCount is re-read on every page, so orders added meanwhile are still reached.
            if result.total_count is not None and page * page_size >= result.total_count:
                return
            page += 1
