"""Bad input gets a clear error and changes nothing (no worker needed for these)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.store.models import InboxEvent
from tests.conftest import Stack
from tests.memorypos.sandbox import sign


@pytest.fixture(scope="module")
def web() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-input-"))
    st = Stack("sqlite", var)
    try:
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


def post(
    st: Stack, body: bytes, headers: dict[str, str] | None = None, system: str = "mema"
) -> httpx.Response:
    return httpx.post(f"{st.web.url}/webhooks/{system}", content=body, headers=headers or {}, timeout=30)


def signed(body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "x-memory-signature": sign("memsecret", body)}


def event(**overrides: object) -> bytes:
    # A fresh time: events older than the inbox retention window are refused as replays.
    now = datetime.now(UTC).isoformat()
    customer = {"id": "c1", "version": 1, "updated_at": now, "first_name": "Ada"}
    return json.dumps(
        {"event_id": "e1", "type": "customer.updated", "customer": customer, **overrides}
    ).encode()


def stored(st: Stack) -> int:
    return st.count(InboxEvent)


def test_bad_signature_is_401_and_stores_nothing(web: Stack) -> None:
    body = event()
    headers = signed(body)
    headers["x-memory-signature"] = "0" * 64
    response = post(web, body, headers)
    assert response.status_code == 401
    assert response.json() == {"error": "signature verification failed"}
    assert stored(web) == 0


def test_missing_signature_is_401(web: Stack) -> None:
    assert post(web, event(), {"content-type": "application/json"}).status_code == 401
    assert stored(web) == 0


def test_body_altered_after_signing_is_401(web: Stack) -> None:
    body = event()
    headers = signed(body)
    assert post(web, body.replace(b"Ada", b"Eve"), headers).status_code == 401
    assert stored(web) == 0


def test_malformed_json_is_400_with_reason(web: Stack) -> None:
    body = b'{"event_id": "e1", "type": '
    response = post(web, body, signed(body))
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]
    assert stored(web) == 0


def test_wrong_shape_is_422_with_reason(web: Stack) -> None:
    body = json.dumps({"event_id": "e1", "type": "customer.updated", "customer": "nope"}).encode()
    response = post(web, body, signed(body))
    assert response.status_code == 422
    assert "customer" in response.json()["error"]
    assert stored(web) == 0


def test_oversized_body_is_413_and_stores_nothing(web: Stack) -> None:
    body = event(note="x" * (web.settings.max_body_bytes + 10))
    response = post(web, body, signed(body))
    assert response.status_code == 413
    assert stored(web) == 0


def test_oversized_chunked_body_without_length_is_413(web: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    response = httpx.post(f"{web.web.url}/webhooks/mema", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert stored(web) == 0


def test_unknown_event_type_is_acknowledged_and_logged(web: Stack, caplog: pytest.LogCaptureFixture) -> None:
    body = event(type="customer.teleported")
    with caplog.at_level(logging.WARNING, logger="posbridge.web"):
        response = post(web, body, signed(body))
    assert response.status_code == 200
    assert response.json()["accepted"] == 0
    assert response.json()["ignored"] == ["customer.teleported"]
    assert any("customer.teleported" in r.getMessage() for r in caplog.records)
    assert stored(web) == 0


def test_explicitly_ignored_event_type_is_acknowledged(web: Stack) -> None:
    body = event(type="customer.viewed")
    response = post(web, body, signed(body))
    assert response.status_code == 200
    assert response.json()["ignored"] == ["customer.viewed"]
    assert stored(web) == 0


def test_unknown_system_is_404(web: Stack) -> None:
    assert post(web, event(), system="nosuchpos").status_code == 404


def test_poll_trigger_needs_the_bearer_token(web: Stack) -> None:
    url = f"{web.web.url}/triggers/poll/mema"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"authorization": "Bearer wrong"}).status_code == 401


def test_valid_event_is_on_disk_before_the_answer(web: Stack) -> None:
    body = event(event_id="durable-1")
    response = post(web, body, signed(body))
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    # A fresh connection (not the web app's) sees the committed row with the raw body.
    from sqlalchemy import create_engine, text

    engine = create_engine(web.db_url)
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT raw_body FROM inbox WHERE event_id = 'durable-1'")).scalar_one()
    engine.dispose()
    assert bytes(raw) == body


def test_event_older_than_retention_is_refused_as_replay(web: Stack) -> None:
    old = (datetime.now(UTC) - timedelta(hours=web.settings.inbox_retention_h, minutes=5)).isoformat()
    customer = {"id": "c-old", "version": 1, "updated_at": old, "first_name": "Ada"}
    body = json.dumps({"event_id": "replayed-1", "type": "customer.updated", "customer": customer}).encode()
    before = stored(web)
    response = post(web, body, signed(body))
    assert response.status_code == 409
    assert "retention" in response.json()["error"]
    assert stored(web) == before


def test_event_id_longer_than_the_column_is_422_not_truncated(web: Stack) -> None:
    body = event(event_id="x" * 201)
    before = stored(web)
    response = post(web, body, signed(body))
    assert response.status_code == 422
    assert "longer than 200" in response.json()["error"]
    assert stored(web) == before


def test_a_crashing_signature_check_fails_closed(web: Stack) -> None:
    # hmac.compare_digest refuses non-ASCII str: the memory adapter's verifier raises
    # TypeError on this header. Unverified means refused, never a 500.
    body = event()
    before = stored(web)
    response = post(web, body, {"x-memory-signature": b"\xff" * 64})  # type: ignore[dict-item]
    assert response.status_code == 401
    assert stored(web) == before


def test_a_crashing_parser_is_a_400_not_a_500(web: Stack) -> None:
    # An unhashable type makes the memory adapter's set lookup raise TypeError.
    body = json.dumps({"event_id": "crash-1", "type": ["customer.updated"]}).encode()
    before = stored(web)
    response = post(web, body, signed(body))
    assert response.status_code == 400
    assert response.json() == {"error": "body could not be parsed"}
    assert stored(web) == before
