"""Logs: one correlation id from the webhook to every push; no secret in any line."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.logs import REDACTED, RedactingFilter
from tests.conftest import Stack

SECRETS = {
    "POSBRIDGE_TRIGGER_TOKEN": "trigger-8c1f3a9e77",
    "POSBRIDGE_OPS_PASSWORD": "ops-pass-51d2b0c4",
    "POSBRIDGE_MEMA_TOKEN": "tok-a-4f9e2d61c0",
    "POSBRIDGE_MEMB_TOKEN": "tok-b-93c7e58a12",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-logs-"))
    st = Stack(
        "sqlite", var, extra_env={**SECRETS, "POSBRIDGE_LOG_JSON": "true", "POSBRIDGE_MAX_ATTEMPTS": "2"}
    )
    # The sandboxes accept only the configured tokens, so a wrong one would really fail.
    st.sandboxes["mema"].tokens = frozenset({SECRETS["POSBRIDGE_MEMA_TOKEN"]})
    st.sandboxes["memb"].tokens = frozenset({SECRETS["POSBRIDGE_MEMB_TOKEN"]})
    try:
        st.start_worker()
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


def worker_lines(st: Stack) -> list[dict[str, object]]:
    lines = []
    for raw in st.log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_one_correlation_id_from_webhook_to_every_push(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.reset()
    with caplog.at_level(logging.INFO, logger="posbridge.web"):
        stack.edit("mema", {"first_name": "Barbara", "last_name": "Liskov", "email": "bl@example.com"})
        stack.settle()
    web_ids = {
        getattr(r, "correlation_id", None) for r in caplog.records if "recorded as inbox" in r.getMessage()
    }
    web_ids.discard(None)
    assert len(web_ids) >= 1
    lines = worker_lines(stack)
    pushes = [ln for ln in lines if str(ln.get("msg", "")).startswith("push of delivery")]
    ingests = [ln for ln in lines if str(ln.get("msg", "")).startswith("ingest of inbox")]
    assert pushes
    assert ingests
    created = [ln for ln in ingests if str(ln["msg"]).endswith(": created")]
    assert len(created) == 1
    first = created[0].get("correlation_id")
    assert first in web_ids
    assert any(ln.get("correlation_id") == first for ln in pushes), (
        first,
        [(ln.get("correlation_id"), ln["msg"]) for ln in pushes + ingests],
    )
    assert any(ln.get("correlation_id") == first and "to memb: done" in str(ln["msg"]) for ln in pushes)


def test_no_secret_reaches_logs_or_error_responses(stack: Stack) -> None:
    stack.reset()
    # Some traffic that fails in every way we know: bad signatures, bad trigger tokens,
    # a target refusing its credentials (the sandbox is switched to another token).
    bodies = []
    bodies.append(
        httpx.post(f"{stack.web.url}/webhooks/mema", content=b"{}", headers={"x-memory-signature": "x"}).text
    )
    bodies.append(
        httpx.post(
            f"{stack.web.url}/triggers/poll/mema",
            headers={"authorization": f"Bearer {SECRETS['POSBRIDGE_TRIGGER_TOKEN']}x"},
        ).text
    )
    stack.sandboxes["memb"].tokens = frozenset({"rotated"})
    stack.edit("mema", {"first_name": "Edsger", "last_name": "Dijkstra", "email": "ed@example.com"})
    from bridge.store.models import SystemState
    from tests.harness import wait_for

    wait_for(
        lambda: stack.count(SystemState, SystemState.paused.is_(True)) == 1, timeout=30, what="memb paused"
    )
    stack.sandboxes["memb"].tokens = frozenset({SECRETS["POSBRIDGE_MEMB_TOKEN"]})
    stack.settle(timeout=40)
    text = stack.log_path.read_text()
    assert "401" in text or "paused" in text or "auth" in text  # the failure was logged...
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} leaked into the worker log"
        for body in bodies:
            assert secret not in body, f"{name} leaked into an error response"


def test_redaction_covers_exceptions_and_authorization_headers() -> None:
    flt = RedactingFilter(["s3cr3t-value"])
    try:
        raise RuntimeError("calling with token s3cr3t-value failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "header %s", ("Authorization: Bearer abc.def",), sys.exc_info()
        )
    assert flt.filter(record)
    assert "s3cr3t-value" not in record.msg
    assert "abc.def" not in record.msg
    assert REDACTED in record.msg
