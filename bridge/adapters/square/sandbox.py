"""A Square Customers API v2 simulator on the sandbox kit.

Faithful to POS-APIS.md: bearer auth, the `{"errors":[...]}` envelope, field validation,
idempotency keys, versions (stale -> 400 CONFLICT), sparse updates with null clearing,
keyset cursors, bulk endpoints with per-entry results, eventually consistent list/search,
signed webhooks for every committed change, and merges via `POST /_sandbox/merge`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import hmac
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.canonical import normalize_phone
from bridge.sandbox.kit import Sandbox

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
MAX_PAGE = 100
MAX_BULK = 100
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TEXT_LIMITS: dict[str, int | None] = {
    "given_name": 300,
    "family_name": 300,
    "company_name": 500,
    "nickname": 100,
    "email_address": 254,
    "phone_number": None,
    "reference_id": 100,
    "note": None,
}
_ADDRESS_KEYS = (
    "address_line_1",
    "address_line_2",
    "address_line_3",
    "locality",
    "sublocality",
    "sublocality_2",
    "sublocality_3",
    "administrative_district_level_1",
    "administrative_district_level_2",
    "administrative_district_level_3",
    "postal_code",
    "country",
    "first_name",
    "last_name",
)
_REQUIRED_ONE_OF = ("given_name", "family_name", "company_name", "email_address", "phone_number")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE = re.compile(r"^\+?\d{9,16}$")
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_BIRTHDAY = re.compile(r"^(?:(\d{4})-)?(\d{2})-(\d{2})$")
_CREATION_SOURCES = frozenset(
    {
        "OTHER", "APPOINTMENTS", "COUPON", "DELETION_RECOVERY", "DIRECTORY", "EGIFTING",
        "EMAIL_COLLECTION", "FEEDBACK", "IMPORT", "INVOICES", "LOYALTY", "MARKETING", "MERGE",
        "ONLINE_STORE", "INSTANT_PROFILE", "TERMINAL", "THIRD_PARTY", "THIRD_PARTY_IMPORT",
        "UNMERGE_RECOVERY",
    }
)  # fmt: skip


class SquareError(Exception):
    """One entry of Square's error envelope, with the HTTP status it travels with."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field

    def as_dict(self) -> dict[str, str]:
        entry = {"category": _category(self.status), "code": self.code, "detail": self.detail}
        if self.field:
            entry["field"] = self.field
        return entry


def _category(status: int) -> str:
    if status in (401, 403):
        return "AUTHENTICATION_ERROR"
    if status == 429:
        return "RATE_LIMIT_ERROR"
    if status >= 500:
        return "API_ERROR"
    return "INVALID_REQUEST_ERROR"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise SquareError(400, "INVALID_TIME", "expected an RFC 3339 timestamp", field)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise SquareError(400, "INVALID_TIME", f"invalid timestamp {value!r}", field) from err
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _fingerprint(body: Mapping[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _e164(value: str | None) -> str | None:
    phone = normalize_phone(value)
    return phone if phone and _E164.match(phone) else None


def _sort_name(customer: Mapping[str, Any]) -> str:
    # Square's DEFAULT order: given + family name, else company, e-mail, phone.
    name = " ".join(p for p in (customer.get("given_name"), customer.get("family_name")) if p)
    for fallback in ("company_name", "email_address", "phone_number"):
        if name:
            break
        name = str(customer.get(fallback) or "")
    return name.casefold()


def _source_test(sources: set[str], include: bool, customer: Mapping[str, Any]) -> bool:
    return (customer.get("creation_source") in sources) == include


class SquareSandbox(Sandbox):
    system: ClassVar[str] = "square"

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        tokens: Collection[str] | None = None,
        persist_path: Path | None = None,
        seed: int | None = None,
        signature_key: str = "sandbox-signature-key",
        notification_url: str | None = None,
        merchant_id: str = "MLSANDBOX7Q2XK",
    ) -> None:
        self.signature_key = signature_key
        self._notification_url = notification_url
        self.merchant_id = merchant_id
        # idempotency key -> (fingerprint of the body, the first answer)
        self.idempotency: dict[str, tuple[str, dict[str, Any]]] = {}
        self._ids = random.Random(seed)
        super().__init__(
            webhook_url=webhook_url,
            webhook_transport=webhook_transport,
            tokens=tokens,
            persist_path=persist_path,
            seed=seed,
        )

    def adapter_env(self, base_url: str) -> dict[str, str]:
        return {
            "base_url": base_url,
            "access_token": sorted(self.tokens)[0] if self.tokens else "sandbox-access-token",
            "webhook_signature_key": self.signature_key,
            "notification_url": self.notification_url or "",
            "merchant_id": self.merchant_id,
        }

    @property
    def notification_url(self) -> str | None:
        """What Square signs: the subscription URL (by default where webhooks are sent)."""
        return self._notification_url or self.webhooks.url

    # -- kit hooks ---------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        e = self._endpoint
        return [
            Route("/v2/customers", e(self._list), methods=["GET"]),
            Route("/v2/customers", e(self._create), methods=["POST"]),
            Route("/v2/customers/search", e(self._search), methods=["POST"]),
            Route("/v2/customers/bulk-create", e(self._bulk_create), methods=["POST"]),
            Route("/v2/customers/bulk-update", e(self._bulk_update), methods=["POST"]),
            Route("/v2/customers/bulk-retrieve", e(self._bulk_retrieve), methods=["POST"]),
            Route("/v2/customers/bulk-delete", e(self._bulk_delete), methods=["POST"]),
            Route("/v2/customers/{customer_id}", e(self._retrieve), methods=["GET"]),
            Route("/v2/customers/{customer_id}", e(self._update), methods=["PUT"]),
            Route("/v2/customers/{customer_id}", e(self._delete), methods=["DELETE"]),
        ]

    def error(self, status: int, code: str, message: str) -> Response:
        return self._error_response(SquareError(status, code, message))

    def rate_limited(self) -> Response:
        return self.error(429, "RATE_LIMITED", "Rate limit exceeded, please retry later.")

    def extra_control_routes(self) -> list[BaseRoute]:
        return [Route("/merge", self._merge_route, methods=["POST"])]

    def ground_truth(self) -> list[dict[str, Any]]:
        return [{**e["customer"], "deleted": e["deleted"]} for e in self.store.dump().values()]

    def on_reset(self) -> None:
        self.idempotency.clear()

    def save_state(self) -> dict[str, Any]:
        return {"records": self.store.dump(), "idempotency": self.idempotency}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.idempotency = {k: (v[0], v[1]) for k, v in state.get("idempotency", {}).items()}

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = payload.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("fields must be an object")
        customer_id = payload.get("id")
        try:
            if customer_id:
                self._live(str(customer_id), missing=KeyError(customer_id))
                return self._apply_update(
                    str(customer_id), {k: v for k, v in fields.items() if k != "version"}
                )
            return self._insert(self._validate_create(fields), source="DIRECTORY")
        except SquareError as err:
            raise ValueError(f"{err.code}: {err.detail}") from err

    # -- plumbing ----------------------------------------------------------------------
    def _endpoint(
        self, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if not self.token_ok(self.bearer(request)):
                return self.error(401, "UNAUTHORIZED", "This request could not be authorized.")
            try:
                return await fn(request)
            except SquareError as err:
                return self._error_response(err)

        return handler

    def _error_response(self, *errors: SquareError) -> Response:
        return JSONResponse({"errors": [e.as_dict() for e in errors]}, status_code=errors[0].status)

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as err:
            raise SquareError(400, "EXPECTED_JSON_BODY", "The request body is not valid JSON.") from err
        if not isinstance(body, dict):
            raise SquareError(400, "EXPECTED_OBJECT", "The request body must be a JSON object.")
        return body

    def _new_id(self) -> str:
        while True:
            candidate = "".join(self._ids.choice(_ID_ALPHABET) for _ in range(26))
            if candidate not in self.store:
                return candidate

    def _live(self, customer_id: str, missing: Exception | None = None) -> dict[str, Any]:
        entry = self.store.get(customer_id)
        if entry is None or entry["deleted"]:
            if missing is not None:
                raise missing
            raise SquareError(404, "NOT_FOUND", f"Customer with ID `{customer_id}` not found.")
        customer: dict[str, Any] = entry["customer"]
        return customer

    def _visible_customers(self) -> list[dict[str, Any]]:
        return [e["customer"] for e in self.store.visible(self.consistency_lag_s) if not e["deleted"]]

    def _save(self, customer: dict[str, Any], *, deleted: bool = False) -> dict[str, Any]:
        self.store.put(customer["id"], {"customer": customer, "deleted": deleted})
        self.committed()
        return copy.deepcopy(customer)

    # -- webhooks ----------------------------------------------------------------------
    def _emit(
        self,
        event_type: str,
        customer: Mapping[str, Any],
        *,
        merge: Mapping[str, Any] | None = None,
        deleted: bool = False,
    ) -> None:
        obj: dict[str, Any] = {"customer": dict(customer)}
        if merge is not None:
            obj["event_context"] = {"merge": dict(merge)}
        data: dict[str, Any] = {"type": "customer", "id": customer["id"]}
        if deleted:
            data["deleted"] = True
        data["object"] = obj
        envelope = {
            "merchant_id": self.merchant_id,
            "type": event_type,
            "event_id": str(uuid.uuid4()),
            "created_at": _now(),
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":")).encode()
        url = self.notification_url or ""
        digest = hmac.new(self.signature_key.encode(), url.encode() + body, hashlib.sha256).digest()
        self.emit_webhook(
            body, {"content-type": "application/json", SIGNATURE_HEADER: base64.b64encode(digest).decode()}
        )

    # -- validation --------------------------------------------------------------------
    def _validate_fields(self, body: Mapping[str, Any], *, update: bool) -> dict[str, Any]:
        """Checked values of the customer attributes in `body` (None = clear, on updates)."""
        out: dict[str, Any] = {}
        for name, limit in _TEXT_LIMITS.items():
            if name not in body:
                continue
            value = body[name]
            if value is None:
                if update:
                    out[name] = None
                continue
            if not isinstance(value, str):
                raise SquareError(400, "EXPECTED_STRING", f"Expected a string value for `{name}`.", name)
            if limit is not None and len(value) > limit:
                raise SquareError(
                    400, "VALUE_TOO_LONG", f"`{name}` must be at most {limit} characters.", name
                )
            if name == "email_address" and value and not _EMAIL.match(value.strip()):
                raise SquareError(400, "INVALID_EMAIL_ADDRESS", "Invalid email address.", name)
            if name == "phone_number" and value and not _PHONE.match(_PHONE_PUNCTUATION.sub("", value)):
                raise SquareError(
                    400,
                    "INVALID_PHONE_NUMBER",
                    "The phone number must have 9 to 16 digits, with an optional + and country code.",
                    name,
                )
            out[name] = value if value != "" or not update else None
        if "birthday" in body:
            out["birthday"] = self._birthday(body["birthday"], update=update)
            if out["birthday"] is None and not update:
                del out["birthday"]
        if "address" in body:
            address = body["address"]
            if address is None:
                if update:
                    out["address"] = None
            elif not isinstance(address, dict):
                raise SquareError(400, "EXPECTED_OBJECT", "Expected an object for `address`.", "address")
            else:
                out["address"] = self._address(address)
        return out

    def _birthday(self, value: Any, *, update: bool) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise SquareError(400, "EXPECTED_STRING", "Expected a string value for `birthday`.", "birthday")
        match = _BIRTHDAY.match(value)
        year, month, day = (match.group(1), match.group(2), match.group(3)) if match else (None, "0", "0")
        try:
            datetime(int(year) if year and year != "0000" else 2000, int(month), int(day))
        except ValueError:
            raise SquareError(
                400, "INVALID_VALUE", "`birthday` must be YYYY-MM-DD or MM-DD.", "birthday"
            ) from None
        return f"{year or '0000'}-{month}-{day}"

    def _address(self, address: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in address.items():
            if key not in _ADDRESS_KEYS:
                raise SquareError(400, "INVALID_VALUE", f"Unknown address field `{key}`.", f"address.{key}")
            if value is not None and not isinstance(value, str):
                raise SquareError(400, "EXPECTED_STRING", f"Expected a string for `address.{key}`.")
            if key == "country" and value is not None and not re.fullmatch(r"[A-Z]{2}", value):
                raise SquareError(
                    400,
                    "INVALID_ENUM_VALUE",
                    "`country` must be an ISO 3166 alpha-2 code.",
                    "address.country",
                )
            out[key] = value if value != "" else None
        return out

    def _validate_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        fields = self._validate_fields(body, update=False)
        if isinstance(fields.get("address"), dict):
            address = {k: v for k, v in fields["address"].items() if v is not None}
            if address:
                fields["address"] = address
            else:
                del fields["address"]
        if not any(fields.get(name) for name in _REQUIRED_ONE_OF):
            raise SquareError(
                400,
                "MISSING_REQUIRED_PARAMETER",
                "At least one of given_name, family_name, company_name, email_address or phone_number "
                "must be provided.",
            )
        return fields

    # -- state changes -----------------------------------------------------------------
    def _insert(
        self, fields: Mapping[str, Any], *, source: str, notify: bool = True, group_ids: Iterable[str] = ()
    ) -> dict[str, Any]:
        now = _now()
        customer: dict[str, Any] = {"id": self._new_id(), "created_at": now, "updated_at": now}
        customer.update({k: v for k, v in fields.items() if v is not None})
        customer["preferences"] = {"email_unsubscribed": False}
        customer["creation_source"] = source
        groups = sorted(set(group_ids))
        if groups:
            customer["group_ids"] = groups
        customer["version"] = 0
        saved = self._save(customer)
        if notify:
            self._emit("customer.created", saved)
        return saved

    def _create_with_key(self, body: Mapping[str, Any], key: str | None) -> dict[str, Any]:
        """The CreateCustomer answer for `body`, honouring the idempotency key."""
        if key is not None:
            if not isinstance(key, str) or not key:
                raise SquareError(
                    400, "INVALID_VALUE", "`idempotency_key` must be a string.", "idempotency_key"
                )
            if len(key) > 192:
                raise SquareError(400, "VALUE_TOO_LONG", "`idempotency_key` is too long.", "idempotency_key")
            fingerprint = _fingerprint(body)
            seen = self.idempotency.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise SquareError(
                        400,
                        "IDEMPOTENCY_KEY_REUSED",
                        "The idempotency key was already used for a request with a different body.",
                        "idempotency_key",
                    )
                return copy.deepcopy(seen[1])
        answer = {"customer": self._insert(self._validate_create(body), source="THIRD_PARTY")}
        if key is not None:
            self.idempotency[key] = (fingerprint, copy.deepcopy(answer))
        return answer

    def _apply_update(self, customer_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        current = self._live(customer_id)
        if body.get("version") is not None:
            version = body["version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise SquareError(400, "EXPECTED_INTEGER", "Expected an integer for `version`.", "version")
            if version != current["version"]:
                raise SquareError(
                    400,
                    "CONFLICT",
                    f"Version mismatch: the customer profile is at version {current['version']}, "
                    f"the request names version {version}.",
                    "version",
                )
        changes = self._validate_fields(body, update=True)
        updated = copy.deepcopy(current)
        for name, change in changes.items():
            value = change
            if name == "address" and change is not None:
                address = dict(updated.get("address") or {})
                for key, part in change.items():
                    if part is None:
                        address.pop(key, None)
                    else:
                        address[key] = part
                value = address or None
            if value is None:
                updated.pop(name, None)
            else:
                updated[name] = value
        if updated == current:
            return current
        updated["version"] = current["version"] + 1
        updated["updated_at"] = _now()
        saved = self._save(updated)
        self._emit("customer.updated", saved)
        return saved

    def _remove(
        self, customer_id: str, version: int | None, *, merge: Mapping[str, Any] | None = None
    ) -> None:
        current = self._live(customer_id)
        if version is not None and version != current["version"]:
            raise SquareError(
                400,
                "CONFLICT",
                f"Version mismatch: the customer profile is at version {current['version']}, "
                f"the request names version {version}.",
                "version",
            )
        saved = self._save(current, deleted=True)
        self._emit("customer.deleted", saved, merge=merge, deleted=True)

    # -- listing -----------------------------------------------------------------------
    def _page(
        self,
        customers: list[dict[str, Any]],
        *,
        sort_field: str,
        sort_order: str,
        cursor: str | None,
        limit: int,
        scope: str,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Keyset paging: a cursor names the last key served, so inserts cannot shift pages."""

        def key(c: Mapping[str, Any]) -> list[str]:
            primary = str(c.get("created_at", "")) if sort_field == "CREATED_AT" else _sort_name(c)
            return [primary, str(c["id"])]

        descending = sort_order == "DESC"
        ordered = sorted(customers, key=key, reverse=descending)
        if cursor:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
                last, cursor_scope = list(decoded["k"]), decoded["s"]
            except (ValueError, KeyError, TypeError, binascii.Error) as err:
                raise SquareError(400, "INVALID_CURSOR", "The cursor is not valid.", "cursor") from err
            if cursor_scope != scope:
                raise SquareError(400, "INVALID_CURSOR", "The cursor belongs to another query.", "cursor")
            ordered = [c for c in ordered if (key(c) < last if descending else key(c) > last)]
        page = ordered[:limit]
        next_cursor = None
        if len(ordered) > limit:
            token = json.dumps({"k": key(page[-1]), "s": scope}, separators=(",", ":"))
            next_cursor = base64.urlsafe_b64encode(token.encode()).decode()
        return page, next_cursor

    @staticmethod
    def _limit(value: Any) -> int:
        if value is None:
            return MAX_PAGE
        try:
            limit = int(value)
        except (TypeError, ValueError):
            raise SquareError(400, "EXPECTED_INTEGER", "`limit` must be an integer.", "limit") from None
        if limit < 1:
            raise SquareError(400, "VALUE_TOO_LOW", "`limit` must be at least 1.", "limit")
        if limit > MAX_PAGE:
            raise SquareError(400, "VALUE_TOO_HIGH", f"`limit` must be at most {MAX_PAGE}.", "limit")
        return limit

    @staticmethod
    def _enum(value: Any, allowed: tuple[str, ...], default: str, field: str) -> str:
        if value is None:
            return default
        if value not in allowed:
            raise SquareError(400, "INVALID_ENUM_VALUE", f"`{field}` must be one of {allowed}.", field)
        return str(value)

    async def _list(self, request: Request) -> Response:
        params = request.query_params
        limit = self._limit(params.get("limit"))
        sort_field = self._enum(params.get("sort_field"), ("DEFAULT", "CREATED_AT"), "DEFAULT", "sort_field")
        sort_order = self._enum(params.get("sort_order"), ("ASC", "DESC"), "ASC", "sort_order")
        customers = self._visible_customers()
        page, cursor = self._page(
            customers,
            sort_field=sort_field,
            sort_order=sort_order,
            cursor=params.get("cursor"),
            limit=limit,
            scope=f"list:{sort_field}:{sort_order}",
        )
        body: dict[str, Any] = {}
        if page:
            body["customers"] = page
        if cursor:
            body["cursor"] = cursor
        if params.get("count", "false").lower() == "true":
            body["count"] = len(customers)
        return JSONResponse(body)

    async def _search(self, request: Request) -> Response:
        body = await self._body(request)
        limit = self._limit(body.get("limit"))
        query = body.get("query") or {}
        if not isinstance(query, dict):
            raise SquareError(400, "EXPECTED_OBJECT", "`query` must be an object.", "query")
        sort = query.get("sort") or {}
        sort_field = self._enum(sort.get("field"), ("DEFAULT", "CREATED_AT"), "DEFAULT", "query.sort.field")
        sort_order = self._enum(sort.get("order"), ("ASC", "DESC"), "ASC", "query.sort.order")
        predicate = self._filter(query.get("filter") or {})
        matching = [c for c in self._visible_customers() if predicate(c)]
        page, cursor = self._page(
            matching,
            sort_field=sort_field,
            sort_order=sort_order,
            cursor=body.get("cursor"),
            limit=limit,
            scope=_fingerprint({"query": query})[:16],
        )
        answer: dict[str, Any] = {}
        if page:
            answer["customers"] = page
        if cursor:
            answer["cursor"] = cursor
        if body.get("count") is True:
            answer["count"] = len(matching)
        return JSONResponse(answer)

    def _filter(self, spec: Any) -> Callable[[Mapping[str, Any]], bool]:
        """All filters AND together, as on Square."""
        if not isinstance(spec, dict):
            raise SquareError(400, "EXPECTED_OBJECT", "`query.filter` must be an object.", "query.filter")
        tests: list[Callable[[Mapping[str, Any]], bool]] = []
        for name, value in spec.items():
            where = f"query.filter.{name}"
            if value is None:
                continue
            if not isinstance(value, dict):
                raise SquareError(400, "EXPECTED_OBJECT", f"`{where}` must be an object.", where)
            if name in ("created_at", "updated_at"):
                tests.append(self._time_test(name, value, where))
            elif name in ("email_address", "reference_id", "phone_number"):
                tests.append(self._text_test(name, value, where))
            elif name == "creation_source":
                values = set(value.get("values") or [])
                if not values <= _CREATION_SOURCES:
                    raise SquareError(400, "INVALID_ENUM_VALUE", "Unknown creation source.", where)
                rule = self._enum(value.get("rule"), ("INCLUDE", "EXCLUDE"), "INCLUDE", f"{where}.rule")
                tests.append(functools.partial(_source_test, values, rule == "INCLUDE"))
            elif name in ("group_ids", "segment_ids"):
                tests.append(self._set_test(name, value))
            else:
                raise SquareError(400, "BAD_REQUEST", f"The sandbox does not support filter `{name}`.", where)
        return lambda c: all(test(c) for test in tests)

    @staticmethod
    def _time_test(name: str, spec: Mapping[str, Any], where: str) -> Callable[[Mapping[str, Any]], bool]:
        start = _parse_time(spec["start_at"], f"{where}.start_at") if spec.get("start_at") else None
        end = _parse_time(spec["end_at"], f"{where}.end_at") if spec.get("end_at") else None
        if start and end and start > end:
            raise SquareError(400, "INVALID_TIME_RANGE", "`start_at` is after `end_at`.", where)

        def test(c: Mapping[str, Any]) -> bool:
            at = _parse_time(c.get(name), name)
            return (start is None or at >= start) and (end is None or at <= end)

        return test

    @staticmethod
    def _text_test(name: str, spec: Mapping[str, Any], where: str) -> Callable[[Mapping[str, Any]], bool]:
        exact, fuzzy = spec.get("exact"), spec.get("fuzzy")
        if (exact is None) == (fuzzy is None):
            raise SquareError(400, "INVALID_VALUE", f"`{where}` needs exactly one of exact, fuzzy.", where)
        wanted = str(exact if exact is not None else fuzzy)
        if name == "phone_number":
            if exact is not None:
                if not _E164.match(wanted):
                    raise SquareError(
                        400, "INVALID_PHONE_NUMBER", "An exact phone filter must be E.164.", f"{where}.exact"
                    )
                return lambda c: _e164(c.get("phone_number")) == wanted
            digits = re.sub(r"\D", "", wanted)
            return lambda c: bool(digits) and digits in re.sub(r"\D", "", str(c.get("phone_number") or ""))
        if exact is not None:
            if name == "email_address":
                return lambda c: str(c.get(name) or "").casefold() == wanted.casefold()
            return lambda c: c.get(name) == wanted
        needle = wanted.casefold()
        return lambda c: bool(needle) and needle in str(c.get(name) or "").casefold()

    @staticmethod
    def _set_test(name: str, spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
        all_of, any_of, none_of = (set(spec.get(k) or []) for k in ("all", "any", "none"))

        def test(c: Mapping[str, Any]) -> bool:
            held = set(c.get(name) or [])
            return all_of <= held and (not any_of or bool(any_of & held)) and not (none_of & held)

        return test

    # -- single-record endpoints -------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        body = await self._body(request)
        key = body.pop("idempotency_key", None)
        return JSONResponse(self._create_with_key(body, key))

    async def _retrieve(self, request: Request) -> Response:
        return JSONResponse({"customer": self._live(request.path_params["customer_id"])})

    async def _update(self, request: Request) -> Response:
        body = await self._body(request)
        customer = self._apply_update(request.path_params["customer_id"], body)
        return JSONResponse({"customer": customer})

    async def _delete(self, request: Request) -> Response:
        raw = request.query_params.get("version")
        try:
            version = int(raw) if raw not in (None, "") else None
        except ValueError:
            raise SquareError(400, "EXPECTED_INTEGER", "`version` must be an integer.", "version") from None
        self._remove(request.path_params["customer_id"], version)
        return JSONResponse({})

    # -- bulk endpoints ----------------------------------------------------------------
    @staticmethod
    def _entries(body: Mapping[str, Any], field: str, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
        value = body.get(field)
        if not isinstance(value, dict | list) or not isinstance(value, kind) or not value:
            raise SquareError(
                400, "MISSING_REQUIRED_PARAMETER", f"`{field}` needs 1 to {MAX_BULK} entries.", field
            )
        if len(value) > MAX_BULK:
            code = "TOO_MANY_MAP_ENTRIES" if kind is dict else "ARRAY_LENGTH_TOO_LONG"
            raise SquareError(400, code, f"`{field}` takes at most {MAX_BULK} entries.", field)
        return value

    def _updated(self, customer_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return {"customer": self._apply_update(customer_id, data)}

    def _retrieved(self, customer_id: str) -> dict[str, Any]:
        return {"customer": self._live(customer_id)}

    def _removed(self, customer_id: str) -> dict[str, Any]:
        self._remove(customer_id, None)
        return {}

    @staticmethod
    def _per_entry(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except SquareError as err:
            return {"errors": [err.as_dict()]}

    async def _bulk_create(self, request: Request) -> Response:
        entries = self._entries(await self._body(request), "customers", dict)
        responses: dict[str, Any] = {}
        for key, data in entries.items():
            if not isinstance(data, dict):
                responses[key] = {
                    "errors": [SquareError(400, "EXPECTED_OBJECT", "Expected an object.").as_dict()]
                }
                continue
            # The map keys are the entries' idempotency keys, shared with CreateCustomer.
            responses[key] = self._per_entry(functools.partial(self._create_with_key, data, key))
        return JSONResponse({"responses": responses})

    async def _bulk_update(self, request: Request) -> Response:
        entries = self._entries(await self._body(request), "customers", dict)
        responses: dict[str, Any] = {}
        for customer_id, data in entries.items():
            if not isinstance(data, dict):
                responses[customer_id] = {
                    "errors": [SquareError(400, "EXPECTED_OBJECT", "Expected an object.").as_dict()]
                }
                continue
            responses[customer_id] = self._per_entry(functools.partial(self._updated, customer_id, data))
        return JSONResponse({"responses": responses})

    async def _bulk_retrieve(self, request: Request) -> Response:
        ids = self._entries(await self._body(request), "customer_ids", list)
        responses = {str(i): self._per_entry(functools.partial(self._retrieved, str(i))) for i in ids}
        return JSONResponse({"responses": responses})

    async def _bulk_delete(self, request: Request) -> Response:
        ids = self._entries(await self._body(request), "customer_ids", list)
        responses = {str(i): self._per_entry(functools.partial(self._removed, str(i))) for i in ids}
        return JSONResponse({"responses": responses})

    # -- merges ------------------------------------------------------------------------
    async def _merge_route(self, request: Request) -> Response:
        try:
            payload = await request.json()
            ids = [str(i) for i in payload["customer_ids"]]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"customer_ids": [...]}'}, status_code=400)
        if len(set(ids)) < 2:
            return JSONResponse({"error": "a merge needs at least two distinct customers"}, status_code=422)
        try:
            sources = [self._live(i) for i in ids]
        except SquareError as err:
            return JSONResponse({"error": err.detail}, status_code=404)
        return JSONResponse({"customer": self.merge(sources)})

    def merge(self, sources: list[dict[str, Any]]) -> dict[str, Any]:
        """Square's merge: a new profile from the old ones (newest value per field wins)."""
        fields: dict[str, Any] = {}
        for source in sorted(sources, key=lambda c: str(c.get("updated_at"))):
            for name in (*_TEXT_LIMITS, "birthday", "address"):
                if source.get(name):
                    fields[name] = copy.deepcopy(source[name])
        groups = [g for s in sources for g in s.get("group_ids") or []]
        merged = self._insert(fields, source="MERGE", notify=False, group_ids=groups)
        context = {"from_customer_ids": [s["id"] for s in sources], "to_customer_id": merged["id"]}
        self._emit("customer.created", merged, merge=context)
        for source in sources:
            self._remove(source["id"], None, merge=context)
        return merged
