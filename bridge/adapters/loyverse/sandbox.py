"""A Loyverse customers API v1.0 simulator, faithful to POS-APIS.md and the wrapper's queries.

Choices where Loyverse documents nothing (adapters must not rely on more than this):
- `POST /customers` with an `id` is an update of that customer and **clears every field
  the body omits** (the harsher reading: an adapter sending partial records is caught).
  An `id` the account does not know (or a soft-deleted one) answers 404 `NOT_FOUND`, as
  the real API does; it never creates a customer under a caller-chosen id.
- `DELETE` is a soft delete: `deleted_at` is set and `permanent_deletion_at` lies
  `permanent_deletion_after_s` later; until then the customer stays readable and listed
  (with `deleted_at`), afterwards it answers 404 and leaves listings.
- Listings run in creation order; the cursor is opaque, carries the query's filters
  (filters sent next to a cursor are ignored) and is signed, so a forged or mangled one
  answers 400 `INVALID_CURSOR`. `limit` defaults to 50.
- Webhooks: every change (API writes, till edits, soft deletes) is reported as
  `customers.update`; changes within `webhook_batch_window_s` go out as one batch holding
  each changed customer once, in its latest state. With `client_secret` set the batch is
  signed in `X-Loyverse-Signature` (HMAC-SHA1, `signature_encoding` base64 or hex), as
  for an OAuth app; without it, unsigned, as for a personal token.
- The budget of 300 requests per 300 s per token is on by default (constructor args
  change it; `/_sandbox/reset` restores it); a 429 carries no rate-limit headers.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import os
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.sandbox.kit import Sandbox, WebhookSender

WRITABLE = (
    "name",
    "email",
    "phone_number",
    "address",
    "city",
    "region",
    "postal_code",
    "country_code",
    "customer_code",
    "note",
)
FILTERS = ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Invalid(Exception):  # control flow inside the sandbox only
    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status, self.code, self.details = status, code, details


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _parse_ts(value: str) -> datetime:
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class BatchingSender(WebhookSender):
    """Collects changed customers for a short window and posts them as one batch."""

    def __init__(
        self,
        url: str | None,
        transport: httpx.AsyncBaseTransport | None,
        *,
        window_s: float,
        build: Callable[[list[dict[str, Any]]], tuple[bytes, dict[str, str]]],
        **kwargs: Any,
    ) -> None:
        super().__init__(url, transport, **kwargs)
        self.window_s = window_s
        self.build = build
        self._batch: dict[str, dict[str, Any]] = {}
        self._flush: asyncio.Task[None] | None = None

    def queue(self, customer: dict[str, Any]) -> None:
        self._batch[customer["id"]] = copy.deepcopy(customer)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window_s)
        batch, self._batch = list(self._batch.values()), {}
        if batch:
            body, headers = self.build(batch)
            self.emit(body, headers)

    @property
    def pending(self) -> int:
        waiting = 1 if self._flush is not None and not self._flush.done() else 0
        return super().pending + waiting

    async def drain(self, timeout: float = 30.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._flush is not None and not self._flush.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flush), timeout)
            except TimeoutError:
                return False
        return await super().drain(max(0.0, deadline - loop.time()))

    def reset(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._flush = None
        self._batch.clear()
        super().reset()


class LoyverseSandbox(Sandbox):
    system = "loyverse"

    def __init__(
        self,
        *,
        client_secret: str | None = None,
        signature_encoding: str = "base64",
        webhook_batch_window_s: float = 0.1,
        merchant_id: str | None = None,
        rate_limit_requests: int | None = 300,
        rate_limit_window_s: float = 300.0,
        permanent_deletion_after_s: float = 30 * 86400,
        webhook_url: str | None = None,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        tokens: Collection[str] | None = None,
        persist_path: Path | None = None,
        seed: int | None = None,
    ) -> None:
        if signature_encoding not in ("base64", "hex"):
            raise ValueError("signature_encoding must be 'base64' or 'hex'")
        self.client_secret = client_secret
        self.signature_encoding = signature_encoding
        self.merchant_id = merchant_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "posbridge-loyverse-sandbox"))
        self.permanent_deletion_after = timedelta(seconds=permanent_deletion_after_s)
        self._seq: dict[str, int] = {}
        self._cursor_key = os.urandom(16)
        super().__init__(
            webhook_url=webhook_url,
            webhook_transport=webhook_transport,
            tokens=tokens,
            persist_path=persist_path,
            seed=seed,
        )
        self.webhooks = BatchingSender(
            webhook_url,
            webhook_transport,
            window_s=webhook_batch_window_s,
            build=self._webhook_body,
            rng=self.rng,
        )
        self._default_faults: dict[str, Any] = {
            "rate_limit_requests": rate_limit_requests,
            "rate_limit_window_s": rate_limit_window_s,
        }
        self.set_faults(self._default_faults)

    @property
    def sender(self) -> BatchingSender:
        assert isinstance(self.webhooks, BatchingSender)
        return self.webhooks

    # -- kit hooks ---------------------------------------------------------------------
    def error(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"errors": [{"code": code, "details": message}]}, status_code=status)

    def rate_limited(self) -> Response:
        # Loyverse sends no Retry-After and no budget headers: the client has to know.
        return self.error(429, "RATE_LIMITED", "Too many requests")

    def on_reset(self) -> None:
        self._seq.clear()
        self.set_faults(self._default_faults)

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._seq = {key: index + 1 for index, key in enumerate(self.store.keys())}

    def ground_truth(self) -> list[dict[str, Any]]:
        return [
            {**record, "deleted": bool(record.get("deleted_at"))} for record in self.store.dump().values()
        ]

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = payload.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("fields must be an object")
        unknown = set(fields) - set(WRITABLE)
        if unknown:
            raise ValueError(f"not customer fields: {sorted(unknown)}")
        customer_id = payload.get("id")
        if customer_id:
            existing = self.store.get(str(customer_id))
            if existing is None or existing.get("deleted_at"):
                raise KeyError(str(customer_id))
            # A person at the till changes what they touch; the rest stays.
            return self._save({**existing, **fields}, existing)
        if not str(fields.get("name") or "").strip():
            raise ValueError("name is required")
        return self._save(self._blank(fields), None)

    # -- routes ------------------------------------------------------------------------
    @classmethod
    def for_demo(cls, webhook_url: str) -> LoyverseSandbox:
        # An OAuth app (signed webhooks) on a budget scaled 10x in time, so a one-minute
        # demo meets the same 300-request window a real account has in five.
        return cls(
            webhook_url=webhook_url,
            client_secret="demo-loyverse-app-secret",
            rate_limit_requests=300,
            rate_limit_window_s=30.0,
        )

    def adapter_env(self, base_url: str) -> dict[str, str]:
        env = {
            "base_url": base_url.rstrip("/") + "/v1.0",
            "access_token": sorted(self.tokens)[0] if self.tokens else "sandbox-access-token",
        }
        if self.client_secret:
            env["client_secret"] = self.client_secret
        if self.faults.rate_limit_requests is not None:
            env["rate_limit_requests"] = str(self.faults.rate_limit_requests)
            env["rate_limit_window_s"] = str(self.faults.rate_limit_window_s)
        return env

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1.0/customers", self._guard(self._list), methods=["GET"]),
            Route("/v1.0/customers", self._guard(self._upsert), methods=["POST"]),
            Route("/v1.0/customers/{customer_id}", self._guard(self._get), methods=["GET"]),
            Route("/v1.0/customers/{customer_id}", self._guard(self._delete), methods=["DELETE"]),
        ]

    def _guard(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not self.token_ok(self.bearer(request)):
                return self.error(401, "UNAUTHORIZED", "The access token is missing or invalid")
            try:
                response: Response = await handler(request)
            except _Invalid as err:
                return self.error(err.status, err.code, err.details)
            return response

        return endpoint

    async def _list(self, request: Request) -> Response:
        query = request.query_params
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise _Invalid(400, "INVALID_VALUE", "limit must be an integer") from None
        if not 1 <= limit <= 250:
            raise _Invalid(400, "INVALID_VALUE", "limit must be between 1 and 250")
        cursor = query.get("cursor")
        if cursor:
            filters, after = self._decode_cursor(cursor)
        else:
            filters, after = self._filters(query), 0
        match = self._matcher(filters)
        page: list[dict[str, Any]] = []
        next_cursor: str | None = None
        for record in self.store.visible(self.consistency_lag_s):
            seq = self._seq.get(record["id"], 0)
            if seq <= after or self._purged(record) or not match(record):
                continue
            if len(page) == limit:
                next_cursor = self._encode_cursor(filters, self._seq[page[-1]["id"]])
                break
            page.append(record)
        return JSONResponse({"customers": page, "cursor": next_cursor})

    async def _get(self, request: Request) -> Response:
        record = self.store.get(request.path_params["customer_id"])
        if record is None or self._purged(record):
            raise _Invalid(404, "NOT_FOUND", "Customer not found")
        return JSONResponse(record)

    async def _upsert(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise _Invalid(400, "BAD_REQUEST", "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Invalid(400, "BAD_REQUEST", "The request body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _Invalid(400, "MISSING_REQUIRED_PARAMETER", "name is required")
        for key in WRITABLE:
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise _Invalid(400, "INVALID_VALUE", f"{key} must be a string")
        if body.get("email") and not _EMAIL.match(body["email"]):
            raise _Invalid(400, "INVALID_VALUE", "email is not a valid e-mail address")
        fields = {key: body.get(key) for key in WRITABLE}  # omitted fields are cleared
        customer_id = body.get("id")
        if customer_id:
            existing = self.store.get(str(customer_id))
            if existing is None or existing.get("deleted_at"):
                raise _Invalid(404, "NOT_FOUND", f"Customer {customer_id} not found")
            return JSONResponse(self._save({**existing, **fields}, existing), status_code=200)
        return JSONResponse(self._save(self._blank(fields), None), status_code=201)

    async def _delete(self, request: Request) -> Response:
        customer_id = request.path_params["customer_id"]
        existing = self.store.get(customer_id)
        if existing is None or existing.get("deleted_at"):
            raise _Invalid(404, "NOT_FOUND", "Customer not found")
        at = self._after(existing["updated_at"])
        record = {
            **existing,
            "deleted_at": _ts(at),
            "permanent_deletion_at": _ts(at + self.permanent_deletion_after),
        }
        self._save(record, existing, at=at)
        return JSONResponse({"deleted_object_ids": [customer_id]})

    # -- state -------------------------------------------------------------------------
    def _blank(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            **{key: fields.get(key) for key in WRITABLE},
            "first_visit": None,
            "last_visit": None,
            "total_visits": 0,
            "total_spent": 0,
            "total_points": 0,
            "created_at": None,
            "updated_at": None,
            "deleted_at": None,
            "permanent_deletion_at": None,
        }

    @staticmethod
    def _after(previous: str | None) -> datetime:
        # Strictly later than the last change, at the API's millisecond resolution, so
        # (id, updated_at) names one change and webhook consumers can deduplicate on it.
        now = _now()
        if previous:
            floor = _parse_ts(previous) + timedelta(milliseconds=1)
            now = max(now, floor)
        return now

    def _save(
        self, record: dict[str, Any], existing: dict[str, Any] | None, at: datetime | None = None
    ) -> dict[str, Any]:
        at = at or self._after(existing["updated_at"] if existing else None)
        record["updated_at"] = _ts(at)
        if existing is None:
            record["created_at"] = record["updated_at"]
            self._seq[record["id"]] = len(self._seq) + 1
        stored = self.store.put(record["id"], record)
        self.committed()
        self.sender.queue(stored)
        return stored

    def _purged(self, record: Mapping[str, Any]) -> bool:
        at = record.get("permanent_deletion_at")
        return bool(at) and _parse_ts(str(at)) <= _now()

    # -- queries -----------------------------------------------------------------------
    def _filters(self, query: Mapping[str, str]) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        for key in FILTERS:
            value = query.get(key)
            if value:
                try:
                    _parse_ts(value)
                except ValueError:
                    raise _Invalid(400, "INVALID_VALUE", f"{key} must be an ISO 8601 date-time") from None
                filters[key] = value
        if query.get("email"):
            filters["email"] = query["email"]
        if query.get("customer_ids"):
            filters["customer_ids"] = [
                part.strip() for part in query["customer_ids"].split(",") if part.strip()
            ]
        return filters

    @staticmethod
    def _matcher(filters: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
        ids = set(filters.get("customer_ids") or ())
        email = str(filters.get("email") or "").lower()
        bounds = {key: _parse_ts(filters[key]) for key in FILTERS if filters.get(key)}

        def match(record: Mapping[str, Any]) -> bool:
            if ids and record["id"] not in ids:
                return False
            if email and str(record.get("email") or "").lower() != email:
                return False
            for key, bound in bounds.items():
                field = key.rsplit("_", 1)[0]
                at = _parse_ts(record[field])
                if (key.endswith("_min") and at < bound) or (key.endswith("_max") and at > bound):
                    return False
            return True

        return match

    def _encode_cursor(self, filters: Mapping[str, Any], after: int) -> str:
        blob = json.dumps({"f": filters, "a": after}, sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(self._cursor_key, blob, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(blob + mac).decode().rstrip("=")

    def _decode_cursor(self, cursor: str) -> tuple[dict[str, Any], int]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            blob, mac = raw[:-12], raw[-12:]
            if not hmac.compare_digest(mac, hmac.new(self._cursor_key, blob, hashlib.sha256).digest()[:12]):
                raise ValueError("bad signature")
            data = json.loads(blob)
            return dict(data["f"]), int(data["a"])
        except (ValueError, KeyError, TypeError):
            raise _Invalid(400, "INVALID_CURSOR", "The cursor is invalid or expired") from None

    # -- webhooks ----------------------------------------------------------------------
    def _webhook_body(self, customers: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(
            {
                "merchant_id": self.merchant_id,
                "type": "customers.update",
                "created_at": _ts(_now()),
                "customers": customers,
            },
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json"}
        if self.client_secret:
            digest = hmac.new(self.client_secret.encode(), body, hashlib.sha1).digest()
            signature = (
                digest.hex() if self.signature_encoding == "hex" else base64.b64encode(digest).decode()
            )
            headers["X-Loyverse-Signature"] = signature
        return body, headers
