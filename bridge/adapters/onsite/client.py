"""The OnSite protocol over the adapter's httpx client; vendor errors become ours here.

One server session per client: OnSite counts sessions against the licence's seats, so
the `LS_SERVER_SESSION_ID` cookie the first response sets is kept in the httpx cookie
jar and sent back on every request. A session that expired server-side answers with a
session error; the cookie is then dropped and the request retried once, which opens a
fresh session with the basic-auth credentials every request carries anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
from pydantic import ValidationError
from pydantic_xml import BaseXmlModel

from bridge.adapters.errors import (
    AdapterError,
    AuthError,
    LockContentionError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
    retry_read,
)
from bridge.adapters.onsite.models import (
    ColumnRef,
    Customer,
    CustomerList,
    ErrorDocument,
    Page,
    Search,
    SearchQuery,
    SearchResults,
    SortBy,
    UnsafeXmlError,
    as_bytes,
    load,
)

log = logging.getLogger("posbridge.adapters.onsite")

SESSION_COOKIE = "LS_SERVER_SESSION_ID"
CUSTOMERS = "/api/customers/"
SEARCH = "/api/customers/search/"
LOGOUT = "/api/sessions/current/logout/"
FILTER = "lsserver.search.filters."
COLUMN = "lsserver.search.column."
XML_HEADERS = {"Content-Type": "application/xml"}
# While every seat is taken, some session has to idle out (or log out) first.
SEATS_RETRY_AFTER_S = 60.0

M = TypeVar("M", bound=BaseXmlModel)


def quote(value: str) -> str:
    """A string literal for a search filter."""
    return "'" + value.replace("'", "''") + "'"


def customer_path(customer_id: int) -> str:
    return f"{CUSTOMERS}{customer_id}/"


def parse(model: type[M], response: httpx.Response) -> M:
    try:
        return load(model, response.content)
    except UnsafeXmlError as err:
        raise PermanentError(
            f"OnSite sent XML we refuse to parse: {err}", status=response.status_code
        ) from err
    except ValidationError as err:
        raise PermanentError(
            f"OnSite sent a <{model.__xml_tag__}> document we cannot read: {err}", status=response.status_code
        ) from err


class OnSiteClient:
    def __init__(
        self,
        http: httpx.Client,
        page_size: int = 100,
        on_session: Callable[[str | None], None] | None = None,
    ) -> None:
        self.http = http
        self.page_size = page_size
        # Told whenever the server session changes (opened, replaced, logged out), so the
        # adapter can keep it where a successor process finds it.
        self.on_session = on_session
        self._known_session = self.session_id

    # -- plumbing ----------------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        for cookie in self.http.cookies.jar:
            if cookie.name == SESSION_COOKIE:
                return cookie.value
        return None

    @property
    def has_session(self) -> bool:
        return self.session_id is not None

    def resume(self, session_id: str) -> None:
        """Carry on a session another process opened (and can no longer use)."""
        host = self.http.base_url.host
        self.http.cookies.set(SESSION_COOKIE, session_id, domain=host, path="/")
        self._known_session = session_id

    def _note_session(self) -> None:
        current = self.session_id
        if current != self._known_session:
            self._known_session = current
            if self.on_session is not None:
                self.on_session(current)

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, int] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        for attempt in range(2):
            had_session = self.has_session
            try:
                response = self.http.request(
                    method, path, content=content, params=params, headers=XML_HEADERS if content else None
                )
            except httpx.TimeoutException as err:
                raise RetryableError(f"OnSite {method} {path} timed out: {err}") from err
            except httpx.TransportError as err:
                raise RetryableError(f"OnSite {method} {path}: {type(err).__name__}: {err}") from err
            self._note_session()
            if response.status_code in expect:
                return response
            error, kind = self.error(method, path, response)
            if kind == "session" and had_session and attempt == 0:
                # The server forgot our session (idle timeout, restart): log in afresh.
                log.info("OnSite session expired; opening a new one")
                self.http.cookies.clear()
                self._note_session()
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def error(self, method: str, path: str, response: httpx.Response) -> tuple[AdapterError, str]:
        """The error a failed response means, and its kind (lock, session, seats, ...)."""
        status = response.status_code
        type_ = ""
        message = response.text[:200].strip() or response.reason_phrase
        try:
            document = load(ErrorDocument, response.content)
            type_ = document.type or document.class_ or ""
            message = document.text
        except (UnsafeXmlError, ValidationError):
            pass  # not an error document (a proxy's page, say): keep the raw text
        reason = f"OnSite {method} {path} -> {status} {type_}: {message}".replace(" : ", ": ")
        lowered = type_.lower()
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if "not_locked" in lowered:
            # Our lock vanished (session ended between LOCK and PUT): redo the whole update.
            return RetryableError(reason, status=status), "not_locked"
        if "lock" in lowered:
            return LockContentionError(reason, status=status, retry_after=retry_after), "lock"
        if "seat" in lowered:
            return RetryableError(
                reason, status=status, retry_after=retry_after or SEATS_RETRY_AFTER_S
            ), "seats"
        if "session" in lowered and status in (401, 403):
            return AuthError(reason, status=status), "session"
        return error_for_status(status, reason, retry_after=retry_after), "http"

    # -- customers ---------------------------------------------------------------------
    def list_customers(self, count: int, offset: int = 0) -> CustomerList:
        response = self.request("GET", CUSTOMERS, params={"count": count, "offset": offset})
        return parse(CustomerList, response)

    def get(self, customer_id: int) -> Customer | None:
        try:
            response = self.request("GET", customer_path(customer_id))
        except AdapterError as err:
            if err.status == 404:
                return None
            raise
        return parse(Customer, response)

    def create(self, customer: Customer) -> Customer:
        response = self.request("POST", CUSTOMERS, content=self.body(customer), expect=(200, 201))
        return parse(Customer, response)

    def lock(self, customer_id: int) -> None:
        self.request("LOCK", customer_path(customer_id))

    def unlock(self, customer_id: int) -> None:
        self.request("UNLOCK", customer_path(customer_id))

    def put(self, customer_id: int, customer: Customer) -> Customer:
        response = self.request("PUT", customer_path(customer_id), content=self.body(customer))
        return parse(Customer, response)

    def logout(self) -> None:
        self.request("POST", LOGOUT, expect=(200, 204))
        self.http.cookies.clear()
        self._note_session()

    @staticmethod
    def body(customer: Customer) -> bytes:
        try:
            return customer.body()
        except ValueError as err:
            # lxml refuses text XML cannot carry (control characters): no retry helps.
            raise PermanentError(f"customer cannot be written as XML: {err}") from err

    # -- search ------------------------------------------------------------------------
    def search(self, filters: str, offset: int, count: int) -> SearchResults:
        query = Search(
            page=Page(offset=offset, count=count),
            search_query=SearchQuery(
                columns=[ColumnRef(id=f"{COLUMN}id"), ColumnRef(id=f"{COLUMN}name")],
                sort_by_column=SortBy(column=ColumnRef(id=f"{COLUMN}id"), order_by="ASC"),
                filters=filters,
            ),
        )
        # A search changes nothing: retried in place like a GET.
        response = retry_read(lambda: self.request("POST", SEARCH, content=as_bytes(query.to_xml())))
        return parse(SearchResults, response)

    def search_ids(self, filters: str, limit: int | None = None) -> Iterator[int]:
        """Ids of the customers matching `filters`, page by page (never all at once)."""
        offset = 0
        seen = 0
        while True:
            page = self.search(filters, offset, self.page_size)
            for row in page.rows:
                if row.customer_id is not None:
                    yield row.customer_id
                    seen += 1
                    if limit is not None and seen >= limit:
                        return
            offset += len(page.rows)
            if len(page.rows) < self.page_size or offset >= page.total_count:
                return
