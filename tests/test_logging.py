"""Logs: one correlation id from the webhook to every push; no secret in any line."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    from tests.harness import wait_for

    def logged(prefix: str) -> list[dict[str, object]]:
        return [ln for ln in worker_lines(stack) if str(ln.get("msg", "")).startswith(prefix)]

    # A task logs its outcome after its transaction commits: on a loaded machine the line
    # can trail the database by a moment.
    wait_for(
        lambda: any("to memb: done" in str(ln["msg"]) for ln in logged("push of delivery")),
        timeout=30,
        what="the push logged",
    )
    pushes = logged("push of delivery")
    ingests = logged("ingest of inbox")
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


# -- every configured secret of all five systems ----------------------------------------
FIVE = {
    "POSBRIDGE_TRIGGER_TOKEN": "trig-5e0c7a91d3",
    "POSBRIDGE_OPS_PASSWORD": "opspw-2b9f4e61a8",
    "POSBRIDGE_FLOWER_BASIC_AUTH": "flower:flowerpw-7c3d1a90e5",
    "POSBRIDGE_SQUARE_ACCESS_TOKEN": "sqacc-4f81c2d7b0",
    "POSBRIDGE_SQUARE_WEBHOOK_SIGNATURE_KEY": "sqsig-9a6e03b5c1",
    "POSBRIDGE_SQUARE_WEBHOOK_PATH_TOKEN": "sqpath-1d7b8e4f26",
    "POSBRIDGE_LOYVERSE_ACCESS_TOKEN": "lyacc-6c2a9f15e8",
    "POSBRIDGE_LOYVERSE_CLIENT_SECRET": "lycs-3e8d0b7a42",
    "POSBRIDGE_LOYVERSE_WEBHOOK_PATH_TOKEN": "lypath-8b4f2c6d91",
    "POSBRIDGE_FIELDPINE_API_KEY": "fpkey-0a5d7e3c68",
    "POSBRIDGE_FIELDPINE_HOOK_SECRET": "fphook-7f1b9d2e34",
    "POSBRIDGE_FIELDPINE_WEBHOOK_PATH_TOKEN": "fppath-5c9e1a8b07",
    "POSBRIDGE_ONSITE_PASSWORD": "ospw-2d6f8a0c59",
    "POSBRIDGE_ONSITE_PRIVATE_APP_ID": "ospapp-9e3b7c1d45",
    "POSBRIDGE_ONSITE_WEBHOOK_PATH_TOKEN": "ospath-4a0c6e2f93",
    "POSBRIDGE_LSONE_PASSWORD": "lspw-8d2e5b9f10",
    "POSBRIDGE_LSONE_WEBHOOK_PATH_TOKEN": "lspath-6b1f3d7a82",
}


def five_systems() -> dict[str, Any]:
    from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
    from bridge.adapters.loyverse.sandbox import LoyverseSandbox
    from bridge.adapters.lsone.sandbox import LSOneSandbox
    from bridge.adapters.onsite.sandbox import OnSiteSandbox
    from bridge.adapters.square.sandbox import SquareSandbox

    # Each sandbox accepts exactly the configured credentials, so a wrong one really fails.
    return {
        "square": lambda url: SquareSandbox(
            webhook_url=url,
            signature_key=FIVE["POSBRIDGE_SQUARE_WEBHOOK_SIGNATURE_KEY"],
            tokens={FIVE["POSBRIDGE_SQUARE_ACCESS_TOKEN"]},
        ),
        "loyverse": lambda url: LoyverseSandbox(
            webhook_url=url,
            client_secret=FIVE["POSBRIDGE_LOYVERSE_CLIENT_SECRET"],
            tokens={FIVE["POSBRIDGE_LOYVERSE_ACCESS_TOKEN"]},
        ),
        "fieldpine": lambda url: FieldpineSandbox(
            webhook_url=url,
            hook_secret=FIVE["POSBRIDGE_FIELDPINE_HOOK_SECRET"],
            tokens={FIVE["POSBRIDGE_FIELDPINE_API_KEY"]},
        ),
        "onsite": lambda url: OnSiteSandbox(
            webhook_url=url,
            users={"posbridge": FIVE["POSBRIDGE_ONSITE_PASSWORD"]},
            private_app_ids={FIVE["POSBRIDGE_ONSITE_PRIVATE_APP_ID"]},
        ),
        "lsone": lambda url: LSOneSandbox(webhook_url=url, tokens={FIVE["POSBRIDGE_LSONE_PASSWORD"]}),
    }


def secret_forms(value: str) -> set[str]:
    """A secret as it could appear in text: raw, URL-encoded, and as HTTP Basic credentials."""
    import base64
    from urllib.parse import quote

    forms = {value, quote(value, safe="")}
    if ":" in value:  # "user:password" settings: the password alone is the secret part
        forms.add(value.partition(":")[2])
    for user in ("ops", "flower", "posbridge"):
        forms.add(base64.b64encode(f"{user}:{value}".encode()).decode())
    return forms


@pytest.fixture(scope="module")
def five() -> Iterator[Stack]:
    """All five real systems behind the bridge, the web app as a real `posbridge web` process
    (so its logging is configured exactly as in production) and a worker with beat."""
    import os
    import subprocess
    import sys

    from tests.harness import ROOT, port_open, wait_for

    var = Path(tempfile.mkdtemp(prefix="posbridge-secrets-"))
    st = Stack(
        "sqlite",
        var,
        extra_env={**FIVE, "POSBRIDGE_LOG_JSON": "true", "POSBRIDGE_MAX_ATTEMPTS": "2"},
        systems=five_systems(),
    )
    port = int(st.web_url.rsplit(":", 1)[1])
    st.web.stop()  # the sandboxes send their webhooks to this port: the real process takes it
    web_log = (var / "web.log").open("ab")
    env = {**os.environ, **st.env, "PYTHONPATH": str(ROOT)}
    web = subprocess.Popen(
        [sys.executable, "-c", "from bridge.cli import run; run()", "web", "--port", str(port)],
        env=env,
        cwd=var,
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), timeout=30, what="posbridge web")
        st.start_worker()
        yield st
    finally:
        web.terminate()
        web.wait(timeout=10)
        web_log.close()
        st.close()
        shutil.rmtree(var, ignore_errors=True)


def test_no_configured_secret_of_any_system_reaches_logs_or_answers(five: Stack) -> None:
    from bridge.adapters.fieldpine.sandbox import FieldpineSandbox
    from bridge.adapters.lsone.sandbox import LSOneSandbox
    from bridge.adapters.onsite.sandbox import OnSiteSandbox
    from bridge.store.models import Customer, Link, SystemState
    from tests.harness import wait_for

    st = five
    url = st.web_url
    answers: list[httpx.Response] = []

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, url + path, timeout=30, **kwargs)
        answers.append(response)
        return response

    # Success: a till edit at Square travels to every writable system; polls of the others.
    st.edit(
        "square", {"given_name": "Katherine", "family_name": "Johnson", "email_address": "kj@example.com"}
    )
    wait_for(lambda: st.count(Link) >= 4, timeout=60, what="the customer linked in four systems")
    assert st.count(Customer) == 1
    for system in ("onsite", "lsone", "loyverse"):
        bearer = {"authorization": f"Bearer {FIVE['POSBRIDGE_TRIGGER_TOKEN']}"}
        assert call("POST", f"/triggers/poll/{system}", headers=bearer).status_code == 202
    ops = ("ops", FIVE["POSBRIDGE_OPS_PASSWORD"])
    assert call("GET", "/ops/", auth=ops).status_code == 200
    assert call("GET", "/ops/customers", params={"q": "Johnson"}, auth=ops).status_code == 200
    for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
        call("GET", path)

    # Failures the client causes: every one answered without echoing a secret.
    for system in ("square", "loyverse", "fieldpine"):
        for header in ("x-square-hmacsha256-signature", "x-loyverse-signature", "x-fieldpine-hmac"):
            assert (
                call("POST", f"/webhooks/{system}", content=b"{}", headers={header: "bad"}).status_code == 401
            )
        path_token = FIVE[f"POSBRIDGE_{system.upper()}_WEBHOOK_PATH_TOKEN"]
        assert call("POST", f"/webhooks/{system}/{path_token}x", content=b"{}").status_code == 401
    for system in ("onsite", "lsone"):
        path_token = FIVE[f"POSBRIDGE_{system.upper()}_WEBHOOK_PATH_TOKEN"]
        assert call("POST", f"/webhooks/{system}/{path_token}", content=b"{}").status_code == 404
    assert (
        call("POST", "/webhooks/square", content=b"x" * (st.settings.max_body_bytes + 1)).status_code == 413
    )
    for bearer in (FIVE["POSBRIDGE_TRIGGER_TOKEN"] + "x", FIVE["POSBRIDGE_OPS_PASSWORD"]):
        headers = {"authorization": f"Bearer {bearer}"}
        assert call("POST", "/triggers/poll/lsone", headers=headers).status_code == 401
    assert call("GET", "/ops/", auth=("ops", FIVE["POSBRIDGE_OPS_PASSWORD"] + "x")).status_code == 401
    assert call("GET", "/ops/", auth=("ops", FIVE["POSBRIDGE_TRIGGER_TOKEN"])).status_code == 401
    assert call("POST", "/ops/systems/square/retry-failed", auth=ops, data={"csrf": "x"}).status_code == 403

    # Failures the systems cause: every credential refused (each sandbox answers 401).
    for name in ("square", "loyverse", "fieldpine"):
        st.sandboxes[name].tokens = frozenset({"rotated"})
    onsite = st.sandboxes["onsite"]
    assert isinstance(onsite, OnSiteSandbox)
    onsite.users = {"posbridge": "rotated"}
    onsite.sessions.clear()
    lsone = st.sandboxes["lsone"]
    assert isinstance(lsone, LSOneSandbox)
    lsone.tokens = frozenset({"rotated"})
    lsone.revoke(access=True, refresh=True)
    assert isinstance(st.sandboxes["fieldpine"], FieldpineSandbox)
    st.edit("square", {"given_name": "Dorothy", "family_name": "Vaughan", "email_address": "dv@example.com"})
    for system in ("onsite", "lsone", "fieldpine"):
        bearer = {"authorization": f"Bearer {FIVE['POSBRIDGE_TRIGGER_TOKEN']}"}
        call("POST", f"/triggers/poll/{system}", headers=bearer)
    wait_for(
        lambda: st.count(SystemState, SystemState.paused.is_(True)) >= 3,
        timeout=60,
        what="the targets refusing their credentials to be paused",
    )
    time.sleep(1.5)  # let the polls meet their 401s too

    web_log = (st.var / "web.log").read_text()
    worker_log = st.log_path.read_text()
    # The web process really logged... (the change may have been polled before its webhook
    # came, which then is a duplicate: either line proves the webhook was handled).
    assert "recorded as inbox" in web_log or "already recorded" in web_log
    assert "signature" in web_log
    assert "paused" in worker_log or "auth" in worker_log.lower()  # ...and so did the worker
    # The settings' own list must know every configured secret (that is what redaction uses).
    from bridge.logs import all_secrets

    known = set(all_secrets(st.rt))
    for name, secret in FIVE.items():
        assert secret in known, f"{name} is not in logs.all_secrets: it would not be redacted"
    for name, secret in FIVE.items():
        for form in secret_forms(secret):
            assert form not in web_log, f"{name} leaked into the web log"
            assert form not in worker_log, f"{name} leaked into the worker log"
            for answer in answers:
                assert form not in answer.text, f"{name} leaked into {answer.request.url.path}"
                assert form not in str(answer.headers), f"{name} leaked into a header"
    # Credentials back, so that the worker's probes and exit-time logouts end promptly.
    st.sandboxes["square"].tokens = frozenset({FIVE["POSBRIDGE_SQUARE_ACCESS_TOKEN"]})
    st.sandboxes["loyverse"].tokens = frozenset({FIVE["POSBRIDGE_LOYVERSE_ACCESS_TOKEN"]})
    st.sandboxes["fieldpine"].tokens = frozenset({FIVE["POSBRIDGE_FIELDPINE_API_KEY"]})
    onsite.users = {"posbridge": FIVE["POSBRIDGE_ONSITE_PASSWORD"]}
    lsone.tokens = frozenset({FIVE["POSBRIDGE_LSONE_PASSWORD"]})
