"""The ops page, against a real running bridge (web app, Celery worker, two memory POS).

The browser test drives Debian's Chromium through Playwright (`executable_path`; never a
browser download). Chromium is installed by `scripts/install_browser.sh`; without it the
browser test is skipped locally and fails in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.store.models import Customer, Delivery, DeliveryState, Link
from bridge.web.ops import csrf_token
from tests.conftest import Stack
from tests.harness import IN_CI, ServerThread, wait_for

OPS_USER = "operator"
OPS_PASSWORD = "ops-pw-9f3b1c"
AUTH = (OPS_USER, OPS_PASSWORD)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def ops_stack() -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix="posbridge-ops-"))
    st = Stack(
        "sqlite",
        var,
        extra_env={
            "POSBRIDGE_OPS_USER": OPS_USER,
            "POSBRIDGE_OPS_PASSWORD": OPS_PASSWORD,
            "POSBRIDGE_MAX_ATTEMPTS": "2",
        },
    )
    try:
        st.start_worker()
        yield st
    finally:
        st.close()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture
def ops(ops_stack: Stack) -> Stack:
    ops_stack.faults("memb", error_rate=0.0)
    ops_stack.reset()
    if ops_stack.worker is None or ops_stack.worker._dead():
        ops_stack.start_worker()
    return ops_stack


def secrets_absent(html: str) -> None:
    for secret in (OPS_PASSWORD, "trigger-secret", "memsecret"):
        assert secret not in html


# -- without a browser ----------------------------------------------------------------------
def test_needs_credentials(ops: Stack) -> None:
    url = f"{ops.web_url}/ops/"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic ")
    assert httpx.get(url, auth=(OPS_USER, "wrong")).status_code == 401
    assert httpx.get(url, auth=("someone", OPS_PASSWORD)).status_code == 401
    assert httpx.get(url, headers={"authorization": "Basic !!!"}).status_code == 401
    assert httpx.post(f"{ops.web_url}/ops/systems/memb/retry-failed").status_code == 401
    ok = httpx.get(url, auth=AUTH)
    assert ok.status_code == 200
    assert "System health" in ok.text
    assert ok.headers["cache-control"] == "no-store"
    secrets_absent(ok.text)
    assert httpx.get(f"{ops.web_url}/ops", auth=AUTH, follow_redirects=True).status_code == 200


def test_disabled_without_a_password(ops: Stack) -> None:
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.web.app import create_app

    settings = Settings(
        database_url=ops.db_url,
        broker_url=ops.broker_url,
        systems=["mema", "memb"],
        extra_adapters=ops.settings.extra_adapters,
        ops_password=None,
    )
    rt = Runtime(settings)
    server = ServerThread(create_app(rt)).start()
    try:
        for method, path in (
            ("GET", "/ops/"),
            ("GET", "/ops/customers"),
            ("POST", "/ops/systems/memb/retry-failed"),
        ):
            for auth in (AUTH, None):
                response = httpx.request(method, server.url + path, auth=auth)
                assert response.status_code == 503
                assert response.text == "ops page disabled: set POSBRIDGE_OPS_PASSWORD"
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()
        rt.close()


def test_retry_post_needs_the_csrf_token(ops: Stack) -> None:
    base = f"{ops.web_url}/ops"
    for path in ("/deliveries/1/retry", "/systems/memb/retry-failed"):
        assert httpx.post(base + path, auth=AUTH).status_code == 403
        assert httpx.post(base + path, auth=AUTH, data={"csrf": "forged"}).status_code == 403
    token = csrf_token(AUTH)
    answer = httpx.post(base + "/systems/memb/retry-failed", auth=AUTH, data={"csrf": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/?requeued="
    assert httpx.post(base + "/systems/nope/retry-failed", auth=AUTH, data={"csrf": token}).status_code == 404
    # `next` only ever leads back to an ops page.
    away = httpx.post(
        base + "/deliveries/1/retry", auth=AUTH, data={"csrf": token, "next": "https://evil.example/ops/"}
    )
    assert away.headers["location"] == "/ops/?requeued="


def test_customer_names_are_escaped(ops: Stack) -> None:
    ops.edit(
        "mema", {"first_name": "<script>alert(1)</script>", "last_name": "Evil", "email": "x@example.com"}
    )
    ops.settle()
    with ops.rt.db.session() as s:
        customer_id = s.query(Customer.id).one()[0]
    pages = [
        httpx.get(f"{ops.web_url}/ops/customers", params={"q": "Evil"}, auth=AUTH),
        httpx.get(f"{ops.web_url}/ops/customers/{customer_id}", auth=AUTH),
        httpx.get(f"{ops.web_url}/ops/customers", params={"q": "<script>"}, auth=AUTH),
    ]
    for page in pages:
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        secrets_absent(page.text)
    assert httpx.get(f"{ops.web_url}/ops/customers/no-such-id", auth=AUTH).status_code == 404


# -- in Chromium ----------------------------------------------------------------------------
def chromium_path() -> str | None:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if os.path.exists(found) else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if IN_CI:
            pytest.fail("Debian's chromium is required in CI (scripts/install_browser.sh installs it)")
        pytest.skip("chromium is not installed (run scripts/install_browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_operator_retries_a_failed_delivery_in_the_browser(
    ops: Stack, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect

    shots = tmp_path_factory.mktemp("ops-screenshots")
    st = ops
    # memb answers 500 to every push: with POSBRIDGE_MAX_ATTEMPTS=2 the delivery fails for real.
    st.faults("memb", error_rate=1.0)
    created = st.edit(
        "mema",
        {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com", "phone": "+14155550123"},
    )
    failed = Delivery.state == DeliveryState.FAILED
    wait_for(lambda: st.count(Delivery, Delivery.target == "memb", failed) == 1, timeout=30, what="failure")
    with st.rt.db.session() as s:
        delivery_id = s.query(Delivery.id).filter(failed).one()[0]
    st.faults("memb", error_rate=0.0)  # the operator has fixed the cause
    assert st.truth("memb") == []

    context = browser.new_context(
        http_credentials={"username": OPS_USER, "password": OPS_PASSWORD},
        viewport={"width": 1280, "height": 900},
    )
    try:
        page = context.new_page()
        page.goto(f"{st.web_url}/ops/")
        row = page.locator(f"#failed tr[data-delivery='{delivery_id}']")
        expect(row).to_be_visible()
        expect(row).to_contain_text("memb")
        expect(row).to_contain_text("Grace Hopper")
        expect(page.locator("#systems tr[data-system='memb']")).to_contain_text("Retry all failed for memb")
        page.screenshot(path=str(shots / "1-failed.png"), full_page=True)
        secrets_absent(page.content())

        row.get_by_role("button", name="Retry").click()
        page.wait_for_load_state()
        expect(page.locator("#flash")).to_have_text(f"Requeued 1 delivery: #{delivery_id}.")
        page.screenshot(path=str(shots / "1b-requeued.png"), full_page=True)

        wait_for(lambda: len(st.truth("memb")) == 1, timeout=30, what="the customer in memb")
        st.settle()
        page.goto(f"{st.web_url}/ops/")
        expect(page.locator("#no-failed")).to_be_visible()
        expect(page.locator("#failed")).to_have_count(0)
        expect(page.locator("#systems tr[data-system='memb'] td").nth(5)).to_have_text("0")
        page.screenshot(path=str(shots / "2-after-retry.png"), full_page=True)

        # Find the customer the way an operator would, and read its story.
        page.get_by_label("search customers").fill("grace@example")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name="Grace Hopper").click()
        expect(page.locator("h1")).to_contain_text("Grace Hopper")
        expect(page.locator("#fields tr[data-field='email']")).to_contain_text("grace@example.com")
        expect(page.locator("#fields tr[data-field='email'] td.source")).to_have_text("mema")
        with st.rt.db.session() as s:
            links = dict(s.query(Link.system, Link.external_id).all())
        assert links["mema"] == created["id"]
        assert links["memb"] == st.truth("memb")[0]["id"]
        for system, external_id in links.items():
            expect(page.locator(f"#links tr[data-system='{system}']")).to_contain_text(external_id)
        expect(page.locator(f"#deliveries tr[data-delivery='{delivery_id}']")).to_contain_text("done")
        expect(page.locator("#deliveries tr.attempt").first).to_be_visible()
        page.screenshot(path=str(shots / "3-customer.png"), full_page=True)
        secrets_absent(page.content())
    finally:
        context.close()
