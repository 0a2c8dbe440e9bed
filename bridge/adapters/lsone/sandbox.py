"""A simulator of the LS One API: JWT login and customer-order reads.

Faithful to POS-APIS.md and the vendor's Customer Order page: user name/password login
giving a JWT valid 20 minutes plus a refresh-token cookie valid 24 hours, 401 for a
missing, bad or expired token and for a user without `CustomerOrder:Read`, the three
customer-order reads with `{"items", "totalCount"}` pages, and 404 when nothing
matches. LS One documents no writes and no webhooks, so orders change only at the till
(`POST /_sandbox/edit`) and nothing is ever emitted.

Where the vendor is silent, this sandbox chooses (and says so beside the code): the
login body, the refresh endpoint, the error bodies (ASP.NET Core ProblemDetails), the
listing order and the exact matching of each search filter.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.adapters.lsone.mapping import (
    ORDER_TYPES,
    ORDER_XML_KEYS,
    STATUS_NAMES,
    format_datetime,
    parse_datetime,
)
from bridge.sandbox.kit import Sandbox

READ_ORDERS = "CustomerOrder:Read"
REFRESH_COOKIE = "refreshToken"
DEFAULT_TOKEN_TTL_S = 20 * 60.0
DEFAULT_REFRESH_TTL_S = 24 * 3600.0

ORDER_FIELDS: tuple[str, ...] = (
    "gid",
    "reference",
    "source",
    "delivery",
    "customerID",
    "expiryDate",
    "deliveryLocation",
    "orderType",
    "orderXML",
    "storeID",
    "staffID",
    "terminalID",
    "createdDate",
    "status",
    "comment",
)
_GUID_FIELDS = frozenset({"source", "delivery"})
_TEXT_FIELDS = frozenset(
    {"reference", "customerID", "deliveryLocation", "storeID", "staffID", "terminalID", "comment"}
)


@dataclass(frozen=True)
class LSOneUser:
    password: str
    permissions: frozenset[str] = field(default_factory=lambda: frozenset({READ_ORDERS}))


@dataclass
class _RefreshGrant:
    user: str
    expires_at: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _guid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def _problem(status: int, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """ASP.NET Core's ProblemDetails, the shape LS One API (an ASP.NET service) answers with."""
    body: dict[str, Any] = {
        "type": f"https://httpstatuses.io/{status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    body["traceId"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    return body


def _validation(errors: Mapping[str, str]) -> JSONResponse:
    body = _problem(400, errors={name: [message] for name, message in errors.items()})
    body["title"] = "One or more validation errors occurred."
    return JSONResponse(body, status_code=400)


def _insensitive(body: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """System.Text.Json in ASP.NET binds property names case-insensitively."""
    by_lower = {name.lower(): name for name in names}
    return {by_lower[key.lower()]: value for key, value in body.items() if key.lower() in by_lower}


# Search filters: name -> (validator of the JSON value, matcher of an order).
# Identifiers match exactly (GUIDs case-insensitively); free text (reference, comment,
# customer name) matches as a case-insensitive substring, which is what the vendor's
# example shows (`"reference": "Order"` finds `Order1`).
_Matcher = Callable[["LSOneSandbox", dict[str, Any], Any], bool]


def _contains(field_name: str) -> _Matcher:
    def match(sb: LSOneSandbox, order: dict[str, Any], wanted: Any) -> bool:
        return str(wanted).casefold() in str(order.get(field_name) or "").casefold()

    return match


def _equals(field_name: str) -> _Matcher:
    def match(sb: LSOneSandbox, order: dict[str, Any], wanted: Any) -> bool:
        return bool(order.get(field_name) == wanted)

    return match


def _same_guid(field_name: str) -> _Matcher:
    def match(sb: LSOneSandbox, order: dict[str, Any], wanted: Any) -> bool:
        return bool(_guid(order.get(field_name)) == wanted)

    return match


def _customer_name(sb: LSOneSandbox, order: dict[str, Any], wanted: Any) -> bool:
    name = sb.customer_names.get(str(order.get("customerID") or ""), "")
    return str(wanted).casefold() in name.casefold()


def _expired(sb: LSOneSandbox, order: dict[str, Any], wanted: Any) -> bool:
    # Orders have no "expired" flag of their own: an order is expired once its
    # expiryDate has passed; one without an expiry date never expires.
    expiry = parse_datetime(order.get("expiryDate"))
    is_expired = expiry is not None and expiry <= datetime.now(UTC)
    return is_expired is wanted


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_guid(value: Any) -> bool:
    return _guid(value) is not None


_FILTERS: dict[str, tuple[Callable[[Any], bool], _Matcher | None]] = {
    "gid": (_is_guid, _same_guid("gid")),
    "reference": (_is_str, _contains("reference")),
    "customerID": (_is_str, _equals("customerID")),
    "customerName": (_is_str, _customer_name),
    "delivery": (_is_guid, _same_guid("delivery")),
    "source": (_is_guid, _same_guid("source")),
    "deliveryLocation": (_is_str, _equals("deliveryLocation")),
    "comment": (_is_str, _contains("comment")),
    "status": (_is_int, _equals("status")),
    "expired": (_is_bool, _expired),
    "orderType": (_is_int, _equals("orderType")),
    # Not a filter: whether the answer carries the order XML.
    "retrieveOrderXML": (_is_bool, None),
}


class LSOneSandbox(Sandbox):
    system = "lsone"
    default_tokens: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        users: Mapping[str, LSOneUser] | None = None,
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
        refresh_ttl_s: float = DEFAULT_REFRESH_TTL_S,
        customer_names: Mapping[str, str] | None = None,
        **kit: Any,
    ) -> None:
        """`users` restricts logins to those accounts (with their permissions); without
        it any non-empty user name and password is accepted with `CustomerOrder:Read`
        (the vendor documents no sample credentials). The kit's `tokens`, when given,
        are the accepted passwords: LS One issues its own bearer tokens."""
        self.users: dict[str, LSOneUser] | None = dict(users) if users is not None else None
        self.token_ttl_s = token_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._initial_names = dict(customer_names or {})
        # The customer directory behind the `customerName` filter (orders carry only the id).
        self.customer_names: dict[str, str] = dict(self._initial_names)
        self._signing_key = secrets.token_bytes(32)
        self._grants: dict[str, _RefreshGrant] = {}
        self.auth_stats: Counter[str] = Counter()
        super().__init__(**kit)

    # -- kit hooks --------------------------------------------------------------------
    def adapter_env(self, base_url: str) -> dict[str, str]:
        if self.users:
            name, user = sorted(self.users.items())[0]
            password = user.password
        else:
            name, password = "posbridge", sorted(self.tokens)[0] if self.tokens else "sandbox-password"
        return {"base_url": base_url, "username": name, "password": password}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/authorize/authenticate", self._authenticate, methods=["POST"]),
            Route("/api/authorize/refresh", self._refresh, methods=["POST"]),
            Route("/api/customer/orders/search", self._search, methods=["POST"]),
            # The vendor's own example for "Get all" is a POST with `{}`; the heading says
            # GET. Both are served.
            Route("/api/customer/orders", self._list, methods=["GET", "POST"]),
            Route("/api/customer/orders/{gid}", self._get, methods=["GET"]),
        ]

    def error(self, status: int, code: str, message: str) -> Response:
        headers = {"Retry-After": "1"} if status in (429, 503) else None
        return JSONResponse(_problem(status, message), status_code=status, headers=headers)

    def rate_limited(self) -> Response:
        return self.error(429, "RATE_LIMITED", "Too many requests")

    def extra_control_routes(self) -> list[BaseRoute]:
        async def auth(request: Request) -> Response:
            return JSONResponse(
                {**dict(self.auth_stats), "refresh_grants": len(self._grants), "ttl_s": self.token_ttl_s}
            )

        async def revoke(request: Request) -> Response:
            body = await request.json() if await request.body() else {}
            self.revoke(access=bool(body.get("access", True)), refresh=bool(body.get("refresh", False)))
            return Response(status_code=204)

        return [
            Route("/auth", auth, methods=["GET"]),
            Route("/auth/revoke", revoke, methods=["POST"]),
        ]

    def on_reset(self) -> None:
        self._grants.clear()
        self.auth_stats.clear()
        self.customer_names = dict(self._initial_names)

    def save_state(self) -> dict[str, Any]:
        return {**super().save_state(), "customer_names": dict(self.customer_names)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.customer_names = dict(state.get("customer_names") or {})

    def ground_truth(self) -> list[dict[str, Any]]:
        return [
            {**order, "deleted": order.get("status") == 512} for order in self._sorted(self.store.values())
        ]

    def revoke(self, *, access: bool = True, refresh: bool = False) -> None:
        """What a server restart with a new signing key (and a wiped grant store) does."""
        if access:
            self._signing_key = secrets.token_bytes(32)
        if refresh:
            self._grants.clear()

    # -- tokens -----------------------------------------------------------------------
    def issue_token(self, user: str, permissions: Iterable[str]) -> str:
        now = time.time()
        # NumericDate may be fractional (RFC 7519 §2); milliseconds keep short test TTLs exact.
        claims = {
            "iss": "lsone-sandbox",
            "sub": user,
            "unique_name": user,
            "permissions": sorted(permissions),
            "jti": uuid.uuid4().hex,
            "iat": round(now, 3),
            "nbf": round(now, 3),
            "exp": round(now + self.token_ttl_s, 3),
        }
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def verify_token(self, token: str) -> tuple[dict[str, Any] | None, str]:
        parts = token.split(".")
        if len(parts) != 3:
            return None, "The token is malformed"
        try:
            header = json.loads(_unb64url(parts[0]))
            claims = json.loads(_unb64url(parts[1]))
            signature = _unb64url(parts[2])
        except (binascii.Error, ValueError):
            return None, "The token is malformed"
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            return None, "The signature algorithm is not accepted"
        expected = hmac.new(self._signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            return None, "The signature is invalid"
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or time.time() >= exp:
            return None, f"The token expired at '{exp}'"
        return claims, ""

    def _credentials(self, user: str, password: str) -> LSOneUser | None:
        if not user or not password:
            return None
        if self.users is not None:
            account = self.users.get(user)
            if account is None or not hmac.compare_digest(account.password.encode(), password.encode()):
                return None
            return account
        if self.tokens is not None and password not in self.tokens:
            return None
        return LSOneUser(password=password)

    def _grant(self, response: JSONResponse, user: str) -> JSONResponse:
        refresh = secrets.token_urlsafe(32)
        self._grants[refresh] = _RefreshGrant(user=user, expires_at=time.time() + self.refresh_ttl_s)
        response.set_cookie(
            REFRESH_COOKIE,
            refresh,
            max_age=int(self.refresh_ttl_s),
            path="/api/authorize",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    def _permissions_of(self, user: str) -> frozenset[str] | None:
        """A refreshed token carries the user's permissions as they are now."""
        if self.users is None:
            return frozenset({READ_ORDERS})
        account = self.users.get(user)
        return account.permissions if account else None

    def _unauthorized(self, error: str | None, description: str) -> JSONResponse:
        # JwtBearer's challenge; LS One documents 401 for both a bad token and a missing
        # permission, so the permission case is a 401 too (not ASP.NET's usual 403).
        challenge = (
            "Bearer" if error is None else f'Bearer error="{error}", error_description="{description}"'
        )
        self.auth_stats["rejected"] += 1
        return JSONResponse(
            _problem(401, description), status_code=401, headers={"WWW-Authenticate": challenge}
        )

    def _authorize(self, request: Request, permission: str) -> JSONResponse | None:
        token = self.bearer(request)
        if not token:
            return self._unauthorized(None, "No bearer token was sent")
        claims, why = self.verify_token(token)
        if claims is None:
            return self._unauthorized("invalid_token", why)
        if permission not in (claims.get("permissions") or ()):
            return self._unauthorized("insufficient_scope", f"The user lacks the permission {permission}")
        return None

    async def _authenticate(self, request: Request) -> Response:
        # The login body's field names are documented; the answer is not: `{"token"}`.
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _validation({"$": "The JSON value could not be converted."})
        if not isinstance(body, dict):
            return _validation({"$": "A non-empty request body is required."})
        given = _insensitive(body, ("userName", "password"))
        user, password = given.get("userName"), given.get("password")
        missing = {
            name: f"The {name} field is required."
            for name, value in (("userName", user), ("password", password))
            if not isinstance(value, str) or not value
        }
        if missing:
            return _validation(missing)
        name = str(user)
        account = self._credentials(name, str(password))
        if account is None:
            self.auth_stats["login_failed"] += 1
            return JSONResponse(_problem(401, "Invalid user name or password"), status_code=401)
        self.auth_stats["authenticated"] += 1
        token = self.issue_token(name, account.permissions)
        return self._grant(JSONResponse({"token": token}), name)

    async def _refresh(self, request: Request) -> Response:
        presented = request.cookies.get(REFRESH_COOKIE, "")
        # Refresh tokens are single-use: the answer carries the next one.
        grant = self._grants.pop(presented, None) if presented else None
        if grant is None or grant.expires_at <= time.time():
            self.auth_stats["refresh_failed"] += 1
            return JSONResponse(_problem(401, "The refresh token is invalid or expired"), status_code=401)
        permissions = self._permissions_of(grant.user)
        if permissions is None:
            self.auth_stats["refresh_failed"] += 1
            return JSONResponse(_problem(401, "The user no longer exists"), status_code=401)
        self.auth_stats["refreshed"] += 1
        return self._grant(JSONResponse({"token": self.issue_token(grant.user, permissions)}), grant.user)

    # -- customer orders --------------------------------------------------------------
    @staticmethod
    def _sorted(orders: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        # Listing order is undocumented; oldest first keeps pages stable while orders are added.
        return sorted(orders, key=lambda o: (str(o.get("createdDate") or ""), str(o.get("gid"))))

    @staticmethod
    def _paging(request: Request) -> tuple[int, int] | JSONResponse:
        # Defaults are undocumented; the vendor's examples use page=1, pageSize=10.
        values: dict[str, int] = {}
        errors: dict[str, str] = {}
        for name, default in (("page", 1), ("pageSize", 10)):
            raw = request.query_params.get(name)
            try:
                values[name] = default if raw is None or raw == "" else int(raw)
            except ValueError:
                errors[name] = f"The value '{raw}' is not valid."
                continue
            if values[name] < 1:
                errors[name] = f"The field {name} must be at least 1."
        if errors:
            return _validation(errors)
        return values["page"], values["pageSize"]

    def _page(self, orders: list[dict[str, Any]], page: int, size: int, with_xml: bool) -> Response:
        chunk = orders[(page - 1) * size : page * size]
        if not chunk:
            return JSONResponse(_problem(404, "No customer orders found"), status_code=404)
        items = [order if with_xml else {**order, "orderXML": ""} for order in chunk]
        return JSONResponse({"items": items, "totalCount": len(orders)})

    async def _get(self, request: Request) -> Response:
        if (refused := self._authorize(request, READ_ORDERS)) is not None:
            return refused
        raw = request.path_params["gid"]
        gid = _guid(raw)
        if gid is None:
            return _validation({"gid": f"The value '{raw}' is not valid."})
        order = self.store.get(gid)
        if order is None:
            return JSONResponse(_problem(404, "The requested customer order was not found"), status_code=404)
        return JSONResponse(order)

    async def _list(self, request: Request) -> Response:
        if (refused := self._authorize(request, READ_ORDERS)) is not None:
            return refused
        paging = self._paging(request)
        if isinstance(paging, Response):
            return paging
        orders = self._sorted(self.store.visible(self.consistency_lag_s))
        return self._page(orders, *paging, with_xml=True)

    async def _search(self, request: Request) -> Response:
        if (refused := self._authorize(request, READ_ORDERS)) is not None:
            return refused
        paging = self._paging(request)
        if isinstance(paging, Response):
            return paging
        raw = await request.body()
        if not raw.strip():
            return _validation({"": "A non-empty request body is required."})
        try:
            body = json.loads(raw)
        except ValueError:
            return _validation({"$": "The JSON value could not be converted to CustomerOrderFilters."})
        if not isinstance(body, dict):
            return _validation({"$": "The JSON value could not be converted to CustomerOrderFilters."})
        # Unknown properties are ignored, as ASP.NET does; null means "not filtered".
        filters = {k: v for k, v in _insensitive(body, _FILTERS).items() if v is not None}
        bad = {
            name: "The JSON value is not valid." for name, v in filters.items() if not _FILTERS[name][0](v)
        }
        if bad:
            return _validation(bad)
        for name in ("gid", "delivery", "source"):
            if name in filters:
                filters[name] = _guid(filters[name])
        # A body without filters restricts nothing: it lists every order.
        matchers = [(m, v) for name, v in filters.items() if (m := _FILTERS[name][1]) is not None]
        found = [
            order
            for order in self.store.visible(self.consistency_lag_s)
            if all(match(self, order, wanted) for match, wanted in matchers)
        ]
        with_xml = bool(filters.get("retrieveOrderXML"))
        return self._page(self._sorted(found), *paging, with_xml=with_xml)

    # -- the till -----------------------------------------------------------------------
    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Someone makes or changes a customer order at the POS.

        `fields` takes the order's own fields (`orderXml` as an alias of `orderXML`) plus
        `customerName`, which goes to the customer directory the search filter reads.
        `createdDate` may be set when an order is made (to load history), never later.
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("fields", {}), dict):
            raise ValueError("payload must be {'id': optional gid, 'fields': {...}}")
        changes = dict(payload.get("fields") or {})
        for alias in ORDER_XML_KEYS[1:]:
            if alias in changes:
                changes[ORDER_XML_KEYS[0]] = changes.pop(alias)
        customer_name = changes.pop("customerName", None)
        unknown = sorted(set(changes) - set(ORDER_FIELDS))
        if unknown:
            raise ValueError(f"unknown order fields: {', '.join(unknown)}")
        with self.store.lock:
            if payload.get("id"):
                gid = _guid(payload["id"])
                current = self.store.get(gid) if gid else None
                if current is None:
                    raise KeyError(str(payload["id"]))
                if "createdDate" in changes or ("gid" in changes and _guid(changes["gid"]) != gid):
                    raise ValueError("gid and createdDate cannot change")
                order = current
            else:
                order = self._new_order(changes.get("gid"))
                if order["gid"] in self.store:
                    raise ValueError(f"an order {order['gid']} exists already")
            for name, value in changes.items():
                if name != "gid":
                    order[name] = self._checked(name, value)
            if customer_name is not None:
                if not isinstance(customer_name, str) or not order.get("customerID"):
                    raise ValueError("customerName needs a text value and an order with a customerID")
                self.customer_names[str(order["customerID"])] = customer_name
            stored = self.store.put(order["gid"], order)
        self.committed()
        return stored

    @staticmethod
    def _new_order(gid: Any) -> dict[str, Any]:
        chosen = _guid(gid) if gid is not None else str(uuid.uuid4())
        if chosen is None:
            raise ValueError(f"gid {gid!r} is not a GUID")
        return {
            "gid": chosen,
            "reference": "",
            "source": None,
            "delivery": None,
            "customerID": "",
            "expiryDate": None,
            "deliveryLocation": "",
            "orderType": 1,
            "orderXML": "",
            "storeID": "S0001",
            "staffID": "",
            "terminalID": "",
            "createdDate": format_datetime(datetime.now(UTC)),
            "status": 32,
            "comment": "",
        }

    @staticmethod
    def _checked(name: str, value: Any) -> Any:
        if name in _GUID_FIELDS:
            if value is None:
                return None
            guid = _guid(value)
            if guid is None:
                raise ValueError(f"{name} {value!r} is not a GUID")
            return guid
        if name in _TEXT_FIELDS or name == "orderXML":
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text")
            return value
        if name in ("expiryDate", "createdDate"):
            if value is None and name == "expiryDate":
                return None
            when = parse_datetime(value)
            if when is None:
                raise ValueError(f"{name} {value!r} is not a date and time")
            return format_datetime(when)
        if name == "status":
            if not _is_int(value) or value not in STATUS_NAMES:
                raise ValueError(f"status must be one of {sorted(STATUS_NAMES)}")
            return value
        if name == "orderType":
            if not _is_int(value) or value not in ORDER_TYPES:
                raise ValueError(f"orderType must be one of {sorted(ORDER_TYPES)}")
            return value
        raise ValueError(f"unknown order field {name}")

    def order(self, gid: str) -> dict[str, Any] | None:
        """The stored order (for tests and the demo), regardless of consistency lag."""
        key = _guid(gid)
        return copy.deepcopy(self.store.get(key)) if key else None
