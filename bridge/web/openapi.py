"""The bridge's own OpenAPI 3.1 document, served at `GET /openapi.json`.

Every route is one `Operation` in `OPERATIONS`; the document is built from that table
and from the runtime (which systems take webhooks, polls, retries), so it describes the
deployment that serves it. `tests/test_hostile_input.py` checks that the table and the
Starlette routes name the same (method, path) pairs, and fuzzes every operation.

Nothing vendor-specific lives here: how a POS signs its webhooks is its adapter's
business, so the webhook body is described as the system's own JSON payload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.adapters.base import Capability
from bridge.runtime import Runtime
from bridge.web.ops import MAX_ROW_ID

OPENAPI_VERSION = "3.1.0"

Json = dict[str, Any]
# Which systems a `{system}` path parameter may name, from the running configuration.
SystemChoice = Callable[[Runtime], list[str]]


def _webhook_systems(rt: Runtime) -> list[str]:
    return rt.with_capability(Capability.WEBHOOKS)


def _poll_systems(rt: Runtime) -> list[str]:
    return sorted(set(rt.with_capability(Capability.POLLING)) | set(rt.with_capability(Capability.ORDERS)))


def _all_systems(rt: Runtime) -> list[str]:
    return rt.systems


ERROR: Json = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "why the request was refused"}},
    "required": ["error"],
}
TEXT: Json = {"text/plain": {"schema": {"type": "string"}}}
HTML: Json = {"text/html": {"schema": {"type": "string"}}}


def _error(description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _text(description: str) -> Json:
    return {"description": description, "content": TEXT}


WEBHOOK_RESPONSES: dict[str, Json] = {
    "200": {
        "description": (
            "Recorded durably (or recognised as a duplicate, or an event type acknowledged "
            "and ignored); the inbox row is committed before this answer"
        ),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 0},
                        "duplicates": {"type": "integer", "minimum": 0},
                        "ignored": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["accepted", "duplicates", "ignored"],
                }
            }
        },
    },
    "400": _error("Not a payload we accept (not JSON, invalid UTF-8, nested too deep, ...); nothing stored"),
    "401": _error("Signature (or path token) does not verify; nothing stored"),
    "404": _error("No webhook endpoint for this system"),
    "409": _error("An event older than the inbox retention window: refused as a possible replay"),
    "413": _error("Body larger than POSBRIDGE_MAX_BODY_BYTES; refused before it is read"),
    "422": _error("Well-formed but unusable (missing fields, ids the inbox cannot store, ...)"),
}

OPS_AUTH_RESPONSES: dict[str, Json] = {
    "401": _text("HTTP Basic credentials missing or wrong"),
    "503": _text("The ops page is disabled: POSBRIDGE_OPS_PASSWORD is not set"),
}

OPS_FORM: Json = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "csrf": {"type": "string", "description": "the token embedded in the ops pages"},
                    "next": {"type": "string", "description": "an ops page to return to"},
                },
            }
        }
    },
}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path | query
    schema: Json = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    systems: SystemChoice | None = None  # a `{system}` parameter: enum from the runtime

    def build(self, rt: Runtime) -> Json:
        schema = dict(self.schema)
        if self.systems is not None:
            schema["enum"] = self.systems(rt)
        out: Json = {"name": self.name, "in": self.where, "required": self.where == "path", "schema": schema}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    responses: dict[str, Json]
    params: tuple[Param, ...] = ()
    body: Json | None = None
    security: tuple[str, ...] = ()

    def build(self, rt: Runtime) -> Json:
        out: Json = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "tags": [self.tag],
            "responses": self.responses,
        }
        if self.params:
            out["parameters"] = [p.build(rt) for p in self.params]
        if self.body is not None:
            out["requestBody"] = self.body
        if self.security:
            out["security"] = [{name: []} for name in self.security]
        return out


def _system(choices: SystemChoice, description: str) -> Param:
    return Param("system", "path", description=description, systems=choices)


WEBHOOK_BODY: Json = {
    "required": True,
    "description": (
        "The POS's own event payload, byte for byte as it signed it (JSON object, or an "
        "array for systems that batch); verified by the system's adapter"
    ),
    "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/webhooks/{system}",
        "receiveWebhook",
        "Receive a signed webhook from a POS",
        "webhooks",
        WEBHOOK_RESPONSES,
        params=(_system(_webhook_systems, "a system that sends webhooks"),),
        body=WEBHOOK_BODY,
    ),
    Operation(
        "POST",
        "/webhooks/{system}/{token}",
        "receiveWebhookWithPathToken",
        "Receive a webhook from a POS that cannot sign, authenticated by a secret path token",
        "webhooks",
        WEBHOOK_RESPONSES,
        params=(
            _system(_webhook_systems, "a system that sends webhooks"),
            Param("token", "path", description="the system's POSBRIDGE_<SYSTEM>_WEBHOOK_PATH_TOKEN"),
        ),
        body=WEBHOOK_BODY,
    ),
    Operation(
        "POST",
        "/triggers/poll/{system}",
        "triggerPoll",
        "Queue a poll of one system now",
        "operations",
        {
            "202": {
                "description": "Poll queued",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"queued": {"type": "string"}},
                            "required": ["queued"],
                        }
                    }
                },
            },
            "401": _error("Bearer token (POSBRIDGE_TRIGGER_TOKEN) missing or wrong"),
            "404": _error("System not enabled for polling"),
        },
        params=(_system(_poll_systems, "a system that is polled"),),
        security=("triggerToken",),
    ),
    Operation(
        "GET", "/healthz", "healthz", "Liveness", "health", {"200": {"description": "The process is up"}}
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: database and broker reachable",
        "health",
        {"200": {"description": "Ready"}, "503": {"description": "Database or broker unreachable"}},
    ),
    Operation(
        "GET", "/metrics", "metrics", "Prometheus metrics", "health", {"200": _text("Exposition format")}
    ),
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This document",
        "health",
        {
            "200": {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    ),
    Operation(
        "GET",
        "/ops/",
        "opsIndex",
        "Ops page: per-system health, failed deliveries, unlinked orders",
        "ops",
        {"200": {"description": "HTML page", "content": HTML}, **OPS_AUTH_RESPONSES},
        params=(Param("requeued", "query", description="ids of deliveries just requeued, comma-separated"),),
        security=("opsBasic",),
    ),
    Operation(
        "GET",
        "/ops/customers",
        "opsCustomers",
        "Ops page: search customers",
        "ops",
        {"200": {"description": "HTML page", "content": HTML}, **OPS_AUTH_RESPONSES},
        params=(Param("q", "query", description="name, e-mail, phone, customer code or id"),),
        security=("opsBasic",),
    ),
    Operation(
        "GET",
        "/ops/customers/{customer_id}",
        "opsCustomer",
        "Ops page: one customer with provenance, links, deliveries, attempts and orders",
        "ops",
        {
            "200": {"description": "HTML page", "content": HTML},
            "404": {"description": "No such customer", "content": HTML},
            **OPS_AUTH_RESPONSES,
        },
        params=(Param("customer_id", "path", description="the canonical customer id (a UUID)"),),
        security=("opsBasic",),
    ),
    Operation(
        "POST",
        "/ops/deliveries/{delivery_id}/retry",
        "opsRetryDelivery",
        "Requeue one failed delivery",
        "ops",
        {
            "303": {"description": "Back to the ops page, with what was requeued"},
            "403": _text("CSRF token missing or wrong"),
            "404": _text("No such delivery"),
            **OPS_AUTH_RESPONSES,
        },
        params=(
            Param(
                "delivery_id",
                "path",
                {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID},
                "a delivery id",
            ),
        ),
        body=OPS_FORM,
        security=("opsBasic",),
    ),
    Operation(
        "POST",
        "/ops/systems/{system}/retry-failed",
        "opsRetrySystem",
        "Requeue every failed delivery to one system",
        "ops",
        {
            "303": {"description": "Back to the ops page, with what was requeued"},
            "403": _text("CSRF token missing or wrong"),
            "404": _text("System not enabled"),
            **OPS_AUTH_RESPONSES,
        },
        params=(_system(_all_systems, "an enabled system"),),
        body=OPS_FORM,
        security=("opsBasic",),
    ),
)


def build_document(rt: Runtime, operations: Sequence[Operation] = OPERATIONS) -> Json:
    paths: Json = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = op.build(rt)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "posbridge",
            "version": "1",
            "description": (
                "Keeps customer records in step across point-of-sale systems. Webhooks are "
                "verified by each system's adapter (signature header or secret path token)."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "triggerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "POSBRIDGE_TRIGGER_TOKEN",
                },
                "opsBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "POSBRIDGE_OPS_USER / POSBRIDGE_OPS_PASSWORD",
                },
            }
        },
    }


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(build_document(request.app.state.runtime))
