"""Hostile input: every endpoint fuzzed, signed bodies fuzzed past the signature, named attacks.

The bridge runs for real (web app on a real port, SQLite and Postgres) with the five
real POS sandboxes behind their adapters. Rules checked on every request: never 5xx; a
4xx changes nothing (no inbox row, no customer); a 200 stores exactly what it accepted.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import func, select
from starlette.routing import Mount, Route

from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
from bridge.adapters.loyverse import webhook as loyverse_webhook
from bridge.adapters.loyverse.sandbox import LoyverseSandbox
from bridge.adapters.lsone.sandbox import LSOneSandbox
from bridge.adapters.onsite.sandbox import OnSiteSandbox
from bridge.adapters.square import webhook as square_webhook
from bridge.adapters.square.sandbox import SquareSandbox
from bridge.engine.ingest import ingest
from bridge.store.models import Customer, InboxEvent, InboxState
from bridge.web.app import create_app
from bridge.web.openapi import OPERATIONS
from bridge.web.ops import csrf_token
from tests.conftest import SandboxFactory, Stack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SQUARE_KEY = "hostile-square-signature-key"
LOYVERSE_SECRET = "hostile-loyverse-client-secret"
FIELDPINE_PATH_TOKEN = "hostile-fieldpine-path-token"
TRIGGER_TOKEN = "hostile-trigger-token"
OPS_PASSWORD = "hostile-ops-password"
# Kept small per operation so both databases together stay well under a minute.
EXAMPLES_PER_OPERATION = 20
SIGNED_EXAMPLES_PER_SYSTEM = 40

SYSTEMS: dict[str, SandboxFactory] = {
    "square": lambda url: SquareSandbox(webhook_url=url, signature_key=SQUARE_KEY),
    # An OAuth app: signed with HMAC-SHA1.
    "loyverse": lambda url: LoyverseSandbox(webhook_url=url, client_secret=LOYVERSE_SECRET),
    # Hooks without a configured HMAC secret: authenticated by the secret path token.
    "fieldpine": lambda url: FieldpineSandbox(webhook_url=url),
    "onsite": lambda url: OnSiteSandbox(webhook_url=url),
    "lsone": lambda url: LSOneSandbox(webhook_url=url),
}
WEBHOOK_SYSTEMS = ("square", "loyverse", "fieldpine")


@pytest.fixture(scope="module", params=["sqlite", "pg-redis"])
def bridge(request: pytest.FixtureRequest) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"posbridge-hostile-{request.param}-"))
    st_ = Stack(
        request.param,
        var,
        extra_env={
            "POSBRIDGE_TRIGGER_TOKEN": TRIGGER_TOKEN,
            "POSBRIDGE_OPS_PASSWORD": OPS_PASSWORD,
            "POSBRIDGE_FIELDPINE_WEBHOOK_PATH_TOKEN": FIELDPINE_PATH_TOKEN,
        },
        systems=SYSTEMS,
    )
    try:
        yield st_
    finally:
        st_.close()
        shutil.rmtree(var, ignore_errors=True)


# -- helpers ------------------------------------------------------------------------------
def snapshot(st_: Stack) -> tuple[int, int, int]:
    """What bad input must not change: inbox rows (count, highest id) and customers."""
    with st_.rt.db.session() as s:
        inbox = s.execute(select(func.count(), func.max(InboxEvent.id))).one()
        customers = s.scalar(select(func.count()).select_from(Customer)) or 0
    return int(inbox[0]), int(inbox[1] or 0), int(customers)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def webhook_target(st_: Stack, system: str, body: bytes) -> tuple[str, dict[str, str]]:
    """URL and headers that pass `system`'s verification, as its sandbox would send them."""
    url = f"{st_.web_url}/webhooks/{system}"
    headers = {"content-type": "application/json"}
    if system == "square":
        sandbox = st_.sandboxes["square"]
        headers[square_webhook.SIGNATURE_HEADER] = square_webhook.sign(
            SQUARE_KEY, sandbox.notification_url or url, body
        )
    elif system == "loyverse":
        headers[loyverse_webhook.SIGNATURE_HEADER] = loyverse_webhook.sign(body, LOYVERSE_SECRET)
    elif system == "fieldpine":
        url = f"{url}/{FIELDPINE_PATH_TOKEN}"
    return url, headers


def post_signed(st_: Stack, system: str, body: bytes) -> httpx.Response:
    url, headers = webhook_target(st_, system, body)
    return httpx.post(url, content=body, headers=headers, timeout=30)


def square_event(**overrides: Any) -> dict[str, Any]:
    customer = {
        "id": "HOSTILE" + uuid.uuid4().hex[:12].upper(),
        "created_at": now_iso(),
        "updated_at": now_iso(),
        "given_name": "Grace",
        "family_name": "Hopper",
        "email_address": f"grace.{uuid.uuid4().hex[:8]}@example.com",
        "version": 1,
    }
    customer.update(overrides.pop("customer", {}))
    event = {
        "merchant_id": "MLSANDBOX7Q2XK",
        "type": "customer.updated",
        "event_id": str(uuid.uuid4()),
        "created_at": now_iso(),
        "data": {"type": "customer", "id": customer["id"], "object": {"customer": customer}},
    }
    event.update(overrides)
    return event


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def assert_refused(st_: Stack, response: httpx.Response, before: tuple[int, int, int], *codes: int) -> str:
    assert response.status_code in codes, (response.status_code, response.text[:500])
    assert snapshot(st_) == before
    reason = response.json()["error"]
    assert isinstance(reason, str)
    assert reason
    return reason


# -- the document -------------------------------------------------------------------------
def route_pairs(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            pairs |= route_pairs(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            pairs |= {(method, path) for method in route.methods or () if method != "HEAD"}
    return pairs


def test_openapi_document_names_exactly_the_routes(bridge: Stack) -> None:
    document = httpx.get(f"{bridge.web_url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    served = route_pairs(list(create_app(bridge.rt).routes))
    assert documented == served
    assert {(op.method, op.path) for op in OPERATIONS} == served
    # The `system` parameters name what this deployment really accepts.
    webhook = document["paths"]["/webhooks/{system}"]["post"]["parameters"][0]["schema"]
    assert webhook["enum"] == list(WEBHOOK_SYSTEMS)
    # The document must not give away any configured secret.
    text = json.dumps(document)
    for secret in (SQUARE_KEY, LOYVERSE_SECRET, FIELDPINE_PATH_TOKEN, TRIGGER_TOKEN, OPS_PASSWORD):
        assert secret not in text


# -- every operation, fuzzed from the document --------------------------------------------
@pytest.mark.parametrize(("method", "path"), [(op.method, op.path) for op in OPERATIONS])
def test_fuzz_every_operation(bridge: Stack, method: str, path: str) -> None:
    document = httpx.get(f"{bridge.web_url}/openapi.json", timeout=10).json()
    operation = schemathesis.openapi.from_dict(document)[path][method]
    auth_header = (
        f"Bearer {TRIGGER_TOKEN}"
        if path.startswith("/triggers/")
        else "Basic " + base64.b64encode(f"ops:{OPS_PASSWORD}".encode()).decode()
    )
    csrf = csrf_token(("ops", OPS_PASSWORD))
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    # Mostly authenticated: the interesting handlers are behind the auth gate.
    @given(case=cases, authenticate=st.sampled_from([True, True, True, False]), with_csrf=st.booleans())
    def run(case: Any, authenticate: bool, with_csrf: bool) -> None:
        # Half the cases carry valid credentials, so the fuzzer gets past the auth gate.
        headers = {"authorization": auth_header} if authenticate else None
        if with_csrf and isinstance(case.body, dict):
            case.body["csrf"] = csrf
        before = snapshot(bridge)
        response = case.call(base_url=bridge.web_url, headers=headers, timeout=30, allow_redirects=False)
        reproduce = case.as_curl_command()
        assert response.status_code < 500, (response.status_code, response.text[:300], reproduce)
        if 400 <= response.status_code < 500:
            assert snapshot(bridge) == before, reproduce

    run()


# -- signed bodies, fuzzed past the signature ---------------------------------------------
def fixtures(system: str) -> list[Any]:
    folder = ROOT / "bridge" / "adapters" / system / "fixtures"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T")
HOSTILE_LEAVES = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63, -(2**63) - 1, 10**30, 0, -1, True, None, 1.5, ""]),
    st.text(max_size=30),
    st.sampled_from(
        ["\x00", "a\x00b", "\ud800", "x" * 250, "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _freshen(value: Any, stamp: str) -> Any:
    """Recorded fixtures are old; fresh times keep most mutants inside the replay window."""
    if isinstance(value, dict):
        return {k: _freshen(v, stamp) for k, v in value.items()}
    if isinstance(value, list):
        return [_freshen(v, stamp) for v in value]
    if isinstance(value, str) and _ISO.match(value):
        return stamp
    return value


@st.composite
def mutated_body(draw: st.DrawFn, seeds: list[Any]) -> bytes:
    value = draw(st.sampled_from(seeds))
    if draw(st.booleans()):
        value = _freshen(value, now_iso())
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = draw(st.sampled_from(_paths(value)))
        action = draw(st.sampled_from(["replace", "delete", "nest", "add"]))
        if action == "replace" or (action == "delete" and not path):
            value = _replace(value, path, draw(HOSTILE_LEAVES))
        elif action == "delete":
            parent = _get(value, path[:-1])
            if isinstance(parent, dict):
                value = _replace(value, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
        elif action == "nest":
            nested: Any = 1
            for _ in range(draw(st.sampled_from([2, 30, 31, 40, 500]))):
                nested = [nested]
            value = _replace(value, path, nested)
        else:
            target = _get(value, path)
            if isinstance(target, dict):
                value = _replace(value, path, {**target, draw(st.text(max_size=8)): draw(HOSTILE_LEAVES)})
    try:
        body = json.dumps(value).encode("utf-8", "surrogatepass")
    except RecursionError:
        body = b"[" * 5000 + b"]" * 5000
    byte_mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "invalid-utf8", "nan"]))
    if byte_mutation == "truncate":
        body = body[: draw(st.integers(min_value=0, max_value=max(0, len(body) - 1)))]
    elif byte_mutation == "invalid-utf8":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + b"\xff\xfe" + body[at:]
    elif byte_mutation == "nan":
        body = body.replace(b"1", b"NaN", 1)
    return body


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def ingest_new(st_: Stack, before_max_id: int) -> list[tuple[str, str | None]]:
    """Run the real ingest on rows a fuzz request added; (state, error) of each."""
    with st_.rt.db.session() as s:
        ids = list(s.scalars(select(InboxEvent.id).where(InboxEvent.id > before_max_id)))
    out = []
    for inbox_id in ids:
        ingest(st_.rt, inbox_id)
        with st_.rt.db.session() as s:
            row = s.get(InboxEvent, inbox_id)
            assert row is not None
            out.append((row.state, row.error))
    return out


@pytest.mark.parametrize("system", WEBHOOK_SYSTEMS)
def test_fuzz_signed_bodies_past_the_signature(bridge: Stack, system: str) -> None:
    seeds = fixtures(system)
    assert seeds

    @settings(
        max_examples=SIGNED_EXAMPLES_PER_SYSTEM,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=mutated_body(seeds))
    def run(body: bytes) -> None:
        before = snapshot(bridge)
        response = post_signed(bridge, system, body)
        assert response.status_code < 500, (response.status_code, response.text[:300], body[:300])
        if response.status_code >= 400:
            assert response.status_code in (400, 409, 413, 422), response.text
            assert response.json()["error"]
            assert snapshot(bridge) == before, body[:300]
            return
        assert response.status_code == 200, response.text
        answer = response.json()
        count, _, _ = snapshot(bridge)
        assert count - before[0] == answer["accepted"], (answer, body[:300])
        # What was accepted must also go through the engine without a storage error.
        for state, error in ingest_new(bridge, before[1]):
            # Done, a delete waiting out its grace period, or a value the engine cannot read
            # (failed once, not retried): never a storage error.
            settled = state == InboxState.DONE or error == "delete waits out its grace period"
            assert settled or (error or "").startswith("record cannot be read"), (state, error, body[:300])

    run()


# -- named cases --------------------------------------------------------------------------
def raw_exchange(st_: Stack, head: bytes, body_parts: list[bytes], timeout: float = 10.0) -> int:
    """Send a request by hand (the body possibly incomplete) and return the answer's status."""
    host, port = "127.0.0.1", int(st_.web_url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_50mb_body_with_content_length_is_413_before_it_is_sent(bridge: Stack) -> None:
    before = snapshot(bridge)
    size = 50 * 1024 * 1024
    # Only the headers go out: the answer must come without waiting for (or buffering) 50 MB.
    head = (
        f"POST /webhooks/square HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    assert raw_exchange(bridge, head, []) == 413
    assert time.monotonic() - started < 5
    # The same through an ordinary client sending every byte.
    response = httpx.post(f"{bridge.web_url}/webhooks/square", content=b"x" * size, timeout=60)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert snapshot(bridge) == before


def test_50mb_chunked_body_without_length_is_413_after_the_limit(bridge: Stack) -> None:
    before = snapshot(bridge)
    limit = bridge.settings.max_body_bytes
    head = b"POST /webhooks/loyverse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"y" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    # Just past the limit, and the body never finished: refused without reading the rest.
    parts = [framed] * (limit // len(chunk) + 2)
    assert raw_exchange(bridge, head, parts) == 413

    def fifty_megabytes() -> Iterator[bytes]:
        for _ in range(50 * 16):
            yield chunk

    response = httpx.post(f"{bridge.web_url}/webhooks/loyverse", content=fifty_megabytes(), timeout=60)
    assert response.status_code == 413
    assert snapshot(bridge) == before


def test_invalid_utf8_is_400_with_reason(bridge: Stack) -> None:
    for system in WEBHOOK_SYSTEMS:
        before = snapshot(bridge)
        body = encode(square_event()).replace(b"Grace", b"Gr\xffce")
        reason = assert_refused(bridge, post_signed(bridge, system, body), before, 400)
        assert "UTF-8" in reason


def test_deeply_nested_json_is_400(bridge: Stack) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    nested: Any = []
    for _ in range(40):
        nested = [nested]
    just_too_deep = square_event(customer={"note": nested})
    for system in WEBHOOK_SYSTEMS:
        for body in (deep, encode(just_too_deep)):
            before = snapshot(bridge)
            reason = assert_refused(bridge, post_signed(bridge, system, body), before, 400)
            assert "nested deeper" in reason


def test_huge_integers_are_refused(bridge: Stack) -> None:
    before = snapshot(bridge)
    beyond_int64 = encode(square_event(customer={"version": 2**64}))
    reason = assert_refused(bridge, post_signed(bridge, "square", beyond_int64), before, 422)
    assert "64-bit" in reason
    # More digits than Python converts: refused by the parser, not a crash.
    body = encode(square_event()).replace(b'"version":1', b'"version":' + b"9" * 5000)
    assert_refused(bridge, post_signed(bridge, "square", body), before, 400)
    # NaN is not JSON.
    body = encode(square_event()).replace(b'"version":1', b'"version":NaN')
    assert_refused(bridge, post_signed(bridge, "square", body), before, 400)


def test_event_ids_the_database_cannot_store_are_refused(bridge: Stack) -> None:
    before = snapshot(bridge)
    for event_id in ("evt\x00nul", "evt-\ud800"):
        body = json.dumps(square_event(event_id=event_id)).encode()
        assert_refused(bridge, post_signed(bridge, "square", body), before, 400)
    too_long = encode(square_event(event_id="e" * 201))
    reason = assert_refused(bridge, post_signed(bridge, "square", too_long), before, 422)
    assert "longer than 200" in reason
    fieldpine = encode({"Event": "CustomerChanged", "CustomerId": str(uuid.uuid4()), "EventId": "f" * 300})
    assert_refused(bridge, post_signed(bridge, "fieldpine", fieldpine), before, 422)
    # 200 characters is fine and is stored whole, not truncated into a collision.
    longest = "e" * 190 + uuid.uuid4().hex[:10]
    response = post_signed(bridge, "square", encode(square_event(event_id=longest)))
    assert response.json()["accepted"] == 1
    with bridge.rt.db.session() as s:
        assert s.scalar(select(func.count()).where(InboxEvent.event_id == longest)) == 1


def test_unreadable_value_is_accepted_then_fails_once(bridge: Stack) -> None:
    before = snapshot(bridge)
    response = post_signed(bridge, "square", encode(square_event(customer={"birthday": 5})))
    assert response.json()["accepted"] == 1
    # Kept (signed, raw body stored) but failed at once: retrying cannot make 5 a date.
    assert ingest_new(bridge, before[1]) == [
        (InboxState.FAILED, "record cannot be read: birthday '5' is not YYYY-MM-DD or MM-DD")
    ]


def test_replayed_signed_webhook(bridge: Stack) -> None:
    retention = timedelta(hours=bridge.settings.inbox_retention_h)
    # Inside the dedup window: acknowledged as a duplicate, nothing new stored.
    body = encode(square_event())
    assert post_signed(bridge, "square", body).json() == {"accepted": 1, "duplicates": 0, "ignored": []}
    before = snapshot(bridge)
    assert post_signed(bridge, "square", body).json() == {"accepted": 0, "duplicates": 1, "ignored": []}
    assert snapshot(bridge) == before
    # Older than the retention window (its inbox row may be pruned): refused, nothing stored.
    old = (datetime.now(UTC) - retention - timedelta(minutes=1)).isoformat()
    stale = encode(square_event(created_at=old, customer={"updated_at": old}))
    reason = assert_refused(bridge, post_signed(bridge, "square", stale), before, 409)
    assert "retention" in reason
    assert "replay" in reason
    # The case the rule exists for: accepted once, its row pruned, replayed later.
    edge = (datetime.now(UTC) - retention + timedelta(seconds=1)).isoformat()
    edge_body = encode(square_event(created_at=edge, customer={"updated_at": edge}))
    assert post_signed(bridge, "square", edge_body).json()["accepted"] == 1
    with bridge.rt.db.session() as s:  # what prune_inbox does to a row past retention
        s.query(InboxEvent).filter(InboxEvent.raw_body == edge_body).delete()
    before = snapshot(bridge)
    time.sleep(1.2)
    assert_refused(bridge, post_signed(bridge, "square", edge_body), before, 409)
    # The rule is generic: the same for another system's notion of event time.
    hook = encode(
        {"Event": "CustomerChanged", "CustomerId": str(uuid.uuid4()), "EventId": "old-1", "Time": old}
    )
    assert_refused(bridge, post_signed(bridge, "fieldpine", hook), before, 409)


def test_ops_urls_with_junk_ids_are_404(bridge: Stack) -> None:
    auth = ("ops", OPS_PASSWORD)
    csrf = {"csrf": csrf_token(auth)}
    base = f"{bridge.web_url}/ops"
    before = snapshot(bridge)
    for junk in ("2147483648", "9223372036854775808", "99999999999999999999999999", "0"):
        response = httpx.post(f"{base}/deliveries/{junk}/retry", data=csrf, auth=auth)
        assert response.status_code == 404, (junk, response.text)
    for junk in ("abc", "-1", "1.5", "%00", "%F0%9F%92%A5"):
        assert httpx.post(f"{base}/deliveries/{junk}/retry", data=csrf, auth=auth).status_code == 404
    for junk in ("%00", "x" * 5000, "%ED%A0%80", "..%2F..%2Fetc%2Fpasswd", str(uuid.uuid4())):
        response = httpx.get(f"{base}/customers/{junk}", auth=auth)
        assert response.status_code == 404, (junk, response.status_code)
    assert httpx.get(f"{base}/customers", params={"q": "a\x00b"}, auth=auth).status_code == 200
    assert httpx.get(f"{base}/", params={"requeued": "²,1" + "9" * 5000}, auth=auth).status_code == 200
    assert httpx.post(f"{base}/systems/nosuch/retry-failed", data=csrf, auth=auth).status_code == 404
    # Non-ASCII in the Basic credentials: refused, not a crash.
    response = httpx.get(f"{base}/", headers={"authorization": b"Basic \xff\xff\xff\xff"})
    assert response.status_code == 401
    assert snapshot(bridge) == before


def test_unknown_event_flood_is_acknowledged_in_one_log_line(
    bridge: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    before = snapshot(bridge)
    hooks = [{"Event": f"Unknown{i % 3}", "EventId": str(i)} for i in range(5000)]
    with caplog.at_level("WARNING", logger="posbridge.web"):
        response = post_signed(bridge, "fieldpine", encode(hooks))
    assert response.status_code == 200
    assert sorted(response.json()["ignored"]) == ["Unknown0", "Unknown1", "Unknown2"]
    assert len([r for r in caplog.records if "unknown event type" in r.getMessage()]) == 3
    assert snapshot(bridge) == before


def test_path_token_route_needs_the_right_token(bridge: Stack) -> None:
    before = snapshot(bridge)
    hook = encode({"Event": "CustomerChanged", "CustomerId": str(uuid.uuid4()), "EventId": "t-1"})
    for token in ("wrong", FIELDPINE_PATH_TOKEN + "x", "%00", "x" * 5000):
        response = httpx.post(f"{bridge.web_url}/webhooks/fieldpine/{token}", content=hook, timeout=10)
        assert response.status_code in (401, 404), token
    assert snapshot(bridge) == before
