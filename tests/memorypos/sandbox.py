"""The memory POS simulator (see package docstring)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.sandbox.kit import Sandbox

FIELDS = ("first_name", "last_name", "email", "phone", "note", "code")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class MemorySandbox(Sandbox):
    system = "memory"

    def __init__(self, *, name: str = "memory", secret: str = "memsecret", **kwargs: Any) -> None:
        self.name = name
        self.secret = secret
        super().__init__(**kwargs)

    def adapter_env(self, base_url: str) -> dict[str, str]:
        return {"base_url": base_url, "token": f"token-{self.name}", "webhook_secret": self.secret}

    def error(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": code, "message": message}, status_code=status)

    def _auth(self, request: Request) -> Response | None:
        if not self.token_ok(self.bearer(request)):
            return self.error(401, "UNAUTHORIZED", "bearer token required")
        return None

    def _commit(self, record: dict[str, Any], kind: str) -> dict[str, Any]:
        stored = self.store.put(record["id"], record)
        self.committed()
        body = json.dumps(
            {"event_id": str(uuid.uuid4()), "type": kind, "customer": stored}, separators=(",", ":")
        ).encode()
        self.emit_webhook(
            body, {"content-type": "application/json", "x-memory-signature": sign(self.secret, body)}
        )
        return stored

    def _new(self, fields: dict[str, Any]) -> dict[str, Any]:
        record = {k: fields.get(k) for k in FIELDS}
        record.update(id=str(uuid.uuid4()), version=1, updated_at=now_iso(), deleted=False)
        return self._commit(record, "customer.created")

    def _change(self, record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        for key in FIELDS:
            if key in fields:
                record[key] = fields[key]
        record["version"] += 1
        record["updated_at"] = now_iso()
        return self._commit(record, "customer.updated")

    def routes(self) -> list[BaseRoute]:
        async def listing(request: Request) -> Response:
            if (denied := self._auth(request)) is not None:
                return denied
            since = request.query_params.get("updated_since")
            rows = [
                r for r in self.store.visible(self.consistency_lag_s) if not since or r["updated_at"] >= since
            ]
            rows.sort(key=lambda r: (r["updated_at"], r["id"]))
            offset = int(request.query_params.get("offset", "0"))
            limit = int(request.query_params.get("limit", "1000"))
            page = rows[offset : offset + limit]
            more = offset + limit < len(rows)
            return JSONResponse({"customers": page, "next_offset": offset + limit if more else None})

        async def create(request: Request) -> Response:
            if (denied := self._auth(request)) is not None:
                return denied
            body = await request.json()
            if not any(body.get(k) for k in FIELDS):
                return self.error(400, "EMPTY", "at least one field is required")
            return JSONResponse(self._new(body), status_code=201)

        async def one(request: Request) -> Response:
            if (denied := self._auth(request)) is not None:
                return denied
            record = self.store.get(request.path_params["id"])
            if record is None or record["deleted"]:
                return self.error(404, "NOT_FOUND", "no such customer")
            if request.method == "GET":
                return JSONResponse(record)
            if request.method == "DELETE":
                record["deleted"] = True
                record["version"] += 1
                record["updated_at"] = now_iso()
                self._commit(record, "customer.deleted")
                return Response(status_code=204)
            body = await request.json()
            if "version" in body and body["version"] != record["version"]:
                return self.error(409, "VERSION_CONFLICT", f"version {body['version']} is stale")
            if "email" in body and body["email"] and "@" not in str(body["email"]):
                return self.error(400, "INVALID_EMAIL", "email is not valid")
            return JSONResponse(self._change(record, body))

        return [
            Route("/customers", listing, methods=["GET"]),
            Route("/customers", create, methods=["POST"]),
            Route("/customers/{id}", one, methods=["GET", "PUT", "DELETE"]),
        ]

    async def till_edit(self, payload: dict[str, Any]) -> dict[str, Any]:
        fields = payload.get("fields") or {}
        if payload.get("id"):
            record = self.store.get(str(payload["id"]))
            if record is None:
                raise KeyError(payload["id"])
            return self._change(record, fields)
        return self._new(fields)
