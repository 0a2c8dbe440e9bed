"""Every body the sandbox answers or sends validates against the official OpenAPI subset.

The subset is OpenAPI 3.0 (`nullable`, `$ref` siblings); it is turned into JSON Schema
here, and objects are closed (`additionalProperties: false`) so invented fields fail too.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bridge.sandbox.transport import SyncASGITransport

from .conftest import World

# The official subset lives in shared/ beside the checkout; POSBRIDGE_SQUARE_OPENAPI overrides.
_REPO = Path(__file__).resolve().parents[4]
SPEC_PATH = next(
    (
        p
        for p in (
            Path(os.environ.get("POSBRIDGE_SQUARE_OPENAPI", "/nonexistent")),
            _REPO.parent / "shared" / "reference" / "square-customers-openapi.json",
            Path("/work/shared/reference/square-customers-openapi.json"),
        )
        if p.exists()
    ),
    _REPO.parent / "shared" / "reference" / "square-customers-openapi.json",
)
SPEC_URI = "urn:square-openapi"


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = SPEC_URI + out["$ref"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    if not SPEC_PATH.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the official Square OpenAPI subset is required in CI: {SPEC_PATH}")
        pytest.skip("the shared Square OpenAPI subset is not available")
    spec = json.loads(SPEC_PATH.read_text())
    schemas = _to_json_schema(copy.deepcopy(spec["components"]["schemas"]))
    # Square's delete events carry `data.deleted: true`, which the published schema omits.
    schemas["CustomerDeletedEventData"]["properties"]["deleted"] = {"type": "boolean"}
    resource = Resource.from_contents({"components": {"schemas": schemas}}, default_specification=DRAFT202012)
    registry = Registry().with_resource(SPEC_URI, resource)
    return {
        name: Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=registry)
        for name in schemas
    }


class Recorder(httpx.BaseTransport):
    """Keeps every exchange with the sandbox, as it went over the wire."""

    def __init__(self, inner: SyncASGITransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, str, int, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code, response.read()))
        return response


def schema_for(method: str, path: str) -> str:
    if path == "/v2/customers":
        return "ListCustomersResponse" if method == "GET" else "CreateCustomerResponse"
    tail = path.removeprefix("/v2/customers/")
    named = {
        "search": "SearchCustomersResponse",
        "bulk-create": "BulkCreateCustomersResponse",
        "bulk-update": "BulkUpdateCustomersResponse",
        "bulk-retrieve": "BulkRetrieveCustomersResponse",
        "bulk-delete": "BulkDeleteCustomersResponse",
    }
    if tail in named:
        return named[tail]
    return {
        "GET": "RetrieveCustomerResponse",
        "PUT": "UpdateCustomerResponse",
        "DELETE": "DeleteCustomerResponse",
    }[method]


def test_every_response_and_webhook_matches_the_spec(
    world: World, validators: dict[str, Draft202012Validator]
) -> None:
    recorder = Recorder(world.transport)
    http = httpx.Client(transport=recorder, base_url="http://sandbox", headers={"authorization": "Bearer t"})
    full = {
        "given_name": "Amelia",
        "family_name": "Earhart",
        "company_name": "Lockheed",
        "nickname": "Meelie",
        "email_address": "amelia@example.com",
        "phone_number": "+1-212-555-4240",
        "reference_id": "R-1",
        "note": "pilot",
        "birthday": "07-24",
        "address": {"address_line_1": "500 Electric Ave", "locality": "New York", "country": "US"},
    }
    a = http.post("/v2/customers", json={"idempotency_key": "k", **full}).json()["customer"]
    http.post("/v2/customers", json={"idempotency_key": "k", **full})
    http.post("/v2/customers", json={"idempotency_key": "k", "given_name": "other"})
    http.post("/v2/customers", json={"phone_number": "12"})
    http.post("/v2/customers", json={"email_address": "bad"})
    http.post("/v2/customers", json={})
    b = http.post("/v2/customers", json={"given_name": "Bob"}).json()["customer"]
    http.get(f"/v2/customers/{a['id']}")
    http.get("/v2/customers/NOPE")
    http.put(
        f"/v2/customers/{a['id']}", json={"nickname": None, "address": {"locality": "Brooklyn"}, "version": 0}
    )
    http.put(f"/v2/customers/{a['id']}", json={"nickname": "x", "version": 0})
    http.get("/v2/customers", params={"limit": 1, "count": "true"})
    http.get("/v2/customers", params={"limit": 0})
    http.get("/v2/customers", params={"limit": 1000})
    http.post(
        "/v2/customers/search", json={"limit": 1, "query": {"filter": {"reference_id": {"exact": "R-1"}}}}
    )
    http.post("/v2/customers/search", json={"query": {"sort": {"field": "CREATED_AT", "order": "DESC"}}})
    http.post("/v2/customers/bulk-create", json={"customers": {"x": {"given_name": "X"}, "y": {"note": "n"}}})
    http.post(
        "/v2/customers/bulk-update", json={"customers": {b["id"]: {"note": "n", "version": 0}, "Q": {}}}
    )
    http.post("/v2/customers/bulk-retrieve", json={"customer_ids": [b["id"], "Q"]})
    http.post("/v2/customers/bulk-delete", json={"customer_ids": [b["id"], "Q"]})
    http.delete(f"/v2/customers/{a['id']}", params={"version": 0})
    c = http.post("/v2/customers", json={"given_name": "C"}).json()["customer"]
    d = http.post("/v2/customers", json={"given_name": "D", "email_address": "d@example.com"}).json()[
        "customer"
    ]
    http.post("/_sandbox/merge", json={"customer_ids": [c["id"], d["id"]]})
    world.transport.run(world.sandbox.till_edit({"fields": {"given_name": "Till"}}))
    http.get("/v2/customers", headers={"authorization": ""})
    world.sandbox.set_faults({"rate_limit_rate": 1.0})
    http.get("/v2/customers")
    world.sandbox.set_faults({"rate_limit_rate": 0.0, "error_rate": 1.0})
    http.get("/v2/customers")
    world.drain()

    vendor = [s for s in recorder.seen if s[1].startswith("/v2/")]
    statuses = {status for _, _, status, _ in vendor}
    assert {200, 400, 401, 404, 429, 500} <= statuses
    for method, path, status, raw in vendor:
        body = json.loads(raw)
        errors = list(validators[schema_for(method, path)].iter_errors(body))
        assert not errors, f"{method} {path} {status}: {errors[0].message}"
        assert (status >= 400) == bool(body.get("errors")), (method, path, status)

    events = world.receiver.events()
    kinds = {e["type"] for e in events}
    assert kinds == {"customer.created", "customer.updated", "customer.deleted"}
    for event in events:
        schema = {
            "customer.created": "CustomerCreatedEvent",
            "customer.updated": "CustomerUpdatedEvent",
            "customer.deleted": "CustomerDeletedEvent",
        }[event["type"]]
        errors = list(validators[schema].iter_errors(event))
        assert not errors, f"{event['type']}: {errors[0].message}"
